package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
	"identityverification/email"
)

// Every remote dependency is called in two rounds. The first is short: a
// blip passes unseen. When it fails, the session shows the outage as an Issue
// (state, search attribute) and the second round retries without a limit, or
// as long as the step is worth it; the issue clears when the call succeeds.
// Failures retrying cannot fix (activities.NonRetryable) end either round.

// quickRetry is the first round: about 7 s of retries.
var quickRetry = temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
	MaximumInterval: 4 * time.Second, MaximumAttempts: 4, NonRetryableErrorTypes: activities.NonRetryable}

// patientRetry is the second round: without a limit, never more than 30 s
// between tries, so an email goes out soon after SMTP is back.
var patientRetry = temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
	MaximumInterval: 30 * time.Second, NonRetryableErrorTypes: activities.NonRetryable}

// local runs a short, idempotent database activity as a local activity: no
// activity task, no round trip through the server. When the first round
// fails, the outage is shown and the call goes on as a regular activity,
// whose retries the server keeps without growing the history. A database
// outage delays the session (a transition is never dropped); a refusal is
// recorded as an issue and the session moves on. The error is nil,
// non-retryable, or a cancellation.
func (w *verification) local(ctx workflow.Context, summary string, fn, arg, result any) error {
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		Summary: summary, StartToCloseTimeout: 10 * time.Second, RetryPolicy: &quickRetry})
	err := workflow.ExecuteLocalActivity(lctx, fn, arg).Get(ctx, result)
	for retryable(err) {
		w.raise(ctx, IssueDatabaseUnavailable, errText(err))
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			Summary: summary, StartToCloseTimeout: 30 * time.Second, RetryPolicy: &patientRetry})
		err = workflow.ExecuteActivity(actx, fn, arg).Get(ctx, result)
		w.pause(ctx, err)
	}
	w.clear(ctx, IssueDatabaseUnavailable)
	if err != nil && !isType(err, activities.ErrTypeReviewClosed) && !temporal.IsCanceledError(err) {
		w.log.Error("Database refused a write", "Step", summary, "Error", err)
		w.raise(ctx, IssueDatabaseRejected, summary+": "+errText(err))
	}
	return err
}

// pause waits before another patient round, in case one ever ends with a
// retryable error (a server that caps attempts, the SDK's test environment).
func (w *verification) pause(ctx workflow.Context, err error) {
	if retryable(err) {
		_ = workflow.Sleep(ctx, patientRetry.MaximumInterval)
	}
}

// askStripeBudget bounds a Stripe call whose answer is only a hint (which of
// two same-second events is current, whether the user moved on): past it,
// the step goes on as if Stripe had not been asked.
const askStripeBudget = time.Minute

// callStripe runs a Stripe activity for at most budget (0: without a limit):
// 429s, 5xx and a refused key (401/403) retry, any other 4xx refusal is
// final, and an outage past the first round is shown to ops. The error is a refusal, or the budget spent (the
// issue then stays until a Stripe call succeeds).
func (w *verification) callStripe(ctx workflow.Context, summary string, budget time.Duration, fn, arg, result any) error {
	run := func(p temporal.RetryPolicy, budget time.Duration) error {
		sctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			Summary: summary, StartToCloseTimeout: 30 * time.Second, ScheduleToCloseTimeout: budget, RetryPolicy: &p})
		return workflow.ExecuteActivity(sctx, fn, arg).Get(ctx, result)
	}
	w.stripeCalls++
	defer func() { w.stripeCalls-- }()
	err := run(quickRetry, 0)
	if retryable(err) {
		issue := IssueStripeUnavailable
		if w.v3 && isType(err, activities.ErrTypeStripeUnauthorized) {
			issue = IssueStripeUnauthorized // a key to mend: retried meanwhile
		}
		w.raise(ctx, issue, errText(err))
		patient := patientRetry
		patient.MaximumInterval = time.Minute // Stripe asks for backoff on 429s
		err = run(patient, budget)
		for budget == 0 && w.v3 && retryable(err) && ctx.Err() == nil { // without a limit: never given up
			w.pause(ctx, err)
			err = run(patient, budget)
		}
	}
	// Stripe answered: the outage is over, unless another call (the cancel
	// lane's, the comparison's) still retries through it (workflow v3).
	if !retryable(err) && (!w.v3 || w.stripeCalls == 1) {
		w.clear(ctx, IssueStripeUnavailable)
		w.clear(ctx, IssueStripeUnauthorized)
	}
	return err
}

