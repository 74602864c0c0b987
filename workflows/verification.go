package workflows

import (
	"encoding/json"
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
// The main loop applies one step at a time (an event, a timer, a decision, a
// comparison's result): it changes the state, queues what the step owes the
// outside world, and persists the whole state once, at the step's end, so a
// fresh run restores exactly. Two coroutines work beside it, so no decision
// waits for them: the effects loop does what is owed (emails, a Stripe
// cancel) in order, and a comparison with Stripe's verified outputs runs
// until Stripe answers.
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
	// decided and decidedState are the outcome of the last pending
	// decision, for its update.
	decided      error
	decidedState State
	handled      int // events that took effect (or were recorded) in this run
	// restored is true once the state is loaded (from the database or the
	// previous run); the review update waits for it.
	restored bool
	// from is the status of the last persisted transition.
	from Status
	// busy counts the effects lanes doing an effect now (busyLane says
	// which); holdEffects stops them from starting another (before
	// continue-as-new hands the rest over).
	busy        int
	busyLane    [laneStripe + 1]bool
	holdEffects bool
	// internal are steps the effects lanes found for the main loop (Stripe
	// verified the user while a cancel was owed).
	internal []Event
	// stripeCalls counts the Stripe calls under way.
	stripeCalls int
	// cancelSend cancels the email being sent, so that one the session's
	// outcome made stale is dropped even while SMTP is down.
	cancelSend workflow.CancelFunc
	sending    *Email
	// v3 is true in runs started on workflow v3 (ChangeWorkflowV3).
	v3 bool
	// settled counts the owed effects, from the first, that a recorded
	// transition holds: the effects loop does only those.
	settled int
	// comparing is true while a comparison runs; compared holds its result
	// until the main loop applies it.
	comparing bool
	compared  *comparison
	log       log.Logger
	// published is the last search-attribute snapshot sent to the server.
	published string
}

