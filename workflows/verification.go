package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
	"identityverification/email"
)

// a names the activities for ExecuteActivity; its methods are never called
// on this nil value.
var a *activities.Activities

// Verification carries one VerificationSession from its first Stripe event to
// its end. Events arrive as signals (SignalEvent), in any order and possibly
// more than once; ops read it with the `state` query and decide reviews with
// the UpdateReviewDecision update.
func Verification(ctx workflow.Context, in Input) error {
	w, err := newVerification(ctx, in)
	if err != nil {
		return err
	}
	return w.run(ctx)
}

// verification is the workflow's state; its methods are the steps.
type verification struct {
	policy  Policy
	st      State
	seen    map[string]bool
	events  workflow.ReceiveChannel
	pending *ReviewDecision // accepted by the update, applied by the main loop
	handled int             // events that took effect (or were recorded) in this run
	// received counts signals read in this run. A run always starts with one
	// (SignalWithStart); a run restored into a final state waits for it.
	received int
	log      log.Logger
	// published is the last search-attribute snapshot sent to the server.
	published [4]any
}

func newVerification(ctx workflow.Context, in Input) (*verification, error) {
	w := &verification{
		policy: in.Policy.withDefaults(),
		events: workflow.GetSignalChannelWithOptions(ctx, SignalEvent, workflow.SignalChannelOptions{
			Description: "A Stripe identity.verification_session.* event (sent by the webhook)."}),
		log: workflow.GetLogger(ctx),
	}
	if in.Carried != nil {
		w.st = *in.Carried
		w.st.Runs++
	} else {
		w.st = State{SessionID: in.SessionID, Status: StatusNew, Escalation: EscalationNone}
	}
	if err := workflow.SetQueryHandlerWithOptions(ctx, QueryState, func() (State, error) { return w.st, nil },
		workflow.QueryHandlerOptions{Description: "Where the session is: status, attempts, last error, escalation, open review, next timer."}); err != nil {
		return nil, err
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateReviewDecision, w.decide, workflow.UpdateHandlerOptions{
		Validator:   w.validateDecision,
		Description: `Decide the open manual review: {"decision": "approve"|"reject", "reviewer": "<ops id>"}.`}); err != nil {
		return nil, err
	}
	if in.Carried == nil {
		if err := w.restore(ctx); err != nil {
			return nil, err
		}
	}
	w.seen = make(map[string]bool, len(w.st.ProcessedEventIDs))
	for _, id := range w.st.ProcessedEventIDs {
		w.seen[id] = true
	}
	return w, w.publish(ctx)
}

// restore loads what the database knows of the session, so a run started by
// a late event (after an earlier run finished) neither repeats the effects
// of old events nor moves the state backwards.
func (w *verification) restore(ctx workflow.Context) error {
	var snap activities.Snapshot
	if err := workflow.ExecuteActivity(dbCtx(ctx, "load stored session"), a.LoadSession, w.st.SessionID).Get(ctx, &snap); err != nil {
		return fmt.Errorf("load session: %w", err)
	}
	if !snap.Known {
		return nil
	}
	w.st.Status, w.st.StripeStatus, w.st.SessionType = Status(snap.Status), snap.StripeStatus, snap.SessionType
	w.st.Attempts, w.st.LastErrorCode, w.st.LastErrorReason = snap.Attempts, snap.LastErrorCode, snap.LastErrorReason
	w.st.Escalation, w.st.Seq, w.st.Redacted = Escalation(snap.Escalation), snap.Seq, snap.Redacted
	w.st.ProcessedEventIDs = snap.ProcessedEventIDs
	if w.st.Status == "" {
		w.st.Status = StatusNew
	}
	if w.st.Escalation == "" {
		w.st.Escalation = EscalationNone
	}
	return nil
}

