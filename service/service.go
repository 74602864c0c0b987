// Package service wires the processes from configuration: a Temporal client,
// the webhook server, the admin listener (admin API, review desk, codec
// server) and the worker. The command, the dev stack and the
// end-to-end tests all start the service through Run.
package service

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"golang.org/x/sync/errgroup"

	"identityverification/access"
	"identityverification/admin"
	"identityverification/codec"
	"identityverification/config"
	"identityverification/desk"
	"identityverification/ops"
	"identityverification/retrylink"
	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/webhook"
	"identityverification/worker"
)

// Roles says which parts this process runs.
type Roles struct {
	Webhook bool // the webhook and retry links (public)
	Worker  bool
	// Admin runs the admin listener: the admin API, the review desk (with
	// OIDC_ISSUER) and the codec server (with CODEC_TOKEN). A process of
	// its own in production, so the public webhook holds none of their
	// secrets.
	Admin bool
	// Listener for the webhook; nil listens on cfg.ListenAddr.
	Listener net.Listener
	// AdminListener for the admin listener; nil listens on cfg.AdminAddr.
	AdminListener net.Listener
	// OpsListener for health and metrics (every process); nil listens on
	// cfg.OpsAddr, or not at all when it is config.OpsOff.
	OpsListener net.Listener
}

// NewLogger is the service's JSON logger at the configured level.
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// Dial connects to Temporal with the configured options and logger. With
// lazy, the connection is made on first use: a process starts while
// Temporal is down (Run's always are), its webhook answers 503 (so Stripe
// retries) and reports not ready, its worker waits, until Temporal is back.
func Dial(ctx context.Context, cfg config.Config, lazy bool, log *slog.Logger) (client.Client, error) {
	opts := cfg.Temporal
	opts.Logger = sdklog.NewStructuredLogger(log.With("component", "temporal"))
	if cfg.Codec != nil {
		// Every payload the process writes is encrypted, failure messages
		// included, and decrypted when read: the webhook's signals, the
		// worker's commands and results, the admin API's queries and
		// updates, the histories the replay command replays.
		opts.DataConverter, opts.FailureConverter = cfg.Codec.DataConverter(), cfg.Codec.FailureConverter()
	}
	var c client.Client
	var err error
	if lazy {
		c, err = client.NewLazyClient(opts)
	} else {
		c, err = client.DialContext(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("temporal: dial %s: %w", opts.HostPort, err)
	}
	return c, nil
}

// Run runs the chosen roles until ctx is done, then shuts them down.
func Run(ctx context.Context, cfg config.Config, roles Roles, log *slog.Logger) error {
	if roles.Webhook {
		if err := cfg.CheckWebhook(); err != nil {
			return err
		}
	}
	if roles.Worker {
		if err := cfg.CheckWorker(); err != nil {
			return err
		}
	}
	if roles.Admin {
		if err := cfg.CheckAdmin(); err != nil {
			return err
		}
	}
	// One registry per process: its own metrics, the webhook's, the
	// activities' and the Temporal SDK's, served on the ops listener.
	reg := ops.NewRegistry()
	metrics, closeMetrics := ops.TemporalMetrics(reg, log.With("component", "metrics"))
	defer closeMetrics.Close()
	cfg.Temporal.MetricsHandler = metrics
	c, err := Dial(ctx, cfg, true, log)
	if err != nil {
		return err
	}
	defer c.Close()
	g, ctx := errgroup.WithContext(ctx)
	// run starts a role; the first to fail stops the others, and says so
	// in the log at once (before, a worker that failed to start stopped
	// the webhook beside it without a word until the process exited).
	var first sync.Once
	run := func(role string, fn func() error) {
		g.Go(func() error {
			err := fn()
			if err != nil && ctx.Err() == nil {
				first.Do(func() { log.Error("stopping the process: "+role+" failed", "error", err) })
			}
			return err
		})
	}
	ready := &webhook.Readiness{Temporal: c, Log: log.With("component", "readiness")}
	g.Go(func() error { ready.Run(ctx); return nil })
	if cfg.OpsAddr != config.OpsOff || roles.OpsListener != nil {
		run("ops listener", func() error {
			return runOps(ctx, cfg, roles.OpsListener, ops.Handler(ready.Ready, reg), log.With("component", "ops"))
		})
	} else {
		log.Info("ops listener off (OPS_ADDR=off): no metrics; health only on the webhook's listener, where this process runs it")
	}
	if roles.Worker {
		run("worker", func() error { return worker.Run(ctx, cfg, c, reg, log.With("component", "worker")) })
	}
	if roles.Webhook {
		run("webhook", func() error {
			// The retry-link limit is shared through PostgreSQL; a
			// webhook-only process on SQLite (one machine, one process:
			// the default) limits in memory rather than make a database
			// file of its own.
			shared := roles.Worker || roles.Admin || store.IsPostgres(cfg.DatabaseURL)
			return runWebhook(ctx, cfg, roles.Listener, c, reg, ready, shared, log.With("component", "webhook"))
		})
	}
	if roles.Admin {
		run("admin listener", func() error {
			return runAdmin(ctx, cfg, roles.AdminListener, c, ready, log.With("component", "admin"))
		})
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// runOps serves health and metrics on ln (or cfg.OpsAddr) until ctx is done.
func runOps(ctx context.Context, cfg config.Config, ln net.Listener, h http.Handler, log *slog.Logger) error {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.OpsAddr); err != nil {
			return fmt.Errorf("ops: listen: %w", err)
		}
	}
	log.Info("ops listening (/livez /readyz /metrics)", "addr", ln.Addr().String())
	return webhook.Serve(ctx, ln, h, cfg.ShutdownGrace, log)
}

// runWebhook serves the webhook and retry links on ln (or cfg.ListenAddr)
// until ctx is done, with /livez and /readyz for load balancers; metrics
// are on the ops listener only.
func runWebhook(ctx context.Context, cfg config.Config, ln net.Listener, c client.Client, reg *prometheus.Registry,
	ready *webhook.Readiness, sharedLimit bool, wlog *slog.Logger) error {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return fmt.Errorf("webhook: listen: %w", err)
		}
	}
	h := &webhook.Handler{Temporal: c, Ready: ready, Secrets: cfg.WebhookSecrets, Tolerance: cfg.WebhookTolerance,
		MaxBody: cfg.WebhookMaxBody, SignalTimeout: cfg.SignalTimeout, Policy: cfg.Policy,
		Metrics: webhook.NewMetrics(reg), Log: wlog, Now: time.Now}
	// With sharedLimit the retry-link limit is counted in the database,
	// shared by every replica. The webhook does not wait for the database:
	// until it is open (or while it fails) each replica limits in its own
	// memory.
	counter := &openingCounter{}
	limiter := retrylink.NewLimiter(5, 10*time.Minute)
	limiter.Log = wlog
	if sharedLimit {
		limiter.Counter = counter
	}
	retry := &retrylink.Handler{Links: retrylink.New(cfg.PublicBaseURL, cfg.RetryLinkSecret),
		States: retrylink.TemporalStates{Client: c}, Sessions: stripeapi.New(cfg.StripeAPIKey, cfg.StripeAPIBase),
		Limiter: limiter, Timeout: 10 * time.Second, Log: wlog}
	sctx, stop := context.WithCancel(ctx)
	opened := make(chan *store.Store, 1)
	if !sharedLimit {
		opened <- nil
	} else {
		go openCounter(sctx, cfg, counter, opened, wlog)
	}
	wlog.Info("webhook listening", "addr", ln.Addr().String(), "route", webhook.Route)
	err := webhook.Serve(ctx, ln, webhook.NewRouter(h, retry, ready), cfg.ShutdownGrace, wlog)
	stop()
	if st := <-opened; st != nil {
		st.Close() // after Serve: its requests have ended, or outlived the grace
	}
	return err
}

