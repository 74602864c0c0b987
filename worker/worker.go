// Package worker runs the Temporal worker: it registers the verification
// workflow and its activities on the identity-verification task queue and
// builds the activities' real dependencies (database, SMTP, Stripe API),
// and keeps the schedule that recovers missed events (package reconcile).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"identityverification/activities"
	"identityverification/config"
	"identityverification/email"
	"identityverification/reconcile"
	"identityverification/retrylink"
	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/workflows"
)

// Register adds the workflow and activities to a worker (or a test env).
func Register(r sdkworker.Registry, acts *activities.Activities) {
	r.RegisterWorkflowWithOptions(workflows.Verification, workflow.RegisterOptions{Name: workflows.WorkflowName})
	r.RegisterActivity(acts)
}

// NewActivities builds the activities' dependencies from configuration. The
// caller closes the returned store.
func NewActivities(ctx context.Context, cfg config.Config, log *slog.Logger) (*activities.Activities, *store.Store, error) {
	st, err := store.OpenRetrying(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return nil, nil, err
	}
	mailer, err := email.NewSender(cfg.SMTPURL, cfg.EmailFrom)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return &activities.Activities{
		Store:    st,
		Mailer:   mailer,
		Stripe:   stripeapi.New(cfg.StripeAPIKey, cfg.StripeAPIBase),
		Links:    retrylink.New(cfg.PublicBaseURL, cfg.RetryLinkSecret).WithTTL(cfg.RetryLinkTTL),
		OpsEmail: cfg.OpsEmail,
	}, st, nil
}

// Run polls the task queue until ctx is done, then stops gracefully. The
// caller has checked cfg (config.CheckWorker). While Temporal or the
// database cannot be reached it waits for them, saying so in the log,
// instead of stopping the process (and a webhook beside it): a worker
// started during an outage, or whose start an outage cut short, starts
// when it ends. Missing search attributes, or an error no wait can mend,
// stop it.
//
// The jobs that run once per cluster (the missed-events schedule's upsert
// and the open-issues gauge, registered on reg) run in the one worker
// replica that holds the ClusterJobsLease in the database.
func Run(ctx context.Context, cfg config.Config, c client.Client, reg prometheus.Registerer, log *slog.Logger) error {
	log = log.With("temporal", cfg.Temporal.HostPort)
	err := untilReachable(ctx, log, "checking the search attributes", func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return CheckSearchAttributes(cctx, c, cfg.Temporal.Namespace)
	})
	switch {
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, ErrSearchAttributesMissing):
		return err
	case err != nil:
		// Some deployments do not let workers list them: carry on.
		log.Warn("could not check the search attributes", "error", err)
	}
	acts, st, err := NewActivities(ctx, cfg, log)
	if st != nil {
		defer st.Close()
	}
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	sdkworker.SetStickyWorkflowCacheSize(cfg.Worker.StickyCacheSize)
	var w sdkworker.Worker
	started := false
	err = untilReachable(ctx, log, "starting the worker", func() error {
		// A worker's Start runs once, so each try is a new worker. A try
		// that failed to reach the server (GetSystemInfo, DescribeNamespace)
		// had started nothing, so it is dropped, not stopped. (This holds
		// for the workflow and activity workers here; with sessions, Nexus
		// or plugins, check the SDK's AggregatedWorker.start again.)
		opts := Options(cfg.Worker)
		// A graceful stop (a deploy, a scale-down) lets the tasks under
		// way finish, up to SHUTDOWN_GRACE. With the SDK's default (no
		// wait) every activity under way was cancelled at once and ran
		// again elsewhere after its timeout; an email cut after the SMTP
		// server took it, before its answer came back, went out twice.
		opts.WorkerStopTimeout = cfg.ShutdownGrace
		w = sdkworker.New(c, workflows.TaskQueue, opts)
		Register(w, acts)
		reconcile.Register(w, &reconcile.Activities{Events: stripeapi.New(cfg.StripeAPIKey, cfg.StripeAPIBase), Store: st,
			Temporal: c, Policy: cfg.Policy, Overlap: cfg.Reconcile.Overlap})
		err := w.Start()
		started = err == nil
		return err
	})
	if started {
		defer w.Stop() // before the store closes
	}
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("worker: start: %w", err)
	}
	log.Info("worker polling", "task_queue", workflows.TaskQueue, "namespace", cfg.Temporal.Namespace, "database", st.Dialect())
	lease := &Lease{Leases: st, Name: ClusterJobsLease, Holder: NewHolder(), TTL: LeaseTTL, Renew: LeaseRenew, Log: log}
	lease.Run(ctx, func(ctx context.Context) { // until ctx is done
		// Both end with the lease: the job returns once both have, so a
		// replica that lost it runs neither.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); keepSchedule(ctx, c, cfg.Reconcile.Every, log) }()
		WatchIssues(ctx, c, cfg.Temporal.Namespace, reg, log)
		wg.Wait()
	})
	return nil
}

