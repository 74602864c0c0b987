package workflows

import (
	"errors"
	"fmt"
	"slices"
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
// rung left. codeCreated is the failure's `created` when its code is one no
// retry can fix. It returns the step's note.
//
// Only Stripe's answers about the user reject: when the alternate method
// cannot be offered (Stripe down, the key refused, the session already of
// that type), the session goes to a person instead (workflow v3; before,
// the `alternate` ladder rejected it).
func (w *verification) escalate(ctx workflow.Context, reason, code string, codeCreated int64) string {
	ladder := w.policy.EscalationFor(code)
	onAlternate := w.st.Escalation == EscalationAlternate
	note := reason
	switch {
	case !onAlternate && ladder != PolicyReview:
		if w.switchToAlternate(ctx) {
			return reason
		}
		note += "; alternate method unavailable"
		if ladder == PolicyAlternate && !w.v3 {
			w.reject()
			return note
		}
	case onAlternate && ladder == PolicyAlternate:
		w.reject()
		return reason
	}
	w.openReview(ctx, reviewCase{reason: reason, cancel: true, codeCreated: codeCreated})
	return note
}

// switchBudget bounds the wait for Stripe to switch a session's type: past
// it, the session goes to a person instead of holding up the session.
const switchBudget = 10 * time.Minute

// switchToAlternate switches the Stripe session to the alternate verification
// type, with its own attempt budget; false when Stripe refused or did not
// answer in time, or (workflow v3) when the session has that type already:
// switching to it would only reset the user's attempts. The offer email
// needs Stripe's answer, so this waits.
func (w *verification) switchToAlternate(ctx workflow.Context) bool {
	in := activities.SwitchInput{SessionID: w.st.SessionID, Type: w.policy.AlternateType}
	if w.v3 && w.st.FirstType == in.Type {
		w.log.Warn("The session has the alternate type already: no switch", "Type", in.Type)
		return false
	}
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
	if w.v3 {
		e.Link = &RetryLane{Alternate: true}
	}
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
	// codeCreated: Stripe's `created` of the failure whose code opened it.
	codeCreated int64
}

// highRisk reports whether a review needs several approvals (workflow v3):
// one opened for a fraud code, or for a mismatch of the verified name or
// date of birth with what the business expected (or a comparison that
// could not be made).
func highRisk(c reviewCase) bool {
	code, fromCode := strings.CutPrefix(c.reason, reasonNonRetryable)
	return c.reason == reasonMismatch || (fromCode && slices.Contains(FraudCodes, code))
}

// reasonMismatch is the reason of a review the comparison opened.
const reasonMismatch = "mismatch"

// openReview opens a manual review case and tells the user and ops.
func (w *verification) openReview(ctx workflow.Context, c reviewCase) {
	w.disarmInputTimers()
	now := workflow.Now(ctx)
	w.st.Escalation, w.st.Status = EscalationReview, StatusInReview
	w.st.Review = &Review{Reason: c.reason, MismatchedFields: c.fields, OpenedAt: now, DeadlineAt: now.Add(w.policy.ReviewDeadline),
		CodeCreated: c.codeCreated}
	if w.v3 {
		w.st.Review.ApprovalsNeeded = 1
		if highRisk(c) {
			w.st.Review.ApprovalsNeeded = w.policy.ReviewApprovalsHighRisk
		}
	}
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
	// ErrPeopleOnly: four eyes are two people's; a machine's credential (an
	// API key, ADMIN_TOKEN) approves no high-risk review.
	ErrPeopleOnly = errors.New("a high-risk review is approved by people signed in at the review desk, not by an API key or ADMIN_TOKEN")
	// ErrUnvouched: a decision that neither the admin API nor the review
	// desk vouched for (sent to Temporal directly, or its voucher does not
	// match): it names nobody authenticated.
	ErrUnvouched = errors.New("decide through the review desk or the admin API: this decision names nobody they authenticated")
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

// ValidSubject reports whether s is an acceptable subject (see
// ReviewDecision.Subject).
func ValidSubject(s string) bool {
	return len(s) <= MaxSubjectLen && !strings.ContainsFunc(s, Unprintable)
}

// subject is the principal a decision counts for: its subject, or its
// reviewer when a caller from before sent none.
func (d ReviewDecision) subject() string {
	if d.Subject != "" {
		return d.Subject
	}
	return d.Reviewer
}

// approvedBy reports whether subject has approved the open review already.
func (r *Review) approvedBy(subject string) bool {
	return slices.ContainsFunc(r.Approvals, func(a Approval) bool { return a.Subject == subject })
}

// needs is how many approvals approve the review.
func (r *Review) needs() int { return max(r.ApprovalsNeeded, 1) }

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
	case !ValidSubject(d.Subject):
		return refuse(ErrBadSubject)
	case w.pending != nil:
		return refuse(ErrDecisionUnderWay)
	case w.restored && !w.st.Review.Open():
		return refuse(ErrNoReviewOpen)
	case w.restored && d.Decision == DecisionApprove && w.st.Review.approvedBy(d.subject()):
		return refuse(ErrSameApprover)
	case w.restored && d.Decision == DecisionApprove && w.st.Review.needs() > 1 && !IsPerson(d.Subject):
		return refuse(ErrPeopleOnly)
	case w.restored && w.st.Review.vouched() && (d.Voucher == "" || d.Subject == ""):
		return refuse(ErrUnvouched)
	}
	return nil
}

