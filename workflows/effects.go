package workflows

import (
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
)

// dbCtx: database writes are idempotent and a database outage must delay the
// session, never drop a transition, so they retry without a limit.
func dbCtx(ctx workflow.Context, summary string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		Summary:             summary,
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			MaximumAttempts:        0, // unlimited, on purpose (see above)
			NonRetryableErrorTypes: []string{activities.ErrTypeReviewClosed},
		},
	})
}

// stripeCtx: Stripe calls retry 429s and 5xx with backoff for up to six
// hours; a 4xx refusal is final.
func stripeCtx(ctx workflow.Context, summary string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		Summary:                summary,
		StartToCloseTimeout:    30 * time.Second,
		ScheduleToCloseTimeout: 6 * time.Hour,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        2 * time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        5 * time.Minute,
			NonRetryableErrorTypes: []string{activities.ErrTypeStripeRefused},
		},
	})
}

// emailCtx: a transient SMTP failure retries for up to a day; a refused
// recipient is final (and recorded by the activity).
func emailCtx(ctx workflow.Context, summary string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		Summary:                summary,
		StartToCloseTimeout:    time.Minute,
		ScheduleToCloseTimeout: 24 * time.Hour,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        5 * time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        10 * time.Minute,
			NonRetryableErrorTypes: []string{activities.ErrTypeEmailRefused, "EmailTemplate"},
		},
	})
}

// persist records the current state as a transition. key makes it
// idempotent: the Stripe event id, or a name for a workflow-made change.
func (w *verification) persist(ctx workflow.Context, key string, ev *Event, note string) error {
	w.st.Seq++
	t := activities.Transition{
		SessionID: w.st.SessionID, Key: key, Seq: w.st.Seq, To: string(w.st.Status),
		StripeStatus: w.st.StripeStatus, SessionType: w.st.SessionType,
		Attempts: w.st.Attempts + w.st.AlternateAttempts, LastErrorCode: w.st.LastErrorCode,
		LastErrorReason: w.st.LastErrorReason, Escalation: string(w.st.Escalation), Note: note,
	}
	if ev != nil {
		t.EventID, t.EventType = ev.ID, ev.Type
	}
	summary := "record " + string(w.st.Status)
	if ev != nil {
		summary += " (" + strings.TrimPrefix(ev.Type, EventTypePrefix) + ")"
	}
	if err := workflow.ExecuteActivity(dbCtx(ctx, summary), a.RecordTransition, t).Get(ctx, nil); err != nil {
		return fmt.Errorf("record transition %s: %w", key, err)
	}
	return w.publish(ctx)
}

// sendEmail sends an email and carries on whatever happens: a refused
// recipient or a day of SMTP failure is recorded, not fatal to the session.
func (w *verification) sendEmail(ctx workflow.Context, req activities.EmailRequest) {
	req.SessionID = w.st.SessionID
	var res activities.EmailResult
	summary := fmt.Sprintf("email %s", req.Kind)
	if req.Attempt > 0 {
		summary += fmt.Sprintf(" #%d", req.Attempt)
	}
	if err := workflow.ExecuteActivity(emailCtx(ctx, summary), a.SendEmail, req).Get(ctx, &res); err != nil {
		w.log.Warn("Email not sent", "Kind", req.Kind, "Error", err)
		w.st.EmailIssue = fmt.Sprintf("%s email not sent: %v", req.Kind, err)
		return
	}
	if res.Status != "sent" {
		w.log.Info("Email not sent", "Kind", req.Kind, "Status", res.Status, "Detail", res.Detail)
		w.st.EmailIssue = fmt.Sprintf("%s email %s: %s", req.Kind, res.Status, res.Detail)
	}
}

// cancelAtStripe cancels the Stripe session; a refusal (say, it is already
// canceled) is logged, not fatal.
func (w *verification) cancelAtStripe(ctx workflow.Context) {
	if err := workflow.ExecuteActivity(stripeCtx(ctx, "cancel Stripe session"), a.CancelSession, w.st.SessionID).Get(ctx, nil); err != nil {
		w.log.Warn("Could not cancel the Stripe session", "Error", err)
	}
}

// publish keeps the search attributes and the UI's current details in step
// with the state. Search attributes are upserted only when they change.
func (w *verification) publish(ctx workflow.Context) error {
	name, at := w.nextTimer()
	w.st.NextTimer, w.st.NextTimerAt = name, at
	snap := [4]any{w.st.Status, w.st.Attempts + w.st.AlternateAttempts, w.st.LastErrorCode, w.st.Escalation}
	if snap != w.published {
		err := workflow.UpsertTypedSearchAttributes(ctx,
			SAStatus.ValueSet(string(w.st.Status)),
			SAAttempts.ValueSet(int64(w.st.Attempts+w.st.AlternateAttempts)),
			SALastErrorCode.ValueSet(w.st.LastErrorCode),
			SAEscalation.ValueSet(string(w.st.Escalation)))
		if err != nil {
			return err
		}
		w.published = snap
	}
	workflow.SetCurrentDetails(ctx, w.details())
	return nil
}

// details is the markdown the Temporal UI shows as the workflow's current details.
func (w *verification) details() string {
	var b strings.Builder
	b.WriteString(fmt.Sprintf("**%s** · Stripe: %s · attempts %d/%d", w.st.Status, orDash(w.st.StripeStatus), w.st.Attempts, w.policy.MaxAttempts))
	if w.st.Escalation == EscalationAlternate {
		b.WriteString(fmt.Sprintf(" · alternate (%s) %d/%d", w.st.SessionType, w.st.AlternateAttempts, w.policy.AlternateMaxAttempts))
	}
	if w.st.LastErrorCode != "" {
		b.WriteString(fmt.Sprintf("\n\nLast error: `%s`", w.st.LastErrorCode))
	}
	if r := w.st.Review; r != nil {
		b.WriteString(fmt.Sprintf("\n\nReview (%s)", r.Reason))
		if len(r.MismatchedFields) > 0 {
			b.WriteString(fmt.Sprintf(", differing: %s", strings.Join(r.MismatchedFields, ", ")))
		}
		if r.Open() {
			b.WriteString(fmt.Sprintf(": **open**, due %s; decide with update `%s`", r.DeadlineAt.UTC().Format(time.RFC3339), UpdateReviewDecision))
		} else {
			b.WriteString(fmt.Sprintf(": %s by %s", r.Decision, orDash(r.Reviewer)))
		}
	}
	if w.st.EmailIssue != "" {
		b.WriteString(fmt.Sprintf("\n\nEmail: %s", w.st.EmailIssue))
	}
	if w.st.NextTimer != "" {
		b.WriteString(fmt.Sprintf("\n\nNext: %s at %s", w.st.NextTimer, w.st.NextTimerAt.UTC().Format(time.RFC3339)))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
