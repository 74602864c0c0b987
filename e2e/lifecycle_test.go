package e2e

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"identityverification/admin"
	"identityverification/store"
	"identityverification/testevent"
	"identityverification/workflows"
)

// newSession registers a contact (email only, so nothing to compare) for a
// fresh session id and returns both.
func (s *stack) newSession(expect store.Contact) (sessionID, address string) {
	s.t.Helper()
	sessionID = "vs_e2e_" + testevent.RandomID(16)
	address = "user-" + testevent.RandomID(10) + "@example.com"
	expect.SessionID, expect.Email = sessionID, address
	if err := s.store.UpsertContact(context.Background(), expect); err != nil {
		s.t.Fatal(err)
	}
	return sessionID, address
}

func TestVerifiedEventIsPersistedEmailedAndQueryable(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		vs, to := s.newSession(store.Contact{})
		code, body := s.post(fixture(t, "event_verification_session_verified.json", vs, "evt_"+testevent.RandomID(20)))
		if code != http.StatusOK {
			t.Fatalf("webhook answered %d %s; want 200", code, body)
		}

		row := s.waitRow(vs, workflows.StatusVerified)
		if row.StripeStatus != "verified" || row.Attempts != 0 {
			t.Errorf("row = %+v; want stripe status verified, 0 attempts", row)
		}
		got := waitMails(t, to, 1)
		if got[0].Subject != "Your identity is verified" || !strings.Contains(got[0].Text, "your identity is verified") {
			t.Errorf("email = %q / %q", got[0].Subject, got[0].Text)
		}
		// The workflow completed; the state query still answers from history.
		st := s.waitState(vs, "state verified", func(st workflows.State) bool { return st.Status == workflows.StatusVerified })
		if st.SessionID != vs || st.Escalation != workflows.EscalationNone {
			t.Errorf("state = %+v", st)
		}
	})
}

func TestFailedAttemptEmailsTheReasonAndDuplicatesHaveNoEffect(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		vs, to := s.newSession(store.Contact{})
		payload := fixture(t, "event_verification_session_requires_input.json", vs, "evt_"+testevent.RandomID(20))
		for range 3 { // Stripe delivers at least once
			if code, body := s.post(payload); code != http.StatusOK {
				t.Fatalf("webhook answered %d %s", code, body)
			}
		}
		st := s.waitState(vs, "one attempt counted and the reminder armed", func(st workflows.State) bool {
			return st.Attempts == 1 && st.NextTimer != ""
		})
		if st.Status != workflows.StatusRequiresInput || st.LastErrorCode != "document_expired" || st.NextTimer != "reminder" {
			t.Errorf("state = %+v; want requires_input, document_expired, reminder armed", st)
		}
		got := waitMails(t, to, 1)
		if !strings.Contains(got[0].Text, "The document is expired.") || !strings.Contains(got[0].Text, "attempt 1 of 3") {
			t.Errorf("failure email text = %q", got[0].Text)
		}
		// The retry link leads to this service, which asks Stripe for the
		// session's URL (stripe-mock has none: the session is verified
		// there, so nothing can be continued; see retrylink_test.go).
		link := regexp.MustCompile(`http://\S+/verify/retry/\S+`).FindString(got[0].Text)
		if resp, err := http.Get(link); err != nil || resp.StatusCode != http.StatusConflict {
			t.Errorf("retry link %q: %v %v", link, resp, err)
		}
		if resp, _ := http.Get(strings.Replace(link, "token=", "token=x", 1)); resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("a tampered retry link was not refused: %v", resp)
		}
		s.waitRow(vs, workflows.StatusRequiresInput)
		// Give a duplicate every chance to show up, then check there is none.
		time.Sleep(time.Second)
		if n := len(mails(t, to)); n != 1 {
			t.Errorf("%d emails after three deliveries of one event; want 1", n)
		}
		if audit, _ := s.store.Audit(context.Background(), vs); len(audit) != 1 {
			t.Errorf("audit has %d transitions; want 1", len(audit))
		}
	})
}

func TestRefusedDeliveriesStartNothing(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		vs := "vs_e2e_" + testevent.RandomID(16)
		payload := fixture(t, "event_verification_session_verified.json", vs, "evt_"+testevent.RandomID(20))
		req, _ := http.NewRequest(http.MethodPost, s.webhookURL, strings.NewReader(string(payload)))
		req.Header.Set("Stripe-Signature", testevent.Sign(payload, "whsec_wrong", time.Now()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("wrong secret: %d; want 400", resp.StatusCode)
		}
		_, err = s.temporal.DescribeWorkflowExecution(context.Background(), workflows.WorkflowID(vs), "")
		if err == nil {
			t.Error("a workflow exists for a refused delivery")
		}
	})
}

