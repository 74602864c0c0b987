// Package admin is the small admin API, on its own listener and behind
// bearer credentials (ADMIN_TOKEN, a machine's full-scope token, or scoped
// API keys): the business creates a session (or registers the contact and
// expected values of one it created itself) before the user verifies, and
// ops list open reviews, read a session's state, decide reviews and read
// the audit log without the Temporal UI. Every change is an audit row.
package admin

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"identityverification/access"
	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/workflows"
)

// Contacts is where registrations go: stored with their audit row in one
// transaction, refused once the session's values are frozen, and for a
// session a create request made, refused when it holds another one.
type Contacts interface {
	RegisterContact(ctx context.Context, c store.Contact, audit *store.AuditRecord) ([]string, error)
	RegisterNewContact(ctx context.Context, c store.Contact, audit *store.AuditRecord) error
}

// Temporal is the part of the client the admin API uses.
type Temporal interface {
	QueryWorkflow(ctx context.Context, workflowID, runID, queryType string, args ...any) (converter.EncodedValue, error)
	UpdateWorkflow(ctx context.Context, options client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error)
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	NewWithStartWorkflowOperation(options client.StartWorkflowOptions, workflow any, args ...any) client.WithStartWorkflowOperation
	UpdateWithStartWorkflow(ctx context.Context, options client.UpdateWithStartWorkflowOptions) (client.WorkflowUpdateHandle, error)
	SignalWithStartWorkflow(ctx context.Context, workflowID, signalName string, signalArg any,
		options client.StartWorkflowOptions, workflow any, workflowArgs ...any) (client.WorkflowRun, error)
}

// Reviews lists the open review cases.
type Reviews interface {
	OpenReviews(ctx context.Context, limit int) ([]store.OpenReviewCase, error)
}

// Stripe creates VerificationSessions (and cancels one that could not be
// registered).
type Stripe interface {
	Create(ctx context.Context, p stripeapi.CreateParams) (stripeapi.Created, error)
	Cancel(ctx context.Context, sessionID string) error
	Status(ctx context.Context, sessionID string) (string, error)
}

