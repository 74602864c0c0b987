package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"identityverification/workflows"
)

// ScheduleID is the schedule's id in the namespace.
const ScheduleID = "identity-verification-reconcile"

// RunIDPrefix starts the workflow ids of the schedule's runs (Temporal adds
// the time). Unlike ScheduleID it does not start with
// workflows.WorkflowIDPrefix: no run can be taken for a session's workflow
// ("identity-verification-reconcile-..." read as session "reconcile-...").
const RunIDPrefix = "reconcile-identity-events"

// runTimeout bounds one run, retries included; a run still going when the
// next is due makes the schedule skip that one.
const runTimeout = time.Hour

// What EnsureSchedule did.
const (
	ScheduleCreated   = "created"
	ScheduleUpdated   = "updated"
	ScheduleUnchanged = "unchanged"
	ScheduleDeleted   = "deleted"
	ScheduleAbsent    = "absent" // off, and none to delete
)

// EnsureSchedule makes the namespace's schedule run every interval: it
// creates the schedule, or updates one whose interval or policy differ, or,
// with every 0 (off), deletes it. The worker replica that holds the
// cluster jobs' lease (worker.ClusterJobsLease) calls it when it takes the
// lease, so the schedule follows the configuration of the worker that took
// it last (after a rolling deploy, a new one's); every worker runs what the
// schedule starts. It returns what it did.
func EnsureSchedule(ctx context.Context, c client.ScheduleClient, every time.Duration) (string, error) {
	h := c.GetHandle(ctx, ScheduleID)
	if every <= 0 {
		err := h.Delete(ctx)
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			return ScheduleAbsent, nil
		}
		if err != nil {
			return "", fmt.Errorf("reconcile: delete schedule: %w", err)
		}
		return ScheduleDeleted, nil
	}
	want := schedule(every)
	_, err := c.Create(ctx, client.ScheduleOptions{ID: ScheduleID, Spec: *want.Spec, Action: want.Action,
		Overlap: want.Policy.Overlap, CatchupWindow: want.Policy.CatchupWindow, Note: want.State.Note})
	if err == nil {
		return ScheduleCreated, nil
	}
	if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		return "", fmt.Errorf("reconcile: create schedule: %w", err)
	}
	desc, err := h.Describe(ctx)
	if err != nil {
		return "", fmt.Errorf("reconcile: describe schedule: %w", err)
	}
	if matches(desc.Schedule, every) {
		return ScheduleUnchanged, nil
	}
	err = h.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
		s := in.Description.Schedule
		s.Spec, s.Action, s.Policy = want.Spec, want.Action, want.Policy
		return &client.ScheduleUpdate{Schedule: &s}, nil
	}})
	if err != nil {
		return "", fmt.Errorf("reconcile: update schedule: %w", err)
	}
	return ScheduleUpdated, nil
}

// schedule is the schedule this code wants: one run per interval, a run
// skipped while the previous one is still going, and no catching up on
// runs missed while Temporal was down beyond one (each run reads from the
// checkpoint, so one covers them all).
func schedule(every time.Duration) client.Schedule {
	return client.Schedule{
		Spec: &client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}},
		// No summary or arguments: they would be payloads, which the data
		// converter encodes, and a worker without the key ring that wrote
		// them (encryption turned off) could not read the schedule to update it.
		Action: &client.ScheduleWorkflowAction{ID: RunIDPrefix, Workflow: WorkflowName, TaskQueue: workflows.TaskQueue,
			WorkflowExecutionTimeout: runTimeout},
		Policy: &client.SchedulePolicies{Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, CatchupWindow: max(every, time.Minute)},
		State:  &client.ScheduleState{Note: "kept by the identity-verification worker (RECONCILE_EVERY)"},
	}
}

// matches says whether a described schedule already is what schedule(every)
// makes, in the parts a configuration or an upgrade changes.
func matches(s client.Schedule, every time.Duration) bool {
	a, ok := s.Action.(*client.ScheduleWorkflowAction)
	return ok && s.Spec != nil && s.Policy != nil &&
		slices.Equal(s.Spec.Intervals, []client.ScheduleIntervalSpec{{Every: every}}) &&
		len(s.Spec.Calendars) == 0 && len(s.Spec.CronExpressions) == 0 &&
		s.Policy.Overlap == enumspb.SCHEDULE_OVERLAP_POLICY_SKIP &&
		a.ID == RunIDPrefix && a.Workflow == WorkflowName && a.TaskQueue == workflows.TaskQueue
}
