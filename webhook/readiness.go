package webhook

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Readiness knows whether Temporal answers, from a health check made once
// per Every (by Run, and at once after a failed signal), so that while
// Temporal is down the webhook answers 503 at once instead of holding every
// delivery for the whole signal timeout, deliveries already waiting give up
// when the check finds it down, and /readyz costs Temporal nothing per
// request. Stripe retries a 503, so a fast refusal loses nothing (an event
// that did reach Temporal is recognised by its id when it comes again).
type Readiness struct {
	Temporal HealthChecker
	// Every is how old a result may be before the next check (default 1 s);
	// Timeout bounds a check (default 1 s).
	Every, Timeout time.Duration

	mu      sync.Mutex
	known   bool // a check has finished
	down    bool
	checked time.Time
	probing bool
	lost    chan struct{} // closed when a check next finds Temporal down
	strikes int           // failed checks in a row that do not say down by themselves
	// Log, when set, hears when Temporal is found down and back.
	Log *slog.Logger
}

// Run checks Temporal once per Every until ctx is done.
func (r *Readiness) Run(ctx context.Context) {
	t := time.NewTicker(r.every())
	defer t.Stop()
	for {
		r.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Lost is closed when a check next finds Temporal down: a delivery waiting
// on Temporal gives up then.
func (r *Readiness) Lost() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost == nil {
		r.lost = make(chan struct{})
	}
	return r.lost
}

func (r *Readiness) every() time.Duration {
	if r.Every > 0 {
		return r.Every
	}
	return time.Second
}

func (r *Readiness) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return time.Second
}

// Down reports whether the last check found Temporal down. It never waits:
// when the result is stale it starts a check in the background and answers
// the last one meanwhile. Before the first check it says up, so the caller
// tries Temporal itself.
func (r *Readiness) Down() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= r.every() {
		r.startLocked()
	}
	return r.known && r.down
}

// Suspect starts a check now: a signal failed, and the next deliveries
// should learn soon whether Temporal is down.
func (r *Readiness) Suspect() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startLocked()
}

// Ready answers /readyz: the last result while it is fresh, otherwise a
// check made now (one at a time; concurrent callers share it).
func (r *Readiness) Ready(ctx context.Context) bool {
	r.mu.Lock()
	if r.known && time.Since(r.checked) < r.every() {
		defer r.mu.Unlock()
		return !r.down
	}
	r.mu.Unlock()
	r.check(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.known && !r.down
}

func (r *Readiness) startLocked() {
	if r.probing {
		return
	}
	r.probing = true
	go r.probe()
}

func (r *Readiness) probe() {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout())
	defer cancel()
	_, err := r.Temporal.CheckHealth(ctx, &client.CheckHealthRequest{})
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.known && r.down
	r.known, r.checked, r.probing = true, time.Now(), false
	switch code := healthCode(err); {
	case err == nil, code == codes.Unimplemented: // a proxy without the health service says nothing
		r.down, r.strikes = false, 0
	case code == codes.Unavailable: // nothing answers: down at once
		r.down = true
	default: // slow, or a frontend not serving: down on the second in a row
		r.strikes++
		r.down = r.strikes >= 2
	}
	if r.down && r.lost != nil {
		close(r.lost)
		r.lost = nil
	}
	if r.Log != nil && was != r.down {
		if r.down {
			r.Log.Warn("Temporal is down: deliveries are answered 503 until it is back", "error", err)
		} else {
			r.Log.Info("Temporal is back")
		}
	}
}

// Answered records that Temporal took a signal: it is up, whatever the
// last check said.
func (r *Readiness) Answered() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known, r.down, r.strikes = true, false, 0
}

// check runs a probe in the caller's goroutine unless one is under way, in
// which case it waits for that one (bounded by ctx).
func (r *Readiness) check(ctx context.Context) {
	r.mu.Lock()
	if !r.probing {
		r.probing = true
		r.mu.Unlock()
		r.probe()
		return
	}
	started := r.checked
	r.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
		r.mu.Lock()
		done := r.checked != started
		r.mu.Unlock()
		if done {
			return
		}
	}
}

// healthCode is the gRPC code of a failed check, however the SDK wrapped it
// (a refused connection comes as a serviceerror.Unavailable).
func healthCode(err error) codes.Code {
	var unavailable *serviceerror.Unavailable
	if errors.As(err, &unavailable) {
		return codes.Unavailable
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Unknown
}
