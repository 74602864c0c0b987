package webhook

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"go.temporal.io/sdk/client"

	"identityverification/retrylink"
)

// Route is where Stripe delivers events.
const Route = "/webhooks/stripe"

// HealthChecker is the part of the Temporal client /readyz uses.
type HealthChecker interface {
	CheckHealth(ctx context.Context, req *client.CheckHealthRequest) (*client.CheckHealthResponse, error)
}

// NewRouter wires the public listener: the webhook, retry links (retry, a
// retrylink.Handler; nil: none served) and, for load balancers that probe
// this port (the external contract keeps them), /livez and /readyz from the
// cached readiness (ready may be nil: not served). Metrics are only on the ops
// listener (package ops).
func NewRouter(h *Handler, retry http.Handler, ready *Readiness) http.Handler {
	r := mux.NewRouter()
	r.Handle(Route, h).Methods(http.MethodPost)
	if retry != nil {
		r.Handle(retrylink.Path+"{session_id}", retry).Methods(http.MethodGet)
		r.HandleFunc(retrylink.DonePath, retrylink.Done).Methods(http.MethodGet)
	}
	if ready != nil {
		r.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, "ok", "")
		}).Methods(http.MethodGet)
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
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, "rejected", "method_not_allowed")
	})
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, "rejected", "not_found")
	})
	return r
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
