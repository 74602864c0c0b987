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
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	_ "github.com/jackc/pgx/v5/stdlib"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"identityverification/devstack"
	"identityverification/store"
	"identityverification/testevent"
	"identityverification/workflows"
)

// TestProductionTopology runs the shape docker-compose.yml describes, natively
// (there is no Docker engine here): Temporal Server 1.29.1 on PostgreSQL
// (TEST_DATABASE_URL's server), its schema set up with its SQL tool and the
// namespace and search attributes created as the compose job creates them;
// the service's role and database made by the compose file's
// postgresql-setup job; the worker, the webhook and the admin as three
// processes of the built binary, each with the environment the compose
// file gives its service (loaded with compose-go from .env.example as it
// is: the dev stack), the compose hosts mapped to 127.0.0.1. A session then
// goes through it: registered through the admin API with a key made by
// `api-key create`, failed with a code that opens a review, decided through
// the admin API, verified in the database, emailed through Mailpit. `make topology` runs it alone.
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
	// admin-tools services make it, with the dynamic config the compose
	// file gives it (none), not the tests' read-through of search
	// attributes; then, as the namespace job does, a wait until a query on
	// every search attribute succeeds.
	port, _ := devstack.FreePort()
	srv, err := devstack.StartTemporalServerWithDynamicConfig(ctx, root, components.bins["temporal"], t.TempDir(), pg, port,
		composeDynamicConfig(t, project), ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	tc, err := client.Dial(client.Options{HostPort: srv.Address, Namespace: ns, Logger: devstack.QuietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	var conds []string
	for _, sa := range workflows.SearchAttributes {
		if sa.Type == "Int" {
			conds = append(conds, sa.Name+" = 0")
		} else {
			conds = append(conds, sa.Name+" = 'none'")
		}
	}
	eventually(t, "a query on every search attribute", func() error {
		_, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: ns, PageSize: 1,
			Query: strings.Join(conds, " AND ")})
		return err
	})

	// The service's role and database, made by the postgresql-setup job's
	// script and SQL (run here with psql) under names of this run's own:
	// the service connects as that role, as in the compose file, not as
	// the superuser.
	dbURL := postgresSetup(t, project, pg, env["worker"]["DATABASE_URL"])

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
	cmd := exec.Command(bin, "api-key", "create", "--name", "backend", "--scopes", "sessions:register")
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
	// The admin API answers ADMIN_TOKEN 503 until the admin process's
	// database is open (it may wait for the worker's migration); the key,
	// which lives in that database, then works.
	eventually(t, "the admin API", func() error {
		if code := call(adminToken, http.MethodGet, "/admin/reviews", ""); code != http.StatusOK {
			return fmt.Errorf("%d", code)
		}
		return nil
	})
	eventually(t, "registration through the admin API", func() error {
		switch code := call(key, http.MethodPut, "/admin/sessions/"+vs, `{"email":"`+to+`"}`); {
		case code/100 == 2:
			return nil
		case code == http.StatusServiceUnavailable:
			return fmt.Errorf("%d", code)
		default:
			b, _ := os.ReadFile(filepath.Join(logs, "admin.log"))
			t.Fatalf("registration through the admin API: %d; the admin's log:\n%s", code, b)
			return nil
		}
	})
	// A code that opens a review at once and is no fraud signal: one
	// approval decides it (a fraud code's review needs two people, and the
	// admin token is one).
	send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "under_supported_age"})
	waitStatus(vs, workflows.StatusInReview)
	if code := call(adminToken, http.MethodPost, "/admin/sessions/"+vs+"/review", `{"decision":"approve","reviewer":"ops-topology"}`); code != http.StatusOK {
		t.Fatalf("decision through the admin API: %d", code)
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
	// Without the tests' search-attribute read-through, a workflow task
	// that met a stale mapping would fail and be retried: count them.
	failed := 0
	it := tc.GetWorkflowHistory(ctx, workflows.WorkflowID(vs), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_FAILED {
			failed++
		}
	}
	t.Logf("through the production topology (Temporal Server 1.29.1 on PostgreSQL, worker, webhook and admin processes): %s reviewed, approved, verified; emails %q; failed workflow tasks %d",
		vs, subjects, failed)
}

