// Package e2e runs the service end to end against real components it starts
// itself on free 127.0.0.1 ports: the Temporal CLI dev server, Mailpit,
// stripe-mock, and a real database (SQLite always; PostgreSQL too when
// TEST_DATABASE_URL is set). Events are signed, real-shaped Stripe payloads.
package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"identityverification/config"
	"identityverification/devstack"
	"identityverification/service"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/workflows"
)

// components are shared by every test in the package.
var components struct {
	bins         map[string]string // tool binaries by name
	temporal     *devstack.Temporal
	stopTemporal func()
	mailpit      *devstack.Mailpit
	stripe       *devstack.StripeMock
}

// One namespace per database, so a worker never picks up another's workflows.
var namespaces = map[string]string{"sqlite": "e2e-sqlite", "postgres": "e2e-postgres", "ack": "e2e-ack"}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		ctx := context.Background()
		dir, err := os.MkdirTemp("", "identity-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		err = startComponents(ctx, dir)
		// Stop whatever started, also when the rest did not (a Temporal
		// Server's databases are dropped then).
		if components.stopTemporal != nil {
			defer components.stopTemporal()
		}
		if components.mailpit != nil {
			defer components.mailpit.Stop()
		}
		if components.stripe != nil {
			defer components.stripe.Stop()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		return m.Run()
	}())
}

func startComponents(ctx context.Context, dir string) error {
	wd, _ := os.Getwd()
	root, err := devstack.Root(wd)
	if err != nil {
		return err
	}
	bins := map[string]string{}
	components.bins = bins
	for name := range devstack.Tools {
		if bins[name], err = devstack.Tool(ctx, root, name, os.Stderr); err != nil {
			return err
		}
	}
	ports := make([]int, 5)
	for i := range ports {
		if ports[i], err = devstack.FreePort(); err != nil {
			return err
		}
	}
	// E2E_TEMPORAL=server runs the suite on Temporal Server on the local
	// PostgreSQL (TEST_DATABASE_URL) instead of the in-memory dev server.
	if os.Getenv("E2E_TEMPORAL") == "server" {
		pg := os.Getenv("TEST_DATABASE_URL")
		if pg == "" {
			return errors.New("E2E_TEMPORAL=server needs TEST_DATABASE_URL (the PostgreSQL server it runs on)")
		}
		srv, err := devstack.StartTemporalServer(ctx, root, bins["temporal"], dir, pg, ports[0],
			namespaces["sqlite"], namespaces["postgres"], namespaces["ack"])
		if err != nil {
			return err
		}
		components.temporal, components.stopTemporal = srv.Temporal, srv.Stop
	} else {
		if components.temporal, err = devstack.StartTemporalInMemory(ctx, bins["temporal"], dir, ports[0], ports[1],
			namespaces["sqlite"], namespaces["postgres"], namespaces["ack"]); err != nil {
			return err
		}
		components.stopTemporal = components.temporal.Stop
	}
	mp, err := devstack.StartMailpit(ctx, bins["mailpit"], dir, ports[2], ports[3], "--max", "0") // keep every message: the balance counts them
	if err != nil {
		return err
	}
	components.mailpit = mp
	sm, err := devstack.StartStripeMock(ctx, bins["stripemock"], dir, ports[4])
	if err != nil {
		return err
	}
	components.stripe = sm
	return nil
}

const (
	secret     = "whsec_e2e_test_secret"
	adminToken = "e2e-admin-token"
)

// withDesk in a test's env asks for the review desk: the stack starts Dex
// (the dev users, its own login page) and signs people in with it.
const withDesk = "E2E_WITH_DESK"

// deskSecret is the desk's client secret at the stack's Dex.
const deskSecret = "e2e-desk-client-secret"

// stack is the service running against one database.
type stack struct {
	dex        *devstack.Dex // with withDesk
	t          testing.TB
	db         string
	webhookURL string
	adminURL   string
	opsURL     string // health and metrics
	store      *store.Store
	temporal   client.Client
	namespace  string
	env        config.Map    // the configuration it runs with
	stopped    chan struct{} // closed when the service returns
}

// forEachDatabase starts the service (webhook and worker, in process) once
// per database and runs fn against it.
func forEachDatabase(t *testing.T, fn func(t *testing.T, s *stack)) {
	forEachDatabaseWith(t, nil, fn)
}

