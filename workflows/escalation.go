package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
	"identityverification/email"
)

// escalate moves the session up the ladder the policy names for the error
// code: alternate method, manual review, or rejection when the ladder has no
// rung left. It returns the step's note.
func (w *verification) escalate(ctx workflow.Context, reason, code string) string {
	ladder := w.policy.EscalationFor(code)
	onAlternate := w.st.Escalation == EscalationAlternate
	switch {
	case !onAlternate && ladder != PolicyReview:
		if w.switchToAlternate(ctx) {
			return reason
		}
		if ladder == PolicyAlternate {
			w.reject()
			return reason + "; alternate method unavailable"
		}
	case onAlternate && ladder == PolicyAlternate:
		w.reject()
		return reason
	}
	w.openReview(ctx, reviewCase{reason: reason, cancel: true})
	return reason
}

// switchBudget bounds the wait for Stripe to switch a session's type: past
// it, the session goes to a person instead of holding up the session.
const switchBudget = 10 * time.Minute

// switchToAlternate switches the Stripe session to the alternate verification
// type, with its own attempt budget; false when Stripe refused or did not
// answer in time. The offer email needs Stripe's answer, so this waits.
func (w *verification) switchToAlternate(ctx workflow.Context) bool {
	in := activities.SwitchInput{SessionID: w.st.SessionID, Type: w.policy.AlternateType}
	if err := w.callStripe(ctx, "switch session to "+in.Type, switchBudget, a.SwitchSessionType, in, nil); err != nil {
		w.log.Warn("Could not switch to the alternate method", "Error", err)
		return false
	}
	w.st.Escalation, w.st.SessionType, w.st.AlternateAttempts = EscalationAlternate, in.Type, 0
	w.st.AlternateSince = workflow.Now(ctx).Unix()
	w.st.Status, w.st.StripeStatus = StatusRequiresInput, StripeStatusRequiresInput
	w.armInputTimers(ctx)
	e := w.email(email.KindAlternateOffered)
	e.MaxAttempts = w.policy.AlternateMaxAttempts
	w.oweEmail(e)
	return true
}

// reject ends the session without a verified identity.
func (w *verification) reject() {
	w.disarmInputTimers()
	w.st.Status = StatusRejected
	w.oweCancel()
	w.oweEmail(w.email(email.KindReviewRejected))
}

// reviewCase says why a review opens.
type reviewCase struct {
	reason string
	fields []string // mismatched field names
	// cancel: the user could still submit to the Stripe session, so it is
	// canceled (an effect: nothing waits for Stripe).
	cancel bool
}

// openReview opens a manual review case and tells the user and ops.
func (w *verification) openReview(ctx workflow.Context, c reviewCase) {
	w.disarmInputTimers()
	now := workflow.Now(ctx)
	w.st.Escalation, w.st.Status = EscalationReview, StatusInReview
	w.st.Review = &Review{Reason: c.reason, MismatchedFields: c.fields, OpenedAt: now, DeadlineAt: now.Add(w.policy.ReviewDeadline)}
	w.local(ctx, "open review case", a.OpenReview,
		activities.ReviewInput{SessionID: w.st.SessionID, Reason: c.reason, MismatchedFields: c.fields, OpenedAt: now}, nil)
	if c.cancel {
		w.oweCancel()
	}
	w.oweEmail(w.email(email.KindUnderReview))
	ops := w.email(email.KindOpsReviewOpened)
	ops.Reason, ops.Fields, ops.Deadline = c.reason, c.fields, w.st.Review.DeadlineAt
	w.oweEmail(ops)
}

// reviewOverdue re-notifies ops and re-arms the deadline.
func (w *verification) reviewOverdue(ctx workflow.Context) {
	r := w.st.Review
	r.Overdue++
	r.DeadlineAt = workflow.Now(ctx).Add(w.policy.ReviewDeadline)
	e := w.email(email.KindOpsReviewOverdue)
	e.Attempt, e.Reason, e.Deadline = r.Overdue, r.Reason, r.DeadlineAt
	w.oweEmail(e)
}

