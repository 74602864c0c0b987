package workflows

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
	"identityverification/email"
)

// escalate moves the session up the ladder the policy names for the last
// error code: alternate method, manual review, or rejection when the ladder
// has no rung left.
func (w *verification) escalate(ctx workflow.Context, reason string) error {
	ladder := w.policy.EscalationFor(w.st.LastErrorCode)
	onAlternate := w.st.Escalation == EscalationAlternate
	switch {
	case !onAlternate && ladder != PolicyReview:
		if ok, err := w.switchToAlternate(ctx, reason); ok || err != nil {
			return err
		}
		if ladder == PolicyAlternate {
			return w.reject(ctx, "alternate method unavailable")
		}
	case onAlternate && ladder == PolicyAlternate:
		return w.reject(ctx, reason)
	}
	return w.openReview(ctx, reason, nil, true, nil)
}

// switchToAlternate switches the Stripe session to the alternate verification
// type, with its own attempt budget; ok is false when Stripe refused.
func (w *verification) switchToAlternate(ctx workflow.Context, reason string) (ok bool, err error) {
	in := activities.SwitchInput{SessionID: w.st.SessionID, Type: w.policy.AlternateType}
	if err := workflow.ExecuteActivity(stripeCtx(ctx, "switch session to "+in.Type),
		a.SwitchSessionType, in).Get(ctx, nil); err != nil {
		w.log.Warn("Could not switch to the alternate method", "Error", err)
		return false, nil
	}
	w.st.Escalation, w.st.SessionType, w.st.AlternateAttempts = EscalationAlternate, in.Type, 0
	w.armInputTimers(ctx)
	if err := w.persist(ctx, "alternate", nil, reason); err != nil {
		return true, err
	}
	w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindAlternateOffered})
	return true, w.publish(ctx)
}

// reject ends the session without a verified identity.
func (w *verification) reject(ctx workflow.Context, reason string) error {
	w.disarmInputTimers()
	w.cancelAtStripe(ctx)
	w.st.Status = StatusRejected
	if err := w.persist(ctx, "rejected", nil, reason); err != nil {
		return err
	}
	w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindReviewRejected})
	return w.publish(ctx)
}

// openReview opens a manual review case and tells the user and ops. When the
// user could still submit to the Stripe session, it is canceled first. ev is
// the event that caused it, when it has not been recorded yet.
func (w *verification) openReview(ctx workflow.Context, reason string, fields []string, cancel bool, ev *Event) error {
	w.disarmInputTimers()
	if cancel {
		w.cancelAtStripe(ctx)
	}
	now := workflow.Now(ctx)
	w.st.Escalation, w.st.Status = EscalationReview, StatusInReview
	w.st.Review = &Review{Reason: reason, MismatchedFields: fields, OpenedAt: now, DeadlineAt: now.Add(w.policy.ReviewDeadline)}
	c := activities.ReviewInput{SessionID: w.st.SessionID, Reason: reason, MismatchedFields: fields, OpenedAt: now}
	if err := workflow.ExecuteActivity(dbCtx(ctx, "open review case"), a.OpenReview, c).Get(ctx, nil); err != nil {
		return err
	}
	key := "review:open"
	if ev != nil {
		key = ev.ID
	}
	if err := w.persist(ctx, key, ev, reason); err != nil {
		return err
	}
	w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindUnderReview})
	w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindOpsReviewOpened, Reason: reason,
		Fields: fields, Deadline: w.st.Review.DeadlineAt})
	return w.publish(ctx)
}

// reviewOverdue re-notifies ops and re-arms the deadline.
func (w *verification) reviewOverdue(ctx workflow.Context) error {
	r := w.st.Review
	r.Overdue++
	r.DeadlineAt = workflow.Now(ctx).Add(w.policy.ReviewDeadline)
	w.sendEmail(ctx, activities.EmailRequest{Kind: email.KindOpsReviewOverdue, Attempt: r.Overdue,
		Reason: r.Reason, Deadline: r.DeadlineAt})
	return w.publish(ctx)
}

// Errors the review update's validator answers with.
var (
	ErrNoReviewOpen    = errors.New("no review is open for this session")
	ErrUnknownDecision = errors.New("decision must be approve or reject")
	ErrNoReviewer      = errors.New("reviewer is required")
)

// validateDecision refuses a decision before it enters history.
func (w *verification) validateDecision(d ReviewDecision) error {
	switch {
	case !w.st.Review.Open() || w.pending != nil:
		return ErrNoReviewOpen
	case d.Decision != DecisionApprove && d.Decision != DecisionReject:
		return ErrUnknownDecision
	case d.Reviewer == "":
		return ErrNoReviewer
	}
	return nil
}

// decide hands an accepted decision to the main loop and returns the state
// once it is applied, so every effect runs in one place, in order.
func (w *verification) decide(ctx workflow.Context, d ReviewDecision) (State, error) {
	if w.pending != nil { // another decision was accepted in the same instant
		return State{}, ErrNoReviewOpen
	}
	w.pending = &d
	if err := workflow.Await(ctx, func() bool { return w.pending == nil }); err != nil {
		return State{}, err
	}
	return w.st, nil
}

// applyDecision records the reviewer's decision and tells the user.
func (w *verification) applyDecision(ctx workflow.Context, d ReviewDecision) error {
	if !w.st.Review.Open() {
		return nil // closed meanwhile (e.g. redacted): nothing to decide
	}
	status, kind, caseStatus := StatusVerified, email.KindReviewApproved, "approved"
	if d.Decision == DecisionReject {
		status, kind, caseStatus = StatusRejected, email.KindReviewRejected, "rejected"
	}
	now := workflow.Now(ctx)
	c := activities.ReviewInput{SessionID: w.st.SessionID, Status: caseStatus, Reviewer: d.Reviewer, DecidedAt: now}
	if err := workflow.ExecuteActivity(dbCtx(ctx, "record review decision"), a.DecideReview, c).Get(ctx, nil); err != nil {
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != activities.ErrTypeReviewClosed {
			return fmt.Errorf("record review decision: %w", err)
		}
		w.log.Warn("Review case was not open in the database", "SessionID", w.st.SessionID)
	}
	w.st.Review.Decision, w.st.Review.Reviewer, w.st.Review.DecidedAt = d.Decision, d.Reviewer, now
	w.st.Status = status
	if err := w.persist(ctx, "review:"+d.Decision, nil, "reviewer "+d.Reviewer); err != nil {
		return err
	}
	w.sendEmail(ctx, activities.EmailRequest{Kind: kind})
	return w.publish(ctx)
}
