package loadgen

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"identityverification/testevent"
)

// BareResult is the floor: what Temporal alone costs per session.
type BareResult struct {
	Sent, Accepted int
	Elapsed        time.Duration // first SignalWithStart to last answer
	Ack            Latencies
	// Completed is set with a worker: the time from the first
	// SignalWithStart until the last workflow completed.
	Completed time.Duration
}

// AckPerSecond is accepted SignalWithStarts per second.
func (r BareResult) AckPerSecond() float64 { return float64(r.Accepted) / r.Elapsed.Seconds() }

// SessionsPerSecond is completed workflows per second (with a worker).
func (r BareResult) SessionsPerSecond() float64 { return float64(r.Accepted) / r.Completed.Seconds() }

const trivialWorkflow = "LoadgenTrivial"

// trivial completes on its first signal: the least a session can cost.
func trivial(ctx workflow.Context) error {
	workflow.GetSignalChannel(ctx, "s").Receive(ctx, nil)
	return nil
}

// Bare runs SignalWithStart of a trivial workflow, n times with the same
// rate or concurrency as the load, on the same Temporal server and
// namespace (a task queue of its own). With worker, a worker with opts (the
// service worker's, for a fair floor) completes them and the time until the
// last completed is measured; without, only the acknowledgement is, and the
// worker completes them afterwards, untimed, so nothing is left running.
func Bare(ctx context.Context, c client.Client, n int, rate float64, concurrency int, worker bool, opts sdkworker.Options) (BareResult, error) {
	queue := "loadgen-bare-" + testevent.RandomID(8)
	w := sdkworker.New(c, queue, opts)
	w.RegisterWorkflowWithOptions(trivial, workflow.RegisterOptions{Name: trivialWorkflow})
	if worker {
		if err := w.Start(); err != nil {
			return BareResult{}, fmt.Errorf("loadgen: bare worker: %w", err)
		}
	}
	defer w.Stop()
	res := BareResult{Sent: n}
	runs := make([]client.WorkflowRun, n)
	var mu sync.Mutex
	var acks []time.Duration
	var firstErr error
	send := func(i int, scheduled time.Time) {
		id := fmt.Sprint(queue, "-", i)
		run, err := c.SignalWithStartWorkflow(ctx, id, "s", nil,
			client.StartWorkflowOptions{ID: id, TaskQueue: queue}, trivialWorkflow)
		took := time.Since(scheduled)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		runs[i], res.Accepted = run, res.Accepted+1
		acks = append(acks, took)
	}
	start := time.Now()
	if rate > 0 {
		openModel(ctx, n, rate, start, send)
	} else {
		closedModel(ctx, n, concurrency, send)
	}
	res.Elapsed = time.Since(start)
	res.Ack = summarize(acks)
	if firstErr != nil {
		return res, fmt.Errorf("loadgen: bare SignalWithStart: %w", firstErr)
	}
	if !worker {
		if err := w.Start(); err != nil {
			return res, fmt.Errorf("loadgen: bare worker: %w", err)
		}
	}
	for _, run := range runs {
		if err := run.Get(ctx, nil); err != nil {
			return res, fmt.Errorf("loadgen: bare workflow: %w", err)
		}
	}
	if worker {
		res.Completed = time.Since(start)
	}
	return res, nil
}
