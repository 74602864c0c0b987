package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"identityverification/access"
	"identityverification/admin"
	"identityverification/config"
	"identityverification/devstack"
	"identityverification/store"
	"identityverification/testevent"
	"identityverification/workflows"
)

// person is someone signed in to the review desk through Dex's own login
// page, with a browser's cookies.
type person struct {
	t     *testing.T
	s     *stack
	c     *http.Client
	email string
	sub   string // oidc:<the provider's sub>
}

// signIn signs the dev user with email in to the stack's desk.
func (s *stack) signIn(t *testing.T, email string) *person {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	p := &person{t: t, s: s, c: &http.Client{Jar: jar, Timeout: 30 * time.Second}, email: email,
		sub: "oidc:" + devstack.DexSubject(s.dex.User(email).ID)}
	res, err := s.dex.SignIn(context.Background(), p.c, s.adminURL+"/desk/login/start", email, s.dex.User(email).Password)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "Signed in as "+email) {
		t.Fatalf("%s signs in: %d %s", email, res.StatusCode, body)
	}
	return p
}

// get GETs a desk page (redirects followed).
func (p *person) get(path string) (int, string) {
	p.t.Helper()
	res, err := p.c.Get(p.s.adminURL + path)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// decide opens the review page (for its form) and posts the decision; it
// answers the status of the POST and the page the person then sees.
func (p *person) decide(vs, decision string) (int, string) {
	p.t.Helper()
	_, page := p.get("/desk/reviews/" + vs)
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		p.t.Fatalf("no form on the review page: %s", page)
	}
	c := *p.c
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.PostForm(p.s.adminURL+"/desk/reviews/"+vs, url.Values{"csrf": {m[1]}, "decision": {decision}})
	if err != nil {
		p.t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode == http.StatusSeeOther {
		_, page := p.get(res.Header.Get("Location"))
		return res.StatusCode, page
	}
	return res.StatusCode, string(body)
}

// newAPIKey stores a key with scopes, as api-key create does, and returns it.
func (s *stack) newAPIKey(name string, scopes ...string) access.Key {
	s.t.Helper()
	k, err := access.NewKey()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.store.CreateAPIKey(context.Background(), store.APIKey{ID: k.ID, Name: name, Scopes: scopes, SecretHash: k.Hash}, nil); err != nil {
		s.t.Fatal(err)
	}
	return k
}

// mismatchReview registers a session and sends its verified event:
// stripe-mock's verified outputs are empty, so the names differ and a
// (high-risk) mismatch review opens.
func (s *stack) mismatchReview(t *testing.T, token string) string {
	t.Helper()
	vs := "vs_e2e_4eyes_" + testevent.RandomID(12)
	reg := map[string]string{"email": "four-" + testevent.RandomID(8) + "@example.com", "first_name": "Ada", "last_name": "Lovelace", "dob": "1815-12-10"}
	if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, token, reg, nil); code != http.StatusNoContent {
		t.Fatalf("register: %d", code)
	}
	s.send(testevent.Options{Type: "verified", SessionID: vs})
	s.waitState(vs, "the mismatch review to open", func(st workflows.State) bool { return st.Review.Open() })
	s.waitRow(vs, workflows.StatusInReview)
	return vs
}

func TestAKeyActsWithinItsScopesAndFrozenValuesStayFrozen(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		backend := s.newAPIKey("backend", access.ScopeSessionsRegister, access.ScopeSessionsRead)
		reader := s.newAPIKey("dashboard", access.ScopeSessionsRead)
		vs := "vs_e2e_keys_" + testevent.RandomID(12)
		reg := map[string]string{"email": "keys@example.com", "first_name": "Ada", "last_name": "Lovelace", "dob": "1815-12-10"}
		var refusal map[string]string
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, reader.Secret, reg, &refusal); code != http.StatusForbidden ||
			!strings.Contains(refusal["error"], access.ScopeSessionsRegister) {
			t.Errorf("a key without sessions:register: %d %v; want 403 naming the scope", code, refusal)
		}
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, backend.Secret, reg, nil); code != http.StatusNoContent {
			t.Fatalf("register with sessions:register: %d", code)
		}
		// The user starts verifying: the email and expected values freeze.
		s.send(testevent.Options{Type: "processing", SessionID: vs})
		s.waitRow(vs, workflows.StatusProcessing)
		changed := map[string]string{"email": "insider@example.com", "first_name": "Ada", "last_name": "Lovelace", "dob": "1815-12-10"}
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, backend.Secret, changed, &refusal); code != http.StatusConflict ||
			!strings.Contains(refusal["error"], "frozen") {
			t.Errorf("re-registration after processing: %d %v; want 409 saying why", code, refusal)
		}
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, adminToken, changed, nil); code != http.StatusConflict {
			t.Errorf("re-registration with ADMIN_TOKEN after processing: %d; want 409 (no credential changes frozen values)", code)
		}
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, backend.Secret, reg, nil); code != http.StatusNoContent {
			t.Errorf("the same registration again: %d; want 204", code)
		}
		if c, _ := s.store.Contact(context.Background(), vs); c.Email != "keys@example.com" {
			t.Errorf("contact email %q; want the registration from before the freeze", c.Email)
		}
		if err := s.store.RevokeAPIKey(context.Background(), backend.ID, nil); err != nil {
			t.Fatal(err)
		}
		if code := s.admin(http.MethodGet, "/admin/sessions/"+vs, backend.Secret, nil, nil); code != http.StatusUnauthorized {
			t.Errorf("a revoked key: %d; want 401", code)
		}
		// The bearer scheme's case does not matter.
		req, _ := http.NewRequest(http.MethodGet, s.adminURL+"/admin/sessions/"+vs, nil)
		req.Header.Set("Authorization", "bEaReR "+reader.Secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET with %q: %d; want 200", "bEaReR", res.StatusCode)
		}
	})
}

