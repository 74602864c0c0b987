package workflows

import (
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
	"identityverification/email"
)

// maxProcessedIDs bounds the dedupe set carried in state (newest kept). Stripe
// retries an event for at most 3 days, so an older id cannot come back.
const maxProcessedIDs = 1000

// handle applies one Stripe event exactly once, as one step. Two things
// happen to it, on purpose apart:
//
//   - accounting, which does not depend on arrival order: a failed attempt
//     counts once for the method it belongs to, a code no retry can fix
//     escalates, whenever either arrives;
//   - the status, which follows the newest event by Stripe's `created` and
//     never moves backwards.
func (w *verification) handle(ctx workflow.Context, ev Event) {
	if ev.ID == "" || w.seen[ev.ID] {
		w.log.Info("Duplicate event ignored", "EventID", ev.ID)
		return
	}
	if ev.SessionID != w.st.SessionID {
		w.log.Warn("Event for another session ignored", "EventID", ev.ID)
		return
	}
	w.markSeen(ev.ID)
	w.handled++
	note := w.apply(ctx, ev)
	w.persist(ctx, ev.ID, &ev, note)
}

// apply changes the state for an event and says why, when it is not the
// plain effect of the event.
func (w *verification) apply(ctx workflow.Context, ev Event) string {
	if ev.Type == EventRedacted {
		w.onRedacted(ctx)
		return ""
	}
	if w.st.Status == StatusRedacted {
		return "ignored: session redacted"
	}
	if w.st.FirstType == "" && ev.SessionType != "" && w.st.AlternateSince == 0 {
		w.st.FirstType = ev.SessionType // the first method is the session's type from its first event
		if w.st.SessionType == "" {
			w.st.SessionType = ev.SessionType
		}
	}
	if w.verifiedAfterOurEnd(ev) {
		// This service ended the session (its expiry, or the ladder's
		// rejection), but Stripe verified the user: a canceled session is
		// never verified, so the cancel had not taken effect, and Stripe's
		// answer wins. A reviewer's rejection stands.
		ended := w.st.Status
		w.st.LastEventCreated = max(w.st.LastEventCreated, ev.Created)
		w.st.Status, w.st.ExpiredAt = StatusProcessing, time.Time{}
		return "verified after the session was " + string(ended) + ": " + w.onVerified(ctx, ev)
	}
	if w.supersedesFraudReview(ev) {
		// LATE_FRAUD_POLICY=record: Stripe verified the user after the code
		// that opened the review, so the review gives way, as it would had
		// the verification arrived first.
		w.closeReview(ctx, DecisionSuperseded)
		w.st.Review = nil
		w.st.Escalation, w.st.Status = EscalationNone, StatusProcessing
		if w.st.AlternateSince != 0 {
			w.st.Escalation = EscalationAlternate
		}
		w.st.LastEventCreated = max(w.st.LastEventCreated, ev.Created)
		return "review superseded by a later verification: " + w.onVerified(ctx, ev)
	}
	alternate := false
	if ev.Failure() {
		alternate = w.count(ev)
	}
	// Stripe is asked to break a same-second tie only where the answer
	// matters: not for a closed session or an open review.
	current := w.current(ctx, ev, !w.st.Status.Final() && !w.st.Review.Open())
	if current {
		w.st.LastEventCreated = max(w.st.LastEventCreated, ev.Created)
	}
	verifiedPending := w.st.Comparing != nil && !current
	switch {
	case w.st.Status.Final() || verifiedPending:
		return w.onClosed(ctx, ev, verifiedPending)
	case w.st.Review.Open():
		// A person decides now; Stripe's word is recorded for them.
		if current && ev.Status != "" {
			w.st.StripeStatus = ev.Status
		}
		return "in review"
	case ev.Failure():
		return w.onFailure(ctx, ev, alternate, current)
	case !current:
		return "ignored: stale"
	case ev.Type == EventCreated:
		w.st.StripeStatus = ev.Status
		if w.st.Status == StatusNew {
			w.st.Status = StatusCreated
			w.armInputTimers(ctx)
		}
	case ev.Type == EventProcessing:
		w.st.StripeStatus, w.st.Status = StripeStatusProcessing, StatusProcessing
		w.disarmInputTimers()
		if w.v3 {
			w.st.WatchdogAt = workflow.Now(ctx).Add(processingWatchdog)
		}
	case ev.Type == EventRequiresInput: // without a last_error: waiting for the user
		w.st.StripeStatus, w.st.Status = StripeStatusRequiresInput, StatusRequiresInput
		w.armInputTimers(ctx)
	case ev.Type == EventVerified:
		return w.onVerified(ctx, ev)
	case ev.Type == EventCanceled:
		w.st.StripeStatus, w.st.Status = StripeStatusCanceled, StatusCanceled
		w.disarmInputTimers()
	default:
		return "ignored: unhandled type"
	}
	return ""
}