func TestMismatchGoesToReviewAndApprovalVerifies(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		// stripe-mock's verified_outputs are empty, so expected names differ.
		vs, to := s.newSession(store.Contact{FirstName: "Ada", LastName: "Lovelace"})
		s.send(testevent.Options{Type: "verified", SessionID: vs})
		st := s.waitState(vs, "review open", func(st workflows.State) bool { return st.Review.Open() })
		if st.Status != workflows.StatusInReview || strings.Join(st.Review.MismatchedFields, ",") != "first_name,last_name" {
			t.Errorf("state = %+v", st)
		}

		ctx := context.Background()
		update := func(d workflows.ReviewDecision) (workflows.State, error) {
			h, err := s.temporal.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
				WorkflowID: workflows.WorkflowID(vs), UpdateName: workflows.UpdateReviewDecision,
				Args: []any{d}, WaitForStage: client.WorkflowUpdateStageCompleted})
			if err != nil {
				return workflows.State{}, err
			}
			var out workflows.State
			return out, h.Get(ctx, &out)
		}
		if _, err := update(workflows.ReviewDecision{Decision: "maybe", Reviewer: "ops-1"}); err == nil ||
			!strings.Contains(err.Error(), workflows.ErrUnknownDecision.Error()) {
			t.Fatalf("unknown decision: err = %v; want refused by the validator", err)
		}
		// Straight to Temporal, a decision names nobody authenticated.
		if _, err := update(workflows.ReviewDecision{Decision: workflows.DecisionApprove, Reviewer: "ops-2", Subject: "oidc:ops-2"}); err == nil ||
			!strings.Contains(err.Error(), workflows.ErrUnvouched.Error()) {
			t.Fatalf("an unvouched decision: err = %v; want refused by the validator", err)
		}
		// As the admin API and the desk send them, vouched for: four eyes
		// for a name that differs.
		vouched := func(d workflows.ReviewDecision) (workflows.State, error) {
			return admin.Decide(ctx, s.temporal, s.store, workflows.DefaultPolicy(), vs, "", d)
		}
		out, err := vouched(workflows.ReviewDecision{Decision: workflows.DecisionApprove, Reviewer: "ops-2", Subject: "oidc:ops-2"})
		if err != nil || out.Status != workflows.StatusInReview || len(out.Review.Approvals) != 1 || out.Review.ApprovalsNeeded != 2 {
			t.Fatalf("first approval: state %+v, err %v; want 1 of 2", out, err)
		}
		if _, err := vouched(workflows.ReviewDecision{Decision: workflows.DecisionApprove, Reviewer: "ops-2", Subject: "oidc:ops-2"}); err == nil ||
			!strings.Contains(err.Error(), workflows.ErrSameApprover.Error()) {
			t.Fatalf("the same person again: err = %v; want refused by the validator", err)
		}
		out, err = vouched(workflows.ReviewDecision{Decision: workflows.DecisionApprove, Reviewer: "ops-1", Subject: "oidc:ops-1"})
		if err != nil || out.Status != workflows.StatusVerified {
			t.Fatalf("approve: state %+v, err %v", out, err)
		}
		s.waitRow(vs, workflows.StatusVerified)
		rc, err := s.store.Review(ctx, vs)
		if err != nil || rc.Status != store.ReviewApproved || rc.Reviewer != "ops-1" {
			t.Errorf("review case = %+v, %v", rc, err)
		}
		subjects := []string{}
		for _, m := range waitMails(t, to, 2) {
			subjects = append(subjects, m.Subject)
		}
		if strings.Join(subjects, "|") != "Your identity verification is being reviewed|Your identity is verified" {
			t.Errorf("emails = %q", subjects)
		}
	})
}

func TestLateRedactionAfterTheWorkflowFinishedPurgesPersonalData(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		vs, _ := s.newSession(store.Contact{})
		s.send(testevent.Options{Type: "verified", SessionID: vs, Created: time.Now().Add(-time.Hour)})
		s.waitRow(vs, workflows.StatusVerified)
		s.waitClosed(vs) // the first run

		s.send(testevent.Options{Type: "redacted", SessionID: vs})
		row := s.waitRow(vs, workflows.StatusRedacted)
		if !row.Redacted || row.HasContact {
			t.Errorf("row = %+v; want redacted without contact", row)
		}
		if _, err := s.store.Contact(context.Background(), vs); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("contact after redaction: %v; want ErrNotFound", err)
		}
		ids, _ := s.store.ProcessedEventIDs(context.Background(), vs, 10)
		if len(ids) != 2 {
			t.Errorf("event ledger = %v; want both events kept", ids)
		}
		// The purge is final: a registration afterwards stores nothing.
		if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, adminToken, map[string]string{"email": "again@example.com"}, nil); code != http.StatusConflict {
			t.Errorf("registration after redaction: %d; want 409", code)
		}
		if _, err := s.store.Contact(context.Background(), vs); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("contact after a refused registration: %v; want ErrNotFound", err)
		}
	})
}
