package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the webhook's Prometheus metrics.
type Metrics struct {
	requests        *prometheus.CounterVec
	latency         prometheus.Histogram
	versionMismatch *prometheus.CounterVec
	unhandled       prometheus.Counter
}

// NewMetrics registers the webhook's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_requests_total",
			Help: "Stripe webhook deliveries by outcome (accepted, ignored, rejected, failed) and refusal reason.",
		}, []string{"outcome", "reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "webhook_request_duration_seconds",
			Help:    "Time to answer a Stripe webhook delivery, Temporal call included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		versionMismatch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_api_version_mismatch_total",
			Help: "Events accepted whose Stripe API version differs from the one stripe-go speaks (" + SupportedAPIVersion + ").",
		}, []string{"api_version"}),
		unhandled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhook_unhandled_events_total",
			Help: "Verified events of types this service does not handle (answered 200).",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.versionMismatch, m.unhandled)
	return m
}

func (m *Metrics) observe(outcome, reason string, d time.Duration) {
	m.requests.WithLabelValues(outcome, reason).Inc()
	m.latency.Observe(d.Seconds())
}