func (w *verification) markSeen(id string) {
	w.seen[id] = true
	w.st.ProcessedEventIDs = append(w.st.ProcessedEventIDs, id)
	if n := len(w.st.ProcessedEventIDs); n > maxProcessedIDs {
		for _, old := range w.st.ProcessedEventIDs[:n-maxProcessedIDs] {
			delete(w.seen, old)
		}
		w.st.ProcessedEventIDs = append([]string(nil), w.st.ProcessedEventIDs[n-maxProcessedIDs:]...)
	}
}

// verifiedAfterOurEnd reports whether a verified event reopens a session
// this service ended on its own (workflow v3): expired, or rejected by the
// escalation ladder without a review.
func (w *verification) verifiedAfterOurEnd(ev Event) bool {
	return w.v3 && ev.Type == EventVerified &&
		(w.st.Status == StatusExpired || (w.st.Status == StatusRejected && w.st.Review == nil))
}

// supersedesFraudReview reports whether a verified event closes the open
// review a non-retryable code opened: under LATE_FRAUD_POLICY=record, when
// Stripe created the verification after the code (workflow v3).
func (w *verification) supersedesFraudReview(ev Event) bool {
	r := w.st.Review
	return w.v3 && ev.Type == EventVerified && w.policy.LateFraud == LateFraudRecord && r.Open() &&
		strings.HasPrefix(r.Reason, reasonNonRetryable) && r.CodeCreated != 0 && ev.Created > r.CodeCreated
}

// count books a failed attempt against the method it belongs to and keeps
// the newest failure's code; it reports whether that method is the alternate.
// The event's type tells the method, unless both methods have the same type
// (workflow v3): then the time of the switch does.
func (w *verification) count(ev Event) (alternate bool) {
	typeTells := ev.SessionType != "" && (!w.v3 || w.st.FirstType == "" || w.st.FirstType != w.policy.AlternateType)
	switch {
	case w.st.AlternateSince == 0:
	case typeTells:
		alternate = ev.SessionType == w.policy.AlternateType
	default:
		alternate = ev.Created >= w.st.AlternateSince
	}
	if alternate {
		w.st.AlternateAttempts++
	} else {
		w.st.Attempts++
	}
	if ev.Created > w.st.LastErrorCreated || (ev.Created == w.st.LastErrorCreated && ev.ID > w.st.LastErrorEventID) {
		w.st.LastErrorCode, w.st.LastErrorReason = ev.ErrorCode(), ev.LastErrorReason
		w.st.LastErrorCreated, w.st.LastErrorEventID = ev.Created, ev.ID
	}
	return alternate
}

// current reports whether an event is at least as new as what the state
// shows. When two events carry the same second, Stripe's API decides which
// status is current; when Stripe cannot be asked, the event applies.
func (w *verification) current(ctx workflow.Context, ev Event, ask bool) bool {
	switch {
	case ev.Created < w.st.LastEventCreated:
		return false
	case ev.Created > w.st.LastEventCreated || ev.Status == "" || ev.Status == w.st.StripeStatus || !ask:
		return true
	}
	status, ok := w.stripeStatus(ctx, "read session status (ambiguous order)")
	return !ok || status == ev.Status
}

// stripeStatus asks Stripe where the session stands, when order alone cannot
// tell; ok is false when Stripe could not be asked within a minute.
func (w *verification) stripeStatus(ctx workflow.Context, summary string) (status string, ok bool) {
	status, err := w.askStripe(ctx, summary)
	return status, err == nil
}

// askStripe is stripeStatus with the error: a refusal (non-retryable: Stripe
// answered, and will answer the same) or the budget spent in an outage.
func (w *verification) askStripe(ctx workflow.Context, summary string) (status string, err error) {
	if err = w.callStripe(ctx, summary, askStripeBudget, a.FetchSessionStatus, w.st.SessionID, &status); err != nil {
		w.log.Warn("Could not read the session's status at Stripe", "Error", err)
		return "", err
	}
	return status, nil
}

