package devstack

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"identityverification/testevent"
)

// ServerTools returns the Temporal Server and its SQL schema tool, pinned in
// tools/temporal beside the CLI (the server the pinned CLI embeds), building
// them into ROOT/.bin when missing (minutes cold).
func ServerTools(ctx context.Context, root string, log io.Writer) (server, sqlTool string, err error) {
	dir := filepath.Join(root, "tools", "temporal")
	for _, b := range []struct{ out, pkg string }{
		{"temporal-server", "go.temporal.io/server/cmd/server"},
		{"temporal-sql-tool", "go.temporal.io/server/cmd/tools/sql"},
	} {
		bin := filepath.Join(root, ".bin", b.out)
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		fmt.Fprintf(log, "building %s (pinned in tools/temporal; first time only)...\n", b.out)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, b.pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, log, log
		if err := cmd.Run(); err != nil {
			return "", "", fmt.Errorf("devstack: build %s: %w", b.out, err)
		}
	}
	return filepath.Join(root, ".bin", "temporal-server"), filepath.Join(root, ".bin", "temporal-sql-tool"), nil
}

// Server is a running Temporal Server on PostgreSQL, with databases of its
// own that Stop drops.
type Server struct {
	*Temporal
	pg        string // the PostgreSQL server's URL
	databases []string
}

// StartTemporalServer starts Temporal Server (the production server, not the
// dev server) on the PostgreSQL server at pgURL, as
// ../shared/recipes/temporal-on-postgres.md does: two fresh databases, the
// schema set up and updated with the server's SQL tool from the schema files
// of the pinned module, a config with free 127.0.0.1 ports, then the
// namespaces and this service's search attributes, as the compose job does.
func StartTemporalServer(ctx context.Context, root, cli, dir, pgURL string, port int, namespaces ...string) (*Server, error) {
	return StartTemporalServerWithDynamicConfig(ctx, root, cli, dir, pgURL, port, TestDynamicConfig, namespaces...)
}

// TestDynamicConfig is the dynamic config StartTemporalServer gives the
// server: search attributes read through on every read, so that a test may
// use one the moment it is registered. Temporal says not to set it in
// production, and the compose file does not.
const TestDynamicConfig = "system.forceSearchAttributesCacheRefreshOnRead:\n  - value: true\n"

// StartTemporalServerWithDynamicConfig is StartTemporalServer with the
// server's dynamic config given as YAML ("" for none, as the compose file
// runs the server).
func StartTemporalServerWithDynamicConfig(ctx context.Context, root, cli, dir, pgURL string, port int, dynamicConfig string,
	namespaces ...string) (*Server, error) {
	server, sqlTool, err := ServerTools(ctx, root, os.Stderr)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(pgURL)
	if err != nil {
		return nil, fmt.Errorf("devstack: PostgreSQL URL: %w", err)
	}
	user, pass := u.User.Username(), "postgres" // trust auth takes any password
	if p, ok := u.User.Password(); ok {
		pass = p
	}
	host, pgPort := u.Hostname(), u.Port()
	if pgPort == "" {
		pgPort = "5432"
	}
	schemaRoot, err := moduleDir(ctx, filepath.Join(root, "tools", "temporal"), "go.temporal.io/server")
	if err != nil {
		return nil, err
	}
	suffix := testevent.RandomID(6)
	s := &Server{pg: pgURL, databases: []string{"temporal_" + suffix, "temporal_visibility_" + suffix}}
	for i, kind := range []string{"temporal", "visibility"} {
		sqlArgs := []string{"--plugin", "postgres12", "--ep", host, "-p", pgPort, "-u", user, "--pw", pass, "--db", s.databases[i]}
		for _, step := range [][]string{{"create-database"}, {"setup-schema", "-v", "0.0"},
			{"update-schema", "-d", filepath.Join(schemaRoot, "schema", "postgresql", "v12", kind, "versioned")}} {
			out, err := exec.CommandContext(ctx, sqlTool, append(sqlArgs, step...)...).CombinedOutput()
			if err != nil {
				s.dropDatabases()
				return nil, fmt.Errorf("devstack: %s %s: %v: %s", s.databases[i], step[0], err, lastLines(out))
			}
		}
	}
	ports := map[string]int{"Frontend": port}
	for _, name := range []string{"FrontendHTTP", "FrontendMembership", "History", "HistoryMembership", "Matching",
		"MatchingMembership", "Worker", "WorkerMembership", "Metrics", "Pprof"} {
		if ports[name], err = FreePort(); err != nil { // below 32768: membership ports must fit a SMALLINT
			s.dropDatabases()
			return nil, err
		}
	}
	configDir := filepath.Join(dir, "temporal-server-config")
	if err := writeServerConfig(configDir, serverConfig{Host: host, Port: pgPort, User: user, Password: pass,
		Database: s.databases[0], Visibility: s.databases[1], Ports: ports, Dynamic: dynamicConfig}); err != nil {
		s.dropDatabases()
		return nil, err
	}
	logPath := filepath.Join(dir, "temporal-server.log")
	p, err := start("temporal-server", server, logPath, "--root", dir, "--config", filepath.Base(configDir), "--env", "server",
		"--allow-no-auth", "start")
	if err != nil {
		s.dropDatabases()
		return nil, err
	}
	s.Temporal = &Temporal{Process: p, Address: fmt.Sprintf("127.0.0.1:%d", port)}
	if err := s.Temporal.waitAndRegister(ctx, cli, logPath, true, namespaces); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop stops the server and drops its databases.
func (s *Server) Stop() {
	if s.Temporal != nil {
		s.Temporal.Stop()
	}
	s.dropDatabases()
}

func (s *Server) dropDatabases() {
	db, err := sql.Open("pgx", s.pg)
	if err != nil {
		return
	}
	defer db.Close()
	for _, name := range s.databases {
		db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	}
}

// moduleDir is where the Go module cache holds a dependency of the module in
// dir (its schema files, here), downloading it when the cache lacks it.
func moduleDir(ctx context.Context, dir, module string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("devstack: download %s: %w", module, err)
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return "", fmt.Errorf("devstack: locate %s: %v (%s)", module, err, out)
	}
	return m.Dir, nil
}