// persist records the state as a transition: the audit row, the event
// ledger and the state snapshot a fresh run restores from. key makes it
// idempotent: the Stripe event id, or a name for a workflow-made change.
func (w *verification) persist(ctx workflow.Context, key string, ev *Event, note string) {
	w.st.Seq++
	w.st.NextTimer, w.st.NextTimerAt = w.nextTimer()
	snap := w.st
	snap.ProcessedEventIDs = nil // the ledger keeps them
	// json.Marshal of plain data is deterministic (it sorts map keys); the
	// checker cannot see that through its reflection.
	state, err := json.Marshal(snap) //workflowcheck:ignore
	if err != nil {
		panic(err) // State is plain data: this cannot fail
	}
	t := activities.Transition{SessionID: w.st.SessionID, Key: key, From: string(w.from), Note: note, State: state,
		RunID: workflow.GetInfo(ctx).WorkflowExecution.RunID}
	summary := "record " + string(w.st.Status)
	if ev != nil {
		t.EventID, t.EventType = ev.ID, ev.Type
		summary += " (" + strings.TrimPrefix(ev.Type, EventTypePrefix) + ")"
	} else {
		t.Key = fmt.Sprintf("%s:%d", key, w.st.Seq) // a change may happen again later
	}
	err = w.local(ctx, summary, a.RecordTransition, t, nil)
	if isType(err, activities.ErrTypeStoreRejected) && ev != nil && w.v3 {
		// The event still goes in the ledger, so a redelivery after this
		// run ends does not apply it again.
		w.local(ctx, "record event id", a.RecordEventID,
			activities.EventRecord{SessionID: w.st.SessionID, EventID: ev.ID, EventType: ev.Type}, nil)
	}
	w.from = w.st.Status
	w.settled = len(w.st.Owed) // recorded: the effects lanes may do them
	w.publish(ctx)
	w.dropStale()
}

// email is an email to the user or ops, owed by the current step. Its ref
// (the idempotency key's last part) is the number of the transition the step
// will record, unique to the step; a caller may set a clearer one.
func (w *verification) email(kind email.Kind) *Email {
	return &Email{SessionID: w.st.SessionID, Kind: string(kind), Ref: fmt.Sprint(w.st.Seq + 1)}
}

// oweEmail and oweCancel queue an effect for the effects lanes.
func (w *verification) oweEmail(e *Email) {
	w.st.Owed = append(w.st.Owed, Effect{Email: e})
}

func (w *verification) oweCancel() {
	w.st.Owed = append(w.st.Owed, Effect{CancelSession: true})
}

// effectLane is which owed effects an effects loop does.
type effectLane int

const (
	laneAll    effectLane = iota // before workflow v3: one loop, every effect in order
	laneEmail                    // emails, in order
	laneStripe                   // Stripe calls, in order
)

func (l effectLane) takes(e Effect) bool {
	switch l {
	case laneEmail:
		return e.Email != nil
	case laneStripe:
		return e.CancelSession
	}
	return true
}

// busyElsewhere reports whether another lane is doing an effect: a run that
// wants to continue as new cannot before it ends, so holding this lane
// meanwhile would only keep its effects waiting (an ops notice behind a
// Stripe cancel in a Stripe outage).
func (w *verification) busyElsewhere(lane effectLane) bool {
	for l, busy := range w.busyLane {
		if busy && effectLane(l) != lane {
			return true
		}
	}
	return false
}

// next is the index of the lane's oldest owed effect that a recorded
// transition holds, or -1. Only its own lane removes an effect of its kind,
// so the index found before an effect is done finds the same one after.
func (w *verification) next(lane effectLane) int {
	for i := range w.settled {
		if lane.takes(w.st.Owed[i]) {
			return i
		}
	}
	return -1
}

// effects does what the session owes in one lane, oldest first, one at a
// time, for as long as the workflow runs; only what a recorded transition
// owes, so no email tells of an outcome the database does not hold yet.
func (w *verification) effects(ctx workflow.Context, lane effectLane) {
	for {
		if err := workflow.Await(ctx, func() bool { return (!w.holdEffects || w.busyElsewhere(lane)) && w.next(lane) >= 0 }); err != nil {
			return
		}
		w.busy++
		w.busyLane[lane] = true
		e := w.st.Owed[w.next(lane)]
		switch {
		case e.Email != nil:
			w.sendEmail(ctx, *e.Email)
		case e.CancelSession:
			w.cancelAtStripe(ctx)
		}
		i := w.next(lane)
		w.st.Owed = slices.Delete(w.st.Owed, i, i+1)
		w.settled--
		w.busy--
		w.busyLane[lane] = false
		w.publish(ctx)
	}
}

