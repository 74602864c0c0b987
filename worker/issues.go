package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"identityverification/workflows"
)

// IssueCodes are the problems a session shows ops while its effects wait
// (workflows.Issue codes).
var IssueCodes = []string{workflows.IssueEmailDelayed, workflows.IssueEmailRefused, workflows.IssueEmailFailed,
	workflows.IssueDatabaseUnavailable, workflows.IssueDatabaseRejected, workflows.IssueStripeUnavailable}

// issuesInterval is how often WatchIssues counts (a test shortens it).
var issuesInterval = time.Minute

// WatchIssues counts, once a minute, the running sessions that show each
// issue (from the VerificationIssues search attribute) into the gauge
// identity_sessions_with_issue{code}: how many sessions have effects
// waiting and why, for alerts. A code whose count fails has no series
// until a count succeeds again, so that an alert does not hold on to a
// stale value; the failure is logged once per outage, and its end too. It
// returns when ctx is done, and takes the gauge out of reg then: a replica
// that no longer counts (worker.Lease: another replica does) exports no
// stale series.
func WatchIssues(ctx context.Context, c client.Client, namespace string, reg prometheus.Registerer, log *slog.Logger) {
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "identity_sessions_with_issue",
		Help: "Running sessions showing ops an issue (effects waiting: email_delayed, database_unavailable, stripe_unavailable; or for good: email_refused, email_failed, database_rejected), counted from visibility once a minute.",
	}, []string{"code"})
	reg.MustRegister(gauge)
	defer reg.Unregister(gauge)
	t := time.NewTicker(issuesInterval)
	defer t.Stop()
	failing := false // since the last round that counted every code
	for {
		failed := 0
		for _, code := range IssueCodes {
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := c.CountWorkflow(qctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: namespace,
				Query: "ExecutionStatus = 'Running' AND " + workflows.SAIssues.GetName() + " = '" + code + "'"})
			cancel()
			if err != nil {
				gauge.DeleteLabelValues(code)
				if ctx.Err() != nil {
					return
				}
				if failed++; !failing {
					failing = true
					log.Warn("could not count sessions with an issue; identity_sessions_with_issue is absent until a count succeeds (logged once per outage)",
						"code", code, "error", err)
				}
				continue
			}
			gauge.WithLabelValues(code).Set(float64(resp.GetCount()))
		}
		if failing && failed == 0 {
			failing = false
			log.Info("counting sessions with an issue again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
