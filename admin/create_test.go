package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"identityverification/access"
	"identityverification/admin"
	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/workflows"
)

// fakeStripe records creates and cancels and answers with err when set.
type fakeStripe struct {
	creates  []stripeapi.CreateParams
	canceled []string
	err      error
	replayed bool // answers as Stripe's idempotency cache does
}

func (f *fakeStripe) Status(_ context.Context, id string) (string, error) {
	if slices.Contains(f.canceled, id) {
		return "canceled", nil
	}
	return "requires_input", nil
}

func (f *fakeStripe) Create(_ context.Context, p stripeapi.CreateParams) (stripeapi.Created, error) {
	f.creates = append(f.creates, p)
	if f.err != nil {
		return stripeapi.Created{}, f.err
	}
	return stripeapi.Created{ID: "vs_new1", ClientSecret: "vs_new1_secret_XYZ", URL: "https://verify.stripe.com/start/XYZ",
		Status: "requires_input", Type: "document", Created: 1700000000, Replayed: f.replayed}, nil
}

func (f *fakeStripe) Cancel(_ context.Context, id string) error {
	f.canceled = append(f.canceled, id)
	return nil
}

// fakeTemporal records SignalWithStart; the rest of the interface is unused.
type fakeTemporal struct {
	admin.Temporal
	started []workflows.Event
	ids     []string
	err     error
}

func (f *fakeTemporal) SignalWithStartWorkflow(_ context.Context, id, signal string, arg any,
	_ client.StartWorkflowOptions, _ any, args ...any) (client.WorkflowRun, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.ids = append(f.ids, id)
	f.started = append(f.started, arg.(workflows.Event))
	return nil, nil
}

// failingContacts fails every write.
type failingContacts struct{}

func (failingContacts) RegisterContact(context.Context, store.Contact, *store.AuditRecord) ([]string, error) {
	return nil, errors.New("database down")
}

func (failingContacts) RegisterNewContact(context.Context, store.Contact, *store.AuditRecord) error {
	return errors.New("database down")
}

const newSession = `{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace","dob":"1815-12-10"}`

func newAPI(c admin.Contacts, s *fakeStripe, tc *fakeTemporal, logs io.Writer) *admin.API {
	return &admin.API{Token: "tok", Contacts: c, Stripe: s, Temporal: tc, ReturnURL: "https://shop.example.com/done",
		Log: slog.New(slog.NewTextHandler(logs, nil))}
}