func newVerification(ctx workflow.Context, in Input) (*verification, error) {
	w := &verification{
		v3:     workflowV3Unversioned || workflow.GetVersion(ctx, ChangeWorkflowV3, workflow.DefaultVersion, 1) >= 1,
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
	if w.v3 && w.st.Policy != nil && in.Carried == nil { // restored: the session keeps the policy it started with
		w.policy = w.st.Policy.withDefaults()
	}
	pol := w.policy
	w.st.Policy = &pol
	if w.v3 && w.st.Status == StatusProcessing && w.st.WatchdogAt.IsZero() { // restored from before the watchdog
		w.st.WatchdogAt = workflow.Now(ctx).Add(processingWatchdog)
	}
	w.from = w.st.Status
	w.settled = len(w.st.Owed) // carried or restored: recorded already
	w.seen = make(map[string]bool, len(w.st.ProcessedEventIDs))
	for _, id := range w.st.ProcessedEventIDs {
		w.seen[id] = true
	}
	if w.v3 {
		// The search attributes follow with the first step (every step
		// publishes); a run continued as new keeps its predecessor's.
		// Upserting them here too cost a visibility update per session.
		w.st.NextTimer, w.st.NextTimerAt = w.nextTimer()
		workflow.SetCurrentDetails(ctx, w.details())
	} else {
		w.publish(ctx)
	}
	return w, nil
}

// restore loads the state stored with the session's last transition, so a
// run started by a late event (after an earlier run finished) or after an
// operator terminated a run carries on exactly: status, attempts per method,
// open review, timers, emails owed, a comparison under way, last event time
// and dedupe ledger. Without it the session cannot go on safely, so a
// refusal or an unreadable state is shown to ops and tried again until it
// loads.
func (w *verification) restore(ctx workflow.Context) {
	delay := patientRetry.MaximumInterval
	for {
		var snap activities.Snapshot
		err := w.local(ctx, "load stored session", a.LoadSession, w.st.SessionID, &snap)
		if err == nil && !snap.Known {
			return
		}
		var st State
		if err == nil {
			err = json.Unmarshal(snap.State, &st) //workflowcheck:ignore (plain data, like the SDK's own converter)
		}
		if err == nil && st.SessionID == w.st.SessionID {
			st.ProcessedEventIDs = snap.ProcessedEventIDs
			if st.Status == "" {
				st.Status = StatusNew
			}
			if st.Escalation == "" {
				st.Escalation = EscalationNone
			}
			w.st = st // its issues too: the stored ones still hold, the load's are over
			return
		}
		if ctx.Err() != nil {
			return
		}
		w.raise(ctx, IssueDatabaseRejected, "stored state not loaded; retrying: "+errText(err))
		_ = workflow.Sleep(ctx, delay)
		delay = min(2*delay, time.Hour)
	}
}

// run is the main loop: apply what is ready, then wait for an event, a
// decision, a comparison's result or the next timer. It ends when the session
// is final and owes nothing, or hands over to a new run when this one is long.
func (w *verification) run(ctx workflow.Context) error {
	if w.v3 { // Stripe effects in a lane of their own: no email waits for Stripe
		workflow.Go(ctx, func(ctx workflow.Context) { w.effects(ctx, laneEmail) })
		workflow.Go(ctx, func(ctx workflow.Context) { w.effects(ctx, laneStripe) })
	} else {
		workflow.Go(ctx, func(ctx workflow.Context) { w.effects(ctx, laneAll) })
	}
	if w.st.Comparing != nil { // restored while a comparison was under way
		w.startComparison(ctx)
	}
	ready := func() bool { return w.events.Len() > 0 || len(w.internal) > 0 || w.pending != nil || w.compared != nil }
	for {
		w.drain(ctx)
		final, long := w.st.Status.Final(), w.runIsLong(ctx)
		// Before continue-as-new, the effects loop finishes the effect it
		// runs and leaves the rest to the next run.
		w.holdEffects = long && !final && !w.comparing && w.compared == nil
		idle := func() bool {
			return workflow.AllHandlersFinished(ctx) && w.busy == 0 && !w.comparing && w.compared == nil
		}
		switch {
		case final && idle() && len(w.st.Owed) == 0:
			w.log.Info("Verification finished", "SessionID", w.st.SessionID, "Status", w.st.Status)
			return nil
		case long && !final && idle():
			w.log.Info("Continuing as new", "SessionID", w.st.SessionID, "Runs", w.st.Runs)
			return workflow.NewContinueAsNewError(ctx, WorkflowName, Input{SessionID: w.st.SessionID, Policy: w.policy, Carried: &w.st})
		}
		wake := func() bool {
			return ready() || ((final || long) && idle() && (!final || len(w.st.Owed) == 0))
		}
		name, at := w.nextTimer()
		if name == "" {
			if err := workflow.Await(ctx, wake); err != nil {
				return err
			}
			continue
		}
		wait := max(at.Sub(workflow.Now(ctx)), time.Millisecond)
		woken, err := workflow.AwaitWithOptions(ctx, workflow.AwaitOptions{
			Timeout: wait, TimerOptions: workflow.TimerOptions{Summary: name}}, wake)
		if err != nil {
			return err
		}
		if !woken { // the timer fired
			w.onTimer(ctx, name)
		}
	}
}

// drain applies every buffered event, then a pending review decision and a
// comparison's result, each as one step. Events first: a redaction that came
// before a decision closes the review it was meant for.
func (w *verification) drain(ctx workflow.Context) {
	for {
		var ev Event
		if !w.events.ReceiveAsync(&ev) {
			break
		}
		w.handle(ctx, ev)
	}
	for len(w.internal) > 0 {
		ev := w.internal[0]
		w.internal = w.internal[1:]
		w.handle(ctx, ev)
	}
	if w.pending != nil {
		w.decided = w.applyDecision(ctx, *w.pending)
		w.pending = nil
	}
	if c := w.compared; c != nil {
		w.compared = nil
		w.onCompared(ctx, *c)
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
	consider(TimerExpiryWarning, w.st.WarningAt)
	consider(TimerExpiry, w.st.ExpiresAt)
	if w.st.Review.Open() {
		consider(TimerReviewDeadline, w.st.Review.DeadlineAt)
	}
	if w.v3 && w.st.Status == StatusProcessing {
		consider(TimerWatchdog, w.st.WatchdogAt)
	}
	return name, at
}

// Durable timer names, shown in the state and as timer summaries in the UI.
const (
	TimerReminder       = "reminder"
	TimerExpiryWarning  = "expiry_warning"
	TimerExpiry         = "expiry"
	TimerReviewDeadline = "review_deadline"
	// TimerWatchdog: a session processing for a day asks Stripe where it
	// stands, in case the event that ends processing never came.
	TimerWatchdog = "processing_watchdog"
)

// onTimer is a step: the timer's change, then one transition.
func (w *verification) onTimer(ctx workflow.Context, name string) {
	var note string
	switch name {
	case TimerReminder:
		w.st.ReminderAt = time.Time{}
		e := w.email(email.KindReminder)
		e.Link = w.lane()
		w.oweEmail(e)
	case TimerExpiryWarning:
		w.st.WarningAt = time.Time{}
		e := w.email(email.KindExpiryWarning)
		e.Deadline, e.Link = w.st.ExpiresAt, w.lane()
		w.oweEmail(e)
	case TimerExpiry:
		note = w.expire(ctx)
	case TimerReviewDeadline:
		w.reviewOverdue(ctx)
		name = "review:overdue"
	case TimerWatchdog:
		note = w.watchdog(ctx)
	}
	w.persist(ctx, name, nil, note)
}

// defaultExpiryWarning is how long before the expiry the user is warned,
// unless the policy says otherwise or the window is shorter.
const defaultExpiryWarning = 24 * time.Hour

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
	if p.ExpiryWarning == 0 { // a day before, or halfway from the reminder in a shorter window
		p.ExpiryWarning = min(defaultExpiryWarning, (p.ExpireAfter-max(p.ReminderAfter, 0))/2)
	}
	if p.ReviewDeadline <= 0 {
		p.ReviewDeadline = d.ReviewDeadline
	}
	if !p.LateFraud.Valid() {
		p.LateFraud = d.LateFraud
	}
	if p.ReviewApprovalsHighRisk <= 0 {
		p.ReviewApprovalsHighRisk = DefaultHighRiskApprovals
	}
	return p
}
