package deploy

import (
	"bufio"
	"context"
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

// ours are the services built from this repository, and the role each runs.
var ours = map[string]string{"worker": "worker", "webhook": "webhook", "admin": "admin"}

// composeOnly are the variables the compose file reads besides the
// README's table: they configure the other services, never ours.
var composeOnly = []string{"POSTGRES_PASSWORD"}

// required are the variables without which the compose file must not load.
var required = []string{"POSTGRES_PASSWORD", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY", "RETRY_LINK_SECRET"}

// load loads docker-compose.yml as `docker compose --env-file .env.example`
// would, with env overriding the file (as a shell's variables do) and
// nothing from this process's environment.
func load(t *testing.T, env map[string]string, profiles ...string) (*types.Project, error) {
	t.Helper()
	var kvs []string
	for k, v := range env {
		kvs = append(kvs, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(kvs),
		cli.WithEnvFiles(filepath.Join(root, ".env.example")),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

func mustLoad(t *testing.T, env map[string]string, profiles ...string) *types.Project {
	t.Helper()
	p, err := load(t, env, profiles...)
	if err != nil {
		t.Fatalf("docker-compose.yml with .env.example (profiles %v): %v", profiles, err)
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

// readmeVariables are the names in the first column of the README's
// Configuration table.
func readmeVariables(t *testing.T) map[string]bool {
	t.Helper()
	readme := readFile(t, "README.md")
	_, section, ok := strings.Cut(readme, "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no ## Configuration section")
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
		t.Fatalf("read %d variables from the README's Configuration table: %v", len(names), names)
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
	want := []string{"postgresql", "temporal-admin-tools", "temporal", "temporal-create-namespace",
		"temporal-ui", "mailpit", "worker", "webhook", "admin"}
	p := mustLoad(t, nil)
	if got := p.ServiceNames(); !reflect.DeepEqual(sorted(got), sorted(want)) {
		t.Errorf("services without a profile: %v; want %v", got, want)
	}
	if _, ok := p.DisabledServices["stripe-mock"]; !ok {
		t.Error("stripe-mock is not behind a profile")
	}
	dev := mustLoad(t, nil, "dev")
	if got := dev.ServiceNames(); !reflect.DeepEqual(sorted(got), sorted(append(want, "stripe-mock"))) {
		t.Errorf("services with --profile dev: %v; want those and stripe-mock", got)
	}
	if s := service(t, dev, "stripe-mock"); !slices.Equal(s.Profiles, []string{"dev"}) {
		t.Errorf("stripe-mock profiles %v; want [dev]", s.Profiles)
	}
	for _, pr := range []*types.Project{p, dev} {
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
		_, err := load(t, map[string]string{name: ""})
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
	table, example, vars := readmeVariables(t), exampleVariables(t), composeVariables(t)
	readme := readFile(t, "README.md")
	for name := range vars {
		switch {
		case slices.Contains(composeOnly, name):
			if !strings.Contains(readme, "`"+name+"`") {
				t.Errorf("%s: read by the compose file only, but the README does not explain it", name)
			}
		case !table[name]:
			t.Errorf("%s: read by docker-compose.yml but not in the README's Configuration table", name)
		}
		if !example[name] {
			t.Errorf("%s: read by docker-compose.yml but not listed in .env.example", name)
		}
	}
	for name := range example {
		if _, ok := vars[name]; !ok {
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
	"STRIPE_WEBHOOK_SECRET": "whsec_" + strings.Repeat("5e", 20),
	"RETRY_LINK_SECRET":     strings.Repeat("a1", 20),
}

// The placeholders of .env.example are public: production refuses them, so
// a stack started without replacing them does not take forged events.
func TestThePlaceholdersAreRefusedInProduction(t *testing.T) {
	p := mustLoad(t, nil)
	_, err := config.Load(environment(service(t, p, "webhook")))
	for _, name := range []string{"STRIPE_WEBHOOK_SECRET", "RETRY_LINK_SECRET"} {
		if err == nil || !strings.Contains(err.Error(), name+": ") || !strings.Contains(err.Error(), "placeholder") {
			t.Errorf("the webhook with .env.example's %s: %v; want it refused as a placeholder", name, err)
		}
	}
}

func TestOurServicesGetAValidConfiguration(t *testing.T) {
	table := readmeVariables(t)
	p := mustLoad(t, operatorSecrets, "dev")
	for name, role := range ours {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			env := environment(s)
			for k := range s.Environment {
				if !table[k] {
					t.Errorf("sets %s, which is not in the README's Configuration table", k)
				}
			}
			cfg, err := config.Load(env)
			if err != nil {
				t.Fatalf("config.Load rejects its environment:\n%v", err)
			}
			check := map[string]func() error{"worker": cfg.CheckWorker, "webhook": cfg.CheckWebhook, "admin": cfg.CheckAdmin}[role]
			if err := check(); err != nil {
				t.Errorf("lacks what the %s needs:\n%v", role, err)
			}
			if !cfg.Production {
				t.Error("not ENVIRONMENT=production: the compose file is the production shape")
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

			if !slices.Equal(s.Command, []string{role}) {
				t.Errorf("command %v; want [%s]", s.Command, role)
			}
			if role == "admin" {
				// The image the others build, not a second build of it.
				if s.Build != nil || s.Image != service(t, p, "worker").Image || s.PullPolicy != types.PullPolicyNever {
					t.Errorf("build %+v, image %q, pull_policy %q; want the worker's image, never pulled", s.Build, s.Image, s.PullPolicy)
				}
			} else if s.Build == nil || filepath.Clean(s.Build.Context) != filepath.Clean(mustAbs(t, root)) {
				t.Errorf("build %+v; want the repository's root (the Dockerfile)", s.Build)
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
	p := mustLoad(t, nil, "dev")
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
		t.Errorf("the webhook publishes %d ports, the admin %d; want their two listeners only", len(webhook.Ports), len(adm.Ports))
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

	// PostgreSQL: the service's DATABASE_URL, Temporal's persistence and
	// the schema job all reach the postgresql service with its credentials.
	pg := environment(service(t, p, "postgresql"))
	for svc, env := range map[string]config.Map{"worker": wk, "webhook": wh, "admin": ad} {
		u, host, port := urlHostPort(t, svc+" DATABASE_URL", env["DATABASE_URL"], 5432)
		pass, _ := u.User.Password()
		if u.Scheme != "postgres" || host != "postgresql" || port != 5432 || strings.TrimPrefix(u.Path, "/") != pg["POSTGRES_DB"] ||
			u.User.Username() != pg["POSTGRES_USER"] || pass != pg["POSTGRES_PASSWORD"] {
			t.Errorf("%s: DATABASE_URL (%s@%s:%d%s) is not the postgresql service's database %s of %s",
				svc, u.User.Username(), host, port, u.Path, pg["POSTGRES_DB"], pg["POSTGRES_USER"])
		}
	}
	if te["DB"] != "postgres12" || te["POSTGRES_SEEDS"] != "postgresql" || te["DB_PORT"] != "5432" ||
		te["POSTGRES_USER"] != pg["POSTGRES_USER"] || te["POSTGRES_PWD"] != pg["POSTGRES_PASSWORD"] {
		t.Errorf("temporal's persistence (DB %s, %s@%s:%s) is not the postgresql service", te["DB"], te["POSTGRES_USER"], te["POSTGRES_SEEDS"], te["DB_PORT"])
	}
	admin := environment(service(t, p, "temporal-admin-tools"))
	if admin["SQL_PLUGIN"] != "postgres12" || admin["SQL_HOST"] != "postgresql" || admin["SQL_PORT"] != "5432" ||
		admin["SQL_USER"] != pg["POSTGRES_USER"] || admin["SQL_PASSWORD"] != pg["POSTGRES_PASSWORD"] {
		t.Errorf("temporal-admin-tools (plugin %s, %s@%s:%s) does not set up the postgresql service", admin["SQL_PLUGIN"],
			admin["SQL_USER"], admin["SQL_HOST"], admin["SQL_PORT"])
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
	p := mustLoad(t, nil)
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
	p = mustLoad(t, env)
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
	p := mustLoad(t, nil, "dev")
	job := func(s types.ServiceConfig) bool { return s.Restart == "no" }
	for name, s := range p.Services {
		hasCheck := s.HealthCheck != nil && !s.HealthCheck.Disable && len(s.HealthCheck.Test) > 1
		switch {
		case job(s):
			if len(s.Ports) > 0 {
				t.Errorf("%s: a one-shot job publishes ports", name)
			}
		case s.Restart != types.RestartPolicyUnlessStopped:
			t.Errorf("%s: restart %q; want unless-stopped for a long-running service (or \"no\" for a job)", name, s.Restart)
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
	plain := mustLoad(t, nil)
	for name, s := range plain.Services {
		for dep := range s.DependsOn {
			if _, ok := plain.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which only the dev profile starts", name, dep)
			}
		}
	}
}

func TestVolumesAreNamedAndDeclared(t *testing.T) {
	p := mustLoad(t, nil, "dev")
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
	p := mustLoad(t, nil, "dev")
	tags := map[string]string{}
	for name, s := range p.Services {
		if _, ok := ours[name]; ok {
			continue // ours, built from the Dockerfile (the admin runs the image the others build)
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
	server := toolVersion(t, "temporalserver", "go.temporal.io/server")
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
	if tag := tags["postgres"]; !regexp.MustCompile(`^(1[5-9]|[2-9]\d)\.\d+`).MatchString(tag) {
		t.Errorf("postgres:%s; want an exact 15 or newer", tag)
	}
}

func TestTheTemporalJobsSetUpWhatTheServiceUses(t *testing.T) {
	p := mustLoad(t, nil)
	temporal := environment(service(t, p, "temporal"))
	schema := strings.Join(service(t, p, "temporal-admin-tools").Command, "\n")
	for _, step := range []string{"temporal-sql-tool", "create-database", "setup-schema -v 0.0", "update-schema -d",
		"/etc/temporal/schema/postgresql/v12", "versioned"} {
		if !strings.Contains(schema, step) {
			t.Errorf("temporal-admin-tools: its script lacks %q", step)
		}
	}
	for _, db := range []string{temporal["DBNAME"], temporal["VISIBILITY_DBNAME"]} {
		if db == "" || !regexp.MustCompile(`\b`+db+`:`).MatchString(schema) {
			t.Errorf("temporal-admin-tools does not set up database %q, which the server uses", db)
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

	// The dynamic config the server is pointed at is one the file provides.
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

// stubs writes stand-ins for the Temporal tools the setup jobs call: each
// notes its arguments (and the SQL tool its connection) in the file $CALLS.
// The server is down at the first health check, the namespace does not
// exist yet, and VerificationStatus is already registered (a second `up`).
func stubs(t *testing.T) (dir, calls string) {
	t.Helper()
	dir = t.TempDir()
	calls = filepath.Join(dir, "calls")
	for name, body := range map[string]string{
		"temporal-sql-tool": `echo "temporal-sql-tool [$SQL_PLUGIN $SQL_USER@$SQL_HOST:$SQL_PORT] $*" >> "$CALLS"`,
		"temporal": `echo "temporal $*" >> "$CALLS"
case "$*" in
*"cluster health"*) [ -e "$CALLS.up" ] && exit 0; touch "$CALLS.up"; echo "connection refused" >&2; exit 1 ;;
*"namespace describe"*) echo "Namespace not found" >&2; exit 1 ;;
*"--name VerificationStatus "*) echo "Search attribute VerificationStatus already exists" >&2; exit 1 ;;
esac`,
		"hostname": `echo temporal-0`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, calls
}

// runJob runs a service's entrypoint and command on this machine's /bin/sh
// with its resolved environment and the stand-ins first on PATH.
func runJob(t *testing.T, s types.ServiceConfig, dir, calls string) string {
	t.Helper()
	args := append(slices.Clone(s.Entrypoint[1:]), s.Command...)
	cmd := exec.Command(s.Entrypoint[0], args...)
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "CALLS=" + calls}
	for k, v := range environment(s) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", s.Name, err, out)
	}
	log, _ := os.ReadFile(calls)
	return string(log)
}

func TestTheSetupJobsRunAgainstStandIns(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := mustLoad(t, nil)

	dir, calls := stubs(t)
	got := runJob(t, service(t, p, "temporal-admin-tools"), dir, calls)
	conn := "[postgres12 postgres@postgresql:5432]"
	var want []string
	for _, db := range []struct{ name, dir string }{{"temporal", "temporal"}, {"temporal_visibility", "visibility"}} {
		want = append(want,
			"temporal-sql-tool "+conn+" --db "+db.name+" create-database",
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

	// The server's health check, on the stand-ins: the CLI at the
	// container's own address.
	dir, calls = stubs(t)
	os.WriteFile(calls+".up", nil, 0o644)
	hc := service(t, p, "temporal").HealthCheck.Test
	if hc[0] != "CMD-SHELL" {
		t.Fatalf("temporal's health check %v is not CMD-SHELL", hc)
	}
	check := exec.Command("/bin/sh", "-c", hc[1])
	check.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "CALLS=" + calls}
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("temporal's health check failed on a serving stand-in: %v\n%s", err, out)
	}
	if log, _ := os.ReadFile(calls); strings.TrimSpace(string(log)) != "temporal operator cluster health --address temporal-0:7233" {
		t.Errorf("temporal's health check ran %q", log)
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
	if _, tag, _ := imageTag(froms[len(froms)-1]); !strings.HasPrefix(froms[len(froms)-1], "gcr.io/distroless/static") || tag != "nonroot" {
		t.Errorf("final stage FROM %s; want distroless static, nonroot", froms[len(froms)-1])
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
