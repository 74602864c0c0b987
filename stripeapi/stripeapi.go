// Package stripeapi is the service's narrow use of the Stripe API for
// Identity VerificationSessions, through stripe-go v76. Its base URL is
// configurable so tests and dev run against a local stripe-mock.
package stripeapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/identity/verificationreport"
	"github.com/stripe/stripe-go/v76/identity/verificationsession"
)

// Errors a call returns, wrapped with the call and Stripe's status and code.
var (
	// ErrPermanent marks a Stripe refusal that a retry cannot fix: a 4xx
	// other than 401, 403 and 429 (bad request, unknown session, wrong
	// state).
	ErrPermanent = errors.New("stripe: request refused")
	// ErrUnauthorized marks a refused key (401, 403: an expired, rotated or
	// restricted key). It is the deployment's fault, never the user's:
	// callers retry it until ops mend the key.
	ErrUnauthorized = errors.New("stripe: key refused")
)

// Session statuses as Stripe names them.
const (
	StatusRequiresInput = "requires_input"
	StatusProcessing    = "processing"
	StatusVerified      = "verified"
	StatusCanceled      = "canceled"
)

// Outputs are a session's verified outputs, the fields this service compares.
// They are personal data: they never leave the activity that reads them.
type Outputs struct {
	FirstName, LastName string
	DOB                 string // YYYY-MM-DD, empty when Stripe has none
	// Status is the session's status at Stripe: only a verified session's
	// outputs are the user's.
	Status string
}

// Client calls the VerificationSession endpoints.
type Client struct {
	sessions verificationsession.Client
	reports  verificationreport.Client
}

// New returns a client for apiKey at baseURL (empty: Stripe's own API). It
// makes no retries of its own: retries are the calling activity's policy.
func New(apiKey, baseURL string) *Client {
	cfg := &stripe.BackendConfig{
		HTTPClient:        &http.Client{Timeout: 20 * time.Second},
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		MaxNetworkRetries: stripe.Int64(0),
	}
	if baseURL != "" {
		cfg.URL = stripe.String(baseURL)
	}
	b := stripe.GetBackendWithConfig(stripe.APIBackend, cfg)
	return &Client{sessions: verificationsession.Client{B: b, Key: apiKey},
		reports: verificationreport.Client{B: b, Key: apiKey}}
}

// VerifiedOutputs fetches a session with verified_outputs expanded.
func (c *Client) VerifiedOutputs(ctx context.Context, sessionID string) (Outputs, error) {
	vs, err := c.get(ctx, "fetch verified outputs", sessionID, "verified_outputs")
	if err != nil {
		return Outputs{}, err
	}
	o := Outputs{Status: string(vs.Status)}
	if v := vs.VerifiedOutputs; v != nil {
		o.FirstName, o.LastName = v.FirstName, v.LastName
		if d := v.DOB; d != nil && d.Year > 0 {
			o.DOB = fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day)
		}
	}
	return o, nil
}

// Status reads a session's current status, the source of truth when webhook
// deliveries arrive in an ambiguous order.
func (c *Client) Status(ctx context.Context, sessionID string) (string, error) {
	vs, err := c.get(ctx, "read status", sessionID)
	if err != nil {
		return "", err
	}
	return string(vs.Status), nil
}

// Cancel cancels a session so the user can no longer submit to it.
func (c *Client) Cancel(ctx context.Context, sessionID string) error {
	p := &stripe.IdentityVerificationSessionCancelParams{}
	p.Context = ctx
	_, err := c.sessions.Cancel(sessionID, p)
	return mapError("cancel", err)
}

// SetType switches a session's verification type (e.g. to id_number for the
// alternate method); Stripe allows it while the session requires input.
func (c *Client) SetType(ctx context.Context, sessionID, sessionType string) error {
	p := &stripe.IdentityVerificationSessionParams{Type: stripe.String(sessionType)}
	p.Context = ctx
	_, err := c.sessions.Update(sessionID, p)
	return mapError("set type", err)
}

// URL fetches a fresh, single-use URL for the user to continue a session. It
// must be handed to the user at once, never stored, logged or emailed.
func (c *Client) URL(ctx context.Context, sessionID string) (string, error) {
	vs, err := c.get(ctx, "fetch url", sessionID)
	if err != nil {
		return "", err
	}
	return vs.URL, nil
}

