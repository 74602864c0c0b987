package admin_test

import (
	"context"
	"errors"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"identityverification/admin"
	"identityverification/store"
	"identityverification/workflows"
)

// closedRun is a session whose last run has closed with status: the update
// finds no running workflow; an update-with-start is recorded.
type closedRun struct {
	status  enumspb.WorkflowExecutionStatus
	started int
}

func (c *closedRun) UpdateWorkflow(context.Context, client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	return nil, serviceerror.NewNotFound("workflow execution already completed")
}

func (c *closedRun) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	return &workflowservice.DescribeWorkflowExecutionResponse{
		WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{Status: c.status}}, nil
}

func (c *closedRun) NewWithStartWorkflowOperation(client.StartWorkflowOptions, any, ...any) client.WithStartWorkflowOperation {
	return nil
}

func (c *closedRun) UpdateWithStartWorkflow(context.Context, client.UpdateWithStartWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	c.started++
	return nil, errors.New("started (stand-in)")
}

// vouchers records the vouchers written; its review case is open unless
// closed says otherwise.
type vouchers struct {
	written []store.DecisionVoucher
	closed  bool
}

func (v *vouchers) VouchDecision(_ context.Context, dv store.DecisionVoucher) error {
	v.written = append(v.written, dv)
	return nil
}

func (v *vouchers) Review(_ context.Context, id string) (store.ReviewCase, error) {
	if v.closed {
		return store.ReviewCase{SessionID: id, Status: store.ReviewApproved}, nil
	}
	return store.ReviewCase{SessionID: id, Status: store.ReviewOpen}, nil
}

// Issue 19, item 12: a decision for a session whose workflow completed by
// itself is refused without starting a run; one an operator terminated
// starts a run that restores the open review.
func TestADecisionAfterTheRunClosed(t *testing.T) {
	d := workflows.ReviewDecision{Decision: "approve", Reviewer: "ops", Subject: workflows.SubjectAdminToken}
	t.Run("completed: refused, nothing started", func(t *testing.T) {
		c := &closedRun{status: enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED}
		_, err := admin.Decide(context.Background(), c, &vouchers{}, workflows.DefaultPolicy(), "vs_done", "", d)
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrTypeReviewRefused || c.started != 0 {
			t.Errorf("err = %v, started %d; want a refusal and no run", err, c.started)
		}
	})
	t.Run("terminated: a new run takes the decision", func(t *testing.T) {
		c := &closedRun{status: enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED}
		admin.Decide(context.Background(), c, &vouchers{}, workflows.DefaultPolicy(), "vs_cut", "", d)
		if c.started != 1 {
			t.Errorf("started %d runs; want 1", c.started)
		}
	})
	t.Run("terminated without an open review: refused, nothing started", func(t *testing.T) {
		c := &closedRun{status: enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED}
		_, err := admin.Decide(context.Background(), c, &vouchers{closed: true}, workflows.DefaultPolicy(), "vs_cut", "", d)
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrTypeReviewRefused || c.started != 0 {
			t.Errorf("err = %v, started %d; want a refusal and no run", err, c.started)
		}
	})
}