// forEachDatabaseWith is forEachDatabase with env overriding the configuration.
func forEachDatabaseWith(t *testing.T, env config.Map, fn func(t *testing.T, s *stack)) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) { fn(t, startStack(t, db, env)) })
	}
}

// startStack starts the service (webhook and worker) on db; env overrides
// the configuration.
func startStack(t testing.TB, db storetest.Database, env config.Map) *stack {
	t.Helper()
	return startRoles(t, db, env, true)
}

// startRoles starts the webhook, and the worker when worker is true.
func startRoles(t testing.TB, db storetest.Database, env config.Map, worker bool) *stack {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ns := namespaces[db.Name]
	base := config.Map{
		"TEMPORAL_ADDRESS":      components.temporal.Address,
		"TEMPORAL_NAMESPACE":    ns,
		"DATABASE_URL":          db.URL,
		"SMTP_URL":              "smtp://" + components.mailpit.SMTPAddr,
		"EMAIL_FROM":            "identity@example.com",
		"OPS_EMAIL":             "ops-" + db.Name + "@example.com",
		"STRIPE_API_BASE":       components.stripe.URL,
		"STRIPE_API_KEY":        "sk_test_e2e",
		"STRIPE_WEBHOOK_SECRET": "whsec_old_rotated_out," + secret,
		"RETRY_LINK_SECRET":     "e2e-link-secret",
		"ADMIN_TOKEN":           adminToken,
		"ENVIRONMENT":           "development", // short test secrets
		"PUBLIC_BASE_URL":       "http://" + ln.Addr().String(),
		"LOG_LEVEL":             "warn",
		"SHUTDOWN_GRACE":        "5s",
		"OPS_ADDR":              "127.0.0.1:0", // a worker process of a test's own: any free port
	}
	for k, v := range env {
		base[k] = v
	}
	var dex *devstack.Dex
	if base[withDesk] != "" {
		delete(base, withDesk)
		port, err := devstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		callback := "http://" + adminLn.Addr().String() + config.DeskCallbackPath
		dex, err = devstack.StartDex(context.Background(), components.bins["dex"], t.TempDir(), port,
			devstack.DexClient{ID: "review-desk", Secret: deskSecret, RedirectURIs: []string{callback}}, devstack.DevUsers)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(dex.Stop)
		for k, v := range map[string]string{"OIDC_ISSUER": dex.Issuer, "OIDC_CLIENT_ID": dex.ClientID,
			"OIDC_CLIENT_SECRET": dex.ClientSecret, "OIDC_REDIRECT_URL": callback,
			"REVIEWER_GROUPS": "reviewers", "ADMIN_GROUPS": "admins"} {
			if _, set := base[k]; !set {
				base[k] = v
			}
		}
	}
	cfg, err := config.Load(base)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = service.NewLogger(cmp.Or(os.Getenv("E2E_LOG_LEVEL"), "warn"))
	}
	// stopped is closed when the service returns: before the test's end
	// that is a failure reported at once, and load against it stops,
	// instead of resending to a closed port until its redelivery window ends.
	stopped := make(chan struct{})
	go func() {
		err := service.Run(ctx, cfg, service.Roles{Webhook: true, Worker: worker, Admin: true, Listener: ln, AdminListener: adminLn, OpsListener: opsLn}, log)
		if ctx.Err() == nil {
			t.Errorf("the service stopped during the test: %v", err)
			err = nil // reported
		}
		close(stopped)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service stopped with: %v", err)
		}
	})
	s := &stack{t: t, db: db.Name, dex: dex, webhookURL: "http://" + ln.Addr().String() + "/webhooks/stripe",
		adminURL: "http://" + adminLn.Addr().String(), opsURL: "http://" + opsLn.Addr().String(),
		namespace: base["TEMPORAL_NAMESPACE"], env: base, stopped: stopped}
	up := func() {
		select {
		case <-stopped:
			t.Fatal("the service stopped while starting")
		default:
		}
	}
	eventually(t, "the webhook is ready", func() error {
		up()
		return devstack.HTTPOK(context.Background(), s.opsURL+"/readyz")
	})
	// The admin API answers ADMIN_TOKEN 503 until its store is open and
	// migrated (it may wait for the worker's migration lock): a test
	// starts once it has.
	eventually(t, "the admin API serves", func() error {
		up()
		c := http.Client{Timeout: 2 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, s.adminURL+"/admin/sessions/vs_ready", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			return errors.New("its database is not ready")
		}
		return nil
	})
	if worker {
		// The worker polls: a test's first sessions do not wait for its
		// start (on PostgreSQL it may wait a second for the migration
		// lock, which made the first sessions of a load run the tail).
		eventually(t, "the worker polls", func() error {
			up()
			c := http.Client{Timeout: 2 * time.Second}
			resp, err := c.Get(s.opsURL + "/metrics")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			m, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(m), "temporal_worker_start") {
				return errors.New("not yet")
			}
			return nil
		})
	}
	if s.store, err = store.Open(context.Background(), db.URL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.store.Close() })
	topts := client.Options{HostPort: base["TEMPORAL_ADDRESS"], Namespace: s.namespace, Logger: devstack.QuietLogger}
	if cfg.Codec != nil { // the stack encrypts payloads: the test reads them as the service does
		topts.DataConverter, topts.FailureConverter = cfg.Codec.DataConverter(), cfg.Codec.FailureConverter()
	}
	if s.temporal, err = client.Dial(topts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.temporal.Close)
	return s
}

