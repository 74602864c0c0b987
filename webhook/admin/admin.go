// Package admin is the small admin API, on its own listener and behind a
// bearer token: the business registers a session's contact and expected
// values before the user verifies, and ops read a session's state and decide
// reviews without the Temporal UI.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/mail"
	"regexp"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"identityverification/store"
	"identityverification/workflows"
)

// Contacts is where registrations go.
type Contacts interface {
	UpsertContact(ctx context.Context, c store.Contact) error
}

// Temporal is the part of the client the admin API uses.
type Temporal interface {
	QueryWorkflow(ctx context.Context, workflowID, runID, queryType string, args ...any) (converter.EncodedValue, error)
	UpdateWorkflow(ctx context.Context, options client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error)
}

// API serves /admin/sessions/{id}.
type API struct {
	Token    string // required bearer token
	Contacts Contacts
	Temporal Temporal
	Log      *slog.Logger
}

// Registration is the body of PUT /admin/sessions/{id}: personal data,
// stored in the database only.
type Registration struct {
	Email             string `json:"email"`
	FirstName         string `json:"first_name,omitempty"`
	LastName          string `json:"last_name,omitempty"`
	DOB               string `json:"dob,omitempty"` // YYYY-MM-DD
	ClientReferenceID string `json:"client_reference_id,omitempty"`
}

var sessionID = regexp.MustCompile(`^vs_[A-Za-z0-9_]{1,100}$`)

// Handler returns the routes.
func (a *API) Handler() http.Handler {
	r := mux.NewRouter()
	s := r.PathPrefix("/admin/sessions/{id}").Subrouter()
	s.HandleFunc("", a.register).Methods(http.MethodPut)
	s.HandleFunc("", a.state).Methods(http.MethodGet)
	s.HandleFunc("/review", a.review).Methods(http.MethodPost)
	r.Use(a.authenticate)
	return r
}

func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.Token)) != 1 {
			reply(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
			return
		}
		if !sessionID.MatchString(mux.Vars(r)["id"]) {
			reply(w, http.StatusBadRequest, map[string]string{"error": "invalid session id"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	var reg Registration
	if err := decode(r, &reg); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON"})
		return
	}
	if addr, err := mail.ParseAddress(reg.Email); err != nil || addr.Address != reg.Email {
		reply(w, http.StatusBadRequest, map[string]string{"error": "email must be a plain address"})
		return
	}
	if reg.DOB != "" {
		if _, err := time.Parse(time.DateOnly, reg.DOB); err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": "dob must be YYYY-MM-DD"})
			return
		}
	}
	id := mux.Vars(r)["id"]
	err := a.Contacts.UpsertContact(r.Context(), store.Contact{SessionID: id, Email: reg.Email, FirstName: reg.FirstName,
		LastName: reg.LastName, DOB: reg.DOB, ClientReferenceID: reg.ClientReferenceID})
	if err != nil {
		a.Log.Error("admin: register contact", "session_id", id, "error", err)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "could not store the registration; retry"})
		return
	}
	a.Log.Info("admin: contact registered", "session_id", id)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) state(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	v, err := a.Temporal.QueryWorkflow(ctx, workflows.WorkflowID(id), "", workflows.QueryState)
	var st workflows.State
	if err == nil {
		err = v.Get(&st)
	}
	if a.temporalError(w, id, err) {
		return
	}
	reply(w, http.StatusOK, st)
}

func (a *API) review(w http.ResponseWriter, r *http.Request) {
	var d workflows.ReviewDecision
	if err := decode(r, &d); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON"})
		return
	}
	id := mux.Vars(r)["id"]
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	h, err := a.Temporal.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: workflows.WorkflowID(id), UpdateName: workflows.UpdateReviewDecision,
		Args: []any{d}, WaitForStage: client.WorkflowUpdateStageCompleted})
	var st workflows.State
	if err == nil {
		err = h.Get(ctx, &st)
	}
	for _, refusal := range []error{workflows.ErrNoReviewOpen, workflows.ErrUnknownDecision, workflows.ErrNoReviewer} {
		if err != nil && strings.Contains(err.Error(), refusal.Error()) {
			reply(w, http.StatusConflict, map[string]string{"error": refusal.Error()})
			return
		}
	}
	if a.temporalError(w, id, err) {
		return
	}
	a.Log.Info("admin: review decided", "session_id", id, "decision", d.Decision, "reviewer", d.Reviewer)
	reply(w, http.StatusOK, st)
}

// temporalError answers for a failed Temporal call; false when err is nil.
func (a *API) temporalError(w http.ResponseWriter, id string, err error) bool {
	var notFound *serviceerror.NotFound
	switch {
	case err == nil:
		return false
	case errors.As(err, &notFound):
		reply(w, http.StatusNotFound, map[string]string{"error": "no workflow for this session"})
	default:
		a.Log.Error("admin: Temporal call failed", "session_id", id, "error", err)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "Temporal unavailable; retry"})
	}
	return true
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
