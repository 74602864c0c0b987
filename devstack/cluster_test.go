package devstack

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

// A two-node cluster behind HAProxy: each node answers on its own, both
// are members of one ring, the balancer passes gRPC to them and HTTP to
// health-checked replicas with X-Forwarded-For, and a node killed and
// brought back answers again.
func TestTemporalClusterBehindHAProxy(t *testing.T) {
	pg := os.Getenv("TEST_DATABASE_URL")
	if pg == "" {
		t.Skip("needs TEST_DATABASE_URL")
	}
	ctx := context.Background()
	wd, _ := os.Getwd()
	root, err := Root(wd)
	if err != nil {
		t.Fatal(err)
	}
	cli := filepath.Join(root, ".bin", "temporal")
	c, err := StartTemporalCluster(ctx, root, cli, t.TempDir(), pg, 2, "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	var mu sync.Mutex
	var forwarded []string
	ready := true
	replica := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/readyz" {
			if !ready {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		forwarded = append(forwarded, r.Header.Get("X-Forwarded-For"))
	}))
	defer replica.Close()
	addr := replica.Listener.Addr().String()
	h, err := StartHAProxy(ctx, "/usr/sbin/haproxy", t.TempDir(), HAProxyConfig{Webhooks: []string{addr}, Admins: []string{addr},
		Temporal: c.Addresses()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	until := func(what string, cond func() error) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if err = cond(); err == nil {
				return
			}
		}
		t.Fatalf("%s: %v", what, err)
	}
	members := func(address string) error {
		tc, err := client.Dial(client.Options{HostPort: address, Logger: QuietLogger})
		if err != nil {
			return err
		}
		defer tc.Close()
		_, err = tc.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: "default"})
		return err
	}
	for _, a := range append(c.Addresses(), h.TemporalAddress) {
		until("namespace through "+a, func() error { return members(a) })
	}
	// One ring: the membership table holds both nodes' history hosts.
	u, _ := url.Parse(pg)
	u.Path = "/" + c.db.persistence
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	until("both nodes in the ring", func() error {
		var n int
		if err := db.QueryRow(`SELECT count(DISTINCT rpc_port) FROM cluster_membership WHERE record_expiry > now()`).Scan(&n); err != nil {
			return err
		}
		if n < 8 { // 4 services × 2 nodes
			return fmt.Errorf("%d live members", n)
		}
		return nil
	})
	until("HAProxy sees every server up", func() error {
		s, err := h.Servers(ctx)
		if err != nil {
			return err
		}
		for _, k := range []string{"webhook/webhook-1", "admin/admin-1", "temporal/temporal-1", "temporal/temporal-2"} {
			if s[k].Status != "UP" {
				return fmt.Errorf("%s %v (%v)", k, s[k], s)
			}
		}
		return nil
	})
	resp, err := http.Post(h.WebhookURL+"/webhooks/stripe", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	if len(forwarded) != 1 || forwarded[0] != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q; want 127.0.0.1", forwarded)
	}
	ready = false
	mu.Unlock()
	until("HAProxy takes a replica that is not ready out", func() error {
		s, _ := h.Servers(ctx)
		if s["webhook/webhook-1"].Status != "DOWN" {
			return fmt.Errorf("%v", s["webhook/webhook-1"])
		}
		return nil
	})
	c.Kill(0)
	if conn, err := net.Dial("tcp", c.Addresses()[0]); err == nil {
		conn.Close()
		t.Fatal("the killed node still accepts connections")
	}
	until("the other node answers", func() error { return members(c.Addresses()[1]) })
	if err := c.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	until("the node brought back answers", func() error { return members(c.Addresses()[0]) })
}