func lastLines(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

type serverConfig struct {
	Host, Port, User, Password, Database, Visibility string
	Ports                                            map[string]int
	Dynamic                                          string // the dynamic config's YAML
}

// writeServerConfig writes the server's config (the recipe's
// development-postgres12.yaml with this run's databases and ports) and its
// dynamic config.
func writeServerConfig(dir string, c serverConfig) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dynamic := filepath.Join(dir, "dynamicconfig.yaml")
	content := c.Dynamic
	if strings.TrimSpace(content) == "" {
		content = "{}\n" // no setting: the server's defaults
	}
	if err := os.WriteFile(dynamic, []byte(content), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "server.yaml"))
	if err != nil {
		return err
	}
	defer f.Close()
	return serverConfigTemplate.Execute(f, struct {
		serverConfig
		DynamicPath string
	}{c, dynamic})
}

var serverConfigTemplate = template.Must(template.New("server").Parse(`log:
  stdout: true
  level: warn
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12
        databaseName: "{{.Database}}"
        connectAddr: "{{.Host}}:{{.Port}}"
        connectProtocol: tcp
        user: "{{.User}}"
        password: "{{.Password}}"
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: "{{.Visibility}}"
        connectAddr: "{{.Host}}:{{.Port}}"
        connectProtocol: tcp
        user: "{{.User}}"
        password: "{{.Password}}"
        maxConns: 2
        maxIdleConns: 2
        maxConnLifetime: 1h
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
  pprof:
    port: {{index .Ports "Pprof"}}
  metrics:
    prometheus:
      framework: tally
      timerType: histogram
      listenAddress: "127.0.0.1:{{index .Ports "Metrics"}}"
services:
  frontend:
    rpc:
      grpcPort: {{index .Ports "Frontend"}}
      membershipPort: {{index .Ports "FrontendMembership"}}
      bindOnLocalHost: true
      httpPort: {{index .Ports "FrontendHTTP"}}
  matching:
    rpc:
      grpcPort: {{index .Ports "Matching"}}
      membershipPort: {{index .Ports "MatchingMembership"}}
      bindOnLocalHost: true
  history:
    rpc:
      grpcPort: {{index .Ports "History"}}
      membershipPort: {{index .Ports "HistoryMembership"}}
      bindOnLocalHost: true
  worker:
    rpc:
      grpcPort: {{index .Ports "Worker"}}
      membershipPort: {{index .Ports "WorkerMembership"}}
      bindOnLocalHost: true
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "127.0.0.1:{{index .Ports "Frontend"}}"
dcRedirectionPolicy:
  policy: noop
dynamicConfigClient:
  filepath: "{{.DynamicPath}}"
  pollInterval: 10s
`))