// untilReachable runs fn until it succeeds, fails for another reason than
// an unreachable Temporal, or ctx is done, pausing 1 s, doubling to 30 s,
// between tries, and logging each.
func untilReachable(ctx context.Context, log *slog.Logger, doing string, fn func() error) error {
	for pause := time.Second; ; pause = min(2*pause, 30*time.Second) {
		err := fn()
		if err == nil || !Unreachable(err) || ctx.Err() != nil {
			return err
		}
		log.Error("Temporal not reachable while "+doing+": trying again", "retry_in", pause.String(), "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// Unreachable reports whether err says Temporal did not answer (refused,
// unavailable, timed out) or is overloaded, rather than refused the
// request. A TEMPORAL_ADDRESS that names no server looks the same: the
// worker waits, logging the address, and /readyz says temporal_unreachable.
// So does an address where a gRPC server without Temporal's WorkflowService
// answers ("unknown service ...WorkflowService": a frontend still starting,
// or the port taken by another process while Temporal was away, or a
// TEMPORAL_ADDRESS naming another Temporal service's port): the worker
// waits and its log names the error, which says so.
func Unreachable(err error) bool {
	var unavailable *serviceerror.Unavailable
	var deadline *serviceerror.DeadlineExceeded
	var exhausted *serviceerror.ResourceExhausted
	if errors.As(err, &unavailable) || errors.As(err, &deadline) || errors.As(err, &exhausted) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var unimplemented *serviceerror.Unimplemented
	if errors.As(err, &unimplemented) && strings.Contains(unimplemented.Error(), noWorkflowService) {
		return true
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
			return true
		case codes.Unimplemented:
			return strings.Contains(st.Message(), noWorkflowService)
		}
	}
	return false
}

// noWorkflowService is how a gRPC server without Temporal's WorkflowService
// refuses its calls.
const noWorkflowService = "unknown service temporal.api.workflowservice.v1.WorkflowService"

// keepSchedule sets the missed-events schedule up as configured (package
// reconcile), trying again with a growing pause while Temporal refuses:
// the worker does its main job meanwhile, and ops see each failure.
func keepSchedule(ctx context.Context, c client.Client, every time.Duration, log *slog.Logger) {
	for pause := 5 * time.Second; ; pause = min(2*pause, 5*time.Minute) {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		did, err := reconcile.EnsureSchedule(sctx, c.ScheduleClient(), every)
		cancel()
		if err == nil {
			log.Info("missed-events schedule", "schedule", reconcile.ScheduleID, "every", every.String(), "outcome", did)
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Error("missed-events schedule not set up: events the webhook missed are not recovered until it is",
			"schedule", reconcile.ScheduleID, "retry_in", pause.String(), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
	}
}

// Options are the SDK worker options for the tuning (the sticky cache size is
// process-wide: sdkworker.SetStickyWorkflowCacheSize, before the worker).
func Options(t config.WorkerTuning) sdkworker.Options {
	return sdkworker.Options{
		MaxConcurrentWorkflowTaskPollers:        t.WorkflowPollers,
		MaxConcurrentActivityTaskPollers:        t.ActivityPollers,
		MaxConcurrentWorkflowTaskExecutionSize:  t.WorkflowTasks,
		MaxConcurrentActivityExecutionSize:      t.Activities,
		MaxConcurrentLocalActivityExecutionSize: t.LocalActivities,
	}
}

// ErrSearchAttributesMissing: the namespace lacks this service's search
// attributes; without them every workflow task would fail forever.
var ErrSearchAttributesMissing = errors.New("worker: search attributes not registered")

// CheckSearchAttributes fails fast when the namespace lacks a search
// attribute the workflow upserts.
func CheckSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("worker: list search attributes: %w", err)
	}
	var missing []string
	for _, sa := range workflows.SearchAttributes {
		if _, ok := resp.GetCustomAttributes()[sa.Name]; !ok {
			missing = append(missing, sa.Name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("%w on namespace %q: %v; register each with `temporal operator search-attribute create --name NAME --type TYPE` (see docs/operations.md)",
			ErrSearchAttributesMissing, namespace, missing)
	}
	return nil
}
