// Package testevent builds real-shaped, signed Stripe Identity webhook events
// offline (like `stripe trigger`, without a Stripe account), for the README's
// test command, the tests and load runs.
package testevent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	stripewebhook "github.com/stripe/stripe-go/v76/webhook"
)

// Options describe one event; zero values take sensible defaults.
type Options struct {
	// Type is the event type, in full (identity.verification_session.verified)
	// or short (verified).
	Type      string
	SessionID string // default: a random vs_...
	EventID   string // default: a random evt_...
	// Status of the session; default follows the type.
	Status string
	// ErrorCode and ErrorReason fill last_error. A requires_input event gets a
	// last_error unless NoLastError; NullCode sends "code": null.
	ErrorCode, ErrorReason string
	NullCode, NoLastError  bool
	APIVersion             string    // default 2023-10-16
	Created                time.Time // default now
	ClientReferenceID      string
}

const typePrefix = "identity.verification_session."

// statusFor is the session status an event of each type carries.
var statusFor = map[string]string{
	"created": "requires_input", "processing": "processing", "requires_input": "requires_input",
	"verified": "verified", "canceled": "canceled", "redacted": "verified",
}

// Build returns the JSON body of an event shaped like Stripe's (the shape of
// ../shared/fixtures/stripe).
func Build(o Options) ([]byte, error) {
	short := strings.TrimPrefix(o.Type, typePrefix)
	if short == "" {
		short = "verified"
	}
	status := o.Status
	if status == "" {
		s, ok := statusFor[short]
		if !ok {
			s = "requires_input"
		}
		status = s
	}
	if o.SessionID == "" {
		o.SessionID = "vs_" + RandomID(24)
	}
	if o.EventID == "" {
		o.EventID = "evt_" + RandomID(24)
	}
	if o.APIVersion == "" {
		o.APIVersion = "2023-10-16"
	}
	if o.Created.IsZero() {
		o.Created = time.Now()
	}
	var lastError any
	if short == "requires_input" && !o.NoLastError || o.ErrorCode != "" || o.NullCode {
		code := any(o.ErrorCode)
		if o.NullCode || o.ErrorCode == "" {
			code = nil
		}
		reason := o.ErrorReason
		if reason == "" {
			reason = "The document could not be verified."
		}
		lastError = map[string]any{"code": code, "reason": reason}
	}
	var redaction any
	if short == "redacted" {
		redaction = map[string]any{"status": "redacted"}
	}
	var ref any
	if o.ClientReferenceID != "" {
		ref = o.ClientReferenceID
	}
	ev := map[string]any{
		"id": o.EventID, "object": "event", "api_version": o.APIVersion, "created": o.Created.Unix(),
		"livemode": false, "pending_webhooks": 1, "type": typePrefix + short,
		"request": map[string]any{"id": nil, "idempotency_key": nil},
		"data": map[string]any{"object": map[string]any{
			"id": o.SessionID, "object": "identity.verification_session", "client_reference_id": ref,
			"client_secret": nil, "created": o.Created.Unix() - 60, "last_error": lastError,
			"last_verification_report": "vr_" + RandomID(24), "livemode": false, "metadata": map[string]any{},
			"options":   map[string]any{"document": map[string]any{"require_matching_selfie": true}},
			"redaction": redaction, "status": status, "type": "document", "url": nil,
		}},
	}
	return json.MarshalIndent(ev, "", "  ")
}

// Sign returns a Stripe-Signature header for payload, as Stripe would send it.
func Sign(payload []byte, secret string, at time.Time) string {
	return stripewebhook.GenerateTestSignedPayload(&stripewebhook.UnsignedPayload{
		Payload: payload, Secret: secret, Timestamp: at}).Header
}

// Send POSTs a signed payload to url and returns the status and body.
func Send(ctx context.Context, client *http.Client, url, secret string, payload []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", Sign(payload, secret, time.Now()))
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("testevent: post: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), nil
}

// RandomID returns n random lower-case hex characters.
func RandomID(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
