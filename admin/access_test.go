package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"identityverification/access"
	"identityverification/admin"
	"identityverification/store"
	"identityverification/store/storetest"
)

// forEachStore runs fn with an admin API on a real store of each engine.
func forEachStore(t *testing.T, fn func(t *testing.T, st *store.Store, api *admin.API)) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			st, err := store.Open(context.Background(), db.URL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			api := &admin.API{Token: "tok", Keys: st, Audit: st, Contacts: st, Throttle: &access.Throttle{Counter: st},
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			fn(t, st, api)
		})
	}
}

func newKey(t *testing.T, st *store.Store, name string, scopes ...string) access.Key {
	t.Helper()
	k, err := access.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateAPIKey(context.Background(), store.APIKey{ID: k.ID, Name: name, Scopes: scopes, SecretHash: k.Hash}, nil); err != nil {
		t.Fatal(err)
	}
	return k
}

func request(api *admin.API, method, path, auth, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "192.0.2.7:4711"
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, req)
	return rec
}

const registration = `{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace","dob":"1815-12-10"}`

func TestKeysWorkWithinTheirScopesAndNotOnceRevoked(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store, api *admin.API) {
		ctx := context.Background()
		reader := newKey(t, st, "dashboard", access.ScopeSessionsRead, access.ScopeAuditRead)
		backend := newKey(t, st, "backend", access.ScopeSessionsRegister)

		if rec := request(api, http.MethodPut, "/admin/sessions/vs_k1", "Bearer "+reader.Secret, registration); rec.Code != http.StatusForbidden ||
			!strings.Contains(rec.Body.String(), "lacks the scope sessions:register") {
			t.Errorf("a key without sessions:register: %d %s; want 403 naming the scope", rec.Code, rec.Body)
		}
		for _, scheme := range []string{"Bearer ", "bearer ", "BEARER "} {
			if rec := request(api, http.MethodPut, "/admin/sessions/vs_k1", scheme+backend.Secret, registration); rec.Code != http.StatusNoContent {
				t.Errorf("%q with sessions:register: %d %s; want 204", scheme, rec.Code, rec.Body)
			}
		}
		if err := st.RevokeAPIKey(ctx, backend.ID, nil); err != nil {
			t.Fatal(err)
		}
		if rec := request(api, http.MethodPut, "/admin/sessions/vs_k1", "Bearer "+backend.Secret, registration); rec.Code != http.StatusUnauthorized {
			t.Errorf("a revoked key: %d; want 401", rec.Code)
		}
		forged := backend.Secret[:len(backend.Secret)-2] + "xx"
		if rec := request(api, http.MethodPut, "/admin/sessions/vs_k1", "Bearer "+forged, registration); rec.Code != http.StatusUnauthorized {
			t.Errorf("a key with the wrong secret: %d; want 401", rec.Code)
		}

		// The audit log, read with audit:read: every change and refusal.
		rec := request(api, http.MethodGet, "/admin/audit?session=vs_k1", "Bearer "+reader.Secret, "")
		var got struct{ Entries []admin.AuditEntry }
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("GET /admin/audit: %d %s", rec.Code, rec.Body)
		}
		var rows [][4]string
		for _, e := range got.Entries {
			if e.Source != "192.0.2.7" || e.At.IsZero() {
				t.Errorf("entry %+v lacks its source or time", e)
			}
			rows = append(rows, [4]string{e.Actor, e.Action, e.Result, e.Detail})
		}
		// Newest first. The refused request is not on the session's trail:
		// the session id in its path was the caller's choice.
		want := [][4]string{
			{"key:" + backend.ID, "session.register", "ok", "unchanged"},
			{"key:" + backend.ID, "session.register", "ok", "unchanged"},
			{"key:" + backend.ID, "session.register", "ok", "registered: email,first_name,last_name,dob"},
		}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("audit rows of the session:\n got %v\nwant %v", rows, want)
		}
		all, _ := st.AuditLog(ctx, store.AuditFilter{})
		var denied []string
		for _, e := range all {
			if e.Action == store.AuditAPIAuth {
				denied = append(denied, e.Actor+" "+e.Detail)
			}
			if e.Result == store.AuditDenied && e.Action == store.AuditSessionRegister &&
				(e.SessionID != "" || e.Detail != "lacks scope sessions:register: PUT /admin/sessions/vs_k1") {
				t.Errorf("the refused registration's row %+v; want no session, the path in the detail", e)
			}
		}
		if want := []string{"key:" + backend.ID + " wrong secret", "key:" + backend.ID + " revoked key"}; !reflect.DeepEqual(denied, want) {
			t.Errorf("failed authentications in the audit log: %q; want %q", denied, want)
		}
		if rec := request(api, http.MethodGet, "/admin/audit?since=yesterday", "Bearer "+reader.Secret, ""); rec.Code != http.StatusBadRequest {
			t.Errorf("a bad since: %d; want 400", rec.Code)
		}
	})
}

