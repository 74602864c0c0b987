package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

// countingClient answers CountWorkflow by round (one call per issue code):
// rounds 0 and 1 fail, round 2 succeeds, from round 3 the first code fails.
// At the start of each round it notes how many series the gauge has.
type countingClient struct {
	client.Client
	reg    *prometheus.Registry
	calls  int
	series []int // by round, at its start
	done   chan struct{}
	once   sync.Once
}

func (c *countingClient) CountWorkflow(ctx context.Context, _ *workflowservice.CountWorkflowExecutionsRequest) (*workflowservice.CountWorkflowExecutionsResponse, error) {
	round, i := c.calls/len(IssueCodes), c.calls%len(IssueCodes)
	c.calls++
	if i == 0 {
		n, _ := testutil.GatherAndCount(c.reg, "identity_sessions_with_issue")
		c.series = append(c.series, n)
		if round == 5 {
			c.once.Do(func() { close(c.done) })
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}
	if round < 2 || (round >= 3 && i == 0) {
		return nil, errors.New("visibility unavailable")
	}
	return &workflowservice.CountWorkflowExecutionsResponse{Count: 2}, nil
}

// A code whose count fails loses its series (no stale value for alerts),
// and an outage is logged once, not every round.
func TestWatchIssuesDropsFailedCountsAndLogsOncePerOutage(t *testing.T) {
	defer func(d time.Duration) { issuesInterval = d }(issuesInterval)
	issuesInterval = time.Millisecond
	reg := prometheus.NewRegistry()
	c := &countingClient{reg: reg, done: make(chan struct{})}
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		WatchIssues(ctx, c, "default", reg, slog.New(slog.NewTextHandler(&logs, nil)))
		close(stopped)
	}()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("WatchIssues did not count five rounds")
	}
	cancel()
	<-stopped
	// Stopped (a replica that lost the cluster jobs' lease), it exports
	// no series, and may count again later on the same registry (at the
	// end).
	if n, _ := testutil.GatherAndCount(reg, "identity_sessions_with_issue"); n != 0 {
		t.Errorf("%d series after WatchIssues returned; want none", n)
	}
	n := len(IssueCodes)
	if want := []int{0, 0, 0, n, n - 1, n - 1}; !slices.Equal(c.series, want) {
		t.Errorf("series at each round's start %v; want %v", c.series, want)
	}
	if got := strings.Count(logs.String(), "could not count sessions with an issue"); got != 2 {
		t.Errorf("%d warnings for two outages; want 2:\n%s", got, logs.String())
	}
	if got := strings.Count(logs.String(), "counting sessions with an issue again"); got != 1 {
		t.Errorf("%d recoveries logged; want 1:\n%s", got, logs.String())
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	WatchIssues(done, c, "default", reg, slog.New(slog.NewTextHandler(io.Discard, nil))) // registers again: no panic
}
