package admin

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"time"

	"go.temporal.io/sdk/client"

	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/workflows"
)

// NewSession is the body of POST /admin/sessions: the registration (personal
// data, stored in the database only) and how Stripe should verify.
type NewSession struct {
	Registration
	// Type is document (the default) or id_number.
	Type    string           `json:"type,omitempty"`
	Options *DocumentOptions `json:"options,omitempty"`
}

// DocumentOptions are Stripe's options for a document check.
type DocumentOptions struct {
	AllowedTypes          []string `json:"allowed_types,omitempty"` // driving_license, id_card, passport
	RequireIDNumber       bool     `json:"require_id_number,omitempty"`
	RequireLiveCapture    bool     `json:"require_live_capture,omitempty"`
	RequireMatchingSelfie bool     `json:"require_matching_selfie,omitempty"`
}

// Created is the answer to POST /admin/sessions. ClientSecret and URL are
// for the user's front end, answered once: never stored or logged.
type Created struct {
	SessionID         string `json:"session_id"`
	ClientSecret      string `json:"client_secret"`
	URL               string `json:"url"`
	ClientReferenceID string `json:"client_reference_id"`
	Status            string `json:"status"`
}

// opaqueRef is what a caller's client_reference_id must look like when it
// goes to Stripe: an opaque reference, not an email address or a name.
var opaqueRef = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

var documentTypes = []string{"driving_license", "id_card", "passport"}

func (n *NewSession) validate() error {
	if err := n.Registration.validate(); err != nil {
		return err
	}
	if n.ClientReferenceID != "" && !opaqueRef.MatchString(n.ClientReferenceID) {
		return errors.New("client_reference_id must be an opaque reference of 1 to 64 letters, digits, '_' or '-' (it is sent to Stripe: no personal data)")
	}
	if n.Type == "" {
		n.Type = "document"
	}
	if n.Type != "document" && n.Type != workflows.StripeSessionTypeIDNumber {
		return errors.New("type must be document or id_number")
	}
	if n.Options != nil {
		if n.Type != "document" {
			return errors.New("options apply to type document only")
		}
		for _, t := range n.Options.AllowedTypes {
			if !slices.Contains(documentTypes, t) {
				return errors.New("options.allowed_types must list driving_license, id_card or passport")
			}
		}
	}
	return nil
}