// API serves /admin/sessions, /admin/sessions/{id}, /admin/reviews and
// /admin/audit.
type API struct {
	// Token is ADMIN_TOKEN, a machine's credential with every scope; empty:
	// only API keys.
	Token string
	// Keys are the scoped API keys; Throttle counts failed
	// authentications per source (nil: none counted).
	Keys     Keys
	Throttle *access.Throttle
	// Proxies are the trusted proxies in front of the listener
	// (TRUSTED_PROXIES): whose X-Forwarded-For names the caller's address.
	Proxies access.Proxies
	// Audit is the audit log; nil writes none.
	Audit Audit
	// Vouchers vouch for the principal of each decision (the store).
	Vouchers Vouchers
	Contacts Contacts
	// KeySecret keys the idempotency keys and client references derived
	// from a create request (ADMIN_TOKEN, or another secret every replica
	// shares).
	KeySecret string
	Reviews   Reviews
	// Stripe and ReturnURL serve POST /admin/sessions.
	Stripe    Stripe
	ReturnURL string
	Temporal  Temporal
	// Now is the clock for review ages; nil is time.Now.
	Now func() time.Time
	// Policy starts a new run when a decision comes for a session whose run
	// has closed (an operator terminated it): the run restores the stored
	// state, open review included, and takes the decision.
	Policy workflows.Policy
	Log    *slog.Logger
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

// Bounds of the registration's fields (personal data, stored as given).
const (
	maxEmailLen = 254
	maxNameLen  = 100
	maxRefLen   = 200
)

// validate checks a registration field by field; the message names the
// field, never its value.
func (reg Registration) validate() error {
	if len(reg.Email) > maxEmailLen {
		return errors.New("email must be a plain address")
	}
	if addr, err := mail.ParseAddress(reg.Email); err != nil || addr.Address != reg.Email || !plainText(reg.Email, maxEmailLen) {
		return errors.New("email must be a plain address")
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{{"first_name", reg.FirstName, maxNameLen}, {"last_name", reg.LastName, maxNameLen},
		{"client_reference_id", reg.ClientReferenceID, maxRefLen}} {
		if !plainText(f.value, f.max) {
			return fmt.Errorf("%s must be at most %d characters of text, without control characters", f.name, f.max)
		}
	}
	if reg.DOB != "" {
		if _, err := time.Parse(time.DateOnly, reg.DOB); err != nil {
			return errors.New("dob must be YYYY-MM-DD")
		}
	}
	return nil
}

// plainText reports whether s is valid UTF-8 of at most max characters with
// nothing unprintable (a NUL byte, a line break, U+2028, a bidi override).
func plainText(s string, max int) bool {
	return utf8.ValidString(s) && utf8.RuneCountInString(s) <= max &&
		!strings.ContainsFunc(s, workflows.Unprintable)
}

// Handler returns the routes. Authentication comes before routing: a
// caller without the token gets the same 401 for every path and method, so
// the answer tells nothing about which routes exist.
//
// Each route needs a scope: a credential without it gets 403.
func (a *API) Handler() http.Handler {
	r := mux.NewRouter()
	r.Handle("/admin/sessions", a.need(access.ScopeSessionsCreate, store.AuditSessionCreate,
		http.HandlerFunc(a.create))).Methods(http.MethodPost)
	r.Handle("/admin/reviews", a.need(access.ScopeSessionsRead, store.AuditReviewsList,
		http.HandlerFunc(a.reviews))).Methods(http.MethodGet)
	r.Handle("/admin/audit", a.need(access.ScopeAuditRead, store.AuditAuditRead,
		http.HandlerFunc(a.auditLog))).Methods(http.MethodGet)
	r.Handle("/admin/sessions/{id}", a.need(access.ScopeSessionsRegister, store.AuditSessionRegister,
		validSessionID(a.register))).Methods(http.MethodPut)
	r.Handle("/admin/sessions/{id}", a.need(access.ScopeSessionsRead, store.AuditSessionRead,
		validSessionID(a.state))).Methods(http.MethodGet)
	r.Handle("/admin/sessions/{id}/review", a.need(access.ScopeReviewsDecide, store.AuditReviewDecide,
		validSessionID(a.review))).Methods(http.MethodPost)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusNotFound, map[string]string{"error": "no such route"})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	})
	return a.authenticate(r)
}

// refusedRegistration answers 409 for a registration the store refused
// (a redacted session, frozen values), with an audit row; false otherwise.
func (a *API) refusedRegistration(w http.ResponseWriter, r *http.Request, id string, err error) bool {
	var frozen *store.FrozenError
	switch {
	case errors.Is(err, store.ErrRedacted):
		a.audit(r, store.AuditSessionRegister, id, store.AuditRefused, "redacted")
		reply(w, http.StatusConflict, map[string]string{"error": "the session was redacted: its personal data is not kept any more"})
	case errors.As(err, &frozen):
		a.audit(r, store.AuditSessionRegister, id, store.AuditRefused, "frozen: would change "+strings.Join(frozen.Fields, ","))
		reply(w, http.StatusConflict, map[string]string{"error": frozen.Error()})
	default:
		return false
	}
	return true
}

// validSessionID refuses a path whose {id} is not a VerificationSession id.
func validSessionID(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	if err := reg.validate(); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	id := mux.Vars(r)["id"]
	_, err := a.Contacts.RegisterContact(r.Context(), store.Contact{SessionID: id, Email: reg.Email, FirstName: reg.FirstName,
		LastName: reg.LastName, DOB: reg.DOB, ClientReferenceID: reg.ClientReferenceID}, a.auditRecord(r, store.AuditSessionRegister))
	if a.refusedRegistration(w, r, id, err) {
		return
	}
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
	reply(w, http.StatusOK, withApprovals(st))
}

