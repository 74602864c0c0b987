// Package webhook receives Stripe's webhook deliveries and moves each
// Identity VerificationSession event into its Temporal workflow. Its one job
// on the request path: verify, decode, SignalWithStart, answer. It answers 2xx
// only once Temporal holds the event, so Stripe retries anything else.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	stripewebhook "github.com/stripe/stripe-go/v76/webhook"
	"go.temporal.io/sdk/client"

	"identityverification/workflows"
)

// Signaler is the part of the Temporal client the webhook uses.
type Signaler interface {
	SignalWithStartWorkflow(ctx context.Context, workflowID, signalName string, signalArg any,
		options client.StartWorkflowOptions, workflow any, workflowArgs ...any) (client.WorkflowRun, error)
}

// SupportedAPIVersion is the Stripe API version stripe-go v76 speaks.
const SupportedAPIVersion = "2023-10-16"

// Handler serves POST /webhooks/stripe.
type Handler struct {
	Temporal Signaler
	// Secrets are the endpoint's signing secrets; any one verifies (rotation).
	Secrets   []string
	Tolerance time.Duration // on the signature timestamp, both directions
	MaxBody   int64
	// SignalTimeout bounds the Temporal call, well under Stripe's own timeout.
	SignalTimeout time.Duration
	Policy        workflows.Policy // snapshotted into each new workflow
	Metrics       *Metrics
	// Ready, when set, lets the handler answer 503 at once while Temporal
	// is known to be down, and learns of a failed signal.
	Ready *Readiness
	Log   *slog.Logger
	Now   func() time.Time // the clock for timestamp checks
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	outcome, reason, code := h.serve(r)
	h.Metrics.observe(outcome, reason, time.Since(start))
	writeJSON(w, code, outcome, reason)
}

// Outcomes label the request metrics.
const (
	outcomeAccepted = "accepted" // signaled into Temporal
	outcomeIgnored  = "ignored"  // a type this service does not handle
	outcomeRejected = "rejected" // 4xx
	outcomeFailed   = "failed"   // 5xx, Stripe retries
)

func (h *Handler) serve(r *http.Request) (outcome, reason string, code int) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, h.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.Log.Warn("webhook refused", "reason", reasonTooLarge, "limit", h.MaxBody)
			return outcomeRejected, reasonTooLarge, http.StatusRequestEntityTooLarge
		}
		h.Log.Warn("webhook refused", "reason", reasonReadFailed)
		return outcomeRejected, reasonReadFailed, http.StatusBadRequest
	}
	if reason := h.verify(body, r.Header.Get("Stripe-Signature")); reason != "" {
		h.Log.Warn("webhook refused", "reason", reason, "bytes", len(body))
		return outcomeRejected, reason, http.StatusBadRequest
	}
	raw, ev, identity, err := decode(body)
	log := h.Log.With("event_id", raw.ID, "type", raw.Type)
	switch {
	case errors.Is(err, errMissingID), errors.Is(err, errMissingSession):
		log.Warn("webhook refused", "reason", err.Error())
		return outcomeRejected, err.Error(), http.StatusBadRequest
	case err != nil:
		log.Warn("webhook refused", "reason", reasonInvalidJSON)
		return outcomeRejected, reasonInvalidJSON, http.StatusBadRequest
	}
	if raw.APIVersion != SupportedAPIVersion {
		h.Metrics.versionMismatch.WithLabelValues(apiVersionLabel(raw.APIVersion)).Inc()
		log.Warn("event of another Stripe API version accepted; create the endpoint with "+SupportedAPIVersion,
			"api_version", raw.APIVersion)
	}
	if !identity {
		h.Metrics.unhandled.Inc()
		log.Info("event type not handled")
		return outcomeIgnored, "", http.StatusOK
	}
	log = log.With("session_id", ev.SessionID)

	if h.Ready != nil && h.Ready.Down() {
		log.Warn("Temporal is down; Stripe will retry")
		return outcomeFailed, reasonTemporal, http.StatusServiceUnavailable
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.SignalTimeout)
	defer cancel()
	if h.Ready != nil {
		go func(lost <-chan struct{}) {
			select {
			case <-lost:
				cancel()
			case <-ctx.Done():
			}
		}(h.Ready.Lost())
	}
	if err := Deliver(ctx, h.Temporal, ev, h.Policy); err != nil {
		if h.Ready != nil {
			h.Ready.Suspect()
		}
		log.Error("could not hand the event to Temporal; Stripe will retry", "error", err)
		return outcomeFailed, reasonTemporal, http.StatusServiceUnavailable
	}
	if h.Ready != nil {
		h.Ready.Answered()
	}
	log.Info("event signaled", "status", ev.Status)
	return outcomeAccepted, "", http.StatusOK
}

// verify checks the Stripe-Signature header against each secret with
// stripe-go and the timestamp against the tolerance in both directions
// (stripe-go only rejects old ones). It returns a refusal reason or "".
func (h *Handler) verify(body []byte, header string) string {
	if header == "" {
		return reasonMissingSignature
	}
	ts, ok := parseSignatureHeader(header)
	if !ok {
		return reasonBadHeader
	}
	verified := false
	for _, secret := range h.Secrets {
		err := stripewebhook.ValidatePayloadIgnoringTolerance(body, header, secret)
		if err == nil {
			verified = true
			break
		}
		if errors.Is(err, stripewebhook.ErrInvalidHeader) || errors.Is(err, stripewebhook.ErrNotSigned) {
			return reasonBadHeader
		}
	}
	if !verified {
		return reasonBadSignature
	}
	if skew := h.Now().Sub(ts); skew > h.Tolerance || skew < -h.Tolerance {
		return reasonStale
	}
	return ""
}

// parseSignatureHeader reads "t=...,v1=...,v1=...": ok is false unless it has
// a numeric timestamp and at least one v1 signature.
func parseSignatureHeader(header string) (ts time.Time, ok bool) {
	var hasTS, hasV1 bool
	for part := range strings.SplitSeq(header, ",") {
		if v, found := strings.CutPrefix(part, "t="); found {
			n, err := strconv.ParseInt(v, 10, 64)
			ts, hasTS = time.Unix(n, 0), err == nil
		}
		hasV1 = hasV1 || strings.HasPrefix(part, "v1=")
	}
	return ts, hasTS && hasV1
}

// apiVersionShape is a Stripe API version such as 2024-09-30.acacia.
var apiVersionShape = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(\.[a-z]{1,20})?$`)

// apiVersionLabel keeps the metric's label set small and safe.
func apiVersionLabel(v string) string {
	if !apiVersionShape.MatchString(v) {
		return "other"
	}
	return v
}

func writeJSON(w http.ResponseWriter, code int, outcome, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body := map[string]string{"status": outcome}
	if reason != "" {
		body["error"] = reason
	}
	json.NewEncoder(w).Encode(body)
}