// progressKinds are the emails that ask the user to act: sent after the
// session reached an outcome, they would mislead.
var progressKinds = map[string]bool{string(email.KindFailed): true, string(email.KindReminder): true,
	string(email.KindExpiryWarning): true, string(email.KindAlternateOffered): true}

// stale reports whether an owed email no longer fits where the session
// stands (workflow v3): a progress email once the session is final or in
// review, the expiry notice once a verification won over the expiry.
func (w *verification) stale(e *Email) bool {
	switch {
	case !w.v3:
		return false
	case e.Kind == string(email.KindExpired):
		return w.st.Status != StatusExpired
	case w.st.Status.Final() || w.st.Review.Open():
		return progressKinds[e.Kind]
	case e.Kind == string(email.KindFailed):
		// The user resubmitted (processing) or moved to the other method:
		// a newer email, if any is due, will say so.
		onAlternate := w.st.Escalation == EscalationAlternate
		return w.st.Status != StatusRequiresInput || (e.Link != nil && e.Link.Alternate != onAlternate)
	case e.Kind == string(email.KindAlternateOffered):
		return w.st.Escalation != EscalationAlternate
	}
	return false
}

// dropStale cancels the email being sent when the step just applied made
// it stale (its retries may be waiting out an SMTP outage).
func (w *verification) dropStale() {
	if w.cancelSend != nil && w.sending != nil && w.stale(w.sending) {
		w.cancelSend()
	}
}

// sendEmail sends one email: an SMTP outage retries without a limit (shown
// to ops after the first round); a refused recipient is final and recorded.
// A progress email the session's outcome made stale is dropped, before or
// while it is tried.
func (w *verification) sendEmail(ctx workflow.Context, e Email) {
	if w.stale(&e) {
		w.dropped(ctx, e)
		return
	}
	req := activities.EmailRequest{SessionID: e.SessionID, Kind: email.Kind(e.Kind), Ref: e.Ref, Attempt: e.Attempt,
		MaxAttempts: e.MaxAttempts, Reason: e.Reason, Fields: e.Fields, Deadline: e.Deadline}
	if e.Link != nil {
		req.Link = &activities.LinkLane{Alternate: e.Link.Alternate, Attempt: e.Link.Attempt}
	}
	summary := "email " + e.Kind
	if req.Attempt > 0 {
		summary += fmt.Sprintf(" #%d", req.Attempt)
	}
	actx := ctx // the activity's: canceled when the email turns stale
	if w.v3 {
		var cancel workflow.CancelFunc
		actx, cancel = workflow.WithCancel(ctx)
		w.cancelSend, w.sending = cancel, &e
		defer func() { cancel(); w.cancelSend, w.sending = nil, nil }()
	}
	run := func(p temporal.RetryPolicy) (activities.EmailResult, error) {
		// The SMTP conversation is bounded at 20 s, the ledger's read and
		// write take milliseconds: 30 s also bounds how long an email waits
		// when its worker dies mid-send before another worker retries it.
		ectx := workflow.WithActivityOptions(actx, workflow.ActivityOptions{
			Summary: summary, StartToCloseTimeout: 30 * time.Second, RetryPolicy: &p})
		var res activities.EmailResult
		err := workflow.ExecuteActivity(ectx, a.SendEmail, req).Get(actx, &res)
		return res, err
	}
	var res activities.EmailResult
	var err error
	if w.v3 {
		// First within the workflow task (a local activity): an email that
		// SMTP takes at once costs no activity task. Past a few seconds, or
		// failing, it goes on as an activity, retried as before.
		lctx := workflow.WithLocalActivityOptions(actx, workflow.LocalActivityOptions{Summary: summary,
			StartToCloseTimeout: emailLocally, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1}})
		err = workflow.ExecuteLocalActivity(lctx, a.SendEmail, req).Get(actx, &res)
	}
	if !w.v3 || retryable(err) {
		res, err = run(quickRetry)
	}
	for retryable(err) && actx.Err() == nil {
		w.raise(ctx, IssueEmailDelayed, errText(err))
		res, err = run(patientRetry)
		w.pause(actx, err)
	}
	w.clear(ctx, IssueEmailDelayed)
	switch {
	case actx.Err() != nil && ctx.Err() == nil && w.stale(&e):
		w.dropped(ctx, e)
	case err != nil:
		w.log.Warn("Email not sent", "Kind", req.Kind, "Error", err)
		w.st.EmailIssue = fmt.Sprintf("%s email not sent: %s", req.Kind, errText(err))
		switch {
		case temporal.IsCanceledError(err):
		case isType(err, activities.ErrTypeEmailRefused):
			w.raise(ctx, IssueEmailRefused, w.st.EmailIssue)
		default:
			w.raise(ctx, IssueEmailFailed, w.st.EmailIssue)
		}
	case res.Status != "sent":
		w.log.Info("Email not sent", "Kind", req.Kind, "Status", res.Status, "Detail", res.Detail)
		w.st.EmailIssue = fmt.Sprintf("%s email %s: %s", req.Kind, res.Status, res.Detail)
	case e.Link != nil:
		w.st.RetryLink = e.Link // the user's newest link: it and newer ones open the session
	}
}

