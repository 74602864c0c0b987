package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"identityverification/config"
	"identityverification/devstack"
	"identityverification/loadgen"
	"identityverification/reconcile"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/worker"
	"identityverification/workflows"
)

const haproxyPath = "/usr/sbin/haproxy"

// scaleLong says whether the long version runs (make scale).
var scaleLong = os.Getenv("SCALE_LONG") != ""

// replica is one process of the built binary in the scale-out topology.
type replica struct {
	role, name string
	addr       string // the webhook's or admin's listener (host:port); "" for a worker
	ops        string // its ops listener's URL
	log        string
	env        []string
	p          *devstack.Process
}

// start runs the replica on bin.
func (r *replica) start(t *testing.T, bin string) {
	t.Helper()
	p, err := devstack.StartProcess(r.name, bin, r.log, r.env, r.role)
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	t.Cleanup(p.Stop)
}

// waitReady waits until the replica's ops listener says ready (and, for a
// worker, until it polls).
func (r *replica) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, r.name+" ready", func() error {
		select {
		case <-r.p.Exited():
			t.Fatalf("%s exited:\n%s", r.name, logTail(r.log))
		default:
		}
		if err := devstack.HTTPOK(context.Background(), r.ops+"/readyz"); err != nil {
			return err
		}
		if r.role != "worker" {
			return nil
		}
		if m, err := scrape(r.ops); err != nil || !strings.Contains(m, "temporal_worker_start") {
			return fmt.Errorf("not polling yet (%v)", err)
		}
		return nil
	})
}

// scale is the production shape: a Temporal cluster, HAProxy in front of
// the webhook and admin replicas and of the cluster's frontends, workers.
type scale struct {
	*stack
	bin string // the binary the replicas start on
	// mail is this run's Mailpit: it refuses every recipient outside
	// example.com (an issue the gauge must count).
	mail     *devstack.Mailpit
	cluster  *devstack.Cluster
	haproxy  *devstack.HAProxy
	webhooks []*replica
	admins   []*replica
	workers  []*replica
}

