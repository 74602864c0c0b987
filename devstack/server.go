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
	db, err := setUpServerDatabases(ctx, root, pgURL)
	if err != nil {
		return nil, err
	}
	s := &Server{pg: pgURL, databases: db.databases()}
	node, err := db.startNode(ctx, cli, dir, "temporal-server", port, dynamicConfig, serverPools, namespaces)
	if err != nil {
		s.dropDatabases()
		return nil, err
	}
	s.Temporal = node.Temporal
	return s, nil
}

// serverDatabases are a fresh pair of databases (history and visibility)
// with Temporal's schema, for one server or the nodes of a cluster.
type serverDatabases struct {
	server                         string // the server's binary
	host, port, user, pass         string
	persistence, visibility, pgURL string
}

func (d *serverDatabases) databases() []string { return []string{d.persistence, d.visibility} }

// setUpServerDatabases makes the two databases on the PostgreSQL server at
// pgURL and sets their schema up with the server's SQL tool, from the
// schema files of the pinned module.
func setUpServerDatabases(ctx context.Context, root, pgURL string) (*serverDatabases, error) {
	server, sqlTool, err := ServerTools(ctx, root, os.Stderr)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(pgURL)
	if err != nil {
		return nil, fmt.Errorf("devstack: PostgreSQL URL: %w", err)
	}
	d := &serverDatabases{server: server, user: u.User.Username(), pass: "postgres", host: u.Hostname(), port: u.Port(), pgURL: pgURL}
	if p, ok := u.User.Password(); ok { // trust auth takes any password
		d.pass = p
	}
	if d.port == "" {
		d.port = "5432"
	}
	schemaRoot, err := moduleDir(ctx, filepath.Join(root, "tools", "temporal"), "go.temporal.io/server")
	if err != nil {
		return nil, err
	}
	suffix := testevent.RandomID(6)
	d.persistence, d.visibility = "temporal_"+suffix, "temporal_visibility_"+suffix
	for i, kind := range []string{"temporal", "visibility"} {
		name := d.databases()[i]
		sqlArgs := []string{"--plugin", "postgres12", "--ep", d.host, "-p", d.port, "-u", d.user, "--pw", d.pass, "--db", name}
		for _, step := range [][]string{{"create-database"}, {"setup-schema", "-v", "0.0"},
			{"update-schema", "-d", filepath.Join(schemaRoot, "schema", "postgresql", "v12", kind, "versioned")}} {
			out, err := exec.CommandContext(ctx, sqlTool, append(sqlArgs, step...)...).CombinedOutput()
			if err != nil {
				(&Server{pg: pgURL, databases: d.databases()}).dropDatabases()
				return nil, fmt.Errorf("devstack: %s %s: %v: %s", name, step[0], err, lastLines(out))
			}
		}
	}
	return d, nil
}

// serverNode is one server process on the databases, with every service,
// its config in dir and its ports.
type serverNode struct {
	*Temporal
	name, dir, logPath string
}

// startNode writes a config with the frontend on port and free ports for
// the rest (membership ports below 32768: the server stores them in a
// SMALLINT), starts the server and waits until it answers; it then creates
// the namespaces and registers this service's search attributes on them
// (once per cluster is enough: none for a further node).
func (d *serverDatabases) startNode(ctx context.Context, cli, dir, name string, port int, dynamicConfig string, pools connPools,
	namespaces []string) (*serverNode, error) {
	ports := map[string]int{"Frontend": port}
	var err error
	for _, p := range []string{"FrontendHTTP", "FrontendMembership", "History", "HistoryMembership", "Matching",
		"MatchingMembership", "Worker", "WorkerMembership", "Metrics", "Pprof"} {
		if ports[p], err = FreePort(); err != nil { // below 32768
			return nil, err
		}
	}
	configDir := filepath.Join(dir, name+"-config")
	if err := writeServerConfig(configDir, serverConfig{Host: d.host, Port: d.port, User: d.user, Password: d.pass,
		Database: d.persistence, Visibility: d.visibility, Ports: ports, Dynamic: dynamicConfig, Pools: pools}); err != nil {
		return nil, err
	}
	n := &serverNode{name: name, dir: dir, logPath: filepath.Join(dir, name+".log")}
	n.Temporal = &Temporal{Address: fmt.Sprintf("127.0.0.1:%d", port)}
	if err := n.start(ctx, d.server); err != nil {
		return nil, err
	}
	if err := n.Temporal.waitAndRegister(ctx, cli, n.logPath, true, namespaces); err != nil {
		n.Stop()
		return nil, err
	}
	return n, nil
}

