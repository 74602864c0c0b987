package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"identityverification/admin"
	"identityverification/testevent"
	"identityverification/workflows"
)

// admin calls the admin API and decodes a JSON answer into out (if not nil).
func (s *stack) admin(method, path, token string, body any, out any) int {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.adminURL+path, r)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func TestAdminAPIRegistersContactsAndDecidesReviews(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		vs := "vs_admin_" + testevent.RandomID(12)
		to := "admin-" + testevent.RandomID(8) + "@example.com"
		reg := map[string]string{"email": to, "first_name": "Ada", "last_name": "Lovelace", "dob": "1815-12-10"}
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, "wrong-token", reg, nil); code != http.StatusUnauthorized {
			t.Errorf("wrong token: %d; want 401", code)
		}
		bad := map[string]string{"email": "not an address"}
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, adminToken, bad, nil); code != http.StatusBadRequest {
			t.Errorf("bad email: %d; want 400", code)
		}
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, adminToken, reg, nil); code != http.StatusNoContent {
			t.Fatalf("register: %d; want 204", code)
		}
		if code := s.admin(http.MethodGet, "/admin/sessions/"+vs, adminToken, nil, nil); code != http.StatusNotFound {
			t.Errorf("state before any event: %d; want 404", code)
		}

		// stripe-mock's verified outputs are empty: the names differ, a review opens.
		s.send(testevent.Options{Type: "verified", SessionID: vs})
		var st workflows.State
		eventually(t, "the review to open", func() error {
			s.admin(http.MethodGet, "/admin/sessions/"+vs, adminToken, nil, &st)
			if !st.Review.Open() {
				return errNotYet
			}
			return nil
		})
		var queue struct {
			Reviews []admin.OpenReview `json:"reviews"`
		}
		var queued admin.OpenReview
		eventually(t, "the review in the queue", func() error {
			if code := s.admin(http.MethodGet, "/admin/reviews?status=open", adminToken, nil, &queue); code != http.StatusOK {
				return fmt.Errorf("review queue: %d; want 200", code)
			}
			i := slices.IndexFunc(queue.Reviews, func(r admin.OpenReview) bool { return r.SessionID == vs })
			if i < 0 || queue.Reviews[i].DeadlineAt.IsZero() {
				return errNotYet
			}
			queued = queue.Reviews[i]
			return nil
		})
		if queued.Reason != "mismatch" || len(queued.MismatchedFields) == 0 {
			t.Errorf("queued review = %+v; want a mismatch with its fields", queued)
		}
		var refusal map[string]string
		code := s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", adminToken,
			workflows.ReviewDecision{Decision: "approve"}, &refusal)
		if code != http.StatusConflict || refusal["error"] != workflows.ErrNoReviewer.Error() {
			t.Errorf("decision without reviewer: %d %v; want 409 %q", code, refusal, workflows.ErrNoReviewer)
		}
		code = s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", adminToken,
			workflows.ReviewDecision{Decision: "reject", Reviewer: "ops-eve"}, &st)
		if code != http.StatusOK || st.Status != workflows.StatusRejected {
			t.Fatalf("reject: %d %+v", code, st)
		}
		s.waitRow(vs, workflows.StatusRejected)
		got := waitMails(t, to, 2)
		if got[1].Subject != "We could not verify your identity" {
			t.Errorf("last email %q; want the rejection", got[1].Subject)
		}
	})
}

func TestAdminCreatesASessionAtStripeRegistersItAndStartsItsWorkflow(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		to := "create-" + testevent.RandomID(8) + "@example.com"
		body := map[string]any{"email": to, "first_name": "Ada", "last_name": "Lovelace", "dob": "1815-12-10",
			"options": map[string]any{"require_matching_selfie": true}}
		if code := s.admin(http.MethodPost, "/admin/sessions", "wrong-token", body, nil); code != http.StatusUnauthorized {
			t.Errorf("wrong token: %d; want 401", code)
		}
		var created map[string]string
		if code := s.admin(http.MethodPost, "/admin/sessions", adminToken, body, &created); code != http.StatusCreated {
			t.Fatalf("create: %d %v; want 201", code, created)
		}
		// stripe-mock is stateless: its fixture session (one id for every
		// create, no client_secret or url) comes back, so the answer's
		// shape is checked, and the registration and workflow of that id.
		vs := created["session_id"]
		for _, k := range []string{"session_id", "client_secret", "url", "client_reference_id", "status"} {
			if _, ok := created[k]; !ok {
				t.Errorf("answer %v lacks %s", created, k)
			}
		}
		if !strings.HasPrefix(vs, "vs_") || !strings.HasPrefix(created["client_reference_id"], "ref_") {
			t.Fatalf("answer %v; want a vs_ id and an opaque ref_", created)
		}
		c, err := s.store.Contact(context.Background(), vs)
		if err != nil || c.Email != to || c.LastName != "Lovelace" || c.ClientReferenceID != created["client_reference_id"] {
			t.Errorf("contact = %+v, %v; want the registration", c, err)
		}
		var st workflows.State
		eventually(t, "the workflow to take the created event", func() error {
			if s.admin(http.MethodGet, "/admin/sessions/"+vs, adminToken, nil, &st) != http.StatusOK ||
				!slices.Contains(st.ProcessedEventIDs, admin.CreatedEventID(vs)) {
				return errNotYet
			}
			return nil
		})
		if st.SessionID != vs || st.Status == workflows.StatusNew {
			t.Errorf("state = %+v; want the session created", st)
		}
		// Unauthenticated callers get the same 401 on every admin path and method.
		for _, r := range [][2]string{{http.MethodDelete, "/admin/sessions/" + vs}, {http.MethodGet, "/admin/reviews"},
			{http.MethodGet, "/admin/no-such-route"}, {http.MethodPatch, "/admin/sessions"}} {
			if code := s.admin(r[0], r[1], "wrong-token", nil, nil); code != http.StatusUnauthorized {
				t.Errorf("%s %s without the token: %d; want 401", r[0], r[1], code)
			}
		}
	})
}