// openCounter opens the store for the retry-link limit, waiting while the
// database is down, and hands it to counter and to opened (nil when it
// cannot be opened).
func openCounter(ctx context.Context, cfg config.Config, counter *openingCounter, opened chan<- *store.Store, wlog *slog.Logger) {
	st, err := store.OpenRetrying(ctx, cfg.DatabaseURL, wlog)
	if err != nil {
		if ctx.Err() == nil {
			wlog.Error("retry-link limit: the database cannot be opened; each replica limits on its own", "error", err)
		}
		opened <- nil
		return
	}
	counter.st.Store(st)
	wlog.Info("retry-link limit counted in the database, shared by every replica")
	opened <- st
}

// openingCounter counts through the store once it is open; before, every
// hit fails (the limiter then counts in memory).
type openingCounter struct{ st atomic.Pointer[store.Store] }

func (o *openingCounter) Hit(ctx context.Context, bucket string, window time.Duration, at time.Time) (int, error) {
	st := o.st.Load()
	if st == nil {
		return 0, retrylink.ErrCounterNotReady
	}
	return st.Hit(ctx, bucket, window, at)
}

// runAdmin serves, on ln (or cfg.AdminAddr) until ctx is done, the admin
// API (ADMIN_TOKEN and API keys), the review desk when OIDC_ISSUER is set
// and the codec server (for the Temporal UI and CLI) when CODEC_TOKEN is,
// with /livez and /readyz for load balancers (ready: the database is open
// and Temporal answers).
func runAdmin(ctx context.Context, cfg config.Config, ln net.Listener, c client.Client, ready *webhook.Readiness, log *slog.Logger) error {
	mux := http.NewServeMux()
	routes := []string{"/admin/sessions", "/admin/sessions/{vs_id}", "/admin/reviews", "/admin/audit", "/livez", "/readyz"}
	// The admin API and the review desk need the database; the codec server
	// does not. The listener serves at once; until the store is open
	// (store.OpenRetrying waits while the database is down; an error no
	// wait can mend stops the process), authentication still comes first:
	// anyone without ADMIN_TOKEN gets 401, ADMIN_TOKEN a plain 503.
	var opened atomic.Pointer[http.ServeMux]
	waiting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m := opened.Load(); m != nil {
			m.ServeHTTP(w, r)
			return
		}
		token, ok := access.Bearer(r)
		if !ok || !access.SameSecret(token, cfg.AdminToken) || !strings.HasPrefix(r.URL.Path, "/admin/") {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", `Bearer realm="admin"`)
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"unauthorized"}` + "\n"))
			return
		}
		w.Header().Set("Retry-After", "5")
		http.Error(w, "starting; try again shortly", http.StatusServiceUnavailable)
	})
	mux.Handle("/admin/", waiting)
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { health(w, http.StatusOK, "ok", "") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		switch {
		case opened.Load() == nil:
			health(w, http.StatusServiceUnavailable, "unavailable", "database_not_open")
		case !ready.Ready(ctx):
			health(w, http.StatusServiceUnavailable, "unavailable", "temporal_unreachable")
		default:
			health(w, http.StatusOK, "ok", "")
		}
	})
	if cfg.OIDC.Enabled() {
		mux.Handle(desk.Prefix, waiting)
		routes = append(routes, desk.Prefix)
	}
	if cfg.CodecToken != "" && cfg.Codec != nil {
		srv := &codec.Server{Codec: cfg.Codec, Token: cfg.CodecToken, Origins: cfg.CodecOrigins}
		mux.Handle(codec.Prefix, srv.Handler())
		routes = append(routes, codec.Prefix+"encode", codec.Prefix+"decode")
	}
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return fmt.Errorf("admin: listen: %w", err)
		}
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	openErr := make(chan error, 1)
	stores := make(chan *store.Store, 1)
	go func() {
		st, err := store.OpenRetrying(sctx, cfg.DatabaseURL, log)
		if err != nil {
			openErr <- err
			stores <- nil
			return
		}
		stores <- st
		opened.Store(adminRoutes(cfg, st, c, log))
	}()
	log.Info("admin listener listening", "addr", ln.Addr().String(), "routes", routes)
	served := make(chan error, 1)
	go func() { served <- webhook.Serve(sctx, ln, mux, cfg.ShutdownGrace, log) }()
	var err error
	select {
	case err = <-served:
	case err = <-openErr: // an error no wait mends: stop serving, and say why
		stop()
		<-served
	}
	stop() // the opener gives up, if it still waits
	if st := <-stores; st != nil {
		st.Close() // after Serve: its requests have ended, or outlived the grace
	}
	return err
}

// health answers a health check as the other listeners do.
func health(w http.ResponseWriter, code int, status, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body := map[string]string{"status": status}
	if reason != "" {
		body["error"] = reason
	}
	json.NewEncoder(w).Encode(body)
}

// adminRoutes are the admin API and the review desk on an open store.
func adminRoutes(cfg config.Config, st *store.Store, c client.Client, log *slog.Logger) *http.ServeMux {
	inner := http.NewServeMux()
	sc := stripeapi.New(cfg.StripeAPIKey, cfg.StripeAPIBase)
	if cfg.OIDC.Enabled() {
		dk := &desk.Desk{Store: st, Temporal: c, Policy: cfg.Policy, OIDC: cfg.OIDC, Stripe: sc, StripeKey: cfg.StripeAPIKey,
			Throttle: &access.Throttle{Counter: st}, Proxies: cfg.TrustedProxies, Log: log.With("component", "desk")}
		inner.Handle(desk.Prefix, dk.Handler())
	}
	api := &admin.API{Token: cfg.AdminToken, Keys: st, Audit: st, Vouchers: st, Throttle: &access.Throttle{Counter: st},
		Proxies: cfg.TrustedProxies, Contacts: st,
		Reviews: st, Temporal: c, Policy: cfg.Policy, Log: log, Stripe: sc,
		ReturnURL: cfg.ReturnURL, KeySecret: cmp.Or(cfg.AdminToken, cfg.StripeAPIKey)}
	inner.Handle("/admin/", api.Handler())
	return inner
}

// ParseRoles reads "webhook", "worker", "admin" or "all".
func ParseRoles(s string) (Roles, error) {
	switch strings.ToLower(s) {
	case "webhook":
		return Roles{Webhook: true}, nil
	case "worker":
		return Roles{Worker: true}, nil
	case "admin":
		return Roles{Admin: true}, nil
	case "all", "":
		return Roles{Webhook: true, Worker: true, Admin: true}, nil
	}
	return Roles{}, fmt.Errorf("unknown role %q: want webhook, worker, admin or all", s)
}