// composeDynamicConfig is the dynamic config the compose file gives the
// temporal service: the content of the config mounted where its
// DYNAMIC_CONFIG_FILE_PATH points, or none.
func composeDynamicConfig(t *testing.T, project *types.Project) string {
	t.Helper()
	s := project.Services["temporal"]
	path := s.Environment["DYNAMIC_CONFIG_FILE_PATH"]
	if path == nil || *path == "" {
		return ""
	}
	for _, c := range s.Configs {
		if c.Target == *path {
			return project.Configs[c.Source].Content
		}
	}
	t.Fatalf("temporal's DYNAMIC_CONFIG_FILE_PATH %s is no config of the compose file", *path)
	return ""
}

// loadCompose loads docker-compose.yml as `docker compose` would with
// .env.example as it is for .env: the dev stack (its COMPOSE_PROFILES turns
// on the dev profile, its placeholders are taken in development), and
// nothing from this process's environment.
func loadCompose(t *testing.T, root string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(nil), cli.WithEnvFiles(filepath.Join(root, ".env.example")), cli.WithDotEnv,
		cli.WithDefaultProfiles())
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Services["stripe-mock"]; !ok {
		t.Fatal(".env.example as it is does not turn on the dev profile (stripe-mock)")
	}
	return p
}

// postgresSetup runs the compose file's postgresql-setup job (its script,
// with its SQL, on this machine's psql) against the PostgreSQL server at
// pg, under role and database names of this run's own, and returns the
// service's DATABASE_URL (composeURL, the compose file's) mapped onto the
// role and database it made.
func postgresSetup(t *testing.T, project *types.Project, pg, composeURL string) string {
	t.Helper()
	job, ok := project.Services["postgresql-setup"]
	if !ok || len(job.Configs) != 1 {
		t.Fatal("docker-compose.yml has no postgresql-setup job with its SQL")
	}
	sqlFile := filepath.Join(t.TempDir(), "postgresql-setup.sql")
	if err := os.WriteFile(sqlFile, []byte(project.Configs[job.Configs[0].Source].Content), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for k, v := range job.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	c, err := url.Parse(composeURL)
	if err != nil || c.User.Username() != env["SERVICE_ROLE"] || strings.TrimPrefix(c.Path, "/") != env["SERVICE_DB"] {
		t.Fatalf("the service's DATABASE_URL %s is not postgresql-setup's role %s and database %s", c.Redacted(), env["SERVICE_ROLE"], env["SERVICE_DB"])
	}
	u, _ := url.Parse(pg)
	suffix := strings.ToLower(testevent.RandomID(8))
	pass, _ := u.User.Password()
	for k, v := range map[string]string{"TEMPORAL_ROLE": "topology_temporal_" + suffix, "TEMPORAL_DB": "topology_temporal_" + suffix,
		"VISIBILITY_DB": "topology_visibility_" + suffix, "SERVICE_ROLE": "topology_service_" + suffix,
		"SERVICE_DB": "topology_service_" + suffix, "PGHOST": u.Hostname(), "PGPORT": u.Port(), "PGUSER": u.User.Username(),
		"PGDATABASE": strings.TrimPrefix(u.Path, "/"), "POSTGRES_PASSWORD": pass} {
		env[k] = v
	}
	admin, err := sql.Open("pgx", pg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, db := range []string{env["TEMPORAL_DB"], env["VISIBILITY_DB"], env["SERVICE_DB"]} {
			admin.Exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)")
		}
		for _, role := range []string{env["TEMPORAL_ROLE"], env["SERVICE_ROLE"]} {
			admin.Exec("DROP ROLE IF EXISTS " + role)
		}
		admin.Close()
	})
	script := strings.ReplaceAll(job.Command[0], job.Configs[0].Target, sqlFile)
	cmd := exec.Command(job.Entrypoint[0], append(slices.Clone(job.Entrypoint[1:]), script)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postgresql-setup: %v\n%s", err, out)
	}
	// The compose URL with this server's address and this run's names.
	servicePass, _ := c.User.Password()
	u.User = url.UserPassword(env["SERVICE_ROLE"], servicePass)
	u.Path = "/" + env["SERVICE_DB"]
	return u.String()
}
