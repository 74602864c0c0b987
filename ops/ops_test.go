package ops_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"identityverification/ops"
)

// The SDK's latencies are histograms (so quantiles aggregate across
// workers), a counter keeps the name it is given, and a metric the registry
// refuses is logged, not a panic.
func TestTemporalMetrics(t *testing.T) {
	reg := ops.NewRegistry()
	var logs bytes.Buffer
	h, closer := ops.TemporalMetrics(reg, slog.New(slog.NewTextHandler(&logs, nil)))
	h.Timer("temporal_workflow_task_schedule_to_start_latency").Record(30 * time.Millisecond)
	h.WithTags(map[string]string{"status": "sent"}).Counter("identity_emails_total").Inc(1)
	h.Gauge("identity_emails_total").Update(1) // the name is a counter's already
	closer.Close()                             // flushes

	want := `
# HELP identity_emails_total identity_emails_total counter
# TYPE identity_emails_total counter
identity_emails_total{status="sent"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "identity_emails_total"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "temporal_workflow_task_schedule_to_start_latency" {
			found = true
			hist := mf.GetMetric()[0].GetHistogram()
			if hist == nil || hist.GetSampleCount() != 1 || len(hist.GetBucket()) != len(ops.LatencyBuckets) {
				t.Errorf("schedule-to-start latency %v; want a histogram of one sample in %d buckets", mf, len(ops.LatencyBuckets))
			}
		}
	}
	if !found {
		t.Error("no schedule-to-start latency")
	}
	if !strings.Contains(logs.String(), "could not be registered") {
		t.Errorf("a refused metric was not logged: %q", logs.String())
	}
}