// SubjectPersonPrefix starts the subject of a person signed in with the
// company's OpenID Provider.
const SubjectPersonPrefix = "oidc:"

// IsPerson reports whether subject is a person's (not a machine's key).
func IsPerson(subject string) bool { return strings.HasPrefix(subject, SubjectPersonPrefix) }

// vouched reports whether the review takes only vouched decisions: one
// opened on workflow v3.
func (r *Review) vouched() bool { return r != nil && r.ApprovalsNeeded > 0 }

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
	case d.Decision == DecisionApprove && w.st.Review.approvedBy(d.subject()):
		return State{}, refuse(ErrSameApprover)
	}
	w.pending = &d
	if err := workflow.Await(ctx, func() bool { return w.pending == nil }); err != nil {
		return State{}, err
	}
	return w.decidedState, w.decided
}

// applyDecision is a step: it records the reviewer's decision and tells the
// user. It refuses when the review closed before its turn (a redaction). An
// approval of a review that needs more (four eyes) is recorded and the
// review stays open for the next person; a reject needs one.
func (w *verification) applyDecision(ctx workflow.Context, d ReviewDecision) error {
	r := w.st.Review
	switch {
	case !r.Open():
		return refuse(ErrNoReviewOpen)
	case d.Decision == DecisionApprove && r.approvedBy(d.subject()):
		return refuse(ErrSameApprover)
	case d.Decision == DecisionApprove && r.needs() > 1 && !IsPerson(d.Subject):
		return refuse(ErrPeopleOnly)
	case r.vouched() && !w.checkVoucher(ctx, d):
		return refuse(ErrUnvouched)
	}
	now := workflow.Now(ctx)
	if d.Decision == DecisionApprove && r.needs() > 1 {
		r.Approvals = append(r.Approvals, Approval{Subject: d.subject(), Reviewer: d.Reviewer, At: now})
		if n := len(r.Approvals); n < r.needs() {
			w.persist(ctx, "review:approval", nil, fmt.Sprintf("approval %d of %d by %s", n, r.needs(), d.Reviewer))
			w.decidedState = w.st
			return nil
		}
	}
	status, kind, caseStatus := StatusVerified, email.KindReviewApproved, "approved"
	if d.Decision == DecisionReject {
		status, kind, caseStatus = StatusRejected, email.KindReviewRejected, "rejected"
	}
	in := activities.ReviewInput{SessionID: w.st.SessionID, Status: caseStatus, Reviewer: d.Reviewer, DecidedAt: now}
	if err := w.local(ctx, "record review decision", a.DecideReview, in, nil); isType(err, activities.ErrTypeReviewClosed) {
		w.log.Warn("Review case was not open in the database", "SessionID", w.st.SessionID)
	}
	r.Decision, r.Reviewer, r.DecidedAt = d.Decision, d.Reviewer, now
	if d.Subject != "" {
		r.Subject = d.Subject
	}
	w.st.Status = status
	w.oweEmail(w.email(kind))
	w.persist(ctx, "review:"+d.Decision, nil, "reviewer "+d.Reviewer)
	w.decidedState = w.st // the update answers this, not a later step's state
	return nil
}

// checkVoucher asks the database whether the admin API or the desk vouched
// for the decision's principal.
func (w *verification) checkVoucher(ctx workflow.Context, d ReviewDecision) bool {
	if d.Voucher == "" || d.Subject == "" {
		return false
	}
	var ok bool
	in := activities.DecisionCheck{SessionID: w.st.SessionID, Voucher: d.Voucher, Subject: d.Subject,
		Decision: d.Decision, OpenedAt: w.st.Review.OpenedAt}
	return w.local(ctx, "check the decision's voucher", a.CheckDecision, in, &ok) == nil && ok
}

// closeReview ends the open review without a reviewer's decision (a
// redaction, a later verification that supersedes it), in the state and
// in the database.
func (w *verification) closeReview(ctx workflow.Context, decision string) {
	now := workflow.Now(ctx)
	w.st.Review.Decision, w.st.Review.DecidedAt = decision, now
	in := activities.ReviewInput{SessionID: w.st.SessionID, Status: activities.ReviewClosed, DecidedAt: now}
	if err := w.local(ctx, "close review case", a.DecideReview, in, nil); isType(err, activities.ErrTypeReviewClosed) {
		w.log.Warn("Review case was not open in the database", "SessionID", w.st.SessionID)
	}
}