// Reasons the review update refuses a decision with.
var (
	ErrNoReviewOpen    = errors.New("no review is open for this session")
	ErrUnknownDecision = errors.New("decision must be approve or reject")
	ErrNoReviewer      = errors.New("reviewer is required")
	ErrBadReviewer     = fmt.Errorf("reviewer must be at most %d characters, without control characters", MaxReviewerLen)
	// ErrDecisionUnderWay: another decision was accepted and is being
	// applied (say, while the database is slow); its outcome will show in
	// the state.
	ErrDecisionUnderWay = errors.New("a decision for this review is being applied")
	// ErrSameApprover: four eyes; the subject approved this review already
	// and a different person must give the next approval.
	ErrSameApprover = errors.New("you approved this review already: it needs another person's approval")
	// ErrBadSubject: a subject that is too long or not printable.
	ErrBadSubject = fmt.Errorf("subject must be at most %d characters, without control characters", MaxSubjectLen)
)

// refuse makes a refusal a typed application error: callers match its type
// (ErrTypeReviewRefused) and show its message.
func refuse(reason error) error {
	return temporal.NewApplicationError(reason.Error(), ErrTypeReviewRefused)
}

// ValidReviewer reports whether s is an acceptable reviewer id: an ops
// identifier, not free text (it is kept in history and the database).
func ValidReviewer(s string) bool {
	return s != "" && len(s) <= MaxReviewerLen && !strings.ContainsFunc(s, Unprintable)
}

// Unprintable reports whether r has no place in a stored text field: a
// control character (a NUL byte, a line break, an escape), a line or
// paragraph separator (U+2028, U+2029: line breaks to a log or a browser),
// a bidirectional override (text that reads other than it is), or the
// replacement character (bytes that were not UTF-8).
func Unprintable(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) || unicode.Is(unicode.Bidi_Control, r) ||
		r == unicode.ReplacementChar
}

// validateDecision refuses a decision before it enters history. Before the
// state is restored it checks the decision's shape only; the handler checks
// the review after.
func (w *verification) validateDecision(d ReviewDecision) error {
	switch {
	case d.Decision != DecisionApprove && d.Decision != DecisionReject:
		return refuse(ErrUnknownDecision)
	case d.Reviewer == "":
		return refuse(ErrNoReviewer)
	case !ValidReviewer(d.Reviewer):
		return refuse(ErrBadReviewer)
	case w.pending != nil:
		return refuse(ErrDecisionUnderWay)
	case w.restored && !w.st.Review.Open():
		return refuse(ErrNoReviewOpen)
	}
	return nil
}

// decide hands an accepted decision to the main loop and returns the state
// once it is applied (state, search attributes, database), not once its
// email is sent.
func (w *verification) decide(ctx workflow.Context, d ReviewDecision) (State, error) {
	if err := workflow.Await(ctx, func() bool { return w.restored }); err != nil {
		return State{}, err
	}
	switch {
	case w.pending != nil: // decided in the same instant
		return State{}, refuse(ErrDecisionUnderWay)
	case !w.st.Review.Open(): // closed meanwhile
		return State{}, refuse(ErrNoReviewOpen)
	}
	w.pending = &d
	if err := workflow.Await(ctx, func() bool { return w.pending == nil }); err != nil {
		return State{}, err
	}
	return w.decidedState, w.decided
}

// applyDecision is a step: it records the reviewer's decision and tells the
// user. It refuses when the review closed before its turn (a redaction).
func (w *verification) applyDecision(ctx workflow.Context, d ReviewDecision) error {
	if !w.st.Review.Open() {
		return refuse(ErrNoReviewOpen)
	}
	status, kind, caseStatus := StatusVerified, email.KindReviewApproved, "approved"
	if d.Decision == DecisionReject {
		status, kind, caseStatus = StatusRejected, email.KindReviewRejected, "rejected"
	}
	now := workflow.Now(ctx)
	in := activities.ReviewInput{SessionID: w.st.SessionID, Status: caseStatus, Reviewer: d.Reviewer, DecidedAt: now}
	if err := w.local(ctx, "record review decision", a.DecideReview, in, nil); isType(err, activities.ErrTypeReviewClosed) {
		w.log.Warn("Review case was not open in the database", "SessionID", w.st.SessionID)
	}
	w.st.Review.Decision, w.st.Review.Reviewer, w.st.Review.DecidedAt = d.Decision, d.Reviewer, now
	w.st.Status = status
	w.oweEmail(w.email(kind))
	w.persist(ctx, "review:"+d.Decision, nil, "reviewer "+d.Reviewer)
	w.decidedState = w.st // the update answers this, not a later step's state
	return nil
}
