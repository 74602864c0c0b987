package activities

import (
	"context"
	"errors"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
)

// The activities' own metrics, through the Temporal SDK's metrics handler
// (served with the SDK's on the ops listener's /metrics):
//
//	identity_emails_total{status}: sent, skipped (no address, or a warning
//	  past its deadline), refused (for good), failed (a transient failure;
//	  the activity retries), repeat (a retry that found it recorded)
//	identity_stripe_calls_total{call, outcome}: ok, refused (for good),
//	  unauthorized (the key is refused: a deployment fault, retried),
//	  failed (transient; retried)
const (
	metricEmails      = "identity_emails_total"
	metricStripeCalls = "identity_stripe_calls_total"
)

// count adds one to a counter with tags, when ctx is an activity's (unit
// tests call the activities with a plain context).
func count(ctx context.Context, name string, tags map[string]string) {
	if !activity.IsActivity(ctx) {
		return
	}
	activity.GetMetricsHandler(ctx).WithTags(tags).Counter(name).Inc(1)
}

// countEmail counts what became of an email; a repeat (a retry that found
// the outcome already recorded) counts as repeat, not again as sent.
func countEmail(ctx context.Context, res EmailResult, err error, repeat bool) {
	status := res.Status
	if repeat {
		status = "repeat"
	}
	var appErr *temporal.ApplicationError
	switch {
	case err != nil && errors.As(err, &appErr) && appErr.Type() == ErrTypeEmailRefused:
		status = "refused"
	case err != nil:
		status = "failed"
	}
	count(ctx, metricEmails, map[string]string{"status": status})
}

// stripeCall counts a Stripe API call's outcome and makes a refusal final.
func stripeCall(ctx context.Context, call string, err error) error {
	err = stripeError(err)
	outcome := "ok"
	var appErr *temporal.ApplicationError
	switch {
	case err != nil && errors.As(err, &appErr) && appErr.NonRetryable():
		outcome = "refused"
	case err != nil && errors.As(err, &appErr) && appErr.Type() == ErrTypeStripeUnauthorized:
		outcome = "unauthorized" // the key is refused: alert on it
	case err != nil:
		outcome = "failed"
	}
	count(ctx, metricStripeCalls, map[string]string{"call": call, "outcome": outcome})
	return err
}
