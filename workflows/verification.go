package workflows

import (
	"encoding/json"
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
//
// Two coroutines share the state: the main loop applies events, timers and
// decisions (state, search attributes, database) at once; the effects loop
// does what they owe the outside world (emails, a Stripe cancel) in order,
// so an SMTP outage never holds up a decision.
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
	// restored is true once the state is loaded (from the database or the
	// previous run); the review update waits for it.
	restored bool
	// from is the status of the last persisted transition.
	from Status
	// effectBusy is true while the effects loop runs one; holdEffects stops
	// it from starting another (before continue-as-new hands the rest over).
	effectBusy, holdEffects bool
	log                     log.Logger
	// published is the last search-attribute snapshot sent to the server.
	published string
}

func newVerification(ctx workflow.Context, in Input) (*verification, error) {
	w := &verification{
		policy: in.Policy.withDefaults(),
		events: workflow.GetSignalChannelWithOptions(ctx, SignalEvent, workflow.SignalChannelOptions{
			Description: "A Stripe identity.verification_session.* event (sent by the webhook)."}),
		log:       workflow.GetLogger(ctx),
		published: "-",
	}
	if in.Carried != nil {
		w.st = *in.Carried
		w.st.Runs++
		w.restored = true
	} else {
		w.st = State{SessionID: in.SessionID, Status: StatusNew, Escalation: EscalationNone}
	}
	// The handlers are set before the state is restored: an update that
	// started this run (or came with its first task) must not be refused
	// for want of a handler. The update waits for the restore.
	if err := workflow.SetQueryHandlerWithOptions(ctx, QueryState, func() (State, error) { return w.st, nil },
		workflow.QueryHandlerOptions{Description: "Where the session is: status, attempts, last error, escalation, open review, next timer, issues, emails owed."}); err != nil {
		return nil, err
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateReviewDecision, w.decide, workflow.UpdateHandlerOptions{
		Validator:   w.validateDecision,
		Description: `Decide the open manual review: {"decision": "approve"|"reject", "reviewer": "<ops id>"}.`}); err != nil {
		return nil, err
	}
	if !w.restored {
		w.restore(ctx)
		w.restored = true
	}
	w.from = w.st.Status
	w.seen = make(map[string]bool, len(w.st.ProcessedEventIDs))
	for _, id := range w.st.ProcessedEventIDs {
		w.seen[id] = true
	}
	w.publish(ctx)
	return w, nil
}

// restore loads the state stored with the session's last transition, so a
// run started by a late event (after an earlier run finished) or after an
// operator terminated a run carries on exactly: status, attempts per method,
// open review, timers, emails owed, last event time and dedupe ledger.
func (w *verification) restore(ctx workflow.Context) {
	var snap activities.Snapshot
	if err := w.local(ctx, "load stored session", a.LoadSession, w.st.SessionID, &snap); err != nil {
		return // refused for good: start afresh, the issue shows why
	}
	if !snap.Known {
		return
	}
	var st State
	err := json.Unmarshal(snap.State, &st) //workflowcheck:ignore (plain data, like the SDK's own converter)
	if err != nil || st.SessionID != w.st.SessionID {
		w.raise(ctx, IssueDatabaseRejected, "stored state unreadable")
		return
	}
	st.ProcessedEventIDs = snap.ProcessedEventIDs
	if st.Status == "" {
		st.Status = StatusNew
	}
	if st.Escalation == "" {
		st.Escalation = EscalationNone
	}
	st.Issues = append(st.Issues, w.st.Issues...)
	w.st = st
}

// run is the main loop: wait for an event, a review decision or the next
// timer, apply it, and end when the session is final and owes nothing.
func (w *verification) run(ctx workflow.Context) error {
	workflow.Go(ctx, w.effects)
	ready := func() bool { return w.events.Len() > 0 || w.pending != nil }
	for {
		if err := w.drain(ctx); err != nil {
			return err
		}
		if w.st.Status.Final() || w.runIsLong(ctx) {
			// Let in-flight update handlers finish and apply what they
			// brought; then finish what is owed, or hand it over.
			final := w.st.Status.Final()
			w.holdEffects = !final
			if err := workflow.Await(ctx, func() bool {
				return ready() || (workflow.AllHandlersFinished(ctx) && !w.effectBusy && (!final || len(w.st.Owed) == 0))
			}); err != nil {
				return err
			}
			w.holdEffects = false
			if ready() {
				continue
			}
			if final {
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
		w.applyDecision(ctx, *w.pending)
		w.pending = nil
	}
	for {
		var ev Event
		if !w.events.ReceiveAsync(&ev) {
			return nil
		}
		w.handle(ctx, ev)
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
		w.oweEmail(w.email(email.KindReminder, fmt.Sprint(w.st.Seq)))
		w.publish(ctx)
		return nil
	case TimerExpiry:
		w.expire(ctx)
		return nil
	case TimerReviewDeadline:
		w.reviewOverdue(ctx)
		return nil
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
	if !p.LateFraud.Valid() {
		p.LateFraud = d.LateFraud
	}
	return p
}