// run is the main loop: wait for an event, a review decision or the next
// timer, apply it, and end when the session is final.
func (w *verification) run(ctx workflow.Context) error {
	ready := func() bool { return w.events.Len() > 0 || w.pending != nil }
	for {
		if err := w.drain(ctx); err != nil {
			return err
		}
		if (w.st.Status.Final() && w.received > 0) || w.runIsLong(ctx) {
			// Let in-flight update handlers finish and apply what they
			// brought; only then close or continue as new.
			if err := workflow.Await(ctx, func() bool { return ready() || workflow.AllHandlersFinished(ctx) }); err != nil {
				return err
			}
			if ready() {
				continue
			}
			if w.st.Status.Final() {
				w.log.Info("Verification finished", "SessionID", w.st.SessionID, "Status", w.st.Status)
				return nil
			}
			w.log.Info("Continuing as new", "SessionID", w.st.SessionID, "Runs", w.st.Runs)
			return workflow.NewContinueAsNewError(ctx, WorkflowName, Input{SessionID: w.st.SessionID, Policy: w.policy, Carried: &w.st})
		}

		name, at := w.nextTimer() // publish already put it in the state
		if name == "" {
			if err := workflow.Await(ctx, ready); err != nil {
				return err
			}
			continue
		}
		wait := max(at.Sub(workflow.Now(ctx)), time.Millisecond)
		fired, err := workflow.AwaitWithOptions(ctx, workflow.AwaitOptions{
			Timeout: wait, TimerOptions: workflow.TimerOptions{Summary: name}}, ready)
		if err != nil {
			return err
		}
		if !fired { // the condition did not become true: the timer fired
			if err := w.onTimer(ctx, name); err != nil {
				return err
			}
		}
	}
}

// drain applies a pending review decision and every buffered event.
func (w *verification) drain(ctx workflow.Context) error {
	if w.pending != nil {
		if err := w.applyDecision(ctx, *w.pending); err != nil {
			return err
		}
		w.pending = nil
	}
	for {
		var ev Event
		if !w.events.ReceiveAsync(&ev) {
			return nil
		}
		w.received++
		if err := w.handle(ctx, ev); err != nil {
			return err
		}
	}
}

// runIsLong reports whether this run should hand over to a new one.
func (w *verification) runIsLong(ctx workflow.Context) bool {
	return workflow.GetInfo(ctx).GetContinueAsNewSuggested() ||
		(w.policy.EventsPerRun > 0 && w.handled >= w.policy.EventsPerRun)
}

// nextTimer is the earliest armed durable timer.
func (w *verification) nextTimer() (string, time.Time) {
	var name string
	var at time.Time
	consider := func(n string, t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			name, at = n, t
		}
	}
	consider(TimerReminder, w.st.ReminderAt)
	consider(TimerExpiry, w.st.ExpiresAt)
	if w.st.Review.Open() {
		consider(TimerReviewDeadline, w.st.Review.DeadlineAt)
	}
	return name, at
}

// Durable timer names, shown in the state and as timer summaries in the UI.
const (
	TimerReminder       = "reminder"
	TimerExpiry         = "expiry"
	TimerReviewDeadline = "review_deadline"
)

func (w *verification) onTimer(ctx workflow.Context, name string) error {
	switch name {
	case TimerReminder:
		w.st.ReminderAt = time.Time{}
		w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindReminder, Attempt: int(w.st.Seq)})
		return w.publish(ctx)
	case TimerExpiry:
		return w.expire(ctx)
	case TimerReviewDeadline:
		return w.reviewOverdue(ctx)
	}
	return errors.New("unknown timer " + name)
}

func (p Policy) withDefaults() Policy {
	d := DefaultPolicy()
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.AlternateMaxAttempts <= 0 {
		p.AlternateMaxAttempts = d.AlternateMaxAttempts
	}
	if p.AlternateType == "" {
		p.AlternateType = d.AlternateType
	}
	if !p.Escalation.Valid() {
		p.Escalation = d.Escalation
	}
	if p.ExpireAfter <= 0 {
		p.ExpireAfter = d.ExpireAfter
	}
	if p.ReviewDeadline <= 0 {
		p.ReviewDeadline = d.ReviewDeadline
	}
	return p
}
