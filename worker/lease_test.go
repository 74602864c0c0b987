package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"identityverification/store"
	"identityverification/store/storetest"
)

// replica is one worker's lease loop, counting how often its job runs.
type replica struct {
	lease   *Lease
	running atomic.Int32 // jobs running now
	starts  atomic.Int32
	cancel  context.CancelFunc
	done    chan struct{}
}

func startReplica(leases Leases, holder string, renew time.Duration, both *atomic.Int32, overlap *atomic.Bool) *replica {
	r := &replica{lease: &Lease{Leases: leases, Name: "test-jobs", Holder: holder, TTL: 3 * renew, Renew: renew,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.lease.Run(ctx, func(ctx context.Context) {
			r.starts.Add(1)
			r.running.Add(1)
			if both.Add(1) > 1 {
				overlap.Store(true)
			}
			<-ctx.Done()
			both.Add(-1)
			r.running.Add(-1)
		})
	}()
	return r
}

func (r *replica) stop() { r.cancel(); <-r.done }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two replicas on one database: one runs the cluster's jobs; when it shuts
// down the other takes over; when one dies without releasing, the other
// takes over after the lease lapses; never both at once.
func TestLeaseRunsTheJobInOneReplica(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			st, err := store.Open(context.Background(), db.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var both atomic.Int32
			var overlap atomic.Bool
			const renew = 50 * time.Millisecond
			a := startReplica(st, "a", renew, &both, &overlap)
			waitUntil(t, "a runs the jobs", func() bool { return a.running.Load() == 1 })
			bdb := &deadAfter{Leases: st}
			b := startReplica(bdb, "b", renew, &both, &overlap)
			// b tries several times (its tries counted through the lease's
			// renewals: a renews meanwhile) and never runs the job.
			h0, exp0, _ := st.LeaseHolder(context.Background(), "test-jobs")
			waitUntil(t, "a renewed twice more", func() bool {
				_, exp, _ := st.LeaseHolder(context.Background(), "test-jobs")
				return exp.After(exp0.Add(renew))
			})
			if h0 != "a" || b.starts.Load() != 0 {
				t.Fatalf("holder %q, b started %d times; want a, 0", h0, b.starts.Load())
			}
			a.stop() // releases
			waitUntil(t, "b takes over", func() bool { return b.running.Load() == 1 })
			if h, _, _ := st.LeaseHolder(context.Background(), "test-jobs"); h != "b" {
				t.Errorf("holder %q; want b", h)
			}
			// A replica that dies holding the lease (no release): c takes
			// over once it lapses.
			c := startReplica(st, "c", renew, &both, &overlap)
			bdb.cut.Store(true) // b's database goes away from under it
			waitUntil(t, "b stops when its term ends unrenewed", func() bool { return b.running.Load() == 0 })
			waitUntil(t, "c takes over the lapsed lease", func() bool { return c.running.Load() == 1 })
			b.stop()
			c.stop()
			if overlap.Load() {
				t.Error("two replicas ran the jobs at once")
			}
			if _, _, err := st.LeaseHolder(context.Background(), "test-jobs"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("after every replica stopped: %v; want the lease released", err)
			}
		})
	}
}

// deadAfter is a database that stops answering when cut.
type deadAfter struct {
	Leases
	cut atomic.Bool
}

func (d *deadAfter) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, at time.Time) (bool, error) {
	if d.cut.Load() {
		return false, errors.New("connection refused")
	}
	return d.Leases.AcquireLease(ctx, name, holder, ttl, at)
}

func (d *deadAfter) ReleaseLease(ctx context.Context, name, holder string) error {
	if d.cut.Load() {
		return errors.New("connection refused")
	}
	return d.Leases.ReleaseLease(ctx, name, holder)
}

// hangingAfter answers the first take, refuses the next try at once, then
// hangs every later one until its caller gives up: a database that went
// away mid-term.
type hangingAfter struct {
	calls   atomic.Int32
	firstAt atomic.Int64 // the first take's time, unix nanoseconds
}

func (h *hangingAfter) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, at time.Time) (bool, error) {
	switch h.calls.Add(1) {
	case 1:
		h.firstAt.Store(at.UnixNano())
		return true, nil
	case 2:
		return false, errors.New("connection refused")
	}
	<-ctx.Done()
	return false, ctx.Err()
}

func (h *hangingAfter) ReleaseLease(context.Context, string, string) error { return nil }

// A renewal that hangs near the end of the term does not keep the job
// running past it: the job stops before the term ends, when another
// replica may take the lease.
func TestAHangingRenewalStopsTheJobWithinItsTerm(t *testing.T) {
	h := &hangingAfter{}
	const renew, ttl = time.Second, 3 * time.Second
	l := &Lease{Leases: h, Name: "test-jobs", Holder: "a", TTL: ttl, Renew: renew,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan time.Time, 1)
	go l.Run(ctx, func(ctx context.Context) {
		<-ctx.Done()
		stopped <- time.Now()
	})
	select {
	case at := <-stopped:
		end := time.Unix(0, h.firstAt.Load()).Add(ttl)
		if !at.Before(end) {
			t.Errorf("the job stopped %s after its term ended; want before", at.Sub(end))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the job never stopped while the database hung")
	}
}