func send(api *admin.API, method, path, body string, header map[string]string) (int, []byte) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func TestCreatingASessionRegistersItStartsItsWorkflowAndAnswersTheSecretOnce(t *testing.T) {
	c, s, tc, logs := &contacts{redacted: map[string]bool{}}, &fakeStripe{}, &fakeTemporal{}, &bytes.Buffer{}
	api := newAPI(c, s, tc, logs)
	code, body := send(api, http.MethodPost, "/admin/sessions", newSession, nil)
	var got admin.Created
	json.Unmarshal(body, &got)
	if code != http.StatusCreated || got.SessionID != "vs_new1" || got.ClientSecret != "vs_new1_secret_XYZ" ||
		got.URL != "https://verify.stripe.com/start/XYZ" || !strings.HasPrefix(got.ClientReferenceID, "ref_") {
		t.Fatalf("got %d %s", code, body)
	}
	if len(s.creates) != 1 {
		t.Fatalf("%d creates", len(s.creates))
	}
	p := s.creates[0]
	if p.Type != "document" || p.ReturnURL != "https://shop.example.com/done" || p.ClientReferenceID != got.ClientReferenceID ||
		!strings.HasPrefix(p.IdempotencyKey, "admin-create-") {
		t.Errorf("create params = %+v", p)
	}
	for _, pii := range []string{"ada", "Ada", "Lovelace", "1815"} {
		if strings.Contains(p.ClientReferenceID, pii) || strings.Contains(p.IdempotencyKey, pii) {
			t.Errorf("reference %q or key %q holds personal data", p.ClientReferenceID, p.IdempotencyKey)
		}
	}
	want := store.Contact{SessionID: "vs_new1", Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace",
		DOB: "1815-12-10", ClientReferenceID: got.ClientReferenceID}
	if len(c.stored) != 1 || c.stored[0] != want {
		t.Errorf("stored %+v; want %+v", c.stored, want)
	}
	if len(tc.started) != 1 || tc.ids[0] != workflows.WorkflowID("vs_new1") || tc.started[0].Type != workflows.EventCreated ||
		tc.started[0].SessionID != "vs_new1" || tc.started[0].Status != "requires_input" {
		t.Errorf("workflow starts %v %+v", tc.ids, tc.started)
	}
	if strings.Contains(logs.String(), "secret_XYZ") || strings.Contains(logs.String(), "start/XYZ") {
		t.Errorf("the client secret or URL was logged: %s", logs)
	}

	// A retry of the same request sends the same idempotency key and reference.
	send(api, http.MethodPost, "/admin/sessions", newSession, nil)
	if s.creates[1].IdempotencyKey != p.IdempotencyKey || s.creates[1].ClientReferenceID != p.ClientReferenceID {
		t.Errorf("retry sent %+v; want the key and reference of %+v", s.creates[1], p)
	}
	// Another request, another key; with the caller's Idempotency-Key, the
	// header makes the key (hidden: it is the caller's own text).
	send(api, http.MethodPost, "/admin/sessions", `{"email":"bob@example.com"}`, nil)
	for range 2 {
		send(api, http.MethodPost, "/admin/sessions", `{"email":"bob@example.com"}`, map[string]string{"Idempotency-Key": "order-42"})
	}
	if k := s.creates[3].IdempotencyKey; s.creates[2].IdempotencyKey == p.IdempotencyKey || k == s.creates[2].IdempotencyKey ||
		s.creates[4].IdempotencyKey != k || !strings.HasPrefix(k, "admin-create-") || strings.Contains(k, "order-42") {
		t.Errorf("keys %q %q %q", s.creates[2].IdempotencyKey, k, s.creates[4].IdempotencyKey)
	}
}

func TestACreateRequestIsValidatedBeforeStripeIsCalled(t *testing.T) {
	for _, body := range []string{
		`{"email":"not an address"}`,
		`{"email":"ada@example.com","client_reference_id":"ada@example.com"}`,
		`{"email":"ada@example.com","type":"selfie"}`,
		`{"email":"ada@example.com","type":"id_number","options":{"require_matching_selfie":true}}`,
		`{"email":"ada@example.com","options":{"allowed_types":["library_card"]}}`,
		`{"email":"ada@example.com","unknown":1}`,
	} {
		s := &fakeStripe{}
		code, out := send(newAPI(&contacts{}, s, &fakeTemporal{}, io.Discard), http.MethodPost, "/admin/sessions", body, nil)
		if code != http.StatusBadRequest || len(s.creates) != 0 {
			t.Errorf("%s: %d %s, %d creates; want 400 and none", body, code, out, len(s.creates))
		}
	}
}

func TestAStripeFailureLeavesNothingBehind(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"refused", fmt.Errorf("%w: create session: HTTP 400 parameter_invalid_empty", stripeapi.ErrPermanent), http.StatusBadGateway},
		{"unavailable", errors.New("stripe: create session: Post \"https://10.1.2.3/v1/identity/verification_sessions\": dial tcp: HTTP 500"),
			http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, tmp, logs := &contacts{}, &fakeTemporal{}, &bytes.Buffer{}
			code, body := send(newAPI(c, &fakeStripe{err: tc.err}, tmp, logs), http.MethodPost, "/admin/sessions", newSession, nil)
			var out map[string]string
			json.Unmarshal(body, &out)
			if code != tc.want || !strings.Contains(out["error"], "Stripe") {
				t.Errorf("got %d %s; want %d naming Stripe", code, body, tc.want)
			}
			// What Stripe or the transport said goes to the log, not the caller.
			for _, internal := range []string{"parameter_invalid", "HTTP", "10.1.2.3", "dial"} {
				if strings.Contains(string(body), internal) {
					t.Errorf("the answer %s shows %q", body, internal)
				}
			}
			if !strings.Contains(logs.String(), "HTTP") {
				t.Errorf("the log lacks Stripe's error: %s", logs)
			}
			if len(c.stored) != 0 || len(tmp.started) != 0 {
				t.Errorf("stored %d, started %d; want nothing", len(c.stored), len(tmp.started))
			}
		})
	}
}

