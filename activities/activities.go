// Package activities does the verification workflow's I/O: the database,
// SMTP and the Stripe API. Every activity is safe to retry. Personal data is
// read here, from the database and Stripe, and never returned to the
// workflow: only ids, statuses, codes and comparison results are.
package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"

	"identityverification/email"
	"identityverification/store"
	"identityverification/stripeapi"
)

// Store is the database as the activities use it.
type Store interface {
	Session(ctx context.Context, sessionID string) (store.Session, error)
	ProcessedEventIDs(ctx context.Context, sessionID string, limit int) ([]string, error)
	RecordTransition(ctx context.Context, t store.Transition) (bool, error)
	RecordProcessedEvent(ctx context.Context, sessionID, eventID, eventType string) error
	Contact(ctx context.Context, sessionID string) (store.Contact, error)
	Email(ctx context.Context, key string) (store.EmailRecord, error)
	RecordEmail(ctx context.Context, r store.EmailRecord) (store.EmailRecord, error)
	OpenReview(ctx context.Context, c store.ReviewCase) error
	DecideReview(ctx context.Context, c store.ReviewCase) error
	Redact(ctx context.Context, sessionID string) error
	RedeemDecisionVoucher(ctx context.Context, v store.DecisionVoucher, reviewOpenedAt time.Time) (bool, error)
}

// Mailer sends one email.
type Mailer interface {
	Send(ctx context.Context, m email.Message) error
}

// Sessions is the Stripe API as the activities use it.
type Sessions interface {
	VerifiedOutputs(ctx context.Context, sessionID string) (stripeapi.Outputs, error)
	Status(ctx context.Context, sessionID string) (string, error)
	Cancel(ctx context.Context, sessionID string) error
	SetType(ctx context.Context, sessionID, sessionType string) error
}

// RetryLinks makes the retry link for a session's emails: it points at this
// service, which fetches a fresh single-use Stripe URL at click time.
// A link is bound to the attempt it is sent for (alternate: the alternate
// method; attempt: how many of that method's attempts had failed) and
// expires, so an old email cannot reopen a later attempt.
type RetryLinks interface {
	URL(sessionID string, alternate bool, attempt int) string
}

// Activities holds the dependencies; its methods are the activities.
type Activities struct {
	Store  Store
	Mailer Mailer
	Stripe Sessions
	Links  RetryLinks
	// OpsEmail receives review notices; empty skips them (recorded).
	OpsEmail string
}

// Error types the workflow and retry policies recognise: each names a
// failure that retrying cannot fix.
const (
	ErrTypeStripeRefused = "StripeRefused"
	// ErrTypeStripeSessionVerified: Stripe refused a cancel because it has
	// verified the user: the workflow applies that as Stripe's answer.
	ErrTypeStripeSessionVerified = "StripeSessionVerified"
	// ErrTypeStripeUnauthorized: Stripe refused the service's key (401,
	// 403, an expired or rotated key). Retryable: it is a deployment
	// fault that ops mend, never a verdict on the user.
	ErrTypeStripeUnauthorized = "StripeUnauthorized"
	ErrTypeEmailRefused       = "EmailRefused"
	ErrTypeEmailTemplate      = "EmailTemplate"
	ErrTypeReviewClosed       = "ReviewNotOpen"
	// ErrTypeStoreRejected: the database refused the data for good (a
	// constraint, a data error); the same write would fail again.
	ErrTypeStoreRejected = "StoreRejected"
)

// NonRetryable lists the error types above, for retry policies.
var NonRetryable = []string{ErrTypeStripeRefused, ErrTypeStripeSessionVerified, ErrTypeEmailRefused,
	ErrTypeEmailTemplate, ErrTypeReviewClosed, ErrTypeStoreRejected}

// storeError makes a database refusal non-retryable; anything else (an
// outage, a timeout) stays retryable.
func storeError(err error) error {
	if errors.Is(err, store.ErrRejected) {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeStoreRejected, nil)
	}
	return err
}

// ProcessedEventsCarried bounds the ledger ids a new run loads.
const ProcessedEventsCarried = 1000

// Snapshot is what the database knows of a session when a workflow run starts
// without carried state: a first event, a late event after the previous run
// finished, or a run an operator terminated.
type Snapshot struct {
	Known bool `json:"known"`
	// State is the workflow's state as stored with the last transition
	// (workflows.State, without the event ids), restored as it is.
	State json.RawMessage `json:"state,omitempty"`
	// ProcessedEventIDs is the newest part of the event ledger, oldest first.
	ProcessedEventIDs []string `json:"processed_event_ids,omitempty"`
}

