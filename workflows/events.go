package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
	"identityverification/email"
)

// maxProcessedIDs bounds the dedupe set carried in state (newest kept). Stripe
// retries an event for at most 3 days, so an older id cannot come back.
const maxProcessedIDs = 1000

// handle applies one Stripe event exactly once. Two things happen to it, on
// purpose apart:
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
	if ev.Type == EventRedacted {
		w.onRedacted(ctx, ev)
		return
	}
	if w.st.Status == StatusRedacted {
		w.record(ctx, ev, "ignored: session redacted")
		return
	}
	alternate := false
	if ev.Failure() {
		alternate = w.count(ev)
	}
	current := w.current(ctx, ev)
	if current {
		w.st.LastEventCreated = max(w.st.LastEventCreated, ev.Created)
	}
	switch {
	case w.st.Status.Final():
		w.onClosed(ctx, ev)
	case w.st.Review.Open():
		// A person decides now; Stripe's word is recorded for them.
		if current && ev.Status != "" {
			w.st.StripeStatus = ev.Status
		}
		w.record(ctx, ev, "in review")
	case ev.Failure():
		w.onFailure(ctx, ev, alternate, current)
	case !current:
		w.record(ctx, ev, "ignored: stale")
	case ev.Type == EventCreated:
		w.onCreated(ctx, ev)
	case ev.Type == EventProcessing:
		w.onProcessing(ctx, ev)
	case ev.Type == EventRequiresInput:
		w.onRequiresInput(ctx, ev)
	case ev.Type == EventVerified:
		w.onVerified(ctx, ev)
	case ev.Type == EventCanceled:
		w.onCanceled(ctx, ev)
	default:
		w.record(ctx, ev, "ignored: unhandled type")
	}
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