// GET /admin/audit reads the newest rows first and pages back with
// before, however many rows there are.
func TestTheAuditLogIsReadNewestFirstPageByPage(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store, api *admin.API) {
		for i := range 5 {
			if rec := request(api, http.MethodPut, fmt.Sprintf("/admin/sessions/vs_p%d", i), "Bearer tok", registration); rec.Code != http.StatusNoContent {
				t.Fatalf("register: %d", rec.Code)
			}
		}
		var got []string
		path := "/admin/audit?limit=2"
		for range 4 {
			rec := request(api, http.MethodGet, path, "Bearer tok", "")
			var page admin.AuditPage
			if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
			}
			for _, e := range page.Entries {
				got = append(got, e.SessionID)
			}
			if page.NextBefore == "" {
				break
			}
			path = "/admin/audit?limit=2&before=" + page.NextBefore
		}
		if want := []string{"vs_p4", "vs_p3", "vs_p2", "vs_p1", "vs_p0"}; !reflect.DeepEqual(got, want) {
			t.Errorf("pages give %v; want %v", got, want)
		}
		if rec := request(api, http.MethodGet, "/admin/audit?before=yesterday", "Bearer tok", ""); rec.Code != http.StatusBadRequest {
			t.Errorf("a bad before: %d; want 400", rec.Code)
		}
	})
}

func TestARegistrationThatWouldChangeFrozenValuesIs409(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store, api *admin.API) {
		ctx := context.Background()
		if rec := request(api, http.MethodPut, "/admin/sessions/vs_frozen", "Bearer tok", registration); rec.Code != http.StatusNoContent {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		if _, err := st.RecordTransition(ctx, store.Transition{SessionID: "vs_frozen", Key: "evt_p", Seq: 1, To: "processing", Escalation: "none"}); err != nil {
			t.Fatal(err)
		}
		rec := request(api, http.MethodPut, "/admin/sessions/vs_frozen", "Bearer tok", strings.Replace(registration, "ada@", "eve@", 1))
		if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "frozen") || !strings.Contains(rec.Body.String(), "status processing") {
			t.Errorf("a changed registration after processing: %d %s; want 409 saying why", rec.Code, rec.Body)
		}
		if rec := request(api, http.MethodPut, "/admin/sessions/vs_frozen", "Bearer tok", registration); rec.Code != http.StatusNoContent {
			t.Errorf("the same registration again: %d %s; want 204", rec.Code, rec.Body)
		}
		if c, _ := st.Contact(ctx, "vs_frozen"); c.Email != "ada@example.com" {
			t.Errorf("contact %+v; want the first registration kept", c)
		}
		rows, _ := st.AuditLog(ctx, store.AuditFilter{SessionID: "vs_frozen"})
		if len(rows) != 3 || rows[1].Result != store.AuditRefused || rows[1].Detail != "frozen: would change email" ||
			rows[1].Actor != "token:admin" || rows[1].ActorName != admin.AdminTokenName {
			t.Errorf("audit rows %+v; want the refusal between the two registrations", rows)
		}
	})
}

func TestTwentyWrongTokensFromOneAddressAreThrottledButTheRightOnesPass(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store, api *admin.API) {
		backend := newKey(t, st, "backend", access.ScopeSessionsRead)
		var codes []int
		for range 20 {
			codes = append(codes, request(api, http.MethodGet, "/admin/reviews", "Bearer guess", "").Code)
		}
		for i, c := range codes {
			want := http.StatusUnauthorized
			if i >= access.DefaultFailureLimit {
				want = http.StatusTooManyRequests
			}
			if c != want {
				t.Fatalf("attempt %d: %d; want %d (codes %v)", i+1, c, want, codes)
			}
		}
		rec := request(api, http.MethodGet, "/admin/reviews", "Bearer guess", "")
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
			t.Errorf("another wrong token: %d, Retry-After %q; want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
		}
		// The throttle decides how a failure is answered, never whether a
		// valid credential works.
		for _, auth := range []string{"Bearer tok", "Bearer " + backend.Secret} {
			if rec := request(api, http.MethodGet, "/admin/sessions/vs_x/nothing", auth, ""); rec.Code != http.StatusNotFound {
				t.Errorf("a valid credential from the throttled address: %d; want it to work (404 for the unknown path)", rec.Code)
			}
		}
		rows, _ := st.AuditLog(context.Background(), store.AuditFilter{})
		n := map[string]int{}
		for _, r := range rows {
			n[r.Result]++
		}
		if want := map[string]int{store.AuditDenied: 10, store.AuditThrottled: 1}; !reflect.DeepEqual(n, want) {
			t.Errorf("audit results %v; want %v: the failures up to the limit, and one row when the throttle starts", n, want)
		}
		api.Throttle.Now = func() time.Time { return time.Now().Add(access.DefaultFailureWindow) }
		if rec := request(api, http.MethodGet, "/admin/reviews", "Bearer guess", ""); rec.Code != http.StatusUnauthorized {
			t.Errorf("a wrong token in the next window: %d; want 401 again", rec.Code)
		}
	})
}

