package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ClusterJobsLease is the lease under which one worker replica runs the
// jobs that run once per cluster: the reconcile schedule's upsert and the
// open-issues gauge (identity_sessions_with_issue).
const ClusterJobsLease = "worker-cluster-jobs"

// Lease terms: a holder renews every LeaseRenew; a holder that stops
// renewing (killed, cut off from the database) loses the lease after
// LeaseTTL, and another replica takes it over at its next try.
var (
	LeaseTTL   = 30 * time.Second
	LeaseRenew = 10 * time.Second
)

// Leases is the database's side of a lease (store.Store).
type Leases interface {
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, at time.Time) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Lease runs a job in one replica of the cluster at a time: the replica
// that holds the named lease in the database.
type Lease struct {
	Leases Leases
	Name   string
	Holder string // this replica; NewHolder makes one
	TTL    time.Duration
	Renew  time.Duration
	Now    func() time.Time // nil: time.Now
	Log    *slog.Logger     // nil: no log
}

// NewHolder names this replica for a lease: host, pid and a random part
// (a restarted process is another holder).
func NewHolder() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Run tries to take the lease every Renew until ctx is done. While it holds
// the lease it runs job with a context that ends when the lease is lost (or
// ctx is done): another replica took it, or the renewals failed until the
// last renewed term ran out, so that two replicas never run the job at once
// as far as their clocks agree. It waits for job to return before trying
// again, and releases the lease when ctx is done.
func (l *Lease) Run(ctx context.Context, job func(ctx context.Context)) {
	now, log := l.Now, l.Log
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		cancel  context.CancelFunc
		wg      sync.WaitGroup
		until   time.Time // the end of the term last renewed
		failing bool
	)
	stop := func(why string) {
		if cancel == nil {
			return
		}
		cancel()
		wg.Wait()
		cancel = nil
		log.Info("cluster jobs stopped here", "lease", l.Name, "why", why)
	}
	defer func() {
		stop("shutting down")
		rctx, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer done()
		l.Leases.ReleaseLease(rctx, l.Name, l.Holder)
	}()
	t := time.NewTicker(l.Renew)
	defer t.Stop()
	for {
		at := now()
		// While the job runs, a renewal that hangs must not outlast the
		// term: it is given until half a renewal before the term ends, so
		// the job stops (below) before another replica may take the lease.
		// (This needs TTL well above 1.5 renewals: 30 s and 10 s here.)
		timeout := l.Renew
		if cancel != nil {
			timeout = max(min(timeout, until.Sub(at)-l.Renew/2), 0)
		}
		actx, done := context.WithTimeout(ctx, timeout)
		held, err := l.Leases.AcquireLease(actx, l.Name, l.Holder, l.TTL, at)
		done()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				failing = true
				log.Warn("could not renew or take the cluster jobs' lease (logged once per outage)", "lease", l.Name, "error", err)
			}
			// Stop while the term still holds if the next try comes too
			// late to renew it: another replica may take it at expiry.
			if cancel != nil && !now().Add(l.Renew).Before(until) {
				stop("the lease's term ends before it can be renewed")
			}
		case held:
			failing = false
			until = at.Add(l.TTL)
			if cancel == nil {
				jctx, jcancel := context.WithCancel(ctx)
				cancel = jcancel
				wg.Add(1)
				go func() { defer wg.Done(); job(jctx) }()
				log.Info("cluster jobs run here", "lease", l.Name, "holder", l.Holder)
			}
		default:
			failing = false
			stop("another replica holds the lease")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
