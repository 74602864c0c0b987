// Command loadgen sends signed, real-shaped Stripe events to a running
// webhook and compares what it measures with bare SignalWithStart against
// the same Temporal server, in the same run. Its defaults fit `make dev`:
//
//	go run ./cmd/loadgen -sessions 500 -concurrency 32
//	go run ./cmd/loadgen -rate 40 -duration 30s
//
// It exits 1 when the run is void: an event neither accepted nor refused,
// or an accepted session not persisted by the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"

	"identityverification/config"
	"identityverification/loadgen"
	"identityverification/store"
	"identityverification/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run() error {
	url := flag.String("url", "http://127.0.0.1:8080/webhooks/stripe", "the webhook")
	secret := flag.String("secret", envOr("STRIPE_WEBHOOK_SECRET", "whsec_devstack_not_a_secret"), "a webhook signing secret")
	dbURL := flag.String("database", envOr("DATABASE_URL", "sqlite:.data/identity-verification.db"), "the service's database (to see sessions persisted)")
	temporal := flag.String("temporal", envOr("TEMPORAL_ADDRESS", "127.0.0.1:7233"), "the Temporal frontend the service uses")
	namespace := flag.String("namespace", envOr("TEMPORAL_NAMESPACE", "default"), "its namespace")
	sessions := flag.Int("sessions", 300, "sessions to send events for")
	duration := flag.Duration("duration", 0, "with -rate: send for this long instead of -sessions")
	rate := flag.Float64("rate", 0, "events per second (open model); 0 means -concurrency senders (closed model)")
	concurrency := flag.Int("concurrency", 32, "senders, without -rate")
	mixFlag := flag.String("mix", "", "session kinds and weights, e.g. verified=40,failed_then_verified=30,duplicated=15,reordered=15 (open: left waiting for the user)")
	bare := flag.Bool("bare", true, "also run bare SignalWithStart on the same server and compare")
	settle := flag.Duration("settle", 2*time.Minute, "how long to wait for every session to be persisted")
	flag.Parse()

	mix, err := parseMix(*mixFlag)
	if err != nil {
		return err
	}
	if *duration > 0 {
		if *rate <= 0 {
			return fmt.Errorf("-duration needs -rate")
		}
		*sessions = int(math.Ceil(*rate * duration.Seconds() / loadgen.EventsPerSession(mix)))
	}
	// The trivial worker gets the service worker's tuning (WORKER_*).
	cfg, err := config.Load(config.OS)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	st, err := store.Open(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer st.Close()

	model := fmt.Sprintf("concurrency %d (closed model)", *concurrency)
	if *rate > 0 {
		model = fmt.Sprintf("%.0f events/s (open model)", *rate)
	}
	fmt.Printf("load: %d sessions, %s, mix %s\n", *sessions, model, formatMix(mix))
	res, err := loadgen.Run(ctx, loadgen.Config{WebhookURL: *url, Secret: *secret, Sessions: *sessions, Rate: *rate,
		Concurrency: *concurrency, Mix: mix, DB: st.DB(), Settle: *settle})
	if err != nil {
		return err
	}
	var ack, e2e *loadgen.BareResult
	if *bare {
		c, err := client.Dial(client.Options{HostPort: *temporal, Namespace: *namespace,
			Logger: log.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))})
		if err != nil {
			return err
		}
		defer c.Close()
		opts := worker.Options(cfg.Worker)
		a, err := loadgen.Bare(ctx, c, res.Sent, *rate, *concurrency, false, opts)
		if err != nil {
			return err
		}
		// The end-to-end floor: the load's sessions at its rate of sessions.
		e, err := loadgen.Bare(ctx, c, res.Sessions, *rate/loadgen.EventsPerSession(mix), *concurrency, true, opts)
		if err != nil {
			return err
		}
		ack, e2e = &a, &e
	}
	loadgen.Report(os.Stdout, res, ack, e2e)
	if res.Void != "" {
		return fmt.Errorf("the run is void: %s", res.Void)
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func parseMix(s string) (map[loadgen.Kind]int, error) {
	if s == "" {
		return loadgen.DefaultMix, nil
	}
	mix := map[loadgen.Kind]int{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("-mix: want kind=weight,..., got %q", part)
		}
		if !slices.Contains(loadgen.Kinds, loadgen.Kind(k)) {
			return nil, fmt.Errorf("-mix: unknown kind %q", k)
		}
		mix[loadgen.Kind(k)] = n
	}
	return mix, nil
}

func formatMix(mix map[loadgen.Kind]int) string {
	var parts []string
	for k, w := range mix {
		parts = append(parts, fmt.Sprintf("%s=%d", k, w))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