// Behind a proxy every caller has the proxy's address: anonymous probes
// must not lock out the backend's key or ADMIN_TOKEN.
func TestAnonymousCallersBehindAProxyDoNotLockOutTheBackend(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store, api *admin.API) {
		backend := newKey(t, st, "backend", access.ScopeSessionsRegister)
		for range 3 * access.DefaultFailureLimit {
			request(api, http.MethodGet, "/admin/anything", "", "")
		}
		if rec := request(api, http.MethodPut, "/admin/sessions/vs_1", "Bearer "+backend.Secret, registration); rec.Code != http.StatusNoContent {
			t.Errorf("the backend's key after %d anonymous requests from its address: %d %s; want 204",
				3*access.DefaultFailureLimit, rec.Code, rec.Body)
		}
		if rec := request(api, http.MethodGet, "/admin/sessions/vs_1/nothing", "Bearer tok", ""); rec.Code != http.StatusNotFound {
			t.Errorf("ADMIN_TOKEN after anonymous requests from its address: %d; want it to work (404)", rec.Code)
		}
	})
}

// With TRUSTED_PROXIES, the caller is the address the proxy forwarded: each
// caller behind it has a throttle of its own and its own source in the
// audit log; a forwarded address from anyone else is not believed.
func TestBehindATrustedProxyEachCallerIsCountedByTheAddressItForwarded(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store, api *admin.API) {
		api.Proxies, _ = access.ParseProxies("192.0.2.0/24") // request() comes from 192.0.2.7
		from := func(xff string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodGet, "/admin/reviews", nil)
			req.RemoteAddr = "192.0.2.7:4711"
			req.Header.Set("Authorization", "Bearer guess")
			req.Header.Set("X-Forwarded-For", xff)
			rec := httptest.NewRecorder()
			api.Handler().ServeHTTP(rec, req)
			return rec
		}
		for range access.DefaultFailureLimit + 1 {
			from("6.6.6.6, 198.51.100.1")
		}
		if rec := from("198.51.100.1"); rec.Code != http.StatusTooManyRequests {
			t.Errorf("the guessing caller: %d; want 429", rec.Code)
		}
		if rec := from("198.51.100.2"); rec.Code != http.StatusUnauthorized {
			t.Errorf("another caller behind the same proxy: %d; want 401, its own count", rec.Code)
		}
		rows, _ := st.AuditLog(context.Background(), store.AuditFilter{})
		sources := map[string]int{}
		for _, r := range rows {
			sources[r.Source]++
		}
		if want := map[string]int{"198.51.100.1": access.DefaultFailureLimit + 1, "198.51.100.2": 1}; !reflect.DeepEqual(sources, want) {
			t.Errorf("audit rows by source %v; want %v", sources, want)
		}
	})
}

// While the database is down, nobody is told so: no credential gets 401
// (not counted), a key that cannot be looked up a plain 503, and
// ADMIN_TOKEN, which needs no database to check, still authenticates.
func TestADatabaseOutageIsNotNamedToCallers(t *testing.T) {
	forEachStore(t, func(t *testing.T, st *store.Store, api *admin.API) {
		k := newKey(t, st, "backend", access.ScopeSessionsRead)
		st.Close()
		made, _ := access.NewKey()
		for _, c := range []struct {
			name, auth string
			want       int
		}{
			{"no credential", "", http.StatusUnauthorized},
			{"a made-up key", "Bearer " + made.Secret, http.StatusServiceUnavailable},
			{"a real key", "Bearer " + k.Secret, http.StatusServiceUnavailable},
			{"ADMIN_TOKEN", "Bearer tok", http.StatusNotFound},
		} {
			rec := request(api, http.MethodGet, "/admin/nothing", c.auth, "")
			if body := strings.ToLower(rec.Body.String()); rec.Code != c.want || strings.Contains(body, "database") || strings.Contains(body, "sql") {
				t.Errorf("%s with the database down: %d %s; want %d naming nothing inside", c.name, rec.Code, rec.Body, c.want)
			}
		}
	})
}
