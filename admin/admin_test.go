package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"identityverification/admin"
	"identityverification/store"
	"identityverification/workflows"
)

// contacts keeps what the API stores, and refuses redacted sessions as the
// real store does.
type contacts struct {
	stored   []store.Contact
	redacted map[string]bool
}

func (c *contacts) RegisterContact(_ context.Context, ct store.Contact, _ *store.AuditRecord) ([]string, error) {
	if c.redacted[ct.SessionID] {
		return nil, store.ErrRedacted
	}
	c.stored = append(c.stored, ct)
	return []string{"email"}, nil
}

// RegisterNewContact refuses another registration for a session that holds
// one, as the real store does.
func (c *contacts) RegisterNewContact(ctx context.Context, ct store.Contact, audit *store.AuditRecord) error {
	for _, old := range c.stored {
		if old.SessionID == ct.SessionID && old != ct {
			return store.ErrRegisteredOtherwise
		}
	}
	_, err := c.RegisterContact(ctx, ct, audit)
	return err
}

func TestRegistrationsAreValidatedBeforeAnythingIsStored(t *testing.T) {
	long := strings.Repeat("a", 101)
	cases := []struct {
		name, body string
		want       int
		wantError  string
	}{
		{"a plain registration is stored", `{"email":"ada@example.com","first_name":"Ada","dob":"1815-12-10"}`, 204, ""},
		{"a name with a NUL byte is refused", `{"email":"ada@example.com","first_name":"Ada\u0000"}`, 400,
			"first_name must be at most 100 characters of text, without control characters"},
		{"a name with a line break is refused", `{"email":"ada@example.com","last_name":"Love\nlace"}`, 400,
			"last_name must be at most 100 characters of text, without control characters"},
		{"a name too long is refused", `{"email":"ada@example.com","first_name":"` + long + `"}`, 400,
			"first_name must be at most 100 characters of text, without control characters"},
		{"a reference with a tab is refused", `{"email":"ada@example.com","client_reference_id":"a\tb"}`, 400,
			"client_reference_id must be at most 200 characters of text, without control characters"},
		{"an address with a display name is refused", `{"email":"Ada <ada@example.com>"}`, 400, "email must be a plain address"},
		{"an address too long is refused", `{"email":"` + strings.Repeat("a", 250) + `@example.com"}`, 400, "email must be a plain address"},
		{"a date of birth in another format is refused", `{"email":"ada@example.com","dob":"10/12/1815"}`, 400, "dob must be YYYY-MM-DD"},
		{"a registration for a redacted session is refused", `{"email":"ada@example.com"}`, 409,
			"the session was redacted: its personal data is not kept any more"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &contacts{redacted: map[string]bool{}}
			id := "vs_ok"
			if tc.want == 409 {
				id = "vs_gone"
				c.redacted[id] = true
			}
			api := &admin.API{Token: "tok", Contacts: c, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			code, body := call(api, http.MethodPut, "/admin/sessions/"+id, tc.body)
			if code != tc.want || body["error"] != tc.wantError {
				t.Fatalf("got %d %v; want %d %q", code, body, tc.want, tc.wantError)
			}
			if stored := len(c.stored); (tc.want == 204) != (stored == 1) {
				t.Errorf("%d registrations stored", stored)
			}
		})
	}
}

func TestAReviewerThatCannotBeStoredIsBadInput(t *testing.T) {
	for _, reviewer := range []string{`ops\u0000eve`, `ops\neve`, strings.Repeat("r", workflows.MaxReviewerLen+1)} {
		t.Run(reviewer, func(t *testing.T) {
			api := &admin.API{Token: "tok", Contacts: &contacts{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			code, body := call(api, http.MethodPost, "/admin/sessions/vs_1/review", `{"decision":"approve","reviewer":"`+reviewer+`"}`)
			if code != http.StatusBadRequest || !strings.Contains(body["error"], workflows.ErrBadReviewer.Error()) {
				t.Errorf("got %d %v; want 400 naming the reviewer", code, body)
			}
		})
	}
}

func call(api *admin.API, method, path, body string) (int, map[string]string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, req)
	var out map[string]string
	json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out
}