// get retrieves a session, with the named fields expanded.
func (c *Client) get(ctx context.Context, op, sessionID string, expand ...string) (*stripe.IdentityVerificationSession, error) {
	p := &stripe.IdentityVerificationSessionParams{}
	p.Context = ctx
	for _, f := range expand {
		p.AddExpand(f)
	}
	vs, err := c.sessions.Get(sessionID, p)
	return vs, mapError(op, err)
}

// mapError turns a stripe-go error into one that says whether to retry. The
// message carries the HTTP status and Stripe's error code, never the key.
func mapError(op string, err error) error {
	if err == nil {
		return nil
	}
	var se *stripe.Error
	if errors.As(err, &se) {
		switch c := se.HTTPStatusCode; {
		case c == http.StatusUnauthorized || c == http.StatusForbidden:
			return fmt.Errorf("%w: %s: HTTP %d %s", ErrUnauthorized, op, c, se.Code)
		case c >= 400 && c < 500 && c != http.StatusTooManyRequests:
			return fmt.Errorf("%w: %s: HTTP %d %s", ErrPermanent, op, c, se.Code)
		}
		return fmt.Errorf("stripe: %s: HTTP %d %s", op, se.HTTPStatusCode, se.Code)
	}
	return fmt.Errorf("stripe: %s: %w", op, err)
}

// CreateParams are what a new VerificationSession is made with. None of it
// is personal data: ClientReferenceID is an opaque reference.
type CreateParams struct {
	Type              string // document (the default) or id_number
	ReturnURL         string // where Stripe sends the user back
	ClientReferenceID string
	// Document options (type document only).
	AllowedTypes          []string // driving_license, id_card, passport
	RequireIDNumber       bool
	RequireLiveCapture    bool
	RequireMatchingSelfie bool
	// IdempotencyKey makes a retried create return the same session
	// instead of making a second one (Stripe keeps keys for 24 hours).
	IdempotencyKey string
}

// Created is a new session. ClientSecret and URL are bearer credentials for
// the user's front end: hand them over at once, never store or log them.
type Created struct {
	ID           string
	ClientSecret string
	URL          string
	Status       string
	Type         string
	Created      int64 // Unix seconds, Stripe's clock
	Livemode     bool
	// Replayed is true when Stripe answered from its idempotency cache: the
	// session was made by an earlier request with the same key.
	Replayed bool
}

// Create makes a VerificationSession.
func (c *Client) Create(ctx context.Context, p CreateParams) (Created, error) {
	params := &stripe.IdentityVerificationSessionParams{Type: stripe.String(p.Type)}
	if p.Type == "" {
		params.Type = stripe.String("document")
	}
	if p.ReturnURL != "" {
		params.ReturnURL = stripe.String(p.ReturnURL)
	}
	if p.ClientReferenceID != "" {
		params.ClientReferenceID = stripe.String(p.ClientReferenceID)
	}
	if *params.Type == "document" && (len(p.AllowedTypes) > 0 || p.RequireIDNumber || p.RequireLiveCapture || p.RequireMatchingSelfie) {
		doc := &stripe.IdentityVerificationSessionOptionsDocumentParams{}
		if len(p.AllowedTypes) > 0 { // an empty list is sent as an empty value, which Stripe refuses
			doc.AllowedTypes = stripe.StringSlice(p.AllowedTypes)
		}
		if p.RequireIDNumber {
			doc.RequireIDNumber = stripe.Bool(true)
		}
		if p.RequireLiveCapture {
			doc.RequireLiveCapture = stripe.Bool(true)
		}
		if p.RequireMatchingSelfie {
			doc.RequireMatchingSelfie = stripe.Bool(true)
		}
		params.Options = &stripe.IdentityVerificationSessionOptionsParams{Document: doc}
	}
	if p.IdempotencyKey != "" {
		params.SetIdempotencyKey(p.IdempotencyKey)
	}
	params.Context = ctx
	vs, err := c.sessions.New(params)
	if err != nil {
		return Created{}, mapError("create session", err)
	}
	out := Created{ID: vs.ID, ClientSecret: vs.ClientSecret, URL: vs.URL, Status: string(vs.Status),
		Type: string(vs.Type), Created: vs.Created, Livemode: vs.Livemode}
	if r := vs.LastResponse; r != nil && r.Header != nil {
		out.Replayed = r.Header.Get("Idempotent-Replayed") == "true"
	}
	return out, nil
}