// stripeRetry is how soon a step Stripe could not answer (an expiry, the
// processing watchdog) asks again: first after 15 minutes, then twice as
// long each time, up to 6 hours, so that an outage of every waiting session
// does not become a storm of reads when it ends.
func (w *verification) stripeRetry() time.Duration {
	d := expiryRetry << min(w.st.StripeRetries, 5)
	w.st.StripeRetries++
	return min(d, 6*time.Hour)
}

// onClosed: a closed session only records events, except that a code no
// retry can fix, arriving after it was verified, follows the late-fraud
// policy.
func (w *verification) onClosed(ctx workflow.Context, ev Event, verifiedPending bool) string {
	code := ev.ErrorCode()
	verified := w.st.Status == StatusVerified || verifiedPending
	if !ev.Failure() || w.policy.Retryable(code) || !verified || w.policy.LateFraud != LateFraudReview {
		if verifiedPending {
			return "older than the verified outcome being compared"
		}
		return "session already " + string(w.st.Status)
	}
	w.openReview(ctx, reviewCase{reason: reasonNonRetryable + code, codeCreated: ev.Created})
	return "late non-retryable code after verification"
}

// onFailure follows a counted failed attempt: it escalates when the code is
// one no retry can fix or the method's attempts ran out, whenever the event
// arrived; otherwise, when it is the newest event, it tells the user how to
// retry. A failure older than what the state shows is counted silently: the
// user has moved on since.
func (w *verification) onFailure(ctx workflow.Context, ev Event, alternate, current bool) string {
	if current {
		w.st.StripeStatus, w.st.Status = StripeStatusRequiresInput, StatusRequiresInput
	}
	code := ev.ErrorCode()
	attempts, limit := w.st.Attempts, w.policy.MaxAttempts
	if alternate {
		attempts, limit = w.st.AlternateAttempts, w.policy.AlternateMaxAttempts
	}
	onThisMethod := alternate == (w.st.Escalation == EscalationAlternate)
	switch {
	case !w.policy.Retryable(code):
		return w.escalate(ctx, reasonNonRetryable+code, code, ev.Created)
	case onThisMethod && attempts >= limit:
		// The limit can be reached by a failure delivered late, after the
		// user moved on: Stripe, the source of truth, says whether the
		// session still waits for the user.
		status, ok := w.stripeStatus(ctx, "read session status (attempts exhausted)")
		if !ok && !current {
			status = w.st.StripeStatus // the newest event applied says where the user is
		}
		if status == StripeStatusProcessing || status == StripeStatusVerified {
			return "attempts exhausted, but Stripe says " + status
		}
		return w.escalate(ctx, "attempts_exhausted", code, 0)
	case !current:
		return "late failure counted"
	case !onThisMethod:
		return ""
	}
	w.armInputTimers(ctx)
	e := w.email(email.KindFailed)
	e.Ref = fmt.Sprintf("%s-%d", w.laneName(alternate), attempts)
	e.Attempt, e.MaxAttempts, e.Reason = attempts, limit, reasonText(ev)
	if w.v3 {
		e.Link = &RetryLane{Alternate: alternate, Attempt: attempts}
	}
	w.oweEmail(e)
	return ""
}

// laneName names a method in email keys: the first method by the session's
// type, the alternate one as such (before workflow v3: "document" and the
// alternate type, which were one name when both were documents).
func (w *verification) laneName(alternate bool) string {
	switch {
	case !w.v3 && alternate:
		return w.policy.AlternateType
	case !w.v3:
		return "document"
	case alternate:
		return "alternate-" + w.policy.AlternateType
	case w.st.FirstType != "":
		return w.st.FirstType
	}
	return "document"
}

// lane is the retry lane of the method the session is on now, for the
// links of reminders and warnings (workflow v3; nil before).
func (w *verification) lane() *RetryLane {
	switch {
	case !w.v3:
		return nil
	case w.st.Escalation == EscalationAlternate:
		return &RetryLane{Alternate: true, Attempt: w.st.AlternateAttempts}
	}
	return &RetryLane{Attempt: w.st.Attempts}
}

// reasonNonRetryable prefixes the reason of a review a code no retry can
// fix opened.
const reasonNonRetryable = "non_retryable:"