// LoadSession reads the stored state and event ledger of a session.
func (a *Activities) LoadSession(ctx context.Context, sessionID string) (Snapshot, error) {
	s, err := a.Store.Session(ctx, sessionID)
	if errors.Is(err, store.ErrNotFound) {
		return Snapshot{}, nil
	}
	if err != nil {
		return Snapshot{}, storeError(err)
	}
	ids, err := a.Store.ProcessedEventIDs(ctx, sessionID, ProcessedEventsCarried)
	if err != nil {
		return Snapshot{}, storeError(err)
	}
	snap := Snapshot{Known: s.Seq > 0 || len(ids) > 0, ProcessedEventIDs: ids}
	if s.State != "" {
		snap.State = json.RawMessage(s.State)
	} else if snap.Known { // a row written before snapshots were kept
		snap.State, _ = json.Marshal(Progress{SessionID: sessionID, Seq: s.Seq, Status: s.Status,
			StripeStatus: s.StripeStatus, SessionType: s.SessionType, Attempts: s.Attempts,
			LastErrorCode: s.LastErrorCode, LastErrorReason: s.LastErrorReason, Escalation: s.Escalation})
	}
	return snap, nil
}

// Transition is one step of a session to persist: what caused it and the
// workflow's whole state after it.
type Transition struct {
	SessionID string `json:"session_id"`
	// RunID is the workflow run that made the transition: a run that
	// started later (a reset, a restore) supersedes the rows of earlier
	// ones whatever their Seq.
	RunID string `json:"run_id,omitempty"`
	// Key makes the write idempotent: the Stripe event id, or a name for a
	// workflow-made change such as "expiry" or "review:approve".
	Key       string `json:"key"`
	EventID   string `json:"event_id,omitempty"`
	EventType string `json:"event_type,omitempty"`
	From      string `json:"from"`           // the status of the previous transition
	Note      string `json:"note,omitempty"` // short, no personal data
	// State is the workflow's state (workflows.State as JSON, without the
	// event ids): stored whole for an exact restore, and read for the
	// columns ops query (Progress).
	State json.RawMessage `json:"state"`
}

// Progress is the part of the workflow's state the sessions table keeps in
// columns. Its JSON names are those of workflows.State (a test holds the two
// together).
type Progress struct {
	SessionID         string `json:"session_id"`
	Seq               int64  `json:"seq"`
	Status            string `json:"status"`
	StripeStatus      string `json:"stripe_status,omitempty"`
	SessionType       string `json:"session_type,omitempty"`
	Attempts          int    `json:"attempts"`
	AlternateAttempts int    `json:"alternate_attempts,omitempty"`
	LastErrorCode     string `json:"last_error_code,omitempty"`
	LastErrorReason   string `json:"last_error_reason,omitempty"`
	Escalation        string `json:"escalation"`
	// Comparing is the verified event whose outputs are being compared
	// (null or absent when none): while it is set the expected values are
	// frozen.
	Comparing json.RawMessage `json:"comparing,omitempty"`
}

// IsComparing reports whether a comparison of the verified outputs runs.
func (p Progress) IsComparing() bool {
	return len(p.Comparing) > 0 && string(p.Comparing) != "null"
}

// RecordTransition persists a transition, the event ledger entry, the audit
// row and the state snapshot in one database transaction; a retry is a no-op.
// It runs as a local activity: short, idempotent, on the worker that runs the
// workflow task.
func (a *Activities) RecordTransition(ctx context.Context, t Transition) error {
	var p Progress
	if err := json.Unmarshal(t.State, &p); err != nil {
		return temporal.NewNonRetryableApplicationError("transition state: "+err.Error(), ErrTypeStoreRejected, nil)
	}
	_, err := a.Store.RecordTransition(ctx, store.Transition{SessionID: t.SessionID, Key: t.Key, Seq: p.Seq,
		EventID: t.EventID, EventType: t.EventType, From: t.From, To: p.Status, StripeStatus: p.StripeStatus,
		SessionType: p.SessionType, Attempts: p.Attempts + p.AlternateAttempts, LastErrorCode: p.LastErrorCode,
		LastErrorReason: p.LastErrorReason, Escalation: p.Escalation, Comparing: p.IsComparing(), Note: t.Note,
		State: string(t.State), RunID: t.RunID})
	return storeError(err)
}

// EventRecord is a Stripe event that took effect, for the ledger alone.
type EventRecord struct {
	SessionID string `json:"session_id"`
	EventID   string `json:"event_id"`
	EventType string `json:"event_type"`
}

// RecordEventID writes an event to the session's ledger of processed
// events, on its own: the workflow's fallback when the database refused
// the transition that would have recorded it, so that a redelivery never
// applies it twice.
func (a *Activities) RecordEventID(ctx context.Context, r EventRecord) error {
	return storeError(a.Store.RecordProcessedEvent(ctx, r.SessionID, r.EventID, r.EventType))
}

