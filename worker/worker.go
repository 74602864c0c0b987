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
	"time"

	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

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
// caller has checked cfg (config.CheckWorker).
func Run(ctx context.Context, cfg config.Config, c client.Client, log *slog.Logger) error {
	if err := CheckSearchAttributes(ctx, c, cfg.Temporal.Namespace); errors.Is(err, ErrSearchAttributesMissing) {
		return err
	} else if err != nil {
		// Some deployments do not let workers list them: carry on.
		log.Warn("could not check the search attributes", "error", err)
	}
	acts, st, err := NewActivities(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	sdkworker.SetStickyWorkflowCacheSize(cfg.Worker.StickyCacheSize)
	w := sdkworker.New(c, workflows.TaskQueue, Options(cfg.Worker))
	Register(w, acts)
	reconcile.Register(w, &reconcile.Activities{Events: stripeapi.New(cfg.StripeAPIKey, cfg.StripeAPIBase), Store: st,
		Temporal: c, Policy: cfg.Policy, Overlap: cfg.Reconcile.Overlap})
	if err := w.Start(); err != nil {
		return fmt.Errorf("worker: start: %w", err)
	}
	log.Info("worker polling", "task_queue", workflows.TaskQueue, "namespace", cfg.Temporal.Namespace, "database", st.Dialect())
	go keepSchedule(ctx, c, cfg.Reconcile.Every, log)
	<-ctx.Done()
	w.Stop()
	return nil
}

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
		return fmt.Errorf("%w on namespace %q: %v; register each with `temporal operator search-attribute create --name NAME --type TYPE` (see README)",
			ErrSearchAttributesMissing, namespace, missing)
	}
	return nil
}
