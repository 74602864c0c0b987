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
func (r BareResult) AckPerSecond() float64 { return perSecond(r.Accepted, r.Elapsed) }

// SessionsPerSecond is completed workflows per second (with a worker).
func (r BareResult) SessionsPerSecond() float64 { return perSecond(r.Accepted, r.Completed) }

const trivialWorkflow = "LoadgenTrivial"

// trivial completes on its first signal: the least a session can cost.
func trivial(ctx workflow.Context) error {
	workflow.GetSignalChannel(ctx, "s").Receive(ctx, nil)
	return nil
}

// Bare runs SignalWithStart of a trivial workflow, n times at the given rate
// (for the end-to-end floor, the load's rate of sessions, not of events) or
// with the load's concurrency, on the same Temporal server and
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
		run, err := c.SignalWithStartWorkflow(ctx, id, "s", nil, client.StartWorkflowOptions{ID: id, TaskQueue: queue,
			WorkflowExecutionTimeout: 10 * time.Minute}, trivialWorkflow) // never left running for long
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
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		openModel(ctx, order, rate, start, send)
	} else {
		each := make([][]int, n)
		for i := range each {
			each[i] = []int{i}
		}
		closedModel(ctx, each, concurrency, send)
	}
	res.Elapsed = time.Since(start)
	res.Ack = Summarize(acks)
	if firstErr != nil {
		return res, fmt.Errorf("loadgen: bare SignalWithStart: %w", firstErr)
	}
	if !worker {
		if err := w.Start(); err != nil {
			return res, fmt.Errorf("loadgen: bare worker: %w", err)
		}
	}
	// Wait for every run at once: the time is when the last one completed,
	// not n waits one after the other.
	gctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var last time.Time
	var getErr error
	for _, run := range runs {
		if run == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := run.Get(gctx, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && getErr == nil {
				getErr = err
			}
			if now := time.Now(); now.After(last) {
				last = now
			}
		}()
	}
	wg.Wait()
	if getErr != nil {
		return res, fmt.Errorf("loadgen: bare workflow: %w", getErr)
	}
	if worker && !last.IsZero() {
		res.Completed = last.Sub(start)
	}
	return res, nil
}