// start starts the node's process on its config (again, after a kill).
func (n *serverNode) start(ctx context.Context, server string) error {
	p, err := start(n.name, server, n.logPath, "--root", n.dir, "--config", n.name+"-config", "--env", "server",
		"--allow-no-auth", "start")
	if err != nil {
		return err
	}
	n.Temporal.Process = p
	return nil
}

// Cluster is a Temporal Server cluster on PostgreSQL: several server
// processes on one pair of databases, each running every service (frontend,
// history, matching, worker) on ports of its own on 127.0.0.1, finding each
// other through the database's membership table. Stop drops the databases.
type Cluster struct {
	Nodes []*Temporal // each node's process and frontend address
	db    *serverDatabases
	nodes []*serverNode
	cli   string
}

// StartTemporalCluster starts a cluster of n nodes, one after the other
// (each waits until it answers), as StartTemporalServer starts one, and
// then creates the namespaces and registers the search attributes.
func StartTemporalCluster(ctx context.Context, root, cli, dir, pgURL string, n int, namespaces ...string) (*Cluster, error) {
	db, err := setUpServerDatabases(ctx, root, pgURL)
	if err != nil {
		return nil, err
	}
	c := &Cluster{db: db, cli: cli}
	for i := range n {
		port, err := FreePort()
		if err != nil {
			c.Stop()
			return nil, err
		}
		var ns []string
		if i == n-1 { // once every node has joined
			ns = namespaces
		}
		node, err := db.startNode(ctx, cli, dir, fmt.Sprintf("temporal-node-%d", i+1), port, TestDynamicConfig, clusterNodePools, ns)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.nodes = append(c.nodes, node)
		c.Nodes = append(c.Nodes, node.Temporal)
	}
	return c, nil
}

// Addresses are the nodes' frontend addresses (host:port).
func (c *Cluster) Addresses() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Address)
	}
	return out
}

// Kill kills node i (SIGKILL, as a crash would) and waits until it is gone.
func (c *Cluster) Kill(i int) { c.nodes[i].Kill() }

// Restart starts node i again on its config and ports (after Kill or
// Stop) and waits until it answers.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	n := c.nodes[i]
	select {
	case <-n.Exited():
	default:
		return fmt.Errorf("devstack: %s still runs", n.name)
	}
	if err := n.start(ctx, c.db.server); err != nil {
		return err
	}
	c.Nodes[i] = n.Temporal
	return n.Temporal.waitAndRegister(ctx, c.cli, n.logPath, false, nil)
}

// Stop stops every node and drops the databases.
func (c *Cluster) Stop() {
	for _, n := range c.nodes {
		n.Stop()
	}
	(&Server{pg: c.db.pgURL, databases: c.db.databases()}).dropDatabases()
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
	Pools                                            connPools
}

// connPools size a server's connection pools to PostgreSQL. Each service
// of a server process (frontend, history, matching, worker) has pools of
// its own, of these sizes.
type connPools struct{ Max, Idle, VisibilityMax, VisibilityIdle int }

var (
	// serverPools are one server's (the recipe's sizes).
	serverPools = connPools{Max: 20, Idle: 20, VisibilityMax: 2, VisibilityIdle: 2}
	// clusterNodePools are each cluster node's: smaller, so that two nodes
	// and the service's replicas stay well within a PostgreSQL's default
	// 100 connections beside the other tests on it (two nodes with
	// serverPools took 80 and more, and the server refused clients).
	clusterNodePools = connPools{Max: 5, Idle: 2, VisibilityMax: 2, VisibilityIdle: 1}
)

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
        maxConns: {{.Pools.Max}}
        maxIdleConns: {{.Pools.Idle}}
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: "{{.Visibility}}"
        connectAddr: "{{.Host}}:{{.Port}}"
        connectProtocol: tcp
        user: "{{.User}}"
        password: "{{.Password}}"
        maxConns: {{.Pools.VisibilityMax}}
        maxIdleConns: {{.Pools.VisibilityIdle}}
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
