package devstack

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// HAProxyConfig says what the balancer fronts: host:port addresses of the
// webhook replicas, the admin replicas, and (optional) the Temporal
// frontends the service's processes reach through it.
type HAProxyConfig struct {
	Webhooks, Admins, Temporal []string
	// Check is how often a server is health-checked (default 500 ms); two
	// failed checks take it out, two passed ones put it back.
	Check time.Duration
}

// HAProxy is a running HAProxy: round-robin HTTP frontends for the webhook
// and the admin replicas, each server health-checked with GET /readyz and
// the client's address passed on in X-Forwarded-For; a TCP frontend for
// the Temporal frontends (gRPC), each checked by connecting; and a stats
// page.
type HAProxy struct {
	*Process
	WebhookURL, AdminURL string // http://127.0.0.1:port
	TemporalAddress      string // 127.0.0.1:port ("" without Temporal)
	StatsURL             string
}

// StartHAProxy writes dir/haproxy.cfg and runs bin (Debian's haproxy) on
// it in the foreground, waiting until the stats page answers and every
// frontend accepts connections.
func StartHAProxy(ctx context.Context, bin, dir string, c HAProxyConfig) (*HAProxy, error) {
	if c.Check <= 0 {
		c.Check = 500 * time.Millisecond
	}
	ports := map[string]int{}
	for _, name := range []string{"webhook", "admin", "temporal", "stats"} {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[name] = p
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	f, err := os.Create(cfgPath)
	if err != nil {
		return nil, err
	}
	err = haproxyTemplate.Execute(f, struct {
		HAProxyConfig
		Ports   map[string]int
		CheckMS int64
	}{c, ports, c.Check.Milliseconds()})
	f.Close()
	if err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, bin, "-c", "-f", cfgPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("devstack: haproxy config: %v: %s", err, out)
	}
	logPath := filepath.Join(dir, "haproxy.log")
	p, err := start("haproxy", bin, logPath, "-db", "-f", cfgPath)
	if err != nil {
		return nil, err
	}
	h := &HAProxy{Process: p, WebhookURL: fmt.Sprintf("http://127.0.0.1:%d", ports["webhook"]),
		AdminURL: fmt.Sprintf("http://127.0.0.1:%d", ports["admin"]), StatsURL: fmt.Sprintf("http://127.0.0.1:%d/stats", ports["stats"])}
	if len(c.Temporal) > 0 {
		h.TemporalAddress = fmt.Sprintf("127.0.0.1:%d", ports["temporal"])
	}
	if err := waitFor(ctx, p, logPath, func(ctx context.Context) error {
		_, err := h.Servers(ctx)
		return err
	}); err != nil {
		return nil, err
	}
	return h, nil
}

// ServerState is a backend server as HAProxy's stats page shows it.
type ServerState struct {
	// Status is UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (coming up),
	// MAINT...
	Status string
	// Sessions is how many connections (HTTP: requests, each on its own
	// connection to the server) HAProxy has passed to it so far.
	Sessions int
}

// Servers returns each backend server's state, keyed "backend/server"
// ("webhook/webhook-1").
func (h *HAProxy) Servers(ctx context.Context) (map[string]ServerState, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.StatsURL+";csv", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("haproxy stats: %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(body), "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("haproxy stats: %v", err)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	out := map[string]ServerState{}
	for _, row := range rows[1:] {
		sv := row[col["svname"]]
		if sv == "FRONTEND" || sv == "BACKEND" {
			continue
		}
		n, _ := strconv.Atoi(row[col["stot"]])
		out[row[col["pxname"]]+"/"+sv] = ServerState{Status: row[col["status"]], Sessions: n}
	}
	return out, nil
}

var haproxyTemplate = template.Must(template.New("haproxy").Funcs(template.FuncMap{
	"inc": func(i int) int { return i + 1 },
}).Parse(`global
    maxconn 4096

defaults
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    retries 2
    option redispatch

frontend stats
    mode http
    bind 127.0.0.1:{{.Ports.stats}}
    stats enable
    stats uri /stats
    stats refresh 0

frontend webhook
    mode http
    bind 127.0.0.1:{{.Ports.webhook}}
    option forwardfor
    default_backend webhook

backend webhook
    mode http
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {{.CheckMS}}ms fall 2 rise 2
{{- range $i, $a := .Webhooks}}
    server webhook-{{inc $i}} {{$a}} check
{{- end}}

frontend admin
    mode http
    bind 127.0.0.1:{{.Ports.admin}}
    option forwardfor
    default_backend admin

backend admin
    mode http
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {{.CheckMS}}ms fall 2 rise 2
{{- range $i, $a := .Admins}}
    server admin-{{inc $i}} {{$a}} check
{{- end}}
{{- if .Temporal}}

frontend temporal
    mode tcp
    bind 127.0.0.1:{{.Ports.temporal}}
    timeout client 10m
    default_backend temporal

backend temporal
    mode tcp
    balance roundrobin
    timeout server 10m
    default-server inter {{.CheckMS}}ms fall 2 rise 2
{{- range $i, $a := .Temporal}}
    server temporal-{{inc $i}} {{$a}} check
{{- end}}
{{- end}}
`))
