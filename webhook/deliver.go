package webhook

import (
	"context"

	"go.temporal.io/sdk/client"

	"identityverification/workflows"
)

// Deliver hands an identity event to its session's workflow with
// SignalWithStart: workflow id identity-verification-<vs_id>, started with
// policy when no run is open. It is the one way a Stripe event enters
// Temporal, for a webhook delivery and for an event reconciliation found
// missed; the workflow applies an event id once, so a second delivery of
// the same event is safe.
func Deliver(ctx context.Context, c Signaler, ev workflows.Event, policy workflows.Policy) error {
	id := workflows.WorkflowID(ev.SessionID)
	_, err := c.SignalWithStartWorkflow(ctx, id, workflows.SignalEvent, ev,
		client.StartWorkflowOptions{
			ID:            id,
			TaskQueue:     workflows.TaskQueue,
			StaticSummary: "Stripe Identity session " + ev.SessionID,
		},
		workflows.WorkflowName, workflows.Input{SessionID: ev.SessionID, Policy: policy})
	return err
}

// Decode reads a Stripe event's JSON as a webhook delivery is read, once
// its signature is verified: for an identity.verification_session.* event
// it returns the signal payload and identity true; other types give
// identity false. An event without an id, or an identity event without a
// session id, is an error.
func Decode(body []byte) (ev workflows.Event, identity bool, err error) {
	_, ev, identity, err = decode(body)
	return ev, identity, err
}