// RedactSession purges the session's personal data.
func (a *Activities) RedactSession(ctx context.Context, sessionID string) error {
	return storeError(a.Store.Redact(ctx, sessionID))
}

// stripeError makes a permanent Stripe refusal non-retryable and types a
// refused key, which stays retryable.
func stripeError(err error) error {
	switch {
	case errors.Is(err, stripeapi.ErrPermanent):
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeStripeRefused, nil)
	case errors.Is(err, stripeapi.ErrUnauthorized):
		return temporal.NewApplicationError(err.Error(), ErrTypeStripeUnauthorized)
	}
	return err
}

// CancelSession cancels the Stripe session (expiry, escalation to review).
// When Stripe refuses, the session's status says why: canceled already,
// the cancel succeeds; verified already, the refusal is of its own type
// (ErrTypeStripeSessionVerified), for the workflow to apply Stripe's
// answer; any other refusal is returned, final.
func (a *Activities) CancelSession(ctx context.Context, sessionID string) error {
	err := stripeCall(ctx, "cancel", a.Stripe.Cancel(ctx, sessionID))
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != ErrTypeStripeRefused {
		return err
	}
	status, serr := a.Stripe.Status(ctx, sessionID)
	if serr := stripeCall(ctx, "status", serr); serr != nil {
		return serr // the refusal's reason is unknown: a transient failure retries, a refusal is final
	}
	switch status {
	case stripeapi.StatusCanceled:
		return nil
	case stripeapi.StatusVerified:
		return temporal.NewNonRetryableApplicationError("stripe: cancel refused: the session is verified",
			ErrTypeStripeSessionVerified, nil)
	}
	return err
}

// SwitchInput switches a session to another verification type.
type SwitchInput struct {
	SessionID string `json:"session_id"`
	Type      string `json:"type"`
}

// SwitchSessionType moves the session to the alternate verification method.
func (a *Activities) SwitchSessionType(ctx context.Context, in SwitchInput) error {
	return stripeCall(ctx, "switch_type", a.Stripe.SetType(ctx, in.SessionID, in.Type))
}

// FetchSessionStatus reads the session's status from Stripe, the source of
// truth when deliveries are ambiguous.
func (a *Activities) FetchSessionStatus(ctx context.Context, sessionID string) (string, error) {
	s, err := a.Stripe.Status(ctx, sessionID)
	return s, stripeCall(ctx, "status", err)
}

// ReviewClosed is the status DecideReview records for a case closed
// without a reviewer's decision.
const ReviewClosed = store.ReviewClosed

// ReviewInput opens or decides a manual review case. It holds ids, codes
// and field names only.
type ReviewInput struct {
	SessionID        string    `json:"session_id"`
	Reason           string    `json:"reason,omitempty"`
	MismatchedFields []string  `json:"mismatched_fields,omitempty"`
	OpenedAt         time.Time `json:"opened_at,omitzero"`
	// Status is the decision to record: approved or rejected.
	Status    string    `json:"status,omitempty"`
	Reviewer  string    `json:"reviewer,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
}

func (in ReviewInput) storeCase() store.ReviewCase {
	return store.ReviewCase{SessionID: in.SessionID, Reason: in.Reason, MismatchedFields: in.MismatchedFields,
		OpenedAt: in.OpenedAt, Status: in.Status, Reviewer: in.Reviewer, DecidedAt: in.DecidedAt}
}

// OpenReview records a manual review case; opening it again is a no-op.
func (a *Activities) OpenReview(ctx context.Context, in ReviewInput) error {
	return storeError(a.Store.OpenReview(ctx, in.storeCase()))
}

// DecideReview records a reviewer's decision on the open case.
func (a *Activities) DecideReview(ctx context.Context, in ReviewInput) error {
	err := a.Store.DecideReview(ctx, in.storeCase())
	if errors.Is(err, store.ErrNoReviewOpen) {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("session %s has no open review", in.SessionID), ErrTypeReviewClosed, err)
	}
	return storeError(err)
}

// DecisionCheck asks whether a review decision was vouched for by the admin
// API or the review desk (store.DecisionVoucher).
type DecisionCheck struct {
	SessionID string    `json:"session_id"`
	Voucher   string    `json:"voucher"`
	Subject   string    `json:"subject"`
	Decision  string    `json:"decision"`
	OpenedAt  time.Time `json:"opened_at"` // the review's: a voucher decides this review only
}

// CheckDecision reports whether the decision's voucher vouches for it.
func (a *Activities) CheckDecision(ctx context.Context, c DecisionCheck) (bool, error) {
	ok, err := a.Store.RedeemDecisionVoucher(ctx, store.DecisionVoucher{ID: c.Voucher, SessionID: c.SessionID,
		Subject: c.Subject, Decision: c.Decision}, c.OpenedAt)
	return ok, storeError(err)
}