// TestScaleOut runs the production shape natively: Temporal Server 1.29.1 as
// a two-node cluster on the local PostgreSQL, HAProxy round-robin in front
// of two webhook replicas and (on another port) two admin replicas, both
// health-checked on /readyz, and in front of the cluster's two frontends
// (TCP), three workers, all separate processes of the built binary on one
// PostgreSQL database. Through the balancer it drives a storm-shaped load
// (registered through the admin API), retry-link clicks, a session created
// through the admin API, desk sign-ins (Dex) and decisions; during the load
// it SIGKILLs a worker, stops a webhook replica, restarts every worker with
// a freshly built binary after the replay gate, and kills a Temporal node
// and brings it back. Each fault is proven (process gone, port closed,
// HAProxy's view) before anything is counted. It ends with the fault
// suite's exact balance, the desk's sign-ins and decisions, the retry-link
// budget held across replicas, one reconcile schedule kept by one lease
// holder, and an issues gauge, exported by that holder only, that agrees
// with the visibility count. `make test` runs the short version; `make
// scale` (SCALE_LONG=1) a larger load, and measures throughput through the
// balancer with one and with three workers on the same cluster.
func TestScaleOut(t *testing.T) {
	pg := os.Getenv("TEST_DATABASE_URL")
	if pg == "" {
		t.Skip("needs TEST_DATABASE_URL (the PostgreSQL server the cluster and the service run on)")
	}
	if _, err := os.Stat(haproxyPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("needs HAProxy at %s (apt-get install -y haproxy); .ci/run installs it", haproxyPath)
		}
		t.Fatalf("CI is set and HAProxy is missing at %s: %v", haproxyPath, err)
	}
	ctx := context.Background()
	sc := startScale(t, pg)
	s := sc.stack

	// Sessions created through the admin API behind the balancer: round
	// robin sends the two creates to the two admin replicas; each session
	// is registered in the one database. (stripe-mock keeps no state, so
	// Stripe's answer to a repeated Idempotency-Key cannot be shown here.)
	before := sc.servers(t)
	var created []string
	for i := range 2 {
		var out map[string]string
		if code := sc.adminCall(http.MethodPost, "/admin/sessions", map[string]string{"email": fmt.Sprintf("scale-created-%d@example.com", i)},
			map[string]string{"Idempotency-Key": fmt.Sprintf("scale-create-%d", i)}, &out); code != http.StatusCreated {
			t.Fatalf("create through the balancer: %d %v", code, out)
		}
		if c, err := s.store.Contact(ctx, out["session_id"]); err != nil || c.Email != fmt.Sprintf("scale-created-%d@example.com", i) {
			t.Errorf("the created session %q is registered as %+v, %v", out["session_id"], c, err)
		}
		created = append(created, out["session_id"])
	}
	after := sc.servers(t)
	if a, b := after["admin/admin-1"].Sessions-before["admin/admin-1"].Sessions, after["admin/admin-2"].Sessions-before["admin/admin-2"].Sessions; a != 1 || b != 1 {
		t.Errorf("the two creates went to the admin replicas %d and %d times; want once each", a, b)
	}

	// The retry-link budget across replicas: a session whose user holds a
	// link; ten clicks through the balancer, which alternates them over
	// both webhook replicas. One replica's budget is 5: five redirects to
	// Stripe, then 429s (per process, each would allow 5: ten).
	vsLink := "vs_scale_link_" + testevent.RandomID(10)
	toLink := strings.ToLower(vsLink) + "@example.com"
	if err := sc.register(ctx, vsLink); err != nil {
		t.Fatal(err)
	}
	sc.sendThrough(testevent.Options{Type: "requires_input", SessionID: vsLink, ErrorCode: "document_expired"})
	link := retryLink(t, sc.waitMail(t, toLink))
	if !strings.HasPrefix(link, sc.haproxy.WebhookURL+"/verify/retry/") {
		t.Fatalf("the retry link %s does not go through the balancer %s", link, sc.haproxy.WebhookURL)
	}
	// Each webhook replica opens its database in the background (it never
	// waits for it) and limits in its own memory until then: the clicks
	// come once both count in the database.
	for _, r := range sc.webhooks {
		eventually(t, r.name+" counting retry-link clicks in the database", func() error {
			b, err := os.ReadFile(r.log)
			if err != nil || !bytes.Contains(b, []byte("retry-link limit counted in the database")) {
				return errNotYet
			}
			return nil
		})
	}
	// The limit counts in fixed 10-minute windows: the clicks go in one
	// (a burst across two may have twice the budget, as documented).
	const window = 10 * time.Minute
	if next := time.Now().Truncate(window).Add(window); time.Until(next) < 20*time.Second {
		time.Sleep(time.Until(next) + time.Second)
	}
	clicked := time.Now().Truncate(window)
	before = sc.servers(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	codes := map[int]int{}
	for range 10 {
		resp, err := noRedirect.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
	}
	if !time.Now().Truncate(window).Equal(clicked) {
		t.Fatalf("ten clicks took over 20 s and crossed into another window of the limit")
	}
	after = sc.servers(t)
	perReplica := []int{after["webhook/webhook-1"].Sessions - before["webhook/webhook-1"].Sessions,
		after["webhook/webhook-2"].Sessions - before["webhook/webhook-2"].Sessions}
	if codes[http.StatusSeeOther] != 5 || codes[http.StatusTooManyRequests] != 5 || perReplica[0] == 0 || perReplica[1] == 0 {
		t.Errorf("10 clicks (%v per webhook replica) answered %v; want 5 redirects and 5 429s across both replicas", perReplica, codes)
	}

	// Sessions for the desk: a code no retry can fix opens a review.
	var reviews []string
	for range 2 {
		vs := "vs_scale_desk_" + testevent.RandomID(10)
		if err := sc.register(ctx, vs); err != nil {
			t.Fatal(err)
		}
		sc.sendThrough(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "under_supported_age"})
		reviews = append(reviews, vs)
	}

	// A session whose user's address the mail server refuses for good:
	// it waits for the user with the issue email_refused, which the
	// issues gauge must count at the end.
	vsRefused := "vs_scale_refused_" + testevent.RandomID(10)
	if code := sc.adminCall(http.MethodPut, "/admin/sessions/"+vsRefused, map[string]string{"email": "user@refused.example"},
		nil, nil); code/100 != 2 {
		t.Fatalf("register %s: %d", vsRefused, code)
	}
	sc.sendThrough(testevent.Options{Type: "requires_input", SessionID: vsRefused, ErrorCode: "document_expired"})

	// The load, through the balancer, registered through the admin API:
	// every event delivered twice, signed afresh, shuffled (the storm),
	// redelivered after a 5xx or no answer as Stripe does.
	prefix := "vs_scale_" + testevent.RandomID(8) + "_"
	load := loadgen.Config{Prefix: prefix, Sessions: 40, Rate: 2.5, Copies: 2, Shuffle: true, Redeliver: 3 * time.Minute,
		Register: sc.register}
	if scaleLong {
		load.Sessions, load.Rate, load.Copies = 200, 8, 3
	}
	load.WebhookURL, load.Secret = s.webhookURL, secret
	type outcome struct {
		res loadgen.Result
		err error
	}
	loadDone := make(chan outcome, 1)
	go func() {
		r, err := loadgen.Run(context.Background(), load)
		loadDone <- outcome{r, err}
	}()
	var done *outcome
	running := func() string { // whether the load still ran when a fault was proven
		if done == nil {
			select {
			case o := <-loadDone:
				done = &o
			default:
				return "during the load"
			}
		}
		return "after the load"
	}
	var faults []string
	var timeline []string // when each worker went away, for a duplicate's story
	mark := func(what string) { timeline = append(timeline, time.Now().UTC().Format("15:04:05.000")+" "+what) }

	// Desk sign-ins and decisions through the balancer: the sign-in starts
	// on one admin replica and its callback lands on another; the review
	// page (its CSRF token) and the decision's POST too.
	for _, vs := range reviews {
		s.waitRow(vs, workflows.StatusInReview)
	}
	before = sc.servers(t)
	signIns, decisions := 0, 0
	for i, email := range []string{"ann@example.com", "bob@example.com"} {
		p := s.signIn(t, email)
		signIns++
		if code, page := p.decide(reviews[i], "approve"); code != http.StatusSeeOther {
			t.Errorf("%s's decision through the balancer: %d\n%s", email, code, page)
			continue
		}
		decisions++
	}
	after = sc.servers(t)
	deskPerReplica := []int{after["admin/admin-1"].Sessions - before["admin/admin-1"].Sessions,
		after["admin/admin-2"].Sessions - before["admin/admin-2"].Sessions}
	if deskPerReplica[0] == 0 || deskPerReplica[1] == 0 {
		t.Errorf("the desk's requests went to the admin replicas %v times; want both", deskPerReplica)
	}
	for _, vs := range reviews {
		s.waitRow(vs, workflows.StatusVerified)
	}

	// Fault 1: SIGKILL a worker while it has work, then start it again.
	eventually(t, "the load under way", func() error {
		var n int
		err := s.store.DB().QueryRowContext(ctx, `SELECT count(*) FROM sessions WHERE session_id >= $1 AND session_id < $2 AND status = 'verified'`,
			prefix, prefix+"~").Scan(&n)
		if err == nil && n < 3 {
			err = errNotYet
		}
		return err
	})
	w := sc.workers[0]
	pid := w.p.Pid()
	w.p.Kill()
	mark(w.name + " SIGKILLed")
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("worker %d still exists after SIGKILL: %v", pid, err)
	}
	faults = append(faults, "worker SIGKILL "+running())
	atRisk := map[string]bool{}        // sent, not yet recorded when it died: these alone may arrive twice
	time.Sleep(500 * time.Millisecond) // what was on the wire lands
	for id := range sc.unrecordedEmails(prefix) {
		atRisk[id] = true
	}
	w.start(t, sc.bin)
	w.waitReady(t)

	// Fault 2: stop a webhook replica; its port closes and HAProxy takes it
	// out; deliveries it answered 5xx (or not at all) are redelivered.
	wh := sc.webhooks[1]
	wh.p.Stop()
	<-wh.p.Exited()
	portClosed(t, wh.addr)
	sc.waitServer(t, "webhook/webhook-2", "DOWN")
	faults = append(faults, "webhook replica stopped "+running())

	// Fault 3: a deploy. A freshly built binary; the replay gate against
	// the cluster; then every worker restarted on it, one by one.
	fresh := buildCommand(t, "../cmd/identity-verification")
	lines, code, stderr := s.replayCommand(t, fresh)
	if code != 0 {
		t.Fatalf("the replay gate failed (%d): %s\n%s", code, strings.Join(lines, "\n"), stderr)
	}
	for _, w := range sc.workers {
		old := w.p
		mark(w.name + " stopping (SIGTERM)")
		old.Stop()
		<-old.Exited()
		mark(w.name + " stopped")
		w.start(t, fresh)
		w.waitReady(t)
	}
	faults = append(faults, fmt.Sprintf("rolling deploy of %d workers (replay gate: %s) %s", len(sc.workers), lines[len(lines)-1], running()))

	// Fault 4: kill a Temporal node; the other serves alone (a session goes
	// through end to end meanwhile); then bring it back.
	sc.cluster.Kill(0)
	mark("Temporal node 1 SIGKILLed")
	portClosed(t, sc.cluster.Addresses()[0])
	sc.waitServer(t, "temporal/temporal-1", "DOWN")
	vsAlone := "vs_scale_alone_" + testevent.RandomID(10)
	if err := sc.register(ctx, vsAlone); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a delivery accepted by the one node left", func() error {
		payload, err := testevent.Build(testevent.Options{Type: "verified", SessionID: vsAlone})
		if err != nil {
			return err
		}
		code, _, err := testevent.Send(ctx, http.DefaultClient, s.webhookURL, secret, payload)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d", code)
		}
		return err
	})
	s.waitRow(vsAlone, workflows.StatusVerified)
	faults = append(faults, "Temporal node killed "+running())
	if err := sc.cluster.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	sc.waitServer(t, "temporal/temporal-1", "UP")
	wh.start(t, fresh)
	wh.waitReady(t)
	sc.waitServer(t, "webhook/webhook-2", "UP")

	// The balance.
	if done == nil {
		o := <-loadDone
		done = &o
	}
	if done.err != nil {
		t.Fatal(done.err)
	}
	res := &done.res
	if res.Void != "" || res.Failed != 0 || res.Accepted != res.Sent {
		t.Errorf("the load did not balance at the webhook: sent %d, accepted %d, refused %d, failed %d %v: %s",
			res.Sent, res.Accepted, res.Refused, res.Failed, res.Errors, res.Void)
	}
	b := s.count("scale-out", sc.mail, *res, s.settle(res.Plan, 3*time.Minute))
	b.faults = len(faults)
	copies := 0
	for id, n := range b.emailCopies {
		copies += n
		if !atRisk[id] {
			t.Errorf("email %s arrived %d times, though the ledger held it when the worker was killed; its copies arrived %v; faults at %q",
				id, n+1, sc.arrivals(id), timeline)
		}
	}
	b.extra = fmt.Sprintf("faults: %s; 5xx redelivered %d; sessions created through the admin API %d; desk sign-ins %d, decisions %d (requests per admin replica %v); retry-link clicks %v (per webhook replica %v)",
		strings.Join(faults, ", "), res.Redelivered, len(created), signIns, decisions, deskPerReplica, codes, perReplica)
	t.Log(b)
	if b.lost != 0 || b.stuck != 0 || b.recorded != b.events || b.delivered != b.emails || b.duplicates != copies {
		t.Errorf("the balance is not exact: %s", b)
		sc.explainMail(t, res.Plan)
	}
	if signIns != 2 || decisions != 2 {
		t.Errorf("desk: %d sign-ins and %d decisions worked; want 2 and 2", signIns, decisions)
	}
	sc.checkClusterJobs(t)
	if scaleLong {
		sc.throughput(t)
	}
}