// Four eyes through the desk: a mismatch review needs two people.
func TestFourEyesNeedTwoPeopleToApproveAndOneToReject(t *testing.T) {
	forEachDatabaseWith(t, config.Map{withDesk: "1"}, func(t *testing.T, s *stack) {
		ann, bob := s.signIn(t, "ann@example.com"), s.signIn(t, "bob@example.com")

		t.Run("the same reviewer approving twice is refused; a second reviewer's approval verifies", func(t *testing.T) {
			vs := s.mismatchReview(t, adminToken)
			code, page := ann.decide(vs, workflows.DecisionApprove)
			if code != http.StatusSeeOther || !strings.Contains(page, "1 of 2 approvals, by "+ann.email) {
				t.Fatalf("ann approves: %d; want the page to show 1 of 2 approvals by her:\n%s", code, page)
			}
			var st admin.StateAnswer
			s.admin(http.MethodGet, "/admin/sessions/"+vs, adminToken, nil, &st)
			if st.ApprovalStatus != "1 of 2 approvals, by "+ann.email || st.Status != workflows.StatusInReview {
				t.Errorf("the admin API's state: %q, %s; want 1 of 2 approvals, still in review", st.ApprovalStatus, st.Status)
			}
			code, page = ann.decide(vs, workflows.DecisionApprove)
			if code != http.StatusConflict || !strings.Contains(page, "you approved this review already") {
				t.Errorf("ann approves again: %d; want 409 with the workflow's reason:\n%s", code, page)
			}
			if code, _ := bob.decide(vs, workflows.DecisionApprove); code != http.StatusSeeOther {
				t.Fatalf("bob approves: %d", code)
			}
			s.waitRow(vs, workflows.StatusVerified)
			final, _ := s.state(vs)
			if final.Review == nil || final.Review.Decision != workflows.DecisionApprove || final.Review.Subject != bob.sub ||
				len(final.Review.Approvals) != 2 || final.Review.Approvals[0].Subject != ann.sub {
				t.Errorf("review %+v; want approved by ann, then bob, by their subjects", final.Review)
			}
		})
		t.Run("one reject rejects", func(t *testing.T) {
			vs := s.mismatchReview(t, adminToken)
			if code, _ := bob.decide(vs, workflows.DecisionReject); code != http.StatusSeeOther {
				t.Fatalf("bob rejects: %d", code)
			}
			s.waitRow(vs, workflows.StatusRejected)
		})
	})
}

// A decision's Idempotency-Key belongs to its caller: the caller's retry
// gets its own decision's outcome, and another caller that happens to send
// the same key has its own decision judged, not the first caller's outcome
// answered as if it were its own.
func TestFourEyesAnIdempotencyKeyIsTheCallersOwn(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		first := s.newAPIKey("ops-bot-1", access.ScopeReviewsDecide)
		second := s.newAPIKey("ops-bot-2", access.ScopeReviewsDecide)
		vs := s.mismatchReview(t, adminToken)
		decide := func(k access.Key, decision string) (int, admin.StateAnswer, string) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodPost, s.adminURL+"/admin/sessions/"+vs+"/review",
				strings.NewReader(`{"decision":"`+decision+`","reviewer":"`+k.ID+`"}`))
			req.Header.Set("Authorization", "Bearer "+k.Secret)
			req.Header.Set("Idempotency-Key", "decide-"+vs)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			var st admin.StateAnswer
			json.Unmarshal(body, &st)
			return res.StatusCode, st, string(body)
		}
		for i := range 2 { // the decision, and its retry
			if code, st, body := decide(first, workflows.DecisionReject); code != http.StatusOK || st.Status != workflows.StatusRejected {
				t.Fatalf("the first key's reject (try %d): %d %s; want the session rejected", i+1, code, body)
			}
		}
		if code, _, body := decide(second, workflows.DecisionApprove); code != http.StatusConflict || !strings.Contains(body, "no review") {
			t.Errorf("the second key's approval with the same Idempotency-Key: %d %s; want its own decision refused "+
				"(the review is decided), not the first key's outcome", code, body)
		}
		final, _ := s.state(vs)
		if final.Review == nil || final.Review.Decision != workflows.DecisionReject || final.Review.Subject != "key:"+first.ID {
			t.Errorf("review %+v; want rejected by the first key", final.Review)
		}
	})
}