// post signs a payload with the endpoint's secret and POSTs it.
func (s *stack) post(payload []byte) (int, string) {
	s.t.Helper()
	code, body, err := testevent.Send(context.Background(), http.DefaultClient, s.webhookURL, secret, payload)
	if err != nil {
		s.t.Fatal(err)
	}
	return code, body
}

// send builds, signs and POSTs an event, expecting 200.
func (s *stack) send(o testevent.Options) {
	s.t.Helper()
	payload, err := testevent.Build(o)
	if err != nil {
		s.t.Fatal(err)
	}
	if code, body := s.post(payload); code != http.StatusOK {
		s.t.Fatalf("POST %s: %d %s; want 200", o.Type, code, body)
	}
}

// state queries the session's workflow.
func (s *stack) state(sessionID string) (workflows.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := s.temporal.QueryWorkflow(ctx, workflows.WorkflowID(sessionID), "", workflows.QueryState)
	if err != nil {
		return workflows.State{}, err
	}
	var st workflows.State
	return st, v.Get(&st)
}

// waitState waits until the session's state satisfies ok.
func (s *stack) waitState(sessionID, what string, ok func(workflows.State) bool) workflows.State {
	s.t.Helper()
	var st workflows.State
	eventually(s.t, what, func() error {
		var err error
		if st, err = s.state(sessionID); err != nil {
			return err
		}
		if !ok(st) {
			return fmt.Errorf("state is %+v", st)
		}
		return nil
	})
	return st
}

// waitRow waits until the session's row has the status.
func (s *stack) waitRow(sessionID string, status workflows.Status) store.Session {
	s.t.Helper()
	var row store.Session
	eventually(s.t, fmt.Sprintf("row of %s says %s", sessionID, status), func() error {
		var err error
		if row, err = s.store.Session(context.Background(), sessionID); err != nil {
			return err
		}
		if row.Status != string(status) {
			return fmt.Errorf("row status %q", row.Status)
		}
		return nil
	})
	return row
}

// mails returns the messages Mailpit holds for a recipient, oldest first.
func mails(t *testing.T, to string) []devstack.Message {
	t.Helper()
	msgs, err := components.mailpit.Messages(context.Background(), to)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// waitMails waits until a recipient has n messages and returns them.
func waitMails(t *testing.T, to string, n int) []devstack.Message {
	t.Helper()
	var got []devstack.Message
	eventually(t, fmt.Sprintf("%d email(s) to %s", n, to), func() error {
		if got = mails(t, to); len(got) < n {
			return fmt.Errorf("%d so far", len(got))
		}
		return nil
	})
	return got
}

var errNotYet = errors.New("not yet")

// eventually retries check until it passes or a generous deadline passes;
// the deadline bounds a hung test, it is not a performance assertion.
func eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// buildCommand builds a main package of this module into a temporary
// folder, with any further go build flags (such as -tags).
func buildCommand(t *testing.T, pkg string, buildFlags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	args := append(append([]string{"build", "-o", bin}, buildFlags...), pkg)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// fixture reads a Stripe payload from testdata/stripe, with the session id
// replaced so each test has its own session.
func fixture(t *testing.T, name, sessionID, eventID string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "stripe", name))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "vs_1OPouwJN5vQBdWExwnxAiDeP", sessionID)
	var ev map[string]any
	if err := json.Unmarshal([]byte(s), &ev); err != nil {
		t.Fatal(err)
	}
	ev["id"] = eventID
	out, _ := json.Marshal(ev)
	return out
}
