package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"identityverification/codec"
	"identityverification/config"
	"identityverification/workflows"
)

// root is the repository's root, where the deployment files live.
const root = ".."

// The documents the deployment files are held to: the configuration table
// and the deployment guide.
const (
	configurationDoc = "docs/configuration.md"
	deploymentDoc    = "docs/deployment.md"
)

// ours are the services that run this repository's image, and the role
// each checks or runs: the check-config job checks both roles.
var ours = map[string]string{"worker": "worker", "webhook": "webhook", "admin": "admin", "check-config": "all"}

// builder is the one service that builds the image the others run.
const builder = "check-config"

// composeOnly are the variables the compose file reads besides the
// configuration table: they configure the other services, never ours, and
// docs/deployment.md explains them.
var composeOnly = []string{"POSTGRES_PASSWORD", "POSTGRES_TEMPORAL_PASSWORD", "POSTGRES_SERVICE_PASSWORD",
	"TEMPORAL_CSRF_COOKIE_INSECURE"}

// composeSettings are variables .env.example sets for Compose itself,
// never interpolated by the file.
var composeSettings = []string{"COMPOSE_PROFILES"}

// required are the variables without which the compose file must not load.
var required = []string{"POSTGRES_PASSWORD", "POSTGRES_TEMPORAL_PASSWORD", "POSTGRES_SERVICE_PASSWORD",
	"STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY", "RETRY_LINK_SECRET"}

// The two shapes the file is started in: .env.example as it is (the dev
// stack), and .env.example with its dev block deleted, as the operator
// does for production.
type shape int

const (
	dev shape = iota
	production
)

func (s shape) String() string {
	return [...]string{"dev (.env.example as it is)", "production (the dev block deleted)"}[s]
}

// devBlock is the heading of .env.example's dev block, which runs to the
// next heading.
const devBlock = "# --- dev: delete this block for production"