// count books a failed attempt against the method it belongs to and keeps
// the newest failure's code; it reports whether that method is the alternate.
func (w *verification) count(ev Event) (alternate bool) {
	switch {
	case w.st.AlternateSince == 0:
	case ev.SessionType != "":
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
func (w *verification) current(ctx workflow.Context, ev Event) bool {
	switch {
	case ev.Created < w.st.LastEventCreated:
		return false
	case ev.Created > w.st.LastEventCreated || ev.Status == "" || ev.Status == w.st.StripeStatus:
		return true
	}
	var status string
	if err := workflow.ExecuteActivity(stripeCtx(ctx, "read session status (ambiguous order)", askStripeBudget),
		a.FetchSessionStatus, w.st.SessionID).Get(ctx, &status); err != nil {
		w.log.Warn("Could not read session status; applying the event", "EventID", ev.ID, "Error", err)
		return true
	}
	return status == ev.Status
}

// record persists an event that changes no status, so the ledger keeps it.
func (w *verification) record(ctx workflow.Context, ev Event, why string) {
	w.log.Info("Event recorded without a status change", "EventID", ev.ID, "Type", ev.Type, "Why", why)
	w.persist(ctx, ev.ID, &ev, why)
}

// onClosed: a closed session only records events, except that a code no
// retry can fix, arriving after it was verified, follows the late-fraud
// policy.
func (w *verification) onClosed(ctx workflow.Context, ev Event) {
	code := ev.ErrorCode()
	if !ev.Failure() || w.policy.Retryable(code) || w.st.Status != StatusVerified || w.policy.LateFraud != LateFraudReview {
		w.record(ctx, ev, "session already "+string(w.st.Status))
		return
	}
	w.persist(ctx, ev.ID, &ev, "late non-retryable code "+code)
	w.openReview(ctx, reviewCase{reason: "non_retryable:" + code})
}

func (w *verification) onCreated(ctx workflow.Context, ev Event) {
	w.st.StripeStatus = ev.Status
	if w.st.Status == StatusNew {
		w.st.Status = StatusCreated
		w.armInputTimers(ctx)
	}
	w.persist(ctx, ev.ID, &ev, "")
}

func (w *verification) onProcessing(ctx workflow.Context, ev Event) {
	w.st.StripeStatus, w.st.Status = StripeStatusProcessing, StatusProcessing
	w.disarmInputTimers()
	w.persist(ctx, ev.ID, &ev, "")
}

// onRequiresInput without a last_error: the session waits for the user.
func (w *verification) onRequiresInput(ctx workflow.Context, ev Event) {
	w.st.StripeStatus, w.st.Status = StripeStatusRequiresInput, StatusRequiresInput
	w.armInputTimers(ctx)
	w.persist(ctx, ev.ID, &ev, "")
}

// onFailure follows a counted failed attempt: it escalates when the code is
// one no retry can fix or the method's attempts ran out, whenever the event
// arrived; otherwise, when it is the newest event, it tells the user how to
// retry. A failure older than what the state shows is counted silently: the
// user has moved on since.
func (w *verification) onFailure(ctx workflow.Context, ev Event, alternate, current bool) {
	if current {
		w.st.StripeStatus, w.st.Status = StripeStatusRequiresInput, StatusRequiresInput
	}
	note := ""
	if !current {
		note = "late failure counted"
	}
	w.persist(ctx, ev.ID, &ev, note)
	code := ev.ErrorCode()
	attempts, limit := w.st.Attempts, w.policy.MaxAttempts
	if alternate {
		attempts, limit = w.st.AlternateAttempts, w.policy.AlternateMaxAttempts
	}
	onThisMethod := alternate == (w.st.Escalation == EscalationAlternate)
	switch {
	case !w.policy.Retryable(code):
		w.escalate(ctx, "non_retryable:"+code, code)
		return
	case onThisMethod && attempts >= limit:
		w.escalate(ctx, "attempts_exhausted", code)
		return
	case !current || !onThisMethod:
		return
	}
	w.armInputTimers(ctx)
	method := "document"
	if alternate {
		method = w.policy.AlternateType
	}
	e := w.email(email.KindFailed, fmt.Sprintf("%s-%d", method, attempts))
	e.Attempt, e.MaxAttempts, e.Reason = attempts, limit, reasonText(ev)
	w.oweEmail(e)
	w.publish(ctx)
}

// onVerified compares the verified outputs with the expected values: a match
// ends the session, a mismatch opens a manual review. The comparison is the
// one step that waits for Stripe.
func (w *verification) onVerified(ctx workflow.Context, ev Event) {
	w.st.StripeStatus = StripeStatusVerified
	w.disarmInputTimers()
	var cmp activities.Comparison
	if err := w.callStripe(ctx, "compare verified outputs", a.CompareVerifiedOutputs, w.st.SessionID, &cmp); err != nil {
		// Stripe refused the read: a person must look at it.
		w.log.Warn("Could not compare verified outputs", "Error", err)
		cmp = activities.Comparison{Compared: true, MismatchedFields: []string{"unavailable"}}
	}
	if !cmp.Match {
		w.openReview(ctx, reviewCase{reason: "mismatch", fields: cmp.MismatchedFields, event: &ev})
		return
	}
	w.st.Status = StatusVerified
	w.persist(ctx, ev.ID, &ev, "")
	w.oweEmail(w.email(email.KindVerified, ""))
	w.publish(ctx)
}

func (w *verification) onCanceled(ctx workflow.Context, ev Event) {
	w.st.StripeStatus, w.st.Status = StripeStatusCanceled, StatusCanceled
	w.disarmInputTimers()
	w.persist(ctx, ev.ID, &ev, "")
}

// onRedacted purges the session's personal data, whenever it comes: the
// audit trail and event ids stay, and the session ends.
func (w *verification) onRedacted(ctx workflow.Context, ev Event) {
	w.local(ctx, "purge personal data", a.RedactSession, w.st.SessionID, nil)
	w.st.Redacted, w.st.Status = true, StatusRedacted
	w.disarmInputTimers()
	if w.st.Review.Open() {
		w.st.Review.Decision = "closed"
	}
	w.persist(ctx, ev.ID, &ev, "")
}

// armInputTimers (re)starts the reminder and expiry windows of a session
// waiting for the user.
func (w *verification) armInputTimers(ctx workflow.Context) {
	now := workflow.Now(ctx)
	w.st.ReminderAt = time.Time{}
	if r := w.policy.ReminderAfter; r > 0 && r < w.policy.ExpireAfter {
		w.st.ReminderAt = now.Add(r)
	}
	w.st.ExpiresAt = now.Add(w.policy.ExpireAfter)
}

func (w *verification) disarmInputTimers() {
	w.st.ReminderAt, w.st.ExpiresAt = time.Time{}, time.Time{}
}

// expire ends a session the user left waiting: cancel it at Stripe, tell the user.
func (w *verification) expire(ctx workflow.Context) {
	w.disarmInputTimers()
	w.st.Status = StatusExpired
	w.persist(ctx, "expiry", nil, "")
	w.oweCancel()
	w.oweEmail(w.email(email.KindExpired, ""))
	w.publish(ctx)
}

func reasonText(ev Event) string {
	if ev.LastErrorReason != "" {
		return ev.LastErrorReason
	}
	return "the document could not be verified."
}