// The audit log of a scripted scenario holds exactly the expected rows.
func TestTheAuditLogOfAScriptedScenario(t *testing.T) {
	forEachDatabaseWith(t, config.Map{withDesk: "1"}, func(t *testing.T, s *stack) {
		start := time.Now().Add(-time.Second)
		backend := s.newAPIKey("backend", access.ScopeSessionsRegister, access.ScopeReviewsDecide)
		reader := s.newAPIKey("auditor", access.ScopeAuditRead)
		vs := "vs_e2e_audit_" + testevent.RandomID(12)
		reg := map[string]string{"email": "audit@example.com", "first_name": "Ada", "last_name": "Lovelace", "dob": "1815-12-10"}
		s.admin(http.MethodPut, "/admin/sessions/"+vs, backend.Secret, reg, nil)
		reg["email"] = "audit2@example.com"
		s.admin(http.MethodPut, "/admin/sessions/"+vs, backend.Secret, reg, nil)
		s.admin(http.MethodPut, "/admin/sessions/"+vs, reader.Secret, reg, nil)
		s.send(testevent.Options{Type: "verified", SessionID: vs})
		s.waitState(vs, "the mismatch review to open", func(st workflows.State) bool { return st.Review.Open() })
		reg["email"] = "insider@example.com"
		s.admin(http.MethodPut, "/admin/sessions/"+vs, backend.Secret, reg, nil)
		s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", backend.Secret,
			workflows.ReviewDecision{Decision: "approve", Reviewer: "backend-bot", Subject: "oidc:someone-else"}, nil)
		ann := s.signIn(t, "ann@example.com")
		ann.decide(vs, workflows.DecisionApprove)
		bob := s.signIn(t, "bob@example.com")
		bob.decide(vs, workflows.DecisionApprove)
		s.waitRow(vs, workflows.StatusVerified)

		var got struct{ Entries []admin.AuditEntry }
		if code := s.admin(http.MethodGet, "/admin/audit?since="+url.QueryEscape(start.UTC().Format(time.RFC3339Nano)),
			reader.Secret, nil, &got); code != http.StatusOK {
			t.Fatalf("GET /admin/audit: %d", code)
		}
		var rows []string
		slices.Reverse(got.Entries) // the log answers newest first; the scenario reads oldest first
		for _, e := range got.Entries {
			if e.At.Before(start) || e.ID == "" {
				t.Errorf("entry %+v: no id, or a time before the scenario", e)
			}
			rows = append(rows, fmt.Sprintf("%s|%s|%s|%s|%s|%s|%s", e.Actor, e.ActorName, e.Action, e.SessionID, e.Source, e.Result, e.Detail))
		}
		bk, rd := "key:"+backend.ID, "key:"+reader.ID
		want := []string{
			bk + "|backend|session.register|" + vs + "|127.0.0.1|ok|registered: email,first_name,last_name,dob",
			bk + "|backend|session.register|" + vs + "|127.0.0.1|ok|changed: email",
			rd + "|auditor|session.register||127.0.0.1|denied|lacks scope sessions:register: PUT /admin/sessions/" + vs,
			bk + "|backend|session.register|" + vs + "|127.0.0.1|refused|frozen: would change email",
			bk + "|backend|review.decide|" + vs + "|127.0.0.1|refused|approve: " + workflows.ErrPeopleOnly.Error(),
			ann.sub + "|ann@example.com|desk.sign_in||127.0.0.1|ok|reviewer",
			ann.sub + "|ann@example.com|review.view|" + vs + "|127.0.0.1|ok|",
			ann.sub + "|ann@example.com|review.decide|" + vs + "|127.0.0.1|ok|approve",
			ann.sub + "|ann@example.com|review.view|" + vs + "|127.0.0.1|ok|",
			bob.sub + "|bob@example.com|desk.sign_in||127.0.0.1|ok|reviewer",
			bob.sub + "|bob@example.com|review.view|" + vs + "|127.0.0.1|ok|",
			bob.sub + "|bob@example.com|review.decide|" + vs + "|127.0.0.1|ok|approve",
			bob.sub + "|bob@example.com|review.view|" + vs + "|127.0.0.1|ok|",
		}
		if strings.Join(rows, "\n") != strings.Join(want, "\n") {
			t.Errorf("audit log:\n%s\nwant\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
		}
		// A machine approves no high-risk review, whatever subject its body
		// named: four eyes saw two people.
		st, _ := s.state(vs)
		if st.Review == nil || len(st.Review.Approvals) != 2 || st.Review.Approvals[0].Subject != ann.sub || st.Review.Approvals[1].Subject != bob.sub {
			t.Errorf("approvals %+v; want ann's, then bob's", st.Review)
		}
	})
}