func TestASessionThatCannotBeStoredIsCanceledAtStripe(t *testing.T) {
	s, tmp := &fakeStripe{}, &fakeTemporal{}
	code, body := send(newAPI(failingContacts{}, s, tmp, io.Discard), http.MethodPost, "/admin/sessions", newSession, nil)
	if code != http.StatusServiceUnavailable || strings.Contains(string(body), "secret") {
		t.Errorf("got %d %s; want 503 without the secret", code, body)
	}
	if len(s.canceled) != 1 || s.canceled[0] != "vs_new1" || len(tmp.started) != 0 {
		t.Errorf("canceled %v, started %d; want vs_new1 canceled and no workflow", s.canceled, len(tmp.started))
	}
	// The same request again gets the canceled session from Stripe's
	// idempotency cache: refused, nothing stored or started.
	s.replayed = true
	c := &contacts{}
	code, body = send(newAPI(c, s, tmp, io.Discard), http.MethodPost, "/admin/sessions", newSession, nil)
	if code != http.StatusConflict || len(c.stored) != 0 || len(tmp.started) != 0 {
		t.Errorf("retry after the cancel: %d %s, stored %d, started %d; want 409 and nothing", code, body, len(c.stored), len(tmp.started))
	}
}

func TestEveryAdminPathAnswersTheSame401WithoutTheToken(t *testing.T) {
	api := newAPI(&contacts{}, &fakeStripe{}, &fakeTemporal{}, io.Discard)
	var first string
	for _, path := range []string{"/admin/sessions", "/admin/sessions/vs_1", "/admin/sessions/vs_1/review",
		"/admin/reviews", "/admin/reviews?status=open", "/admin/nothing", "/admin/sessions/not-an-id"} {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			for _, auth := range []string{"", "Bearer wrong", "Basic dG9rOg=="} {
				req := httptest.NewRequest(method, path, strings.NewReader(`{}`))
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				rec := httptest.NewRecorder()
				api.Handler().ServeHTTP(rec, req)
				if first == "" {
					first = rec.Body.String()
				}
				if rec.Code != http.StatusUnauthorized || rec.Body.String() != first {
					t.Errorf("%s %s (%q): %d %s; want the same 401", method, path, auth, rec.Code, rec.Body)
				}
			}
		}
	}
	// With the token, a wrong method is 405 and an unknown path 404.
	if code, _ := send(api, http.MethodDelete, "/admin/sessions/vs_1", "", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE with the token: %d; want 405", code)
	}
	if code, _ := send(api, http.MethodGet, "/admin/nothing", "", nil); code != http.StatusNotFound {
		t.Errorf("unknown path with the token: %d; want 404", code)
	}
}

// reviews serves fixed open cases.
type reviews []store.OpenReviewCase

func (r reviews) OpenReviews(_ context.Context, limit int) ([]store.OpenReviewCase, error) {
	return r[:min(limit, len(r))], nil
}