// startScale starts the topology on the PostgreSQL server at pg.
func startScale(t *testing.T, pg string) *scale {
	t.Helper()
	ctx := context.Background()
	wd, _ := os.Getwd()
	root, err := devstack.Root(wd)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "scale"
	cluster, err := devstack.StartTemporalCluster(ctx, root, components.bins["temporal"], t.TempDir(), pg, 2, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	sc := &scale{cluster: cluster, bin: buildCommand(t, "../cmd/identity-verification")}
	logs := t.TempDir()
	newReplica := func(role string, i int) *replica {
		r := &replica{role: role, name: fmt.Sprintf("%s-%d", role, i+1), log: filepath.Join(logs, fmt.Sprintf("%s-%d.log", role, i+1))}
		if role != "worker" {
			port, err := devstack.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			r.addr = fmt.Sprintf("127.0.0.1:%d", port)
		}
		port, err := devstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		r.ops = fmt.Sprintf("http://127.0.0.1:%d", port)
		return r
	}
	var webhookAddrs, adminAddrs []string
	for i := range 2 {
		sc.webhooks = append(sc.webhooks, newReplica("webhook", i))
		webhookAddrs = append(webhookAddrs, sc.webhooks[i].addr)
		sc.admins = append(sc.admins, newReplica("admin", i))
		adminAddrs = append(adminAddrs, sc.admins[i].addr)
	}
	for i := range 3 {
		sc.workers = append(sc.workers, newReplica("worker", i))
	}
	sc.haproxy, err = devstack.StartHAProxy(ctx, haproxyPath, t.TempDir(), devstack.HAProxyConfig{Webhooks: webhookAddrs,
		Admins: adminAddrs, Temporal: cluster.Addresses()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.haproxy.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range append(append(append([]*replica{}, sc.webhooks...), sc.admins...), sc.workers...) {
				t.Logf("the end of %s's log:\n%s", r.name, logTail(r.log))
			}
		}
	})
	callback := sc.haproxy.AdminURL + config.DeskCallbackPath
	dexPort, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dex, err := devstack.StartDex(ctx, components.bins["dex"], t.TempDir(), dexPort,
		devstack.DexClient{ID: "review-desk", Secret: deskSecret, RedirectURIs: []string{callback}}, devstack.DevUsers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dex.Stop)
	smtpPort, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	apiPort, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	sc.mail, err = devstack.StartMailpit(ctx, components.bins["mailpit"], t.TempDir(), smtpPort, apiPort,
		"--smtp-allowed-recipients", `@example\.com$`, "--max", "0") // keep every message: the balance counts them
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.mail.Stop)
	links := startSessionProxy(t) // a session's URL for the retry links
	dbURL := storetest.FreshPostgresSchema(t, pg)
	base := config.Map{
		"TEMPORAL_ADDRESS":      sc.haproxy.TemporalAddress,
		"TEMPORAL_NAMESPACE":    ns,
		"DATABASE_URL":          dbURL,
		"SMTP_URL":              "smtp://" + sc.mail.SMTPAddr,
		"EMAIL_FROM":            "identity@example.com",
		"OPS_EMAIL":             "ops-scale@example.com",
		"STRIPE_API_BASE":       components.stripe.URL,
		"STRIPE_API_KEY":        "sk_test_e2e",
		"STRIPE_WEBHOOK_SECRET": secret,
		"RETRY_LINK_SECRET":     "e2e-link-secret",
		"ADMIN_TOKEN":           adminToken,
		"ENVIRONMENT":           "development",
		"PUBLIC_BASE_URL":       sc.haproxy.WebhookURL,
		"LOG_LEVEL":             "warn",
		"SHUTDOWN_GRACE":        "5s",
		"RECONCILE_EVERY":       "1h",
	}
	envOf := func(r *replica) []string {
		m := config.Map{}
		for k, v := range base {
			m[k] = v
		}
		m["OPS_ADDR"] = strings.TrimPrefix(r.ops, "http://")
		switch r.role {
		case "webhook":
			m["LISTEN_ADDR"] = r.addr
			m["STRIPE_API_BASE"] = links.URL // retry links fetch a session's URL
			m["LOG_LEVEL"] = "info"          // its limit's database counting, which the clicks wait for
		case "admin":
			m["ADMIN_ADDR"] = r.addr
			for k, v := range map[string]string{"OIDC_ISSUER": dex.Issuer, "OIDC_CLIENT_ID": dex.ClientID,
				"OIDC_CLIENT_SECRET": dex.ClientSecret, "OIDC_REDIRECT_URL": callback, "REVIEWER_GROUPS": "reviewers",
				"ADMIN_GROUPS": "admins", "TRUSTED_PROXIES": "127.0.0.1"} {
				m[k] = v
			}
		}
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
		for k, v := range m {
			env = append(env, k+"="+v)
		}
		return env
	}
	all := append(append(append([]*replica{}, sc.workers...), sc.webhooks...), sc.admins...)
	for _, r := range all {
		r.env = envOf(r)
		r.start(t, sc.bin)
	}
	for _, r := range all {
		r.waitReady(t)
	}
	for i := range 2 {
		sc.waitServer(t, fmt.Sprintf("webhook/webhook-%d", i+1), "UP")
		sc.waitServer(t, fmt.Sprintf("admin/admin-%d", i+1), "UP")
		sc.waitServer(t, fmt.Sprintf("temporal/temporal-%d", i+1), "UP")
	}
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tc, err := client.Dial(client.Options{HostPort: sc.haproxy.TemporalAddress, Namespace: ns, Logger: devstack.QuietLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	sc.stack = &stack{t: t, db: "postgres", dex: dex, webhookURL: sc.haproxy.WebhookURL + "/webhooks/stripe",
		adminURL: sc.haproxy.AdminURL, store: st, temporal: tc, namespace: ns, env: base, stopped: make(chan struct{})}
	return sc
}

// adminCall calls the admin API through the balancer with ADMIN_TOKEN.
func (sc *scale) adminCall(method, path string, body any, headers map[string]string, out any) int {
	sc.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, sc.haproxy.AdminURL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		sc.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// register registers a session's user through the admin API behind the
// balancer (the business's backend), so every email is owed to an address
// of its own.
func (sc *scale) register(ctx context.Context, sessionID string) error {
	body, _ := json.Marshal(map[string]string{"email": strings.ToLower(sessionID) + "@example.com"})
	var last error
	for range 20 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, sc.haproxy.AdminURL+"/admin/sessions/"+sessionID, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("PUT /admin/sessions/%s: %d", sessionID, resp.StatusCode)
			if resp.StatusCode < 500 {
				return err
			}
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	return last
}

// sendThrough sends an event through the balancer, expecting 200.
func (sc *scale) sendThrough(o testevent.Options) { sc.stack.send(o) }

// arrivals are the times Mailpit received the copies of an email.
func (sc *scale) arrivals(messageID string) []string {
	ctx := context.Background()
	tally, err := sc.mail.Tally(ctx)
	if err != nil {
		return []string{err.Error()}
	}
	msgs, err := sc.mail.Messages(ctx, tally.To[messageID])
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, m := range msgs {
		if m.MessageID == messageID {
			out = append(out, m.Created.UTC().Format("15:04:05.000"))
		}
	}
	return out
}

// explainMail logs, for each session whose user got other emails than
// its ledger holds, the messages (subject, Message-ID, arrival) and the
// ledger's rows (kind, key, status), and the session's history of events.
func (sc *scale) explainMail(t *testing.T, plan []loadgen.Session) {
	t.Helper()
	ctx := context.Background()
	for _, ses := range plan {
		msgs, err := sc.mail.Messages(ctx, strings.ToLower(ses.ID)+"@example.com")
		if err != nil {
			t.Log(err)
			return
		}
		emails, err := sc.store.Emails(ctx, ses.ID)
		if err != nil {
			t.Log(err)
			return
		}
		keys := map[string]bool{}
		for _, e := range emails {
			keys[messageID(e.Key)] = true
		}
		odd := len(msgs) != len(emails)
		for _, m := range msgs {
			odd = odd || !keys[m.MessageID]
		}
		if !odd {
			continue
		}
		var lines []string
		for _, m := range msgs {
			lines = append(lines, fmt.Sprintf("mail %s %q %s (in the ledger: %v)", m.Created.UTC().Format("15:04:05.000"), m.Subject, m.MessageID, keys[m.MessageID]))
		}
		for _, e := range emails {
			lines = append(lines, fmt.Sprintf("ledger %s %s %s %s", e.Kind, e.Key, e.Status, messageID(e.Key)))
		}
		t.Logf("%s (%s, events %v):\n%s", ses.ID, ses.Kind, ses.EventIDs, strings.Join(lines, "\n"))
	}
}

// waitMail waits for the first email to a recipient in this run's Mailpit.
func (sc *scale) waitMail(t *testing.T, to string) devstack.Message {
	t.Helper()
	var got []devstack.Message
	eventually(t, "an email to "+to, func() (err error) {
		if got, err = sc.mail.Messages(context.Background(), to); err == nil && len(got) == 0 {
			err = errNotYet
		}
		return err
	})
	return got[0]
}

// unrecordedEmails are the Message-IDs in this run's Mailpit, to the
// users of sessions with the prefix, whose email the ledger does not say
// was sent (the fault suite's stack.unrecordedEmails, on this Mailpit).
func (sc *scale) unrecordedEmails(prefix string) map[string]bool {
	sc.t.Helper()
	ctx := context.Background()
	rows, err := sc.store.DB().QueryContext(ctx, `SELECT idempotency_key FROM emails WHERE session_id >= $1 AND session_id < $2 AND status = 'sent'`,
		prefix, prefix+"~")
	if err != nil {
		sc.t.Fatal(err)
	}
	defer rows.Close()
	recorded := map[string]bool{}
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			sc.t.Fatal(err)
		}
		recorded[messageID(key)] = true
	}
	if err := rows.Err(); err != nil {
		sc.t.Fatal(err)
	}
	tally, err := sc.mail.Tally(ctx)
	if err != nil {
		sc.t.Fatal(err)
	}
	out := map[string]bool{}
	for id := range tally.ByMessageID {
		if !recorded[id] && strings.HasPrefix(tally.To[id], strings.ToLower(prefix)) {
			out[id] = true
		}
	}
	return out
}

