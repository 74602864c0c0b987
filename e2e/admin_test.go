package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

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
