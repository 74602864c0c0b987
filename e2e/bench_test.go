package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"identityverification/config"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/worker"
)

// benchConcurrency is how many sessions are in flight at once.
const benchConcurrency = 32

// BenchmarkVerifiedSessions measures verified sessions per second, end to
// end, against a floor measured in the same run on the same dev server:
//
//   - bare: SignalWithStart of a trivial workflow that a trivial worker
//     completes on its first signal (the least Temporal can do per session);
//   - service: a signed verified event POSTed to the webhook for a session
//     with a registered contact, until its row says verified in the database
//     (the comparison with Stripe, the transition and the email included).
//
// Run it with a fixed count, e.g.
//
//	go test -run '^$' -bench VerifiedSessions -benchtime 300x ./e2e/
//
// and read the sessions/s of each; the ratio is the service's cost.
func BenchmarkVerifiedSessions(b *testing.B) {
	b.Run("bare SignalWithStart with a trivial worker", benchBare)
	for _, db := range storetest.Databases(b) {
		b.Run("service on "+db.Name, func(b *testing.B) { benchService(b, db) })
	}
}

func benchBare(b *testing.B) {
	ctx := context.Background()
	const ns, queue = "e2e-bench-bare", "bench-bare"
	out, err := exec.Command(filepath.Join("..", ".bin", "temporal"), "operator", "namespace", "create",
		"--address", components.temporal.Address, "--namespace", ns).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "already") {
		b.Fatalf("create namespace: %v\n%s", err, out)
	}
	c, err := client.Dial(client.Options{HostPort: components.temporal.Address, Namespace: ns, Logger: quiet{}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cfg, err := config.Load(config.Map{})
	if err != nil {
		b.Fatal(err)
	}
	w := sdkworker.New(c, queue, worker.Options(cfg.Worker)) // the service worker's tuning
	w.RegisterWorkflowWithOptions(func(ctx workflow.Context) error {
		workflow.GetSignalChannel(ctx, "s").Receive(ctx, nil)
		return nil
	}, workflow.RegisterOptions{Name: "Trivial"})
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	prefix := "bench-" + testevent.RandomID(8) + "-"
	runs := make([]client.WorkflowRun, b.N)
	b.ResetTimer()
	start := time.Now()
	inParallel(b.N, func(i int) error {
		id := fmt.Sprint(prefix, i)
		run, err := c.SignalWithStartWorkflow(ctx, id, "s", nil, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, "Trivial")
		runs[i] = run
		return err
	})
	for _, run := range runs {
		if err := run.Get(ctx, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sessions/s")
}

func benchService(b *testing.B, db storetest.Database) {
	s := startStack(b, db, config.Map{"LOG_LEVEL": "error"})
	ctx := context.Background()
	prefix := "vs_bench_" + testevent.RandomID(8) + "_"
	payloads := make([][]byte, b.N)
	ids := make([]string, b.N)
	for i := range b.N {
		ids[i] = fmt.Sprint(prefix, i)
		if err := s.store.UpsertContact(ctx, store.Contact{SessionID: ids[i], Email: ids[i] + "@example.com"}); err != nil {
			b.Fatal(err)
		}
		p, err := testevent.Build(testevent.Options{Type: "verified", SessionID: ids[i]})
		if err != nil {
			b.Fatal(err)
		}
		payloads[i] = p
	}
	// Signed ahead of the clock, so the signing does not count.
	sigs := make([]string, b.N)
	for i := range payloads {
		sigs[i] = testevent.Sign(payloads[i], secret, time.Now())
	}
	b.ResetTimer()
	start := time.Now()
	inParallel(b.N, func(i int) error {
		req, _ := http.NewRequest(http.MethodPost, s.webhookURL, bytes.NewReader(payloads[i]))
		req.Header.Set("Stripe-Signature", sigs[i])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("webhook answered %d", resp.StatusCode)
		}
		return nil
	})
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		var n int
		err := s.store.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions WHERE status = 'verified' AND session_id LIKE $1`,
			prefix+"%").Scan(&n)
		if err != nil {
			b.Fatal(err)
		}
		if n >= b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sessions verified after 5 minutes", n, b.N)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sessions/s")
}

// inParallel runs fn for 0..n-1 on benchConcurrency goroutines.
func inParallel(n int, fn func(i int) error) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range benchConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					panic(err)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