// keys derives the Stripe idempotency key and, when the caller gave none,
// the client_reference_id, from the authenticated principal and the
// Idempotency-Key header (or, without one, the canonical request), keyed
// with KeySecret so that neither reveals what it is derived from. A retry
// by the same caller gets the same key, and Stripe answers it with the
// session it made first; another caller's request, whatever its header,
// gets a key of its own, so Stripe never gives one caller the session of
// another.
func (a *API) keys(subject string, n NewSession, header string) (idem, ref string) {
	mac := func(parts ...string) string {
		h := hmac.New(sha256.New, []byte(cmp.Or(a.KeySecret, a.Token)))
		for _, p := range parts {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	if header != "" {
		idem = "admin-create-" + mac("idempotency-key", subject, header)
	} else {
		canonical, _ := json.Marshal(n) // fixed field order: the same request, the same bytes
		idem = "admin-create-" + mac("request", subject, string(canonical))
	}
	return idem, "ref_" + mac("client_reference_id", idem)[:24]
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	var n NewSession
	if err := decode(r, &n); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON"})
		return
	}
	if err := n.validate(); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	header := r.Header.Get("Idempotency-Key")
	if header != "" && !plainText(header, 200) {
		reply(w, http.StatusBadRequest, map[string]string{"error": "Idempotency-Key must be at most 200 characters of text"})
		return
	}
	if a.Stripe == nil {
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "session creation is not configured"})
		return
	}
	idem, ref := a.keys(principal(r.Context()).Subject, n, header)
	if n.ClientReferenceID != "" {
		ref = n.ClientReferenceID
	}
	p := stripeapi.CreateParams{Type: n.Type, ReturnURL: a.ReturnURL, ClientReferenceID: ref, IdempotencyKey: idem}
	if o := n.Options; o != nil {
		p.AllowedTypes, p.RequireIDNumber, p.RequireLiveCapture, p.RequireMatchingSelfie =
			o.AllowedTypes, o.RequireIDNumber, o.RequireLiveCapture, o.RequireMatchingSelfie
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	vs, err := a.Stripe.Create(ctx, p)
	if err != nil {
		// What Stripe or the transport said is for the log, not the
		// caller: a fixed answer per kind of failure.
		a.Log.Warn("admin: Stripe did not create the session", "error", err)
		switch {
		case errors.Is(err, stripeapi.ErrPermanent):
			reply(w, http.StatusBadGateway, map[string]string{"error": "Stripe refused to create the session; nothing was created (the service's log says why)"})
		case errors.Is(err, stripeapi.ErrUnauthorized):
			reply(w, http.StatusBadGateway, map[string]string{"error": "Stripe refused this service's API key (STRIPE_API_KEY): nothing was created; retry once it is mended"})
		default:
			reply(w, http.StatusServiceUnavailable, map[string]string{"error": "Stripe is unavailable; nothing was created; retry"})
		}
		return
	}
	if vs.Replayed {
		// Stripe answered from its idempotency cache: an earlier request
		// made the session. If that request canceled it (its registration
		// failed), the session is of no use any more.
		if status, err := a.Stripe.Status(ctx, vs.ID); err == nil && status == workflows.StripeStatusCanceled {
			reply(w, http.StatusConflict, map[string]string{"error": "the session this request made earlier was canceled at Stripe; retry with a new Idempotency-Key"})
			return
		}
	}
	// The session is this caller's own (the key is theirs): new, or made
	// by an earlier request of theirs with the same key. That one's
	// registration stands; a different one is refused, and the session's
	// secret and URL are not answered to it.
	err = a.Contacts.RegisterNewContact(ctx, store.Contact{SessionID: vs.ID, Email: n.Email, FirstName: n.FirstName,
		LastName: n.LastName, DOB: n.DOB, ClientReferenceID: ref}, a.auditRecord(r, store.AuditSessionRegister))
	if errors.Is(err, store.ErrRegisteredOtherwise) {
		a.audit(r, store.AuditSessionCreate, vs.ID, store.AuditRefused, "replayed with another registration")
		reply(w, http.StatusConflict, map[string]string{"error": "this Idempotency-Key made a session with another registration: nothing was changed; use a new Idempotency-Key for a new session"})
		return
	}
	if a.refusedRegistration(w, r, vs.ID, err) {
		return
	}
	if err != nil {
		a.Log.Error("admin: register the created session", "session_id", vs.ID, "error", err)
		a.cancelAtStripe(r.Context(), vs.ID)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "could not store the registration; the session was canceled at Stripe; retry with a new Idempotency-Key"})
		return
	}
	if err := a.start(ctx, vs); err != nil {
		// The session and its registration stand; retrying the same
		// request returns the same session and starts its workflow (so
		// does Stripe's own created event, through the webhook).
		a.Log.Error("admin: start the workflow of the created session", "session_id", vs.ID, "error", err)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "Temporal unavailable: the session's workflow did not start; retry the same request"})
		return
	}
	detail := "created"
	if vs.Replayed {
		detail = "replayed"
	}
	a.audit(r, store.AuditSessionCreate, vs.ID, store.AuditOK, detail)
	a.Log.Info("admin: session created", "session_id", vs.ID, "replayed", vs.Replayed)
	w.Header().Set("Cache-Control", "no-store")
	reply(w, http.StatusCreated, Created{SessionID: vs.ID, ClientSecret: vs.ClientSecret, URL: vs.URL,
		ClientReferenceID: ref, Status: vs.Status})
}

// start starts the session's workflow with the session's created event, as
// the webhook would deliver it: SignalWithStart, so an open run just takes
// the event, and the event's id makes a repeat a no-op.
func (a *API) start(ctx context.Context, vs stripeapi.Created) error {
	id := workflows.WorkflowID(vs.ID)
	ev := workflows.Event{ID: CreatedEventID(vs.ID), Type: workflows.EventCreated, Created: vs.Created,
		Livemode: vs.Livemode, SessionID: vs.ID, Status: vs.Status, SessionType: vs.Type}
	_, err := a.Temporal.SignalWithStartWorkflow(ctx, id, workflows.SignalEvent, ev,
		client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue, StaticSummary: "Stripe Identity session " + vs.ID},
		workflows.WorkflowName, workflows.Input{SessionID: vs.ID, Policy: a.Policy})
	return err
}

// CreatedEventID is the id of the created event the admin API delivers for
// a session it created (Stripe's own created event has an evt_ id).
func CreatedEventID(sessionID string) string { return "admin_created_" + sessionID }

// cancelAtStripe cancels a session that could not be registered, best
// effort: the request's own deadline may be spent, so it gets its own.
func (a *API) cancelAtStripe(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := a.Stripe.Cancel(ctx, id); err != nil {
		a.Log.Error("admin: cancel the unregistered session at Stripe", "session_id", id, "error", fmt.Sprint(err))
	}
}