func TestTheReviewQueueListsOpenReviewsWithAgeAndDeadline(t *testing.T) {
	now := time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC)
	api := newAPI(&contacts{}, &fakeStripe{}, &fakeTemporal{}, io.Discard)
	api.Now = func() time.Time { return now }
	api.Reviews = reviews{
		{SessionID: "vs_old", Reason: "attempts_exhausted", LastErrorCode: "document_expired", Attempts: 3,
			OpenedAt: now.Add(-72 * time.Hour), DeadlineAt: now.Add(-24 * time.Hour)},
		{SessionID: "vs_new", Reason: "mismatch", MismatchedFields: []string{"dob"}, OpenedAt: now.Add(-time.Hour),
			DeadlineAt: now.Add(47 * time.Hour)},
	}
	code, body := send(api, http.MethodGet, "/admin/reviews?status=open", "", nil)
	var out struct{ Reviews []admin.OpenReview }
	json.Unmarshal(body, &out)
	if code != http.StatusOK || len(out.Reviews) != 2 {
		t.Fatalf("got %d %s", code, body)
	}
	old, nw := out.Reviews[0], out.Reviews[1]
	if old.SessionID != "vs_old" || old.AgeSeconds != 72*3600 || !old.Overdue || old.LastErrorCode != "document_expired" || old.Attempts != 3 {
		t.Errorf("first = %+v", old)
	}
	if nw.SessionID != "vs_new" || nw.Overdue || len(nw.MismatchedFields) != 1 || !nw.DeadlineAt.Equal(now.Add(47*time.Hour)) {
		t.Errorf("second = %+v", nw)
	}
	if code, _ := send(api, http.MethodGet, "/admin/reviews?status=closed", "", nil); code != http.StatusBadRequest {
		t.Errorf("status=closed: %d; want 400", code)
	}
	if code, _ := send(api, http.MethodGet, "/admin/reviews?limit=0", "", nil); code != http.StatusBadRequest {
		t.Errorf("limit=0: %d; want 400", code)
	}
}

func TestAWorkflowThatDoesNotStartIsA503AndARetryResumesTheSameSession(t *testing.T) {
	c, s, tmp := &contacts{}, &fakeStripe{}, &fakeTemporal{err: errors.New("temporal down")}
	code, body := send(newAPI(c, s, tmp, io.Discard), http.MethodPost, "/admin/sessions", newSession, nil)
	if code != http.StatusServiceUnavailable || strings.Contains(string(body), "secret") || len(s.canceled) != 0 {
		t.Fatalf("got %d %s, canceled %v; want 503, no secret, nothing canceled", code, body, s.canceled)
	}
	tmp.err = nil
	if code, body := send(newAPI(c, s, tmp, io.Discard), http.MethodPost, "/admin/sessions", newSession, nil); code != http.StatusCreated {
		t.Fatalf("retry: %d %s", code, body)
	}
	if s.creates[0].IdempotencyKey != s.creates[1].IdempotencyKey || len(tmp.started) != 1 {
		t.Errorf("retry sent key %q (first %q), %d starts", s.creates[1].IdempotencyKey, s.creates[0].IdempotencyKey, len(tmp.started))
	}
}

// stripeIdem answers as Stripe's idempotency cache does: a key it has seen
// gets the session it made for it, marked replayed (other parameters with
// it are refused); a new key makes a new session.
type stripeIdem struct {
	params map[string]stripeapi.CreateParams
	ids    map[string]string
}

func (f *stripeIdem) Create(_ context.Context, p stripeapi.CreateParams) (stripeapi.Created, error) {
	id, replayed := f.ids[p.IdempotencyKey]
	if replayed && !reflect.DeepEqual(f.params[p.IdempotencyKey], p) {
		return stripeapi.Created{}, fmt.Errorf("%w: idempotency key reused with other parameters", stripeapi.ErrPermanent)
	}
	if !replayed {
		id = fmt.Sprintf("vs_idem%d", len(f.ids)+1)
		f.ids[p.IdempotencyKey], f.params[p.IdempotencyKey] = id, p
	}
	return stripeapi.Created{ID: id, ClientSecret: id + "_secret_S", URL: "https://verify.stripe.com/start/" + id,
		Status: "requires_input", Type: "document", Replayed: replayed}, nil
}
func (f *stripeIdem) Cancel(context.Context, string) error           { return nil }
func (f *stripeIdem) Status(context.Context, string) (string, error) { return "requires_input", nil }