// envFile is the env file of a shape: .env.example, or a copy without its
// dev block.
func envFile(t *testing.T, sh shape) string {
	t.Helper()
	example := filepath.Join(root, ".env.example")
	if sh == dev {
		return example
	}
	var kept []string
	in := false
	for _, line := range strings.Split(readFile(t, ".env.example"), "\n") {
		switch {
		case strings.HasPrefix(line, devBlock):
			in = true
		case strings.HasPrefix(line, "# ---"):
			in = false
		}
		if !in {
			kept = append(kept, line)
		}
	}
	if len(kept) == strings.Count(readFile(t, ".env.example"), "\n")+1 {
		t.Fatalf(".env.example has no block %q", devBlock)
	}
	path := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(path, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// load loads docker-compose.yml as `docker compose --env-file FILE` would
// with the shape's env file, env overriding it (as a shell's variables
// do) and nothing from this process's environment. Without profiles, the
// file's COMPOSE_PROFILES chooses them, as Compose does.
func load(t *testing.T, sh shape, env map[string]string, profiles ...string) (*types.Project, error) {
	t.Helper()
	var kvs []string
	for k, v := range env {
		kvs = append(kvs, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(kvs),
		cli.WithEnvFiles(envFile(t, sh)),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(profiles...),
	)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

func mustLoad(t *testing.T, sh shape, env map[string]string, profiles ...string) *types.Project {
	t.Helper()
	p, err := load(t, sh, env, profiles...)
	if err != nil {
		t.Fatalf("docker-compose.yml, %s (profiles %v): %v", sh, profiles, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("no service %q (have %v)", name, p.ServiceNames())
	}
	return s
}

// environment is a service's resolved environment as a config.Map.
func environment(s types.ServiceConfig) config.Map {
	m := config.Map{}
	for k, v := range s.Environment {
		if v != nil {
			m[k] = *v
		}
	}
	return m
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tableVariables are the names in the first column of the configuration
// table (docs/configuration.md, section Variables).
func tableVariables(t *testing.T) map[string]bool {
	t.Helper()
	doc := readFile(t, configurationDoc)
	_, section, ok := strings.Cut(doc, "\n## Variables\n")
	if !ok {
		t.Fatalf("%s has no ## Variables section", configurationDoc)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	names := map[string]bool{}
	name := regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(line, "|")[1]
		for _, m := range name.FindAllStringSubmatch(first, -1) {
			names[m[1]] = true
		}
	}
	if len(names) < 30 || !names["TEMPORAL_ADDRESS"] || !names["STRIPE_WEBHOOK_SECRET"] {
		t.Fatalf("read %d variables from the table of %s: %v", len(names), configurationDoc, names)
	}
	return names
}

// exampleVariables are the variables .env.example lists, set or commented.
func exampleVariables(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	line := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=`)
	sc := bufio.NewScanner(strings.NewReader(readFile(t, ".env.example")))
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// composeVariables are the variables docker-compose.yml interpolates.
func composeVariables(t *testing.T) map[string]template.Variable {
	t.Helper()
	var dict map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, "docker-compose.yml")), &dict); err != nil {
		t.Fatal(err)
	}
	return template.ExtractVariables(dict, nil)
}

// hostPort splits an address, failing the test on a bad one.
func hostPort(t *testing.T, what, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		t.Fatalf("%s %q is not host:port", what, addr)
	}
	return h, n
}

func urlHostPort(t *testing.T, what, raw string, defaultPort int) (*url.URL, string, int) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	port := defaultPort
	if u.Port() != "" {
		port, _ = strconv.Atoi(u.Port())
	}
	return u, u.Hostname(), port
}

// published is the host port a service publishes for a container port, and
// the host address it binds ("" when it does not publish it).
func published(s types.ServiceConfig, target int) (hostIP, port string) {
	for _, p := range s.Ports {
		if int(p.Target) == target {
			return p.HostIP, p.Published
		}
	}
	return "", ""
}

func TestEveryServiceResolves(t *testing.T) {
	want := []string{"postgresql", "postgresql-setup", "temporal-admin-tools", "temporal", "temporal-create-namespace",
		"temporal-ui", "mailpit", "check-config", "worker", "webhook", "admin"}
	p := mustLoad(t, production, nil)
	if got := p.ServiceNames(); !reflect.DeepEqual(sorted(got), sorted(want)) {
		t.Errorf("services in production: %v; want %v", got, want)
	}
	if _, ok := p.DisabledServices["stripe-mock"]; !ok {
		t.Error("stripe-mock is not behind a profile")
	}
	// .env.example as it is turns the dev profile on, as `--profile dev` does.
	for what, d := range map[string]*types.Project{".env.example as it is": mustLoad(t, dev, nil),
		"--profile dev": mustLoad(t, production, nil, "dev")} {
		if got := d.ServiceNames(); !reflect.DeepEqual(sorted(got), sorted(append(want, "stripe-mock"))) {
			t.Errorf("services with %s: %v; want those and stripe-mock", what, got)
		}
	}
	dp := mustLoad(t, dev, nil)
	if s := service(t, dp, "stripe-mock"); !slices.Equal(s.Profiles, []string{"dev"}) {
		t.Errorf("stripe-mock profiles %v; want [dev]", s.Profiles)
	}
	for _, pr := range []*types.Project{p, dp} {
		for name, s := range pr.Services {
			if s.Image == "" {
				t.Errorf("%s: no image", name)
			}
			if len(s.Profiles) > 0 && s.Profiles[0] != "dev" {
				t.Errorf("%s: profiles %v: only the dev profile is expected", name, s.Profiles)
			}
		}
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestTheRequiredSecretsMustBeSet(t *testing.T) {
	for _, name := range required {
		_, err := load(t, dev, map[string]string{name: ""})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s empty: err %v; want the load refused, naming it", name, err)
		}
	}
	vars := composeVariables(t)
	for _, name := range required {
		if !vars[name].Required {
			t.Errorf("%s is read without ${%s:?...}", name, name)
		}
	}
}

func TestTheComposeFileReadsOnlyDocumentedVariables(t *testing.T) {
	table, example, vars := tableVariables(t), exampleVariables(t), composeVariables(t)
	deployment := readFile(t, deploymentDoc)
	for name := range vars {
		switch {
		case slices.Contains(composeOnly, name):
			if !strings.Contains(deployment, "`"+name+"`") {
				t.Errorf("%s: read by the compose file only, but %s does not explain it", name, deploymentDoc)
			}
		case !table[name]:
			t.Errorf("%s: read by docker-compose.yml but not in the table of %s", name, configurationDoc)
		}
		if !example[name] {
			t.Errorf("%s: read by docker-compose.yml but not listed in .env.example", name)
		}
	}
	for name := range example {
		if _, ok := vars[name]; !ok && !slices.Contains(composeSettings, name) {
			t.Errorf("%s: listed in .env.example but docker-compose.yml never reads it", name)
		}
	}
	for _, name := range composeOnly {
		if _, ok := vars[name]; !ok {
			t.Errorf("%s is no longer read: drop it from composeOnly", name)
		}
	}
}

// operatorSecrets are what an operator puts in .env in place of
// .env.example's placeholders, which production refuses.
var operatorSecrets = map[string]string{
	"STRIPE_WEBHOOK_SECRET":      "whsec_" + strings.Repeat("5e", 20),
	"STRIPE_API_KEY":             "sk_live_" + strings.Repeat("7f", 16),
	"RETRY_LINK_SECRET":          strings.Repeat("a1", 20),
	"POSTGRES_PASSWORD":          strings.Repeat("b2", 32),
	"POSTGRES_TEMPORAL_PASSWORD": strings.Repeat("c3", 32),
	"POSTGRES_SERVICE_PASSWORD":  strings.Repeat("d4", 32),
}

// The dev stack starts from .env.example as it is: the dev profile is on,
// our services reach its stripe-mock (so Stripe calls work without a
// Stripe account), and ENVIRONMENT=development takes the placeholders.
func TestTheDevStackStartsFromTheExampleAsItIs(t *testing.T) {
	p := mustLoad(t, dev, nil)
	if _, ok := p.Services["stripe-mock"]; !ok {
		t.Fatal(".env.example as it is does not start stripe-mock")
	}
	for name := range ours {
		env := environment(service(t, p, name))
		cfg, err := config.Load(env)
		if err != nil {
			t.Errorf("%s: .env.example as it is is refused:\n%v", name, err)
			continue
		}
		if cfg.Production {
			t.Errorf("%s: ENVIRONMENT=production with .env.example's placeholders", name)
		}
		if _, host, port := urlHostPort(t, "STRIPE_API_BASE", cfg.StripeAPIBase, 0); host != "stripe-mock" ||
			port != published1(t, service(t, p, "stripe-mock")) {
			t.Errorf("%s: STRIPE_API_BASE=%q; want the dev profile's stripe-mock", name, cfg.StripeAPIBase)
		}
	}
}

// published1 is the one container port a service publishes.
func published1(t *testing.T, s types.ServiceConfig) int {
	t.Helper()
	if len(s.Ports) != 1 {
		t.Fatalf("%s publishes %d ports; want 1", s.Name, len(s.Ports))
	}
	return int(s.Ports[0].Target)
}

// In production (the dev block deleted) .env.example's placeholders stop
// the stack before ours start: the check-config job refuses every one our
// services read, in one line; postgresql-setup refuses the database
// passwords (its script runs in TestTheSetupJobsRunAgainstStandIns).
func TestProductionRefusesThePlaceholdersInOneLine(t *testing.T) {
	p := mustLoad(t, production, nil)
	check := service(t, p, builder)
	if !slices.Equal(check.Command, []string{"check-config", "-q", "all"}) {
		t.Errorf("%s: command %v; want [check-config -q all] (the verdict alone, for both roles)", builder, check.Command)
	}
	_, err := config.Load(environment(check))
	want := "STRIPE_WEBHOOK_SECRET, STRIPE_API_KEY, RETRY_LINK_SECRET, DATABASE_URL: placeholders from .env.example"
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("%s with .env.example's placeholders in production: %v; want one line starting %q", builder, err, want)
	}
	for name := range ours {
		if name == builder {
			continue
		}
		if d := service(t, p, name).DependsOn[builder]; d.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s starts without waiting for %s (%+v): a refused configuration would restart it for ever", name, builder, d)
		}
	}
}

func TestOurServicesGetAValidConfiguration(t *testing.T) {
	table := tableVariables(t)
	for _, sh := range []shape{dev, production} {
		p := mustLoad(t, sh, operatorSecrets)
		image := service(t, p, builder).Image
		for name, role := range ours {
			t.Run(sh.String()+"/"+name, func(t *testing.T) {
				s := service(t, p, name)
				env := environment(s)
				for k := range s.Environment {
					if !table[k] {
						t.Errorf("sets %s, which is not in the table of %s", k, configurationDoc)
					}
				}
				cfg, err := config.Load(env)
				if err != nil {
					t.Fatalf("config.Load rejects its environment:\n%v", err)
				}
				if role == "webhook" || role == "all" {
					if err := cfg.CheckWebhook(); err != nil {
						t.Errorf("lacks what the webhook needs:\n%v", err)
					}
				}
				if role == "worker" || role == "all" {
					if err := cfg.CheckWorker(); err != nil {
						t.Errorf("lacks what the worker needs:\n%v", err)
					}
				}
				if role == "admin" || role == "all" {
					if err := cfg.CheckAdmin(); err != nil {
						t.Errorf("lacks what the admin needs:\n%v", err)
					}
				}
				if cfg.Production != (sh == production) {
					t.Errorf("production %v in the %s shape", cfg.Production, sh)
				}
				if cfg.Temporal.ConnectionOptions.TLS != nil {
					t.Error("TLS to Temporal is on without an API key or certificate: an empty TEMPORAL_TLS_* variable turns it on")
				}
				// An empty variable must mean the service's default, as if unset.
				unset := config.Map{}
				for k, v := range env {
					if v != "" {
						unset[k] = v
					}
				}
				_, withEmpty, err1 := config.Effective(env)
				_, without, err2 := config.Effective(unset)
				if err1 != nil || err2 != nil || !reflect.DeepEqual(withEmpty, without) {
					t.Errorf("the empty variables do not read as unset: %v / %v", err1, err2)
				}
				if s.Image != image {
					t.Errorf("image %q; want %q, the one %s builds", s.Image, image, builder)
				}
				if name == builder {
					if s.Build == nil || filepath.Clean(s.Build.Context) != filepath.Clean(mustAbs(t, root)) {
						t.Errorf("build %+v; want the repository's root (the Dockerfile)", s.Build)
					}
					return
				}
				// The one-shot check builds; the two that run build
				// nothing, so a first `up --build` exports the tag once.
				if s.Build != nil {
					t.Errorf("builds the image too: only %s may (two builds of one tag race on export)", builder)
				}
				if !slices.Equal(s.Command, []string{role}) {
					t.Errorf("command %v; want [%s]", s.Command, role)
				}
				if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= cfg.ShutdownGrace {
					t.Errorf("stop_grace_period %v is not longer than SHUTDOWN_GRACE %s: Docker would kill it mid-drain",
						s.StopGracePeriod, cfg.ShutdownGrace)
				}
				if cfg.OpsAddr == config.OpsOff {
					t.Error("OPS_ADDR=off: no health check, no metrics")
				}
				if h := s.HealthCheck; h == nil || !slices.Contains(h.Test, "healthcheck") || h.Test[1] != binary {
					t.Errorf("healthcheck %+v; want [CMD %s healthcheck] (distroless has no shell)", h, binary)
				}
			})
		}
		// The check sees what each of the three will run with (the admin
		// holds no retry-link secret: it has no retry links).
		check := environment(service(t, p, builder))
		for _, name := range []string{"worker", "webhook", "admin"} {
			for k, v := range environment(service(t, p, name)) {
				if name == "admin" && k == "RETRY_LINK_SECRET" && v == "" {
					continue
				}
				if check[k] != v {
					t.Errorf("%s: %s checks %s=%q, which %s runs with %q", sh, builder, k, check[k], name, v)
				}
			}
		}
		var builders []string
		for name, s := range p.Services {
			if s.Build != nil {
				builders = append(builders, name)
			}
		}
		if !slices.Equal(builders, []string{builder}) {
			t.Errorf("%s: services that build: %v; want only %s", sh, builders, builder)
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// binary is where the Dockerfile puts the service.
const binary = "/usr/local/bin/identity-verification"

func TestPortsAndHostsLineUp(t *testing.T) {
	p := mustLoad(t, dev, nil)
	webhook, worker, adm := service(t, p, "webhook"), service(t, p, "worker"), service(t, p, "admin")
	wh, wk, ad := environment(webhook), environment(worker), environment(adm)
	cfg, _ := config.Load(wh)
	acfg, _ := config.Load(ad)

	// The webhook's two listeners and the admin's two: all interfaces
	// inside the container, each published, the public one on every host
	// interface and the admin and ops ones on loopback only.
	for _, l := range []struct {
		svc                types.ServiceConfig
		name, addr, hostIP string
	}{{webhook, "LISTEN_ADDR", cfg.ListenAddr, ""}, {webhook, "OPS_ADDR", cfg.OpsAddr, "127.0.0.1"},
		{adm, "ADMIN_ADDR", acfg.AdminAddr, "127.0.0.1"}, {adm, "OPS_ADDR", acfg.OpsAddr, "127.0.0.1"}} {
		host, port := hostPort(t, l.name, l.addr)
		if host != "0.0.0.0" && host != "" {
			t.Errorf("%s %s=%s: a container must listen on 0.0.0.0", l.svc.Name, l.name, l.addr)
		}
		ip, pub := published(l.svc, port)
		if pub == "" {
			t.Errorf("%s=%s: %s does not publish port %d", l.name, l.addr, l.svc.Name, port)
		} else if ip != l.hostIP {
			t.Errorf("%s %s: published on %q; want %q", l.svc.Name, l.name, ip, l.hostIP)
		}
	}
	if len(webhook.Ports) != 2 || len(adm.Ports) != 2 {
		t.Errorf("the webhook publishes %d ports, the admin %d; want their two listeners each", len(webhook.Ports), len(adm.Ports))
	}
	// The webhook, on the internet, holds no admin secret; the admin holds
	// no webhook or retry-link secret.
	for _, k := range []string{"ADMIN_TOKEN", "CODEC_TOKEN", "OIDC_CLIENT_SECRET"} {
		if _, ok := webhook.Environment[k]; ok {
			t.Errorf("the webhook's environment has %s: it belongs to the admin service", k)
		}
	}
	for _, k := range []string{"STRIPE_WEBHOOK_SECRET", "RETRY_LINK_SECRET"} {
		if ad[k] != "" {
			t.Errorf("the admin's environment holds %s", k)
		}
	}
	_, listenPort := hostPort(t, "LISTEN_ADDR", cfg.ListenAddr)
	_, pub := published(webhook, listenPort)
	if u, host, port := urlHostPort(t, "PUBLIC_BASE_URL", cfg.PublicBaseURL, 80); host != "localhost" || strconv.Itoa(port) != pub {
		t.Errorf("PUBLIC_BASE_URL %s is not the webhook's published port %s", u, pub)
	}

	// The worker scales: no fixed name, no host port, ops on 0.0.0.0.
	if len(worker.Ports) > 0 || worker.ContainerName != "" {
		t.Errorf("worker: ports %v, container_name %q: `--scale worker=N` needs neither", worker.Ports, worker.ContainerName)
	}
	if host, _ := hostPort(t, "worker OPS_ADDR", wk["OPS_ADDR"]); host != "0.0.0.0" {
		t.Errorf("worker OPS_ADDR=%s: Prometheus cannot reach it from the network", wk["OPS_ADDR"])
	}

	// Temporal: our services, the UI and the namespace job all dial the
	// temporal service's frontend port.
	temporal := service(t, p, "temporal")
	te := environment(temporal)
	frontend := 7233 // the image's FRONTEND_GRPC_PORT default
	if v := te["FRONTEND_GRPC_PORT"]; v != "" {
		frontend, _ = strconv.Atoi(v)
	}
	want := net.JoinHostPort("temporal", strconv.Itoa(frontend))
	for svc, addr := range map[string]string{
		"worker": wk["TEMPORAL_ADDRESS"], "webhook": wh["TEMPORAL_ADDRESS"], "admin": ad["TEMPORAL_ADDRESS"],
		"temporal-ui":               environment(service(t, p, "temporal-ui"))["TEMPORAL_ADDRESS"],
		"temporal-create-namespace": environment(service(t, p, "temporal-create-namespace"))["TEMPORAL_ADDRESS"],
	} {
		if addr != want {
			t.Errorf("%s: TEMPORAL_ADDRESS=%q; want %s", svc, addr, want)
		}
	}
	if ip, pub := published(temporal, frontend); pub == "" || ip != "127.0.0.1" {
		t.Errorf("temporal: frontend %d published %q on %q; want loopback (the CLI, replay)", frontend, pub, ip)
	}
	if ns := environment(service(t, p, "temporal-create-namespace"))["NAMESPACE"]; ns != wk["TEMPORAL_NAMESPACE"] || ns != wh["TEMPORAL_NAMESPACE"] {
		t.Errorf("the job creates namespace %q; the services use %q and %q", ns, wk["TEMPORAL_NAMESPACE"], wh["TEMPORAL_NAMESPACE"])
	}

	// PostgreSQL: each of Temporal and the service reaches the postgresql
	// service as the role postgresql-setup makes for it, with the password
	// it gives that role, on the databases that role owns; only the setup
	// job is the superuser.
	pg := environment(service(t, p, "postgresql"))
	setup := environment(service(t, p, "postgresql-setup"))
	if setup["PGHOST"] != "postgresql" || setup["PGPORT"] != "5432" || setup["PGUSER"] != pg["POSTGRES_USER"] ||
		setup["POSTGRES_PASSWORD"] != pg["POSTGRES_PASSWORD"] {
		t.Errorf("postgresql-setup (%s@%s:%s) is not the postgresql service's superuser", setup["PGUSER"], setup["PGHOST"], setup["PGPORT"])
	}
	for _, role := range []string{setup["TEMPORAL_ROLE"], setup["SERVICE_ROLE"]} {
		if role == "" || role == pg["POSTGRES_USER"] || role == "postgres" {
			t.Errorf("a role of postgresql-setup is %q: want one of its own, not the superuser", role)
		}
	}
	for svc, env := range map[string]config.Map{"worker": wk, "webhook": wh, "admin": ad} {
		u, host, port := urlHostPort(t, svc+" DATABASE_URL", env["DATABASE_URL"], 5432)
		pass, _ := u.User.Password()
		if u.Scheme != "postgres" || host != "postgresql" || port != 5432 || strings.TrimPrefix(u.Path, "/") != setup["SERVICE_DB"] ||
			u.User.Username() != setup["SERVICE_ROLE"] || pass != setup["POSTGRES_SERVICE_PASSWORD"] {
			t.Errorf("%s: DATABASE_URL (%s@%s:%d%s) is not database %s of the service's role %s",
				svc, u.User.Username(), host, port, u.Path, setup["SERVICE_DB"], setup["SERVICE_ROLE"])
		}
	}
	if te["DB"] != "postgres12" || te["POSTGRES_SEEDS"] != "postgresql" || te["DB_PORT"] != "5432" ||
		te["POSTGRES_USER"] != setup["TEMPORAL_ROLE"] || te["POSTGRES_PWD"] != setup["POSTGRES_TEMPORAL_PASSWORD"] ||
		te["DBNAME"] != setup["TEMPORAL_DB"] || te["VISIBILITY_DBNAME"] != setup["VISIBILITY_DB"] {
		t.Errorf("temporal's persistence (DB %s, %s@%s:%s, %s and %s) is not Temporal's role and databases on the postgresql service",
			te["DB"], te["POSTGRES_USER"], te["POSTGRES_SEEDS"], te["DB_PORT"], te["DBNAME"], te["VISIBILITY_DBNAME"])
	}
	admin := environment(service(t, p, "temporal-admin-tools"))
	if admin["SQL_PLUGIN"] != "postgres12" || admin["SQL_HOST"] != "postgresql" || admin["SQL_PORT"] != "5432" ||
		admin["SQL_USER"] != setup["TEMPORAL_ROLE"] || admin["SQL_PASSWORD"] != setup["POSTGRES_TEMPORAL_PASSWORD"] {
		t.Errorf("temporal-admin-tools (plugin %s, %s@%s:%s) does not set up the postgresql service as Temporal's role", admin["SQL_PLUGIN"],
			admin["SQL_USER"], admin["SQL_HOST"], admin["SQL_PORT"])
	}
	for _, job := range []string{"temporal-admin-tools", "worker", "webhook", "admin"} {
		if d := service(t, p, job).DependsOn["postgresql-setup"]; d.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s starts before postgresql-setup made its role and databases (%+v)", job, d)
		}
	}

	// SMTP: Mailpit's SMTP port; the Stripe API: stripe-mock's.
	for svc, env := range map[string]config.Map{"worker": wk, "webhook": wh, "admin": ad} {
		if _, host, port := urlHostPort(t, "SMTP_URL", env["SMTP_URL"], 0); host != "mailpit" || port != 1025 {
			t.Errorf("%s: SMTP_URL=%s; want Mailpit's SMTP, mailpit:1025", svc, env["SMTP_URL"])
		}
		if base := env["STRIPE_API_BASE"]; base != "" {
			if _, host, port := urlHostPort(t, "STRIPE_API_BASE", base, 0); host != "stripe-mock" || port != 12111 {
				t.Errorf("%s: STRIPE_API_BASE=%s; want stripe-mock:12111 or Stripe's API", svc, base)
			}
		}
	}
	if v := environment(service(t, p, "mailpit"))["MP_SMTP_BIND_ADDR"]; v != "" && !strings.HasSuffix(v, ":1025") {
		t.Errorf("mailpit's SMTP listens on %s", v)
	}
	if _, pub := published(service(t, p, "mailpit"), 8025); pub == "" {
		t.Error("Mailpit's web UI (8025) is not published")
	}
}

func TestTheUIDecodesThroughTheCodecServerWhenOneIsConfigured(t *testing.T) {
	p := mustLoad(t, production, operatorSecrets)
	if v := environment(service(t, p, "temporal-ui"))["TEMPORAL_CODEC_ENDPOINT"]; v != "" {
		t.Errorf("without CODEC_TOKEN the UI's codec endpoint is %q; want none", v)
	}

	key, err := codec.NewKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	token := strings.Repeat("c0dec", 8)
	env := map[string]string{"PAYLOAD_ENCRYPTION_KEYS": key.Entry(), "CODEC_TOKEN": token}
	for k, v := range operatorSecrets {
		env[k] = v
	}
	p = mustLoad(t, production, env)
	adm, ui := service(t, p, "admin"), service(t, p, "temporal-ui")
	cfg, err := config.Load(environment(adm))
	if err != nil || cfg.Codec == nil || cfg.CodecToken != token {
		t.Fatalf("admin with keys and a codec token: codec %v, %v", cfg.Codec, err)
	}
	_, adminPort := hostPort(t, "ADMIN_ADDR", cfg.AdminAddr)
	_, adminPub := published(adm, adminPort)
	want := "http://localhost:" + adminPub + "/codec/" + token
	if got := environment(ui)["TEMPORAL_CODEC_ENDPOINT"]; got != want {
		t.Errorf("the UI's codec endpoint is %q; want the admin listener's %q", got, want)
	}
	_, uiPub := published(ui, 8080)
	if origin := "http://localhost:" + uiPub; !slices.Contains(cfg.CodecOrigins, origin) {
		t.Errorf("CODEC_CORS_ORIGINS %v lacks the UI's origin %s: the browser's decode calls would be refused", cfg.CodecOrigins, origin)
	}
}

func TestHealthChecksBackEveryDependency(t *testing.T) {
	p := mustLoad(t, dev, nil)
	for name, s := range p.Services {
		hasCheck := s.HealthCheck != nil && !s.HealthCheck.Disable && len(s.HealthCheck.Test) > 1
		switch {
		case job(s):
			if len(s.Ports) > 0 {
				t.Errorf("%s: a one-shot job publishes ports", name)
			}
		case s.Restart != types.RestartPolicyUnlessStopped:
			t.Errorf("%s: restart %q; want unless-stopped for a long-running service (or \"no\" or on-failure:N for a job)", name, s.Restart)
			fallthrough
		default:
			if !hasCheck {
				t.Errorf("%s: a long-running service without a health check", name)
			}
		}
		for dep, d := range s.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				t.Errorf("%s depends on %s, which is not a service of this profile", name, dep)
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if target.HealthCheck == nil || target.HealthCheck.Disable {
					t.Errorf("%s waits for %s to be healthy, which has no health check", name, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if !job(target) {
					t.Errorf("%s waits for %s to complete, which is not a one-shot job", name, dep)
				}
			default:
				t.Errorf("%s depends on %s with condition %q; want service_healthy or service_completed_successfully", name, dep, d.Condition)
			}
		}
	}
	// Nothing outside the dev profile may need a dev-only service.
	plain := mustLoad(t, production, nil)
	for name, s := range plain.Services {
		for dep := range s.DependsOn {
			if _, ok := plain.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which only the dev profile starts", name, dep)
			}
		}
	}
}

// jobRestart is a one-shot job's restart policy: "no" (a job whose
// failure is final, such as a refused configuration) or on-failure with a
// bound, so a broken job stops instead of looping.
var jobRestart = regexp.MustCompile(`^(no|on-failure:([1-9]|10))$`)

// job says whether a service is a one-shot job.
func job(s types.ServiceConfig) bool { return jobRestart.MatchString(s.Restart) }

// The jobs that talk to Temporal's server retry, as the official layout's
// do: the job a few times (restart: on-failure:N), and each step of the
// namespace job in a bounded loop (its script runs against stand-ins in
// TestTheSetupJobsRunAgainstStandIns). The UI opens on the namespace, so it
// waits for the job that makes it.
func TestTheSetupJobsRetryAndTheUIWaitsForTheNamespace(t *testing.T) {
	p := mustLoad(t, dev, nil)
	for _, name := range []string{"temporal-admin-tools", "temporal-create-namespace"} {
		if r := service(t, p, name).Restart; !strings.HasPrefix(r, "on-failure:") || !jobRestart.MatchString(r) {
			t.Errorf("%s: restart %q; want on-failure with a bound (at most 10)", name, r)
		}
	}
	script := strings.Join(service(t, p, "temporal-create-namespace").Command, "\n")
	for _, step := range []string{"retry temporal operator cluster health", "retry create_namespace", "retry create_sa", "retry temporal workflow list"} {
		if !strings.Contains(script, step) {
			t.Errorf("temporal-create-namespace: %q is not retried", step)
		}
	}
	if m := regexp.MustCompile(`-lt (\d+) \]`).FindStringSubmatch(script); m == nil {
		t.Error("temporal-create-namespace: its retry loop has no bound")
	}
	ui := service(t, p, "temporal-ui")
	if d := ui.DependsOn["temporal-create-namespace"]; d.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("temporal-ui does not wait for the namespace job (%+v)", d)
	}
}

func TestVolumesAreNamedAndDeclared(t *testing.T) {
	p := mustLoad(t, dev, nil)
	used := map[string]bool{}
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeVolume || v.Source == "" {
				t.Errorf("%s: %s mount %q: want a named volume (a fresh clone has nothing to bind)", name, v.Type, v.Source)
				continue
			}
			if _, ok := p.Volumes[v.Source]; !ok {
				t.Errorf("%s: volume %q is not declared", name, v.Source)
			}
			used[v.Source] = true
		}
	}
	for name := range p.Volumes {
		if !used[name] {
			t.Errorf("volume %q is declared but unused", name)
		}
	}
	for _, want := range []string{"postgresql", "mailpit"} {
		if len(service(t, p, want).Volumes) == 0 {
			t.Errorf("%s keeps its data in the container: want a named volume", want)
		}
	}
}

// toolVersion is the version tools/<dir>/go.mod pins module at.
func toolVersion(t *testing.T, dir, module string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + `\s+v(\S+)`).FindStringSubmatch(readFile(t, filepath.Join("tools", dir, "go.mod")))
	if m == nil {
		t.Fatalf("tools/%s/go.mod does not pin %s", dir, module)
	}
	return m[1]
}

// imageTag splits an image reference into repository, tag and digest.
func imageTag(ref string) (repo, tag, digest string) {
	repo, digest, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo, tag = repo[:i], repo[i+1:]
	}
	return repo, tag, digest
}

func TestImagesArePinnedToTheTestedVersions(t *testing.T) {
	p := mustLoad(t, dev, nil)
	tags := map[string]string{}
	ourImage := service(t, p, builder).Image
	for name, s := range p.Services {
		if s.Image == ourImage {
			continue // ours, built from the Dockerfile
		}
		repo, tag, digest := imageTag(s.Image)
		if digest == "" && (tag == "" || tag == "latest" || !regexp.MustCompile(`\d+\.\d+`).MatchString(tag)) {
			t.Errorf("%s: image %q is not pinned to an exact version or a digest", name, s.Image)
		}
		if prev, ok := tags[repo]; ok && prev != tag {
			t.Errorf("%s: two tags of one image, %s and %s", repo, prev, tag)
		}
		tags[repo] = tag
	}
	server := toolVersion(t, "temporal", "go.temporal.io/server")
	for repo, want := range map[string]string{
		"temporalio/server":  server,
		"temporalio/ui":      toolVersion(t, "temporal", "github.com/temporalio/ui-server/v2"),
		"axllent/mailpit":    "v" + toolVersion(t, "mailpit", "github.com/axllent/mailpit"),
		"stripe/stripe-mock": "v" + toolVersion(t, "stripemock", "github.com/stripe/stripe-mock"),
	} {
		if tags[repo] != want {
			t.Errorf("%s:%s; the project is tested with %s", repo, tags[repo], want)
		}
	}
	if tag := tags["temporalio/admin-tools"]; tag != server && !strings.HasPrefix(tag, server+"-") {
		t.Errorf("temporalio/admin-tools:%s is not the tools of server %s", tag, server)
	}
	// PostgreSQL's major is pinned: the image's data layout changed in 18
	// (it refuses a volume on /var/lib/postgresql/data), and a data
	// directory moves between majors only through pg_upgrade or a dump.
	if m := regexp.MustCompile(`^(\d+)\.\d+$`).FindStringSubmatch(tags["postgres"]); m == nil || m[1] != strconv.Itoa(postgresMajor) {
		t.Errorf("postgres:%s; want an exact %d.x (a new major moves the data: see %s)", tags["postgres"], postgresMajor, deploymentDoc)
	}
	var mounts []string
	for _, v := range service(t, p, "postgresql").Volumes {
		mounts = append(mounts, v.Target)
	}
	if want := postgresDataMount(postgresMajor); !slices.Equal(mounts, []string{want}) {
		t.Errorf("postgresql mounts %v; PostgreSQL %d's image keeps its data under %s", mounts, postgresMajor, want)
	}
	doc := readFile(t, deploymentDoc)
	for _, want := range []string{"PostgreSQL 18", postgresDataMount(18), "pg_upgrade"} {
		if !strings.Contains(doc, want) {
			t.Errorf("%s does not say how to move to PostgreSQL 18 (%q)", deploymentDoc, want)
		}
	}
}

// postgresMajor is the PostgreSQL major the compose file's layout is for.
const postgresMajor = 16

// postgresDataMount is where the official image of a PostgreSQL major
// wants the data volume: up to 17, the data directory itself; from 18, its
// parent, where the data lives in a directory per major (18/docker).
func postgresDataMount(major int) string {
	if major >= 18 {
		return "/var/lib/postgresql"
	}
	return "/var/lib/postgresql/data"
}

func TestTheTemporalJobsSetUpWhatTheServiceUses(t *testing.T) {
	p := mustLoad(t, dev, nil)
	temporal := environment(service(t, p, "temporal"))
	schema := strings.Join(service(t, p, "temporal-admin-tools").Command, "\n")
	for _, step := range []string{"temporal-sql-tool", "setup-schema -v 0.0", "update-schema -d",
		"/etc/temporal/schema/postgresql/v12", "versioned"} {
		if !strings.Contains(schema, step) {
			t.Errorf("temporal-admin-tools: its script lacks %q", step)
		}
	}
	// Temporal's role may not create databases: postgresql-setup makes them.
	if strings.Contains(schema, "create-database") {
		t.Error("temporal-admin-tools creates databases: Temporal's role has no CREATEDB; postgresql-setup makes them")
	}
	setup := environment(service(t, p, "postgresql-setup"))
	for _, db := range []string{temporal["DBNAME"], temporal["VISIBILITY_DBNAME"]} {
		if db == "" || !regexp.MustCompile(`\b`+db+`:`).MatchString(schema) {
			t.Errorf("temporal-admin-tools does not set up database %q, which the server uses", db)
		}
		if db != setup["TEMPORAL_DB"] && db != setup["VISIBILITY_DB"] {
			t.Errorf("the server's database %q is not one postgresql-setup makes", db)
		}
	}

	ns := service(t, p, "temporal-create-namespace")
	script := strings.Join(ns.Command, "\n")
	for _, step := range []string{"operator namespace create", "operator search-attribute create", "workflow list"} {
		if !strings.Contains(script, step) {
			t.Errorf("temporal-create-namespace: its script lacks %q", step)
		}
	}
	var want []string
	for _, sa := range workflows.SearchAttributes {
		want = append(want, sa.Name+":"+sa.Type)
	}
	if got := strings.Fields(environment(ns)["SEARCH_ATTRIBUTES"]); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("the job registers %v; the workflow writes %v", got, want)
	}
	if d := ns.DependsOn["temporal"]; d.Condition != types.ServiceConditionHealthy {
		t.Errorf("temporal-create-namespace runs before the server is healthy (%+v)", d)
	}
	if d := service(t, p, "temporal").DependsOn["temporal-admin-tools"]; d.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("the server starts before its schema is set up (%+v)", d)
	}

	// The dynamic config the server is pointed at is one the file provides,
	// and it does not force the search-attribute caches to be read through
	// on every read, which Temporal says not to do in production: the
	// namespace job waits until a query on every attribute succeeds, and
	// the namespace record that maps them (SQL visibility) is reread every
	// 2 s by each part of the server.
	for name, c := range p.Configs {
		if strings.Contains(c.Content, "forceSearchAttributesCacheRefreshOnRead") {
			t.Errorf("config %s sets system.forceSearchAttributesCacheRefreshOnRead: a testing setting", name)
		}
	}
	path := temporal["DYNAMIC_CONFIG_FILE_PATH"]
	var provided bool
	for _, c := range service(t, p, "temporal").Configs {
		if c.Target == path && p.Configs[c.Source].Content != "" {
			provided = true
		}
	}
	if path != "" && !provided {
		t.Errorf("DYNAMIC_CONFIG_FILE_PATH=%s is not a config the compose file mounts", path)
	}
}

// stubs writes stand-ins for the tools the setup jobs and health checks
// call: each notes its arguments (the SQL tools their connection too) in
// the file $CALLS. PostgreSQL and the Temporal server are down at the first
// check, the namespace does not exist yet and its first creation fails
// (the server still starting), and VerificationStatus is already
// registered (a second `up`). The names in without are left out (a tool
// the image lacks).
func stubs(t *testing.T, without ...string) (dir, calls string) {
	t.Helper()
	dir = t.TempDir()
	calls = filepath.Join(dir, "calls")
	for name, body := range map[string]string{
		"temporal-sql-tool": `echo "temporal-sql-tool [$SQL_PLUGIN $SQL_USER@$SQL_HOST:$SQL_PORT] $*" >> "$CALLS"`,
		"temporal": `echo "temporal $*" >> "$CALLS"
case "$*" in
*"cluster health"*) [ -e "$CALLS.up" ] && exit 0; touch "$CALLS.up"; echo "connection refused" >&2; exit 1 ;;
*"namespace describe"*) echo "Namespace not found" >&2; exit 1 ;;
*"namespace create"*) [ -e "$CALLS.ns" ] && exit 0; touch "$CALLS.ns"; echo "namespace registry not ready" >&2; exit 1 ;;
*"--name VerificationStatus "*) echo "Search attribute VerificationStatus already exists" >&2; exit 1 ;;
esac`,
		"pg_isready": `echo "pg_isready [$PGUSER@$PGHOST:$PGPORT/$PGDATABASE] $*" >> "$CALLS"
[ -e "$CALLS.pg" ] && exit 0; touch "$CALLS.pg"; exit 2`,
		"psql":     `echo "psql [$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$PGDATABASE] $*" >> "$CALLS"`,
		"nc":       `echo "nc $*" >> "$CALLS"`,
		"hostname": `echo temporal-0`,
	} {
		if slices.Contains(without, name) {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, calls
}

// runJob runs a service's entrypoint and command on this machine's /bin/sh
// with its resolved environment and the stand-ins first on PATH, and
// returns what the stand-ins noted.
func runJob(t *testing.T, s types.ServiceConfig, dir, calls string) string {
	t.Helper()
	out, err := jobCommand(s, dir, calls).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", s.Name, err, out)
	}
	log, _ := os.ReadFile(calls)
	return string(log)
}

func jobCommand(s types.ServiceConfig, dir, calls string) *exec.Cmd {
	args := append(slices.Clone(s.Entrypoint[1:]), s.Command...)
	cmd := exec.Command(s.Entrypoint[0], args...)
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "CALLS=" + calls}
	for k, v := range environment(s) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func TestTheSetupJobsRunAgainstStandIns(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := mustLoad(t, dev, nil)

	// postgresql-setup: waits for the server (down at first), then runs the
	// SQL the file mounts as the superuser, with the roles, passwords and
	// databases as psql variables.
	dir, calls := stubs(t)
	setup := service(t, p, "postgresql-setup")
	got := runJob(t, setup, dir, calls)
	env := environment(setup)
	if len(setup.Configs) != 1 || p.Configs[setup.Configs[0].Source].Content == "" {
		t.Fatalf("postgresql-setup mounts %+v; want the postgresql-setup config", setup.Configs)
	}
	pgConn := "[postgres:" + env["POSTGRES_PASSWORD"] + "@postgresql:5432/postgres]"
	want := []string{
		"pg_isready [postgres@postgresql:5432/postgres] -q", // down: retried
		"pg_isready [postgres@postgresql:5432/postgres] -q",
		"psql " + pgConn + " -v ON_ERROR_STOP=1 -q -v temporal_role=temporal -v temporal_password=" + env["POSTGRES_TEMPORAL_PASSWORD"] +
			" -v temporal_db=temporal -v visibility_db=temporal_visibility -v service_role=identity_verification" +
			" -v service_password=" + env["POSTGRES_SERVICE_PASSWORD"] + " -v service_db=identity_verification -f " + setup.Configs[0].Target,
	}
	if lines := strings.Split(strings.TrimSpace(got), "\n"); !slices.Equal(lines, want) {
		t.Errorf("postgresql-setup ran:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	// In production it refuses .env.example's passwords, in one line,
	// before it connects.
	prod := service(t, mustLoad(t, production, nil), "postgresql-setup")
	dir, calls = stubs(t)
	out, err := jobCommand(prod, dir, calls).CombinedOutput()
	refusal := "postgresql-setup: POSTGRES_PASSWORD POSTGRES_TEMPORAL_PASSWORD POSTGRES_SERVICE_PASSWORD: placeholders from .env.example"
	if err == nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || !strings.HasPrefix(string(out), refusal) {
		t.Errorf("postgresql-setup in production with the placeholders: %v, %q; want exit 1 and one line starting %q", err, out, refusal)
	}
	if log, _ := os.ReadFile(calls); len(log) > 0 {
		t.Errorf("postgresql-setup connected before refusing: %s", log)
	}

	dir, calls = stubs(t)
	got = runJob(t, service(t, p, "temporal-admin-tools"), dir, calls)
	conn := "[postgres12 temporal@postgresql:5432]"
	want = nil
	for _, db := range []struct{ name, dir string }{{"temporal", "temporal"}, {"temporal_visibility", "visibility"}} {
		want = append(want,
			"temporal-sql-tool "+conn+" --db "+db.name+" setup-schema -v 0.0",
			"temporal-sql-tool "+conn+" --db "+db.name+" update-schema -d /etc/temporal/schema/postgresql/v12/"+db.dir+"/versioned")
	}
	if lines := strings.Split(strings.TrimSpace(got), "\n"); !slices.Equal(lines, want) {
		t.Errorf("temporal-admin-tools ran:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}

	dir, calls = stubs(t)
	got = runJob(t, service(t, p, "temporal-create-namespace"), dir, calls)
	addr := "--address temporal:7233"
	want = []string{
		"temporal operator cluster health " + addr, // down: retried
		"temporal operator cluster health " + addr,
		"temporal operator namespace describe " + addr + " --namespace default",
		"temporal operator namespace create " + addr + " --namespace default --retention 720h", // refused: retried
		"temporal operator namespace describe " + addr + " --namespace default",
		"temporal operator namespace create " + addr + " --namespace default --retention 720h",
	}
	var conds []string
	for _, sa := range workflows.SearchAttributes {
		want = append(want, "temporal operator search-attribute create "+addr+" --namespace default --name "+sa.Name+" --type "+sa.Type)
		if sa.Type == "Int" {
			conds = append(conds, sa.Name+" = 0")
		} else {
			conds = append(conds, sa.Name+" = 'none'")
		}
	}
	want = append(want, "temporal workflow list "+addr+" --namespace default --limit 1 --query "+strings.Join(conds, " AND "))
	if lines := strings.Split(strings.TrimSpace(got), "\n"); !slices.Equal(lines, want) {
		t.Errorf("temporal-create-namespace ran:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}

	// The server's health check, on the stand-ins, at the container's own
	// address: the CLI's where the image has it (1.29), the frontend's TCP
	// port where it does not (the server image from 1.30); down, it fails.
	hc := service(t, p, "temporal").HealthCheck.Test
	if hc[0] != "CMD-SHELL" {
		t.Fatalf("temporal's health check %v is not CMD-SHELL", hc)
	}
	for _, c := range []struct {
		image   string
		without []string
		want    string
	}{
		{"with the CLI", nil, "temporal operator cluster health --address temporal-0:7233"},
		{"without the CLI", []string{"temporal"}, "nc -z -w 3 temporal-0 7233"},
	} {
		dir, calls = stubs(t, c.without...)
		os.WriteFile(calls+".up", nil, 0o644)
		check := exec.Command("/bin/sh", "-c", hc[1])
		check.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "CALLS=" + calls}
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("temporal's health check, image %s: failed on a serving stand-in: %v\n%s", c.image, err, out)
		}
		if log, _ := os.ReadFile(calls); strings.TrimSpace(string(log)) != c.want {
			t.Errorf("temporal's health check, image %s, ran %q; want %q", c.image, log, c.want)
		}
	}
	if _, err := exec.LookPath("temporal"); err == nil {
		t.Log("a temporal on this machine's PATH: the check without the CLI may have found it")
	}
	dir, calls = stubs(t, "temporal", "nc")
	os.WriteFile(filepath.Join(dir, "nc"), []byte("#!/bin/sh\nexit 1\n"), 0o755)
	down := exec.Command("/bin/sh", "-c", hc[1])
	down.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "CALLS=" + calls}
	if err := down.Run(); err == nil {
		t.Error("temporal's health check passed with the frontend port closed")
	}
}

func TestTheDockerfileBuildsAStaticNonRootImage(t *testing.T) {
	df := readFile(t, "Dockerfile")
	var froms []string
	var stage []string // the final stage's instructions
	for _, line := range strings.Split(df, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Fields(line); strings.EqualFold(f[0], "FROM") {
			froms = append(froms, f[1])
			stage = nil
		}
		stage = append(stage, line)
	}
	if len(froms) < 2 {
		t.Fatalf("FROM %v: want a multi-stage build", froms)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)`).FindStringSubmatch(readFile(t, "go.mod"))
	for i, ref := range froms {
		_, tag, digest := imageTag(ref)
		if digest == "" && (tag == "" || tag == "latest") {
			t.Errorf("FROM %s is not pinned", ref)
		}
		if i == 0 && !strings.HasPrefix(ref, "golang:"+goVersion[1]+"-") && ref != "golang:"+goVersion[1] {
			t.Errorf("builder FROM %s is not the Go of go.mod (%s)", ref, goVersion[1])
		}
	}
	final := strings.Join(stage, "\n")
	// Debian 13's distroless: Debian 12's images are at their end of life.
	if repo, tag, _ := imageTag(froms[len(froms)-1]); repo != "gcr.io/distroless/static-debian13" || tag != "nonroot" {
		t.Errorf("final stage FROM %s; want gcr.io/distroless/static-debian13:nonroot", froms[len(froms)-1])
	}
	// RUN --mount needs a BuildKit frontend that has it: the syntax line,
	// first in the file, names one.
	if strings.Contains(df, "RUN --mount") && !strings.HasPrefix(df, "# syntax=docker/dockerfile:1\n") {
		t.Error("the Dockerfile uses RUN --mount without `# syntax=docker/dockerfile:1` as its first line")
	}
	if !regexp.MustCompile(`(?m)^USER (nonroot|65532)`).MatchString(final) {
		t.Error("the final stage does not run as nonroot")
	}
	for _, want := range []string{`ENTRYPOINT ["` + binary + `"]`, `CMD ["all"]`, "EXPOSE 8080 8081 9090"} {
		if !strings.Contains(final, want) {
			t.Errorf("the final stage lacks %s", want)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "./cmd/identity-verification", "-o /out/identity-verification",
		"COPY --from=build /out/identity-verification " + binary} {
		if !strings.Contains(df, want) {
			t.Errorf("the Dockerfile lacks %s", want)
		}
	}

	ignore := strings.Fields(readFile(t, ".dockerignore"))
	for _, want := range []string{".git", ".env", ".bin", ".data", "!.env.example"} {
		if !slices.Contains(ignore, want) {
			t.Errorf(".dockerignore lacks %s: it would go into the build context", want)
		}
	}
}

// The Temporal UI's CSRF cookie is Secure unless TEMPORAL_CSRF_COOKIE_INSECURE
// is true; Safari drops a Secure cookie on plain http, where every action
// the UI posts then fails. The dev stack serves the UI on http, so it sets
// it; production (behind TLS) keeps the default. The variable is one the
// pinned UI server's image reads.
func TestTheUIWorksOnPlainHTTPInTheDevStack(t *testing.T) {
	for sh, want := range map[shape]string{dev: "true", production: "false"} {
		ui := service(t, mustLoad(t, sh, nil), "temporal-ui")
		if got := environment(ui)["TEMPORAL_CSRF_COOKIE_INSECURE"]; got != want {
			t.Errorf("%s: the UI's TEMPORAL_CSRF_COOKIE_INSECURE=%q; want %q", sh, got, want)
		}
		if ip, pub := published(ui, 8080); sh == dev && (pub == "" || ip != "127.0.0.1") {
			t.Errorf("%s: the UI is published on %q:%q; want loopback (plain http)", sh, ip, pub)
		}
	}
	dir := moduleDir(t, "temporal", "github.com/temporalio/ui-server/v2")
	template, err := os.ReadFile(filepath.Join(dir, "config", "docker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`cookieInsecure: \{\{ env "TEMPORAL_CSRF_COOKIE_INSECURE"`).Match(template) {
		t.Error("the pinned UI server's image does not read TEMPORAL_CSRF_COOKIE_INSECURE into cors.cookieInsecure")
	}
}

// moduleDir is where the module cache holds a module that tools/<tool>
// pins (downloading it from the module proxy if the cache lacks it).
func moduleDir(t *testing.T, tool, module string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = filepath.Join(root, "tools", tool)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s in tools/%s: %v", module, tool, err)
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("locate %s: %v (%s)", module, err, out)
	}
	return m.Dir
}

// minimumCompose is the oldest Docker Compose that reads every feature the
// file uses: configs with inline content came in 2.23.1.
const minimumCompose = "2.23.1"

func TestTheMinimumComposeVersionIsStated(t *testing.T) {
	p := mustLoad(t, dev, nil)
	var content bool
	for _, c := range p.Configs {
		content = content || c.Content != ""
	}
	if !content {
		t.Fatalf("no config with content any more: lower minimumCompose (%s) to what the file now needs", minimumCompose)
	}
	want := "Docker Compose " + minimumCompose + " or later"
	for _, file := range []string{"docker-compose.yml", deploymentDoc} {
		if !strings.Contains(readFile(t, file), want) {
			t.Errorf("%s does not say %q (configs with content need it)", file, want)
		}
	}
}

// A newcomer sees the setup jobs with `docker compose ps -a` (plain `ps`
// hides exited containers), and the guide names every service.
func TestTheGuideShowsEveryServiceAndTheSetupJobs(t *testing.T) {
	doc := readFile(t, deploymentDoc)
	if !strings.Contains(doc, "docker compose ps -a") {
		t.Errorf("%s does not say `docker compose ps -a`, which shows the setup jobs", deploymentDoc)
	}
	for name := range mustLoad(t, dev, nil).Services {
		if !regexp.MustCompile("(?m)^\\| [^|]*`" + regexp.QuoteMeta(name) + "`").MatchString(doc) {
			t.Errorf("%s's service table does not name %s", deploymentDoc, name)
		}
	}
}

// anotherTemporal is what the guide says to start when Temporal runs
// elsewhere (Temporal Cloud, a cluster): everything but Temporal's own
// services, with the jobs ours wait for.
var anotherTemporal = []string{"postgresql", "postgresql-setup", "mailpit", "check-config", "worker", "webhook", "admin"}

// With --no-deps, Compose keeps only the dependencies among the services
// named: those must still hold every wait our services need that is not
// on the local Temporal.
func TestAnotherTemporalStartsTheRestWithoutTemporal(t *testing.T) {
	command := "docker compose up -d --no-deps " + strings.Join(anotherTemporal, " ")
	if !strings.Contains(readFile(t, deploymentDoc), command) {
		t.Errorf("%s does not show %q", deploymentDoc, command)
	}
	p := mustLoad(t, production, operatorSecrets)
	sel, err := p.WithSelectedServices(anotherTemporal, types.IgnoreDependencies)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range anotherTemporal {
		for dep := range p.Services[name].DependsOn {
			_, kept := sel.Services[name].DependsOn[dep]
			if !kept && !strings.HasPrefix(dep, "temporal") {
				t.Errorf("%s waits for %s, which the command leaves out", name, dep)
			}
		}
	}
}

// needsAMount are the table's variables the compose file leaves to a
// docker-compose.override.yml: each names a file (certificates, a client
// profile) that would have to be mounted too.
var needsAMount = []string{"TEMPORAL_TLS", "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH",
	"TEMPORAL_TLS_SERVER_CA_CERT_PATH", "TEMPORAL_TLS_SERVER_NAME", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE"}

// .env can set any variable of the table: the compose file passes each to
// our services (the listeners at fixed container addresses), but those
// that need a mounted file.
func TestEveryVariableOfTheTableReachesOurServices(t *testing.T) {
	p := mustLoad(t, dev, nil)
	passed := map[string]bool{}
	for name := range ours {
		for k := range service(t, p, name).Environment {
			passed[k] = true
		}
	}
	for name := range tableVariables(t) {
		if !passed[name] && !slices.Contains(needsAMount, name) {
			t.Errorf("%s is in the table but the compose file passes it to none of our services", name)
		}
	}
}
