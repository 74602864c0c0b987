// Package ops serves what operators and their tools need from every process
// of the service, on a listener of its own (OPS_ADDR), never on the public
// webhook listener: liveness, readiness and Prometheus metrics, the Temporal
// SDK's included.
package ops

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/uber-go/tally/v4"
	tallyprom "github.com/uber-go/tally/v4/prometheus"
	"go.temporal.io/sdk/client"
	sdktally "go.temporal.io/sdk/contrib/tally"
)

// NewRegistry is a process's metrics registry, with the process and Go
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// LatencyBuckets are the Temporal SDK's latency histograms' buckets, in
// seconds: from a local activity's 5 ms to a minute's wait for a worker.
var LatencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// TemporalMetrics is a metrics handler for the Temporal client (and so the
// worker, its workflows and activities) that reports into reg, with
// Prometheus-safe names (temporal_request, temporal_workflow_task_schedule_to_start_latency,
// ...). Latencies are histograms (LatencyBuckets), not summaries, so that
// histogram_quantile aggregates them across workers; a metric the registry
// refuses is logged, not a panic. Close flushes and stops it.
func TemporalMetrics(reg *prometheus.Registry, log *slog.Logger) (client.MetricsHandler, io.Closer) {
	reporter := tallyprom.NewReporter(tallyprom.Options{
		Registerer:              reg,
		DefaultTimerType:        tallyprom.HistogramTimerType,
		DefaultHistogramBuckets: LatencyBuckets,
		OnRegisterError: func(err error) {
			log.Error("a Temporal SDK metric could not be registered; it is not exported", "error", err)
		},
	})
	scope, closer := tally.NewRootScope(tally.ScopeOptions{
		CachedReporter:  reporter,
		Separator:       tallyprom.DefaultSeparator,
		SanitizeOptions: &sdktally.PrometheusSanitizeOptions,
	}, time.Second)
	return sdktally.NewMetricsHandler(scope), closer
}

// Handler serves /livez (the process runs), /readyz (ready says it can do
// its work; it must answer from a cached check, not call out per request)
// and /metrics.
func Handler(ready func(context.Context) bool, reg *prometheus.Registry) http.Handler {
	r := mux.NewRouter()
	r.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, "ok", "")
	}).Methods(http.MethodGet)
	r.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		if !ready(ctx) {
			reply(w, http.StatusServiceUnavailable, "unavailable", "temporal_unreachable")
			return
		}
		reply(w, http.StatusOK, "ok", "")
	}).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusNotFound, "rejected", "not_found")
	})
	return r
}

func reply(w http.ResponseWriter, code int, status, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body := map[string]string{"status": status}
	if reason != "" {
		body["error"] = reason
	}
	json.NewEncoder(w).Encode(body)
}
