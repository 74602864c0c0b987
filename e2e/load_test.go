package e2e

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"identityverification/config"
	"identityverification/devstack"
	"identityverification/loadgen"
	"identityverification/store/storetest"
	"identityverification/worker"
)

// TestLoadBalances drives the service with the load tool's library (a mix
// of failures, verified, duplicates and reordering) and then bare
// SignalWithStart on the same server, on each database. It checks the
// balance, never the speed: every event sent was answered, none refused,
// every session persisted. CI runs a short load; `make load` a long one and
// prints the report (LOAD_SESSIONS, LOAD_CONCURRENCY, LOAD_RATE).
func TestLoadBalances(t *testing.T) {
	sessions, concurrency, rate := envInt("LOAD_SESSIONS", 40), envInt("LOAD_CONCURRENCY", 32), envInt("LOAD_RATE", 0)
	env, cfg := loadEnv(t)
	opts := worker.Options(cfg.Worker)
	forEachDatabaseWith(t, env, func(t *testing.T, s *stack) {
		ctx := context.Background()
		cpu0, err := components.temporal.CPUTime()
		if err != nil {
			t.Fatal(err)
		}
		res, err := loadgen.Run(ctx, loadgen.Config{WebhookURL: s.webhookURL, Secret: secret, Sessions: sessions,
			Concurrency: concurrency, Rate: float64(rate), DB: s.store.DB()})
		if err != nil {
			t.Fatal(err)
		}
		cpu1, err := components.temporal.CPUTime()
		if err != nil {
			t.Fatal(err)
		}
		ack, err := loadgen.Bare(ctx, s.temporal, res.Sent, float64(rate), concurrency, false, opts)
		if err != nil {
			t.Fatal(err)
		}
		// The end-to-end floor: the load's sessions at its rate of sessions.
		e2e, err := loadgen.Bare(ctx, s.temporal, res.Sessions, float64(rate)/loadgen.EventsPerSession(loadgen.DefaultMix),
			concurrency, true, opts)
		if err != nil {
			t.Fatal(err)
		}
		var report strings.Builder
		loadgen.Report(&report, res, &ack, &e2e)
		t.Logf("%d sessions on %s:\n%sTemporal server CPU: %.1f ms per session (the service's run, until all persisted)",
			sessions, s.db, report.String(), float64((cpu1-cpu0).Microseconds())/1000/float64(sessions))
		if res.Void != "" || res.Accepted != res.Sent || res.Persisted != sessions || res.Refused+res.Failed != 0 {
			t.Errorf("the load does not balance: %+v", res)
		}
		if ack.Accepted != res.Sent || e2e.Accepted != sessions {
			t.Errorf("bare: %d of %d and %d of %d accepted", ack.Accepted, res.Sent, e2e.Accepted, sessions)
		}
	})
}

// loadEnv is the stack's configuration for a load run: quiet logs and the
// worker tuning under test (WORKER_* from the environment), which the floor's
// trivial worker gets too.
func loadEnv(t *testing.T) (config.Map, config.Config) {
	env := config.Map{"LOG_LEVEL": "error"}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "WORKER_") {
			env[k] = v
		}
	}
	cfg, err := config.Load(env)
	if err != nil {
		t.Fatal(err)
	}
	return env, cfg
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

// TestWorkerMemoryPerOpenSessions measures what open sessions (waiting for
// the user, timers armed) cost the worker's memory, per 1000, as they pile
// up to LOAD_OPEN_SESSIONS; with WORKER_STICKY_CACHE_SIZE below that, the
// cost stops growing at the cache's size. `make load-memory` runs it; it is
// a measurement, so it only logs (and checks the sessions balance).
func TestWorkerMemoryPerOpenSessions(t *testing.T) {
	total := envInt("LOAD_OPEN_SESSIONS", 0)
	if total == 0 {
		t.Skip("set LOAD_OPEN_SESSIONS (make load-memory)")
	}
	env, cfg := loadEnv(t)
	s := startStack(t, storetest.Databases(t)[0], env)
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	base := heap()
	const step = 1000
	for open := step; open <= total; open += step {
		res, err := loadgen.Run(context.Background(), loadgen.Config{WebhookURL: s.webhookURL, Secret: secret, Sessions: step,
			Concurrency: 32, Mix: map[loadgen.Kind]int{loadgen.KindOpen: 1}, DB: s.store.DB()})
		if err != nil {
			t.Fatal(err)
		}
		if res.Void != "" {
			t.Fatalf("void: %s", res.Void)
		}
		h := heap()
		t.Logf("%6d open sessions: process heap %+.1f MiB over the idle stack, %.2f MiB per 1000 (sticky cache %d)",
			open, float64(h-base)/(1<<20), float64(h-base)/(1<<20)/float64(open/step), cfg.Worker.StickyCacheSize)
	}
}

// TestWebhookAckOverhead measures what the webhook adds to a bare
// SignalWithStart, one request at a time, with no worker running anywhere
// in the process (in a namespace of its own): the webhook alone, without the
// CPU a worker takes on the same cores. `make load` runs it
// (LOAD_ACK_EVENTS); it is a measurement, so it only logs and checks that
// every event was accepted.
func TestWebhookAckOverhead(t *testing.T) {
	n := envInt("LOAD_ACK_EVENTS", 0)
	if n == 0 {
		t.Skip("set LOAD_ACK_EVENTS (make load)")
	}
	s := startRoles(t, storetest.Databases(t)[0], config.Map{"LOG_LEVEL": "error", "TEMPORAL_NAMESPACE": namespaces["ack"]}, false)
	c, err := client.Dial(client.Options{HostPort: components.temporal.Address, Namespace: namespaces["ack"], Logger: devstack.QuietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	res, err := loadgen.Run(ctx, loadgen.Config{WebhookURL: s.webhookURL, Secret: secret, Sessions: n, Concurrency: 1,
		Mix: map[loadgen.Kind]int{loadgen.KindVerified: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Void != "" || res.Accepted != n {
		t.Fatalf("not every event accepted: %+v", res)
	}
	bare, err := loadgen.Bare(ctx, c, n, 0, 1, false, sdkworker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events one at a time, no worker: webhook %s; bare SignalWithStart %s; p50 overhead %+.2f ms",
		n, res.Ack, bare.Ack, float64((res.Ack.P50-bare.Ack.P50).Microseconds())/1000)
}