// onVerified compares the verified outputs with the expected values. It
// first tries within the step (a local activity, a few seconds at most), so
// that a verified session is decided in the workflow task its event came in
// (workflow v3); when Stripe is slow or failing, the event is recorded as it
// is and the comparison goes on beside the main loop, and onCompared applies
// its result as a step of its own when Stripe answered.
func (w *verification) onVerified(ctx workflow.Context, ev Event) string {
	if w.st.Comparing != nil {
		return "already comparing " + w.st.Comparing.ID
	}
	w.st.StripeStatus = StripeStatusVerified
	w.disarmInputTimers()
	if w.v3 {
		var c activities.Comparison
		lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{Summary: "compare verified outputs",
			StartToCloseTimeout: compareLocally, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1}})
		if err := workflow.ExecuteLocalActivity(lctx, a.CompareVerifiedOutputs, w.st.SessionID).Get(ctx, &c); err == nil {
			if note := w.applyComparison(ctx, comparison{Comparison: c}); note != "" {
				return "verified outputs compared: " + note
			}
			return "verified outputs compared"
		}
	}
	w.st.Comparing = &ev
	w.startComparison(ctx)
	return "comparing verified outputs"
}

// compareLocally bounds the comparison's try within the step: the main loop
// waits for it, so a Stripe that is slower goes to the comparison beside it.
const compareLocally = 5 * time.Second

// comparison is a comparison's outcome, for the main loop.
type comparison struct {
	activities.Comparison
	err error
}

// startComparison runs the comparison beside the main loop, so that only
// the verified outcome waits for Stripe.
func (w *verification) startComparison(ctx workflow.Context) {
	w.comparing = true
	workflow.Go(ctx, func(ctx workflow.Context) {
		var c comparison
		c.err = w.callStripe(ctx, "compare verified outputs", 6*time.Hour, a.CompareVerifiedOutputs, w.st.SessionID, &c.Comparison)
		w.comparing, w.compared = false, &c
	})
}

// onCompared is a step: a match ends the session, a mismatch opens a manual
// review, unless the session moved on meanwhile (a review, a redaction).
func (w *verification) onCompared(ctx workflow.Context, c comparison) {
	ev := w.st.Comparing
	w.st.Comparing = nil
	note := w.applyComparison(ctx, c)
	key := "compared"
	if ev != nil {
		key = "compared:" + ev.ID
	}
	w.persist(ctx, key, nil, note)
}

// applyComparison changes the state for a comparison's outcome and says
// why, when it is not the plain outcome.
func (w *verification) applyComparison(ctx workflow.Context, c comparison) (note string) {
	switch {
	case w.st.Status.Final() || w.st.Review.Open():
		note = "comparison ignored: session " + string(w.st.Status)
	case c.err != nil:
		// Stripe refused the read, or did not answer for hours: a person
		// must look at it.
		w.log.Warn("Could not compare verified outputs", "Error", c.err)
		w.openReview(ctx, reviewCase{reason: reasonMismatch, fields: []string{"unavailable"}})
	case !c.Match:
		w.openReview(ctx, reviewCase{reason: reasonMismatch, fields: c.MismatchedFields})
	default:
		w.st.Status = StatusVerified
		w.disarmInputTimers() // a requires_input applied meanwhile armed them
		w.oweEmail(w.email(email.KindVerified))
	}
	return note
}

// onRedacted purges the session's personal data, whenever it comes: the
// audit trail and event ids stay, and the session ends.
func (w *verification) onRedacted(ctx workflow.Context) {
	w.local(ctx, "purge personal data", a.RedactSession, w.st.SessionID, nil)
	w.st.Redacted, w.st.Status = true, StatusRedacted
	w.disarmInputTimers()
	if w.st.Review.Open() {
		w.st.Review.Decision = DecisionClosed
	}
}

// armInputTimers (re)starts the reminder, expiry-warning and expiry windows
// of a session waiting for the user.
func (w *verification) armInputTimers(ctx workflow.Context) {
	now := workflow.Now(ctx)
	w.st.ReminderAt, w.st.WarningAt = time.Time{}, time.Time{}
	if r := w.policy.ReminderAfter; r > 0 && r < w.policy.ExpireAfter {
		w.st.ReminderAt = now.Add(r)
	}
	w.st.ExpiresAt = now.Add(w.policy.ExpireAfter)
	// The warning before expiry came in version 1 of this change: runs that
	// armed their timers before it replay without it (see docs/changing-the-workflow.md,
	// "Changing the workflow safely"). It is sent only when it falls after
	// the reminder, so the user never gets the two at once.
	if expiryWarningUnversioned || workflow.GetVersion(ctx, ChangeExpiryWarning, workflow.DefaultVersion, 1) >= 1 {
		if b := w.policy.ExpiryWarning; b > 0 && b < w.policy.ExpireAfter {
			if at := w.st.ExpiresAt.Add(-b); at.After(w.st.ReminderAt) {
				w.st.WarningAt = at
			}
		}
	}
}

