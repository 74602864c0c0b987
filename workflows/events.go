package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
	"identityverification/email"
)

// maxProcessedIDs bounds the dedupe set carried in state (newest kept). Stripe
// retries an event for at most 3 days, so an older id cannot come back.
const maxProcessedIDs = 1000

// handle applies one Stripe event exactly once, never moving state backwards.
func (w *verification) handle(ctx workflow.Context, ev Event) error {
	if ev.ID == "" || w.seen[ev.ID] {
		w.log.Info("Duplicate event ignored", "EventID", ev.ID)
		return nil
	}
	if ev.SessionID != w.st.SessionID {
		w.log.Warn("Event for another session ignored", "EventID", ev.ID)
		return nil
	}
	w.markSeen(ev.ID)
	w.handled++
	if ev.Type == EventRedacted {
		return w.onRedacted(ctx, ev)
	}
	if w.st.Status.Final() {
		return w.ignore(ctx, ev, "session already "+string(w.st.Status))
	}
	if stale, err := w.stale(ctx, ev); err != nil || stale {
		if err != nil {
			return err
		}
		return w.ignore(ctx, ev, "stale")
	}
	w.st.LastEventCreated = max(w.st.LastEventCreated, ev.Created)
	switch ev.Type {
	case EventCreated:
		return w.onCreated(ctx, ev)
	case EventProcessing:
		return w.onProcessing(ctx, ev)
	case EventRequiresInput:
		return w.onRequiresInput(ctx, ev)
	case EventVerified:
		return w.onVerified(ctx, ev)
	case EventCanceled:
		return w.onCanceled(ctx, ev)
	}
	return w.ignore(ctx, ev, "unhandled type")
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

// stale reports whether an event is older than what the state already shows.
// When two events carry the same second, Stripe's API decides which status is
// current.
func (w *verification) stale(ctx workflow.Context, ev Event) (bool, error) {
	switch {
	case ev.Created < w.st.LastEventCreated:
		return true, nil
	case ev.Created > w.st.LastEventCreated || ev.Status == "" || ev.Status == w.st.StripeStatus:
		return false, nil
	}
	var current string
	err := workflow.ExecuteActivity(stripeCtx(ctx, "read session status (ambiguous order)"),
		a.FetchSessionStatus, w.st.SessionID).Get(ctx, &current)
	if err != nil {
		w.log.Warn("Could not read session status; applying the event", "EventID", ev.ID, "Error", err)
		return false, nil
	}
	return current != ev.Status, nil
}

// ignore records an event that takes no effect, so the ledger keeps it.
func (w *verification) ignore(ctx workflow.Context, ev Event, why string) error {
	w.log.Info("Event has no effect", "EventID", ev.ID, "Type", ev.Type, "Why", why)
	return w.persist(ctx, ev.ID, &ev, "ignored: "+why)
}

func (w *verification) onCreated(ctx workflow.Context, ev Event) error {
	w.st.StripeStatus = ev.Status
	if w.st.Status == StatusNew {
		w.st.Status = StatusCreated
		w.armInputTimers(ctx)
	}
	return w.persist(ctx, ev.ID, &ev, "")
}

func (w *verification) onProcessing(ctx workflow.Context, ev Event) error {
	w.st.StripeStatus, w.st.Status = StripeStatusProcessing, StatusProcessing
	w.disarmInputTimers()
	return w.persist(ctx, ev.ID, &ev, "")
}

// onRequiresInput counts a failed attempt when the event carries a
// last_error, and tells the user, or escalates when the attempts run out or
// the error is one no retry can fix.
func (w *verification) onRequiresInput(ctx workflow.Context, ev Event) error {
	w.st.StripeStatus = StripeStatusRequiresInput
	if w.st.Review.Open() {
		return w.persist(ctx, ev.ID, &ev, "in review")
	}
	w.st.Status = StatusRequiresInput
	if !ev.HasLastError {
		w.armInputTimers(ctx)
		return w.persist(ctx, ev.ID, &ev, "")
	}
	code := ev.LastErrorCode
	if code == "" {
		code = "unspecified" // a null code is a generic failure
	}
	w.st.LastErrorCode, w.st.LastErrorReason = code, ev.LastErrorReason
	attempts, limit := &w.st.Attempts, w.policy.MaxAttempts
	if w.st.Escalation == EscalationAlternate {
		attempts, limit = &w.st.AlternateAttempts, w.policy.AlternateMaxAttempts
	}
	*attempts++
	if err := w.persist(ctx, ev.ID, &ev, ""); err != nil {
		return err
	}
	switch {
	case !w.policy.Retryable(code):
		return w.escalate(ctx, "non_retryable:"+code)
	case *attempts >= limit:
		return w.escalate(ctx, "attempts_exhausted")
	}
	w.armInputTimers(ctx)
	w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindFailed, Attempt: w.st.Attempts + w.st.AlternateAttempts,
		MaxAttempts: limit, Reason: reasonText(ev)})
	return w.publish(ctx)
}

