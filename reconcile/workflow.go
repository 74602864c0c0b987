package reconcile

import (
	"time"

	"go.temporal.io/sdk/temporal"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
)

// WorkflowName is the registered name of the reconciliation workflow.
const WorkflowName = "IdentityReconcile"

// Register adds the workflow and its activity to a worker (or a test env).
func Register(r sdkworker.Registry, a *Activities) {
	r.RegisterWorkflowWithOptions(Workflow, workflow.RegisterOptions{Name: WorkflowName})
	r.RegisterActivity(a)
}

// Workflow is one reconciliation run, started by the schedule. It runs the
// activity and shows its figures in the run's details and result.
func Workflow(ctx workflow.Context) (Result, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		// A run reads at most DefaultMaxPages pages of 100 events (a
		// window with nothing before it: lists up to MaxListPages) and
		// signals each missed one: minutes at most. Its heartbeats (after
		// each event) tell a worker that died from a slow run.
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		// A Stripe or Temporal outage: 5 tries over about a minute,
		// resuming after the last page delivered; past them the run fails
		// and the next scheduled one starts again from the checkpoint. A
		// refusal (bad key, refused write) fails at once.
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 5 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: time.Minute, MaximumAttempts: 5,
			NonRetryableErrorTypes: []string{activities.ErrTypeStripeRefused, activities.ErrTypeStoreRejected}},
		Summary: "list identity events since the checkpoint; deliver the missed ones",
	})
	var a *Activities
	var res Result
	if err := workflow.ExecuteActivity(ctx, a.ReconcileEvents).Get(ctx, &res); err != nil {
		return Result{}, err
	}
	workflow.SetCurrentDetails(ctx, res.String())
	return res, nil
}