// One caller's Idempotency-Key is theirs alone: another caller sending the
// same header gets a session of its own, never the first caller's secret
// or a hold on its registration; the same caller repeating the key with
// another registration is refused.
func TestACreateNeverGivesOneCallerAnothersSession(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store, api *admin.API) {
		ctx := context.Background()
		api.Stripe, api.Temporal, api.KeySecret = &stripeIdem{params: map[string]stripeapi.CreateParams{}, ids: map[string]string{}},
			&fakeTemporal{}, "key-secret"
		backend := newKey(t, st, "backend", access.ScopeSessionsCreate, access.ScopeSessionsRegister)
		form := newKey(t, st, "signup-form", access.ScopeSessionsCreate)
		create := func(k access.Key, body, idem string) (int, admin.Created, string) {
			t.Helper()
			req := httptest.NewRequest(http.MethodPost, "/admin/sessions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+k.Secret)
			if idem != "" {
				req.Header.Set("Idempotency-Key", idem)
			}
			rec := httptest.NewRecorder()
			api.Handler().ServeHTTP(rec, req)
			var c admin.Created
			json.Unmarshal(rec.Body.Bytes(), &c)
			return rec.Code, c, rec.Body.String()
		}
		mallory := `{"email":"mallory@example.com","first_name":"Mallory","last_name":"Insider","dob":"1990-01-01"}`
		eve := `{"email":"eve@example.com","first_name":"Ada","last_name":"Lovelace","dob":"1815-12-10"}`

		code, ada, _ := create(backend, newSession, "order-42")
		if code != http.StatusCreated {
			t.Fatalf("the backend's create: %d", code)
		}
		code, other, _ := create(form, mallory, "order-42")
		if code != http.StatusCreated || other.SessionID == ada.SessionID || other.ClientSecret == ada.ClientSecret {
			t.Errorf("another caller with the same Idempotency-Key: %d %+v; want a session of its own", code, other)
		}
		code, _, body := create(backend, eve, "order-42")
		if code != http.StatusConflict || strings.Contains(body, ada.ClientSecret) || strings.Contains(body, ada.URL) {
			t.Errorf("the same key with another registration: %d %s; want 409 without the session's secret or URL", code, body)
		}
		if code, again, _ := create(backend, newSession, "order-42"); code != http.StatusCreated || again != ada {
			t.Errorf("the backend's retry: %d %+v; want the session it made, %+v", code, again, ada)
		}
		if c, _ := st.Contact(ctx, ada.SessionID); c.Email != "ada@example.com" || c.FirstName != "Ada" || c.DOB != "1815-12-10" {
			t.Errorf("the backend's session holds %+v; want its own registration", c)
		}
		// Without a header, the same request from two callers is two sessions.
		_, a, _ := create(backend, `{"email":"bob@example.com"}`, "")
		_, b, _ := create(form, `{"email":"bob@example.com"}`, "")
		if a.SessionID == "" || a.SessionID == b.SessionID {
			t.Errorf("the same body from two callers: %q and %q; want two sessions", a.SessionID, b.SessionID)
		}
		rows, _ := st.AuditLog(ctx, store.AuditFilter{SessionID: ada.SessionID})
		var got []string
		for _, r := range rows {
			got = append(got, r.Actor+" "+r.Action+" "+r.Result+" "+r.Detail)
		}
		bk := "key:" + backend.ID
		want := []string{bk + " session.create ok replayed", bk + " session.register ok unchanged",
			bk + " session.create refused replayed with another registration",
			bk + " session.create ok created", bk + " session.register ok registered: email,first_name,last_name,dob,client_reference_id"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("the session's trail:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}
