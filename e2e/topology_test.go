package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	_ "github.com/jackc/pgx/v5/stdlib"

	"identityverification/devstack"
	"identityverification/store"
	"identityverification/testevent"
	"identityverification/workflows"
)

// TestProductionTopology runs the shape docker-compose.yml describes, natively
// (there is no Docker engine here): Temporal Server 1.29.1 on PostgreSQL
// (TEST_DATABASE_URL's server), its schema set up with its SQL tool and the
// namespace and search attributes created as the compose job creates them;
// the worker, the webhook and the admin as three processes of the built
// binary, each with the environment the compose file gives its service
// (loaded with compose-go from .env.example), the compose hosts mapped to
// 127.0.0.1. A session then goes through it: registered through the admin
// API with a key made by `api-key create`, failed with a fraud code that
// opens a high-risk review, approved through the admin API by two
// principals (ADMIN_TOKEN and the key: four eyes), verified in the
// database, emailed through Mailpit. `make topology` runs it alone.
func TestProductionTopology(t *testing.T) {
	pg := os.Getenv("TEST_DATABASE_URL")
	if pg == "" {
		t.Skip("needs TEST_DATABASE_URL (the PostgreSQL server Temporal Server and the service run on)")
	}
	ctx := context.Background()
	wd, _ := os.Getwd()
	root, err := devstack.Root(wd)
	if err != nil {
		t.Fatal(err)
	}
	project := loadCompose(t, root)
	env := map[string]map[string]string{}
	for _, name := range []string{"worker", "webhook", "admin"} {
		s, ok := project.Services[name]
		if !ok {
			t.Fatalf("docker-compose.yml has no %s service", name)
		}
		env[name] = map[string]string{}
		for k, v := range s.Environment {
			if v != nil && *v != "" {
				env[name][k] = *v
			}
		}
	}
	if env["admin"]["ADMIN_TOKEN"] == "" { // none unless the operator sets it in .env, as here
		env["admin"]["ADMIN_TOKEN"] = "topology-admin-token-" + testevent.RandomID(24)
	}
	ns := env["worker"]["TEMPORAL_NAMESPACE"]
	if ns == "" {
		ns = "default"
	}

	// Temporal Server on PostgreSQL, as the compose file's temporal and
	// admin-tools services make it.
	port, _ := devstack.FreePort()
	srv, err := devstack.StartTemporalServer(ctx, root, components.bins["temporal"], t.TempDir(), pg, port, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	// The service's own database, fresh, on the same server.
	dbName := "topology_" + strings.ToLower(testevent.RandomID(8))
	admin, err := sql.Open("pgx", pg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)") })
	u, _ := url.Parse(pg)
	u.Path = "/" + dbName
	dbURL := u.String()

	// The compose hosts, mapped to the components started here.
	ports := map[string]int{}
	for _, name := range []string{"listen", "admin", "ops-webhook", "ops-worker", "ops-admin"} {
		ports[name], _ = devstack.FreePort()
	}
	mapped := func(role string) []string {
		out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
		for k, v := range env[role] {
			switch k {
			case "TEMPORAL_ADDRESS":
				v = srv.Address
			case "DATABASE_URL":
				if !strings.Contains(v, "@postgresql:") {
					t.Errorf("%s's DATABASE_URL does not point at the postgresql service", role)
				}
				v = dbURL
			case "SMTP_URL":
				v = strings.Replace(v, "mailpit:1025", components.mailpit.SMTPAddr, 1)
			case "STRIPE_API_BASE":
				v = strings.Replace(v, "http://stripe-mock:12111", components.stripe.URL, 1)
			case "LISTEN_ADDR":
				v = fmt.Sprintf("127.0.0.1:%d", ports["listen"])
			case "ADMIN_ADDR":
				v = fmt.Sprintf("127.0.0.1:%d", ports["admin"])
			case "OPS_ADDR":
				v = fmt.Sprintf("127.0.0.1:%d", ports["ops-"+role])
			case "PUBLIC_BASE_URL":
				v = fmt.Sprintf("http://127.0.0.1:%d", ports["listen"])
			}
			if strings.Contains(v, "mailpit:") || strings.Contains(v, "temporal:7233") || strings.Contains(v, "@postgresql:") ||
				strings.Contains(v, "stripe-mock:") {
				t.Errorf("%s: %s=%s names a compose host this test does not map", role, k, v)
			}
			out = append(out, k+"="+v)
		}
		return out
	}
	bin := buildCommand(t, "../cmd/identity-verification")
	logs := t.TempDir()
	for _, role := range []string{"worker", "webhook", "admin"} {
		p, err := devstack.StartProcess(role, bin, filepath.Join(logs, role+".log"), mapped(role), role)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		opsURL := fmt.Sprintf("http://127.0.0.1:%d/readyz", ports["ops-"+role])
		eventually(t, role+" ready", func() error {
			select {
			case <-p.Exited():
				b, _ := os.ReadFile(filepath.Join(logs, role+".log"))
				t.Fatalf("%s exited:\n%s", role, b)
			default:
			}
			return devstack.HTTPOK(ctx, opsURL)
		})
	}

	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	secret, _, _ := strings.Cut(env["webhook"]["STRIPE_WEBHOOK_SECRET"], ",")
	adminToken := env["admin"]["ADMIN_TOKEN"]
	// A scoped key for the business backend, made as an operator makes it,
	// with the admin's environment.
	cmd := exec.Command(bin, "api-key", "create", "--name", "backend", "--scopes", "sessions:register,reviews:decide")
	cmd.Env = mapped("admin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("api-key create: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^key:\s+(ivk_\S+)$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("api-key create printed no key:\n%s", out)
	}
	key := string(m[1])
	webhookURL := fmt.Sprintf("http://127.0.0.1:%d/webhooks/stripe", ports["listen"])
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", ports["admin"])
	call := func(token, method, path string, body string) int {
		req, _ := http.NewRequestWithContext(ctx, method, adminURL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	send := func(o testevent.Options) {
		payload, err := testevent.Build(o)
		if err != nil {
			t.Fatal(err)
		}
		code, body, err := testevent.Send(ctx, http.DefaultClient, webhookURL, secret, payload)
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST %s: %d %s %v; want 200", o.Type, code, body, err)
		}
	}
	waitStatus := func(vs string, want workflows.Status) {
		eventually(t, vs+" "+string(want), func() error {
			row, err := st.Session(ctx, vs)
			if err != nil {
				return err
			}
			if row.Status != string(want) {
				return fmt.Errorf("row %s", row.Status)
			}
			return nil
		})
	}

	vs := "vs_topology_" + testevent.RandomID(12)
	to := strings.ToLower(vs) + "@example.com"
	if code := call(key, http.MethodPut, "/admin/sessions/"+vs, `{"email":"`+to+`"}`); code/100 != 2 {
		t.Fatalf("registration through the admin API with the key: %d", code)
	}
	send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "selfie_manipulated"})
	waitStatus(vs, workflows.StatusInReview)
	if code := call(adminToken, http.MethodPost, "/admin/sessions/"+vs+"/review", `{"decision":"approve","reviewer":"ops-topology"}`); code != http.StatusOK {
		t.Fatalf("first approval through the admin API: %d", code)
	}
	if code := call(key, http.MethodPost, "/admin/sessions/"+vs+"/review", `{"decision":"approve","reviewer":"backend-topology"}`); code != http.StatusOK {
		t.Fatalf("second approval through the admin API: %d", code)
	}
	waitStatus(vs, workflows.StatusVerified)
	var subjects []string
	eventually(t, "the emails", func() error {
		msgs, err := components.mailpit.Messages(ctx, to)
		if err != nil {
			return err
		}
		subjects = nil
		for _, m := range msgs {
			subjects = append(subjects, m.Subject)
		}
		if len(subjects) < 2 {
			return fmt.Errorf("%q so far", subjects)
		}
		return nil
	})
	t.Logf("through the production topology (Temporal Server 1.29.1 on PostgreSQL, worker, webhook and admin processes): %s reviewed, approved twice, verified; emails %q",
		vs, subjects)
}

// loadCompose loads docker-compose.yml as `docker compose --env-file
// .env.example --profile dev config` would, with the placeholder secrets
// replaced as an operator's .env replaces them (production refuses the
// placeholders), and nothing else from this process's environment.
func loadCompose(t *testing.T, root string) *types.Project {
	t.Helper()
	// And the dev profile's stripe-mock for the Stripe API, as
	// .env.example says to set it with `--profile dev`.
	env := []string{"STRIPE_WEBHOOK_SECRET=whsec_" + testevent.RandomID(40), "RETRY_LINK_SECRET=" + testevent.RandomID(40),
		"POSTGRES_PASSWORD=" + testevent.RandomID(32), "STRIPE_API_BASE=http://stripe-mock:12111"}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(env), cli.WithEnvFiles(filepath.Join(root, ".env.example")), cli.WithDotEnv,
		cli.WithProfiles([]string{"dev"}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