// ChangeExpiryWarning is the workflow.GetVersion change id of the warning
// before expiry.
const ChangeExpiryWarning = "expiry-warning"

// workflowV3Unversioned is set only by a test: workflow v3 without its
// GetVersion, which the replayer must catch on the histories from before.
var workflowV3Unversioned = false

// expiryWarningUnversioned is set only by a test: the same change without
// GetVersion, which the replayer must catch.
var expiryWarningUnversioned = false

func (w *verification) disarmInputTimers() {
	w.st.ReminderAt, w.st.WarningAt, w.st.ExpiresAt = time.Time{}, time.Time{}, time.Time{}
}

// expire ends a session the user left waiting: cancel it at Stripe, tell the
// user. Unless Stripe says the user did come back (an event created before
// the deadline may still be on its way): then the session waits for it.
//
// When Stripe cannot be asked (workflow v3), the expiry waits and asks
// again shortly: an outage must not expire a user who may have finished.
func (w *verification) expire(ctx workflow.Context) string {
	w.disarmInputTimers()
	status, err := w.askStripe(ctx, "read session status (before expiry)")
	switch {
	case err == nil && (status == StripeStatusProcessing || status == StripeStatusVerified):
		w.st.ExpiresAt = workflow.Now(ctx).Add(w.policy.ExpireAfter) // look again if its event never comes
		return "not expired: Stripe says " + status
	case retryable(err) && w.v3:
		w.st.ExpiresAt = workflow.Now(ctx).Add(w.stripeRetry())
		return "expiry deferred: Stripe could not be asked"
	case err != nil && w.v3:
		// Stripe answered, and will not tell (a session this key cannot
		// read): the expiry goes ahead, and ops see why.
		w.raise(ctx, IssueStripeRefused, "status before expiry refused: "+errText(err))
	}
	w.st.StripeRetries = 0
	w.st.Status = StatusExpired
	if w.v3 {
		w.st.ExpiredAt = workflow.Now(ctx)
	}
	w.oweCancel()
	w.oweEmail(w.email(email.KindExpired))
	return ""
}

// expiryRetry is how soon an expiry Stripe could not confirm is tried again.
const expiryRetry = 15 * time.Minute

// processingWatchdog is how long a session may stay processing before the
// workflow asks Stripe where it stands.
const processingWatchdog = 24 * time.Hour

// watchdog asks Stripe about a session processing for a day: the event
// that ends processing may never have come (the reconcile schedule finds
// most such; this covers the rest). Stripe's answer is applied as the
// event would have been; while Stripe still processes, or cannot be
// asked, the watchdog is armed again.
func (w *verification) watchdog(ctx workflow.Context) string {
	now := workflow.Now(ctx)
	status, err := w.askStripe(ctx, "read session status (processing for a day)")
	switch {
	case retryable(err):
		w.st.WatchdogAt = now.Add(w.stripeRetry())
		return "processing watchdog: Stripe could not be asked"
	case err != nil:
		w.raise(ctx, IssueStripeRefused, "status read refused: "+errText(err))
		w.st.WatchdogAt = now.Add(processingWatchdog)
		return "processing watchdog: Stripe refused the read"
	case status == StripeStatusRequiresInput:
		w.st.StripeStatus, w.st.Status = StripeStatusRequiresInput, StatusRequiresInput
		w.armInputTimers(ctx)
		w.st.ReminderAt = time.Time{} // this is the reminder: the user's way back in, a link that opens the session
		e := w.email(email.KindReminder)
		e.Link = w.lane()
		w.oweEmail(e)
	case status == StripeStatusCanceled:
		w.st.StripeStatus, w.st.Status = StripeStatusCanceled, StatusCanceled
	case status == StripeStatusVerified:
		// As the verified event would: its `created` is unknown, so it
		// orders as the newest event applied, and the real event, when it
		// comes, is recorded as seen.
		ev := Event{ID: fmt.Sprintf("watchdog:%d", w.st.Seq+1), Type: EventVerified, Created: w.st.LastEventCreated,
			SessionID: w.st.SessionID, Status: StripeStatusVerified}
		return "processing watchdog: " + w.onVerified(ctx, ev)
	default:
		w.st.WatchdogAt, w.st.StripeRetries = now.Add(processingWatchdog), 0
		return "processing watchdog: Stripe says " + status
	}
	w.st.WatchdogAt, w.st.StripeRetries = time.Time{}, 0
	return "processing watchdog: Stripe says " + status
}

func reasonText(ev Event) string {
	if ev.LastErrorReason != "" {
		return ev.LastErrorReason
	}
	return "the document could not be verified."
}