// servers reads HAProxy's view of its backend servers.
func (sc *scale) servers(t *testing.T) map[string]devstack.ServerState {
	t.Helper()
	s, err := sc.haproxy.Servers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitServer waits until HAProxy says the server is in status (UP, DOWN).
func (sc *scale) waitServer(t *testing.T, server, status string) {
	t.Helper()
	eventually(t, "HAProxy: "+server+" "+status, func() error {
		if got := sc.servers(t)[server].Status; got != status {
			return fmt.Errorf("%q", got)
		}
		return nil
	})
}

// checkClusterJobs checks the once-per-cluster jobs: one reconcile
// schedule, one lease holder (a live worker), and the issues gauge
// exported by that worker alone, agreeing with the visibility count.
func (sc *scale) checkClusterJobs(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	it, err := sc.temporal.ScheduleClient().List(ctx, client.ScheduleListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	schedules := 0
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e.ID == reconcile.ScheduleID {
			schedules++
		}
	}
	if _, err := sc.temporal.ScheduleClient().GetHandle(ctx, reconcile.ScheduleID).Describe(ctx); err != nil || schedules != 1 {
		t.Errorf("%d reconcile schedules listed, describe: %v; want one", schedules, err)
	}
	holder, until, err := sc.store.LeaseHolder(ctx, worker.ClusterJobsLease)
	if err != nil || !until.After(time.Now()) {
		t.Fatalf("the cluster jobs' lease: %q until %v, %v; want held", holder, until, err)
	}
	var holding *replica
	for _, w := range sc.workers {
		if strings.Contains(holder, fmt.Sprintf("/%d/", w.p.Pid())) {
			holding = w
		}
	}
	if holding == nil {
		t.Fatalf("the lease's holder %q is no running worker", holder)
	}
	// The gauge counts once a minute: wait (bounded) until the holder's
	// figures are the visibility count's, while no other worker exports any.
	deadline := time.Now().Add(3 * time.Minute)
	var gauge string // the holder's series
	for {
		err := func() error {
			for _, w := range sc.workers {
				m, err := scrape(w.ops)
				if err != nil {
					return err
				}
				exports := strings.Contains(m, "identity_sessions_with_issue{")
				if w != holding && exports {
					return fmt.Errorf("%s exports the issues gauge without the lease", w.name)
				}
				if w != holding {
					continue
				}
				gauge = strings.Join(strings.Fields(grepLines(m, "identity_sessions_with_issue{")), " ")
				for _, code := range worker.IssueCodes {
					resp, err := sc.temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: sc.namespace,
						Query: "ExecutionStatus = 'Running' AND " + workflows.SAIssues.GetName() + " = '" + code + "'"})
					if err != nil {
						return err
					}
					if code == workflows.IssueEmailRefused && resp.GetCount() == 0 {
						return fmt.Errorf("visibility counts no session with %s yet", code)
					}
					line := fmt.Sprintf(`identity_sessions_with_issue{code=%q} %d`, code, resp.GetCount())
					if !strings.Contains(m, line+"\n") {
						return fmt.Errorf("%s: no %q in %s", w.name, line, grepLines(m, "identity_sessions_with_issue{"))
					}
				}
			}
			return nil
		}()
		if err == nil {
			t.Logf("cluster jobs: one reconcile schedule; the lease held by %s, whose issues gauge agrees with visibility (%s); the other workers export none",
				holding.name, gauge)
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the issues gauge: %v", err)
			return
		}
		time.Sleep(time.Second)
	}
}