// onVerified compares the verified outputs with the expected values: a match
// ends the session, a mismatch opens a manual review.
func (w *verification) onVerified(ctx workflow.Context, ev Event) error {
	w.st.StripeStatus = StripeStatusVerified
	w.disarmInputTimers()
	if w.st.Review.Open() {
		// A person is already deciding; Stripe's verdict is recorded for them.
		return w.persist(ctx, ev.ID, &ev, "verified while in review")
	}
	var cmp activities.Comparison
	if err := workflow.ExecuteActivity(stripeCtx(ctx, "compare verified outputs"),
		a.CompareVerifiedOutputs, w.st.SessionID).Get(ctx, &cmp); err != nil {
		// Stripe refused the read: a person must look at it.
		w.log.Warn("Could not compare verified outputs", "Error", err)
		cmp = activities.Comparison{Compared: true, MismatchedFields: []string{"unavailable"}}
	}
	if cmp.Match {
		w.st.Status = StatusVerified
		if err := w.persist(ctx, ev.ID, &ev, ""); err != nil {
			return err
		}
		w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindVerified})
		return w.publish(ctx)
	}
	return w.openReview(ctx, "mismatch", cmp.MismatchedFields, false, &ev)
}

func (w *verification) onCanceled(ctx workflow.Context, ev Event) error {
	w.st.StripeStatus = StripeStatusCanceled
	if w.st.Review.Open() {
		// This service canceled the Stripe session when it opened the review.
		return w.persist(ctx, ev.ID, &ev, "canceled for review")
	}
	w.st.Status = StatusCanceled
	w.disarmInputTimers()
	return w.persist(ctx, ev.ID, &ev, "")
}

// onRedacted purges the session's personal data, whenever it comes: the
// audit trail and event ids stay, and the session ends.
func (w *verification) onRedacted(ctx workflow.Context, ev Event) error {
	if err := workflow.ExecuteActivity(dbCtx(ctx, "purge personal data"), a.RedactSession, w.st.SessionID).Get(ctx, nil); err != nil {
		return err
	}
	w.st.Redacted, w.st.Status = true, StatusRedacted
	w.disarmInputTimers()
	if w.st.Review.Open() {
		w.st.Review.Decision = "closed"
	}
	return w.persist(ctx, ev.ID, &ev, "")
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
func (w *verification) expire(ctx workflow.Context) error {
	w.disarmInputTimers()
	w.cancelAtStripe(ctx)
	w.st.Status = StatusExpired
	if err := w.persist(ctx, "expiry", nil, ""); err != nil {
		return err
	}
	w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindExpired})
	return w.publish(ctx)
}

func reasonText(ev Event) string {
	if ev.LastErrorReason != "" {
		return ev.LastErrorReason
	}
	return "the document could not be verified."
}
