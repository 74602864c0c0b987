package webhook

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"

	"identityverification/retrylink"
)

// Route is where Stripe delivers events.
const Route = "/webhooks/stripe"

// HealthChecker is the part of the Temporal client /readyz uses.
type HealthChecker interface {
	CheckHealth(ctx context.Context, req *client.CheckHealthRequest) (*client.CheckHealthResponse, error)
}

// NewRouter wires the webhook, retry-link, health and metrics routes; retry
// may be nil (no retry links served), and so may ready (no /readyz).
func NewRouter(h *Handler, retry *RetryHandler, ready *Readiness, reg *prometheus.Registry) http.Handler {
	r := mux.NewRouter()
	r.Handle(Route, h).Methods(http.MethodPost)
	if retry != nil {
		r.Handle(retrylink.Path+"{session_id}", retry).Methods(http.MethodGet)
	}
	r.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, "ok", "")
	}).Methods(http.MethodGet)
	if ready != nil {
		r.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
			ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
			defer cancel()
			if !ready.Ready(ctx) {
				writeJSON(w, http.StatusServiceUnavailable, "unavailable", "temporal_unreachable")
				return
			}
			writeJSON(w, http.StatusOK, "ok", "")
		}).Methods(http.MethodGet)
	}
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, "rejected", "method_not_allowed")
	})
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, "rejected", "not_found")
	})
	return r
}

// NewRegistry is a registry with the process and Go collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve runs an HTTP server on ln until ctx is done, then drains in-flight
// requests for up to grace.
func Serve(ctx context.Context, ln net.Listener, handler http.Handler, grace time.Duration, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