// StateAnswer is the state as the admin API answers it: the workflow's
// state and, while a review waits for more approvals, what it has ("1 of
// 2 approvals, by ann@example.com").
type StateAnswer struct {
	workflows.State
	ApprovalStatus string `json:"approval_status,omitempty"`
}

func withApprovals(st workflows.State) StateAnswer {
	return StateAnswer{State: st, ApprovalStatus: ApprovalStatus(st.Review)}
}

// ApprovalStatus says how far an open review's approvals are, from the
// workflow's state: "1 of 2 approvals, by ann@example.com" (empty for a
// review that needs one approval and has none, or is decided).
func ApprovalStatus(rv *workflows.Review) string {
	if !rv.Open() {
		return ""
	}
	need := max(rv.ApprovalsNeeded, 1)
	if need == 1 && len(rv.Approvals) == 0 {
		return ""
	}
	s := fmt.Sprintf("%d of %d approvals", len(rv.Approvals), need)
	if len(rv.Approvals) > 0 {
		var by []string
		for _, ap := range rv.Approvals {
			by = append(by, cmp.Or(ap.Reviewer, ap.Subject))
		}
		s += ", by " + strings.Join(by, ", ")
	}
	return s
}

func (a *API) review(w http.ResponseWriter, r *http.Request) {
	var d workflows.ReviewDecision
	if err := decode(r, &d); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON"})
		return
	}
	// A reviewer that cannot be stored (control characters, too long) or a
	// decision with control characters is bad input: 400 before Temporal
	// sees it. A missing reviewer or an unknown decision is refused by the
	// workflow's validator: 409, as before, with its reason.
	if d.Reviewer != "" && !workflows.ValidReviewer(d.Reviewer) {
		reply(w, http.StatusBadRequest, map[string]string{"error": workflows.ErrBadReviewer.Error()})
		return
	}
	if !plainText(d.Decision, 32) {
		reply(w, http.StatusBadRequest, map[string]string{"error": workflows.ErrUnknownDecision.Error()})
		return
	}
	// Four eyes counts the authenticated principal, never what the body
	// says: the reviewer is the machine's word, the subject its credential.
	d.Subject = principal(r.Context()).Subject
	id := mux.Vars(r)["id"]
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	key := r.Header.Get("Idempotency-Key")
	if key != "" && !plainText(key, 200) {
		reply(w, http.StatusBadRequest, map[string]string{"error": "Idempotency-Key must be at most 200 characters of text"})
		return
	}
	st, err := a.decide(ctx, id, key, d)
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.Type() == workflows.ErrTypeReviewRefused {
		a.audit(r, store.AuditReviewDecide, id, store.AuditRefused, d.Decision+": "+appErr.Message())
		reply(w, http.StatusConflict, map[string]string{"error": appErr.Message()})
		return
	}
	if a.temporalError(w, id, err) {
		a.audit(r, store.AuditReviewDecide, id, store.AuditFailed, d.Decision)
		return
	}
	a.audit(r, store.AuditReviewDecide, id, store.AuditOK, d.Decision+" as "+d.Reviewer)
	a.Log.Info("admin: review decided", "session_id", id, "decision", d.Decision, "subject", d.Subject)
	reply(w, http.StatusOK, withApprovals(st))
}

// decide sends the decision to the session's workflow and waits until it is
// applied. When the workflow's last run has closed (an operator terminated
// it), a new run starts with the decision; it restores the stored state.
//
// updateID, when the client sent an Idempotency-Key, makes a retried request
// (after a timeout) wait for the same decision instead of being refused.
func (a *API) decide(ctx context.Context, id, updateID string, d workflows.ReviewDecision) (workflows.State, error) {
	return Decide(ctx, a.Temporal, a.Vouchers, a.Policy, id, updateID, d)
}

// ErrCompleted refuses a decision for a session whose workflow completed.
var ErrCompleted = errors.New("the session's workflow has completed: no review is open")