// emailLocally bounds an email's try within the workflow task.
const emailLocally = 10 * time.Second

// dropped counts a progress email the session's outcome made stale.
func (w *verification) dropped(ctx workflow.Context, e Email) {
	w.st.StaleEmailsDropped++
	w.log.Info("Stale email dropped", "Kind", e.Kind, "Status", w.st.Status)
	workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"kind": e.Kind}).Counter(MetricStaleEmailsDropped).Inc(1)
}

// MetricStaleEmailsDropped counts progress emails dropped because the session
// had reached an outcome by the time they could go.
const MetricStaleEmailsDropped = "identity_stale_emails_dropped_total"

// cancelAtStripe cancels the Stripe session, however long Stripe fails
// (nothing waits for it). The activity answers success when the session is
// canceled or verified already; any other refusal is shown to ops (before
// workflow v3 it was only logged).
func (w *verification) cancelAtStripe(ctx workflow.Context) {
	err := w.callStripe(ctx, "cancel Stripe session", 0, a.CancelSession, w.st.SessionID, nil)
	switch {
	case err == nil || temporal.IsCanceledError(err):
	case w.v3 && isType(err, activities.ErrTypeStripeSessionVerified):
		// Stripe verified the user before the cancel could take effect: a
		// step of the main loop, as the verified event would be.
		w.internal = append(w.internal, Event{ID: fmt.Sprintf("stripe-verified:%d", w.st.Seq), Type: EventVerified,
			Created: w.st.LastEventCreated, SessionID: w.st.SessionID, Status: StripeStatusVerified})
	case w.v3:
		w.raise(ctx, IssueStripeRefused, "cancel refused: "+errText(err))
	default:
		w.log.Warn("Could not cancel the Stripe session", "Error", err)
	}
}

// raise shows a problem to ops; a second raise of the same code updates it.
func (w *verification) raise(ctx workflow.Context, code, detail string) {
	i := slices.IndexFunc(w.st.Issues, func(is Issue) bool { return is.Code == code })
	if i < 0 {
		w.st.Issues = append(w.st.Issues, Issue{Code: code, Detail: detail, Since: workflow.Now(ctx)})
	} else {
		w.st.Issues[i].Detail = detail
	}
	w.publish(ctx)
}

// clear ends a transient problem.
func (w *verification) clear(ctx workflow.Context, code string) {
	n := len(w.st.Issues)
	w.st.Issues = slices.DeleteFunc(w.st.Issues, func(is Issue) bool { return is.Code == code })
	if len(w.st.Issues) != n {
		w.publish(ctx)
	}
}

// retryable reports whether err is a failure that a later try may fix; a
// cancellation (the workflow was canceled) is not.
func retryable(err error) bool {
	if err == nil || temporal.IsCanceledError(err) {
		return false
	}
	var appErr *temporal.ApplicationError
	return !errors.As(err, &appErr) || !slices.Contains(activities.NonRetryable, appErr.Type())
}

// isType reports whether err carries an application error of type t.
func isType(err error, t string) bool {
	var appErr *temporal.ApplicationError
	return errors.As(err, &appErr) && appErr.Type() == t
}

// errText is an error's innermost message: what ops need, without the
// activity wrapping around it.
func errText(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	s := err.Error()
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "")
	}
	return s
}