// throughput measures the verified sessions per second through the
// balancer with one worker (the other two stopped) and with three, on the
// same cluster, and logs both with the CPU each kind of process used
// meanwhile and how busy the machine was (what bounds the rate).
func (sc *scale) throughput(t *testing.T) {
	t.Helper()
	type usage struct {
		cpu  map[string]time.Duration // by kind of process
		busy float64                  // the machine's busy share, all cores
	}
	measure := func(workers int) (loadgen.Result, usage) {
		kinds := map[string][]*devstack.Process{"temporal": {sc.cluster.Nodes[0].Process, sc.cluster.Nodes[1].Process}}
		for _, r := range append(append(append([]*replica{}, sc.webhooks...), sc.admins...), sc.workers[:workers]...) {
			kinds[r.role] = append(kinds[r.role], r.p)
		}
		cpu := func() map[string]time.Duration {
			out := map[string]time.Duration{}
			for kind, ps := range kinds {
				for _, p := range ps {
					d, err := p.CPUTime()
					if err != nil {
						t.Fatal(err)
					}
					out[kind] += d
				}
			}
			return out
		}
		before := cpu()
		busyBefore, totalBefore := machineCPU(t)
		res, err := loadgen.Run(context.Background(), loadgen.Config{WebhookURL: sc.webhookURL, Secret: secret,
			Sessions: 300, Concurrency: 32, DB: sc.store.DB(), Settle: 10 * time.Minute, Register: sc.contactFor,
			Prefix: fmt.Sprintf("vs_scale_tp%d_%s_", workers, testevent.RandomID(6))})
		if err != nil {
			t.Fatal(err)
		}
		if res.Void != "" || res.Failed != 0 {
			t.Errorf("throughput with %d workers: void %q, failed %d", workers, res.Void, res.Failed)
		}
		after := cpu()
		busyAfter, totalAfter := machineCPU(t)
		u := usage{cpu: map[string]time.Duration{}, busy: (busyAfter - busyBefore) / (totalAfter - totalBefore)}
		for k := range after {
			u.cpu[k] = after[k] - before[k]
		}
		return res, u
	}
	for _, w := range sc.workers[1:] {
		w.p.Stop()
		<-w.p.Exited()
	}
	one, oneCPU := measure(1)
	for _, w := range sc.workers[1:] {
		w.start(t, sc.bin)
		w.waitReady(t)
	}
	three, threeCPU := measure(3)
	for _, r := range []struct {
		n   int
		res loadgen.Result
		u   usage
	}{{1, one, oneCPU}, {3, three, threeCPU}} {
		perSession := func(kind string) string {
			return (r.u.cpu[kind] / time.Duration(max(r.res.Persisted, 1))).Round(100 * time.Microsecond).String()
		}
		t.Logf("throughput through the balancer with %d worker(s): %d sessions, ack %.0f events/s (p50 %s, p99 %s), %.1f verified sessions/s end to end (p50 %s); CPU per session: Temporal nodes %s, workers %s, webhooks %s; the machine %.0f %% busy",
			r.n, r.res.Persisted, r.res.AckPerSecond(), r.res.Ack.P50.Round(time.Millisecond), r.res.Ack.P99.Round(time.Millisecond),
			r.res.SessionsPerSecond(), r.res.EndToEnd.P50.Round(time.Millisecond), perSession("temporal"), perSession("worker"),
			perSession("webhook"), 100*r.u.busy)
	}
}

// machineCPU reads the machine's CPU time, busy and in all, in ticks of
// all cores (/proc/stat: everything but idle and iowait is busy).
func machineCPU(t *testing.T) (busy, total float64) {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		var v float64
		fmt.Sscan(f, &v)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// scrape GETs a process's metrics.
func scrape(ops string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(ops + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// logTail is the end of a log file.
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
