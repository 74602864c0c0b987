package webhook

import (
	"encoding/json"
	"errors"
	"strings"

	"identityverification/workflows"
)

// stripeEvent is the part of a Stripe event this service reads. These fields
// are stable across Stripe API versions, so an event of any version decodes.
type stripeEvent struct {
	ID         string `json:"id"`
	Object     string `json:"object"`
	Type       string `json:"type"`
	Created    int64  `json:"created"`
	Livemode   bool   `json:"livemode"`
	APIVersion string `json:"api_version"`
	Data       struct {
		Object struct {
			ID        string         `json:"id"`
			Object    string         `json:"object"`
			Status    string         `json:"status"`
			Type      string         `json:"type"` // document, id_number
			LastError *stripeLastErr `json:"last_error"`
		} `json:"object"`
	} `json:"data"`
}

type stripeLastErr struct {
	Code   *string `json:"code"`
	Reason *string `json:"reason"`
}

// Reasons a request is refused; they label the metrics and are the only
// detail a 400 answers with.
const (
	reasonMissingSignature = "missing_signature"
	reasonBadHeader        = "malformed_signature_header"
	reasonBadSignature     = "bad_signature"
	reasonStale            = "timestamp_out_of_tolerance"
	reasonInvalidJSON      = "invalid_json"
	reasonMissingID        = "missing_event_id"
	reasonMissingSession   = "missing_session_id"
	reasonTooLarge         = "body_too_large"
	reasonReadFailed       = "body_read_failed"
	reasonTemporal         = "temporal_unavailable"
)

var (
	errMissingID      = errors.New(reasonMissingID)
	errMissingSession = errors.New(reasonMissingSession)
)

// decode parses a verified body. For identity session events it returns the
// signal payload; identity is false for other event types.
func decode(body []byte) (ev stripeEvent, sig workflows.Event, identity bool, err error) {
	if err := json.Unmarshal(body, &ev); err != nil {
		return ev, sig, false, err
	}
	if ev.ID == "" || ev.Type == "" {
		return ev, sig, false, errMissingID
	}
	if !strings.HasPrefix(ev.Type, workflows.EventTypePrefix) {
		return ev, sig, false, nil
	}
	o := ev.Data.Object
	if o.ID == "" || (o.Object != "" && o.Object != workflows.StripeObjectVerifySession) {
		return ev, sig, true, errMissingSession
	}
	sig = workflows.Event{ID: ev.ID, Type: ev.Type, Created: ev.Created, Livemode: ev.Livemode,
		SessionID: o.ID, Status: o.Status, APIVersion: ev.APIVersion, SessionType: truncate(o.Type, 40)}
	if le := o.LastError; le != nil {
		sig.HasLastError = true
		if le.Code != nil {
			sig.LastErrorCode = *le.Code
		}
		if le.Reason != nil {
			sig.LastErrorReason = truncate(*le.Reason, 300)
		}
	}
	return ev, sig, true, nil
}

// truncate bounds a free-text field that travels into workflow history.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
