// Package activities does the verification workflow's I/O: the database,
// SMTP and the Stripe API. Every activity is safe to retry. Personal data is
// read here, from the database and Stripe, and never returned to the
// workflow: only ids, statuses, codes and comparison results are.
package activities

import (
	"context"
	"errors"
	"fmt"

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
	Contact(ctx context.Context, sessionID string) (store.Contact, error)
	Email(ctx context.Context, key string) (store.EmailRecord, error)
	RecordEmail(ctx context.Context, r store.EmailRecord) error
	OpenReview(ctx context.Context, c store.ReviewCase) error
	DecideReview(ctx context.Context, c store.ReviewCase) error
	Redact(ctx context.Context, sessionID string) error
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
type RetryLinks interface {
	URL(sessionID string) string
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

// Error types the workflow and retry policies recognise.
const (
	ErrTypeStripeRefused = "StripeRefused"
	ErrTypeEmailRefused  = "EmailRefused"
	ErrTypeReviewClosed  = "ReviewNotOpen"
)

// ProcessedEventsCarried bounds the ledger ids a new run loads.
const ProcessedEventsCarried = 1000

// Snapshot is what the database knows of a session when a workflow run starts
// without carried state (a first event, or a late event after the previous
// run finished).
type Snapshot struct {
	Known             bool     `json:"known"`
	Status            string   `json:"status,omitempty"`
	StripeStatus      string   `json:"stripe_status,omitempty"`
	SessionType       string   `json:"session_type,omitempty"`
	Attempts          int      `json:"attempts,omitempty"`
	LastErrorCode     string   `json:"last_error_code,omitempty"`
	LastErrorReason   string   `json:"last_error_reason,omitempty"`
	Escalation        string   `json:"escalation,omitempty"`
	Seq               int64    `json:"seq,omitempty"`
	Redacted          bool     `json:"redacted,omitempty"`
	ProcessedEventIDs []string `json:"processed_event_ids,omitempty"`
}

// LoadSession reads the stored status and event ledger of a session.
func (a *Activities) LoadSession(ctx context.Context, sessionID string) (Snapshot, error) {
	s, err := a.Store.Session(ctx, sessionID)
	if errors.Is(err, store.ErrNotFound) {
		return Snapshot{}, nil
	}
	if err != nil {
		return Snapshot{}, err
	}
	ids, err := a.Store.ProcessedEventIDs(ctx, sessionID, ProcessedEventsCarried)
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Known: s.Seq > 0 || len(ids) > 0, Status: s.Status, StripeStatus: s.StripeStatus,
		SessionType: s.SessionType, Attempts: s.Attempts, LastErrorCode: s.LastErrorCode,
		LastErrorReason: s.LastErrorReason, Escalation: s.Escalation, Seq: s.Seq,
		Redacted: s.Redacted, ProcessedEventIDs: ids}, nil
}

// Transition is a status change to persist (see store.Transition).
type Transition = store.Transition

// RecordTransition persists a transition, the event ledger entry and the
// audit row; a retry is a no-op.
func (a *Activities) RecordTransition(ctx context.Context, t Transition) error {
	_, err := a.Store.RecordTransition(ctx, t)
	return err
}

// RedactSession purges the session's personal data.
func (a *Activities) RedactSession(ctx context.Context, sessionID string) error {
	return a.Store.Redact(ctx, sessionID)
}

// stripeError makes a permanent Stripe refusal non-retryable.
func stripeError(err error) error {
	if errors.Is(err, stripeapi.ErrPermanent) {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeStripeRefused, nil)
	}
	return err
}

// CancelSession cancels the Stripe session (expiry, escalation to review).
func (a *Activities) CancelSession(ctx context.Context, sessionID string) error {
	return stripeError(a.Stripe.Cancel(ctx, sessionID))
}

// SwitchInput switches a session to another verification type.
type SwitchInput struct {
	SessionID string `json:"session_id"`
	Type      string `json:"type"`
}

// SwitchSessionType moves the session to the alternate verification method.
func (a *Activities) SwitchSessionType(ctx context.Context, in SwitchInput) error {
	return stripeError(a.Stripe.SetType(ctx, in.SessionID, in.Type))
}

// FetchSessionStatus reads the session's status from Stripe, the source of
// truth when deliveries are ambiguous.
func (a *Activities) FetchSessionStatus(ctx context.Context, sessionID string) (string, error) {
	s, err := a.Stripe.Status(ctx, sessionID)
	return s, stripeError(err)
}

// ReviewInput opens a manual review case.
type ReviewInput = store.ReviewCase

// OpenReview records a manual review case; opening it again is a no-op.
func (a *Activities) OpenReview(ctx context.Context, in ReviewInput) error {
	return a.Store.OpenReview(ctx, in)
}

// DecideReview records a reviewer's decision on the open case.
func (a *Activities) DecideReview(ctx context.Context, in ReviewInput) error {
	err := a.Store.DecideReview(ctx, in)
	if errors.Is(err, store.ErrNoReviewOpen) {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("session %s has no open review", in.SessionID), ErrTypeReviewClosed, err)
	}
	return err
}