// publish keeps the search attributes and the UI's current details in step
// with the state. Search attributes are upserted only when they change.
func (w *verification) publish(ctx workflow.Context) {
	w.st.NextTimer, w.st.NextTimerAt = w.nextTimer()
	issues := make([]string, 0, len(w.st.Issues))
	for _, is := range w.st.Issues {
		issues = append(issues, is.Code)
	}
	attempts := int64(w.st.Attempts + w.st.AlternateAttempts)
	snap := fmt.Sprint(w.st.Status, attempts, w.st.LastErrorCode, w.st.Escalation, issues)
	if snap != w.published {
		err := workflow.UpsertTypedSearchAttributes(ctx,
			SAStatus.ValueSet(string(w.st.Status)),
			SAAttempts.ValueSet(attempts),
			SALastErrorCode.ValueSet(w.st.LastErrorCode),
			SAEscalation.ValueSet(string(w.st.Escalation)),
			SAIssues.ValueSet(issues))
		if err != nil {
			w.log.Error("Search attributes not updated", "Error", err)
		} else {
			w.published = snap
		}
	}
	workflow.SetCurrentDetails(ctx, w.details())
}

// details is the markdown the Temporal UI shows as the workflow's current
// details. Text from outside (a reviewer's name, an error's message) is
// escaped: it reads as text, never as a link, an image or markup.
func (w *verification) details() string {
	var b strings.Builder
	b.WriteString(fmt.Sprintf("**%s** · Stripe: %s · attempts %d/%d", w.st.Status, md(orDash(w.st.StripeStatus)), w.st.Attempts, w.policy.MaxAttempts))
	if w.st.Escalation == EscalationAlternate || w.st.AlternateAttempts > 0 {
		b.WriteString(fmt.Sprintf(" · alternate (%s) %d/%d", md(w.policy.AlternateType), w.st.AlternateAttempts, w.policy.AlternateMaxAttempts))
	}
	if w.st.LastErrorCode != "" {
		b.WriteString(fmt.Sprintf("\n\nLast error: %s", code(w.st.LastErrorCode)))
	}
	if r := w.st.Review; r != nil {
		b.WriteString(fmt.Sprintf("\n\nReview (%s)", md(r.Reason)))
		if len(r.MismatchedFields) > 0 {
			b.WriteString(fmt.Sprintf(", differing: %s", md(strings.Join(r.MismatchedFields, ", "))))
		}
		if r.Open() {
			b.WriteString(fmt.Sprintf(": **open**, due %s; decide with update %s", r.DeadlineAt.UTC().Format(time.RFC3339), code(UpdateReviewDecision)))
			if r.needs() > 1 {
				by := make([]string, 0, len(r.Approvals))
				for _, a := range r.Approvals {
					by = append(by, md(a.Reviewer))
				}
				b.WriteString(fmt.Sprintf(" · %d of %d approvals", len(r.Approvals), r.needs()))
				if len(by) > 0 {
					b.WriteString(", by " + strings.Join(by, ", "))
				}
			}
		} else {
			b.WriteString(fmt.Sprintf(": %s by %s", md(r.Decision), md(orDash(r.Reviewer))))
		}
	}
	for _, is := range w.st.Issues {
		b.WriteString(fmt.Sprintf("\n\n**Issue %s** since %s: %s", code(is.Code), is.Since.UTC().Format(time.RFC3339), md(is.Detail)))
	}
	if w.st.EmailIssue != "" {
		b.WriteString(fmt.Sprintf("\n\nEmail: %s", md(w.st.EmailIssue)))
	}
	if n := len(w.st.Owed); n > 0 {
		b.WriteString(fmt.Sprintf("\n\nOwed: %d (next: %s)", n, md(w.st.Owed[0].describe())))
	}
	if w.st.NextTimer != "" {
		b.WriteString(fmt.Sprintf("\n\nNext: %s at %s", md(w.st.NextTimer), w.st.NextTimerAt.UTC().Format(time.RFC3339)))
	}
	return b.String()
}

// md escapes text for markdown: every character with a meaning in
// markdown or HTML is backslash-escaped, and line breaks and other control
// characters become spaces.
func md(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case strings.ContainsRune("\\`*_{}[]()<>#+-.!|~&:\"'", r):
			b.WriteByte('\\')
		case Unprintable(r):
			r = ' '
		}
		b.WriteRune(r)
	}
	return b.String()
}

// code is s as a markdown code span; a backtick (the only way out of one)
// becomes an apostrophe.
func code(s string) string {
	return "`" + strings.Map(func(r rune) rune {
		switch {
		case r == '`':
			return '\''
		case Unprintable(r):
			return ' '
		}
		return r
	}, s) + "`"
}

func (e Effect) describe() string {
	if e.Email != nil {
		return string(e.Email.Kind) + " email"
	}
	return "cancel at Stripe"
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