// Vouchers records that a decision's principal was authenticated, and reads
// a session's review case (the store).
type Vouchers interface {
	VouchDecision(ctx context.Context, v store.DecisionVoucher) error
	Review(ctx context.Context, sessionID string) (store.ReviewCase, error)
}

// randomID is 128 random bits, hex.
func randomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// decisionUpdateID is the workflow Update's id for a decision that came
// with an Idempotency-Key: a hash of the principal and the key, so the key
// is the principal's alone (and is not kept as the caller wrote it).
func decisionUpdateID(subject, key string) string {
	h := sha256.Sum256([]byte(subject + "\x00" + key))
	return "decision-" + hex.EncodeToString(h[:])
}

// Decider is the part of the Temporal client a review decision uses.
type Decider interface {
	UpdateWorkflow(ctx context.Context, options client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error)
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	NewWithStartWorkflowOperation(options client.StartWorkflowOptions, workflow any, args ...any) client.WithStartWorkflowOperation
	UpdateWithStartWorkflow(ctx context.Context, options client.UpdateWithStartWorkflowOptions) (client.WorkflowUpdateHandle, error)
}

// Decide sends a review decision to the session's workflow and waits until
// it is applied; the admin API and the review desk both decide through it.
// When the workflow's last run has closed (an operator terminated it), a new
// run starts with the decision (policy for it) and restores the stored state.
// updateID, when not empty (the caller's Idempotency-Key), makes a retry
// wait for the same decision: it is scoped to d.Subject, so one
// principal's retry is never answered with another's outcome, nor does
// another's decision under the same key go unapplied.
func Decide(ctx context.Context, c Decider, v Vouchers, policy workflows.Policy, id, updateID string, d workflows.ReviewDecision) (workflows.State, error) {
	if updateID != "" {
		updateID = decisionUpdateID(d.Subject, updateID)
	}
	// The caller authenticated d.Subject: vouch for it, so the workflow
	// takes the decision (it refuses one nobody vouched for).
	d.Voucher = randomID()
	if err := v.VouchDecision(ctx, store.DecisionVoucher{ID: d.Voucher, SessionID: id, Subject: d.Subject, Decision: d.Decision}); err != nil {
		return workflows.State{}, err
	}
	update := client.UpdateWorkflowOptions{UpdateID: updateID, WorkflowID: workflows.WorkflowID(id),
		UpdateName: workflows.UpdateReviewDecision, Args: []any{d}, WaitForStage: client.WorkflowUpdateStageCompleted}
	h, err := c.UpdateWorkflow(ctx, update)
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		desc, derr := c.DescribeWorkflowExecution(ctx, workflows.WorkflowID(id), "")
		if derr != nil {
			return workflows.State{}, derr // NotFound: no workflow ever ran for this session
		}
		if desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			// It ended by itself: the session is final and no review is
			// open. Only a run cut short (terminated, timed out) may have
			// left one, which a new run restores.
			return workflows.State{}, temporal.NewApplicationError(ErrCompleted.Error(), workflows.ErrTypeReviewRefused)
		}
		// A decision starts no run for a session without an open review:
		// it would restart a run an operator ended for nothing.
		if rc, err := v.Review(ctx, id); errors.Is(err, store.ErrNotFound) || (err == nil && rc.Status != store.ReviewOpen) {
			return workflows.State{}, temporal.NewApplicationError(workflows.ErrNoReviewOpen.Error(), workflows.ErrTypeReviewRefused)
		} else if err != nil {
			return workflows.State{}, err
		}
		start := c.NewWithStartWorkflowOperation(client.StartWorkflowOptions{
			ID: workflows.WorkflowID(id), TaskQueue: workflows.TaskQueue,
			WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		}, workflows.WorkflowName, workflows.Input{SessionID: id, Policy: policy})
		h, err = c.UpdateWithStartWorkflow(ctx, client.UpdateWithStartWorkflowOptions{
			StartWorkflowOperation: start, UpdateOptions: update})
	}
	var st workflows.State
	if err == nil {
		err = h.Get(ctx, &st)
	}
	return st, err
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
