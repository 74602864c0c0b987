package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"identityverification/config"
	"identityverification/devstack"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/workflows"
)

// TestAnSMTPOutageHoldsUpNoOutcome kills the SMTP server, sends a failure
// then a verified event, and checks the outcome is applied at once (state,
// database row, search attribute) while the emails wait; with SMTP back,
// each email goes out exactly once.
func TestAnSMTPOutageHoldsUpNoOutcome(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			smtpPort, _ := devstack.FreePort()
			apiPort, _ := devstack.FreePort()
			mp, err := devstack.StartMailpit(ctx, components.bins["mailpit"], dir, smtpPort, apiPort)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mp.Stop() })
			s := startStack(t, db, config.Map{"SMTP_URL": "smtp://" + mp.SMTPAddr})
			vs, to := s.newSession(store.Contact{})

			mp.Kill()
			if _, err := net.DialTimeout("tcp", mp.SMTPAddr, time.Second); err == nil {
				t.Fatal("SMTP still answers after the kill")
			}
			s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "document_expired",
				Created: time.Now().Add(-time.Minute)})
			s.send(testevent.Options{Type: "verified", SessionID: vs})

			row := s.waitRow(vs, workflows.StatusVerified)
			if row.Attempts != 1 {
				t.Errorf("row = %+v; want 1 attempt", row)
			}
			st := s.waitState(vs, "the outage shown to ops", func(st workflows.State) bool {
				return st.Status == workflows.StatusVerified && slices.ContainsFunc(st.Issues,
					func(is workflows.Issue) bool { return is.Code == workflows.IssueEmailDelayed })
			})
			if len(st.Owed) != 2 || st.Owed[0].Email.Kind != "failed" || st.Owed[1].Email.Kind != "verified" {
				t.Errorf("owed = %+v; want the failure email, then the verified one", st.Owed)
			}
			s.waitVisible(vs, "VerificationStatus = 'verified' AND VerificationIssues = 'email_delayed'")
			if n := len(mails(t, to)); n != 0 {
				t.Fatalf("%d emails while SMTP was down", n)
			}

			mp, err = devstack.StartMailpit(ctx, components.bins["mailpit"], dir, smtpPort, apiPort)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mp.Stop() })
			s.waitClosed(vs)
			msgs, err := mp.Messages(ctx, to)
			if err != nil {
				t.Fatal(err)
			}
			var subjects []string
			for _, m := range msgs {
				subjects = append(subjects, m.Subject)
			}
			if !slices.Equal(subjects, []string{"We could not verify your document", "Your identity is verified"}) {
				t.Errorf("emails after SMTP came back = %q; want the failure, then verified, once each", subjects)
			}
			if st, _ := s.state(vs); len(st.Issues) != 0 || len(st.Owed) != 0 {
				t.Errorf("issues %+v, owed %+v after SMTP came back; want none", st.Issues, st.Owed)
			}
			s.waitVisible(vs, "VerificationStatus = 'verified' AND VerificationIssues IS NULL")
		})
	}
}

func TestInputThatCannotBeStoredIsRefusedAndTheSessionStillDecided(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		vs := "vs_nul_" + testevent.RandomID(12)
		for _, reg := range []map[string]string{
			{"email": "a@example.com", "first_name": "Ada\x00"},
			{"email": "a@example.com", "last_name": "Love\nlace"},
			{"email": "a@example.com", "client_reference_id": string(make([]rune, 201))},
		} {
			var refusal map[string]string
			if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, adminToken, reg, &refusal); code != http.StatusBadRequest {
				t.Errorf("registration %q: %d %v; want 400", reg, code, refusal)
			}
		}
		s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "under_supported_age"})
		s.waitState(vs, "the review to open", func(st workflows.State) bool { return st.Review.Open() })
		var refusal map[string]string
		code := s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", adminToken,
			workflows.ReviewDecision{Decision: "approve", Reviewer: "ops\x00eve"}, &refusal)
		if code != http.StatusBadRequest || refusal["error"] != workflows.ErrBadReviewer.Error() {
			t.Errorf("NUL-byte reviewer: %d %v; want 400 %q", code, refusal, workflows.ErrBadReviewer)
		}
		var st workflows.State
		if code := s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", adminToken,
			workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-eve"}, &st); code != http.StatusOK || st.Status != workflows.StatusVerified {
			t.Fatalf("proper reviewer: %d %+v; want 200 verified", code, st)
		}
		s.waitRow(vs, workflows.StatusVerified)
		if rc, err := s.store.Review(context.Background(), vs); err != nil || rc.Reviewer != "ops-eve" {
			t.Errorf("review case = %+v, %v", rc, err)
		}
	})
}

// TestATerminatedRunCarriesOnExactly: an operator terminates a session's run
// mid-review; the next event, or the decision itself, starts a new run that
// restores the review from the database and carries on.
func TestATerminatedRunCarriesOnExactly(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		ctx := context.Background()
		openThenTerminate := func() string {
			vs, _ := s.newSession(store.Contact{})
			s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "document_expired", Created: time.Now().Add(-2 * time.Minute)})
			s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "selfie_manipulated", Created: time.Now().Add(-time.Minute)})
			s.waitState(vs, "the review to open", func(st workflows.State) bool { return st.Review.Open() })
			s.waitRow(vs, workflows.StatusInReview)
			if err := s.temporal.TerminateWorkflow(ctx, workflows.WorkflowID(vs), "", "e2e: operator terminated"); err != nil {
				t.Fatal(err)
			}
			s.waitClosed(vs)
			return vs
		}
		check := func(vs string, st workflows.State) {
			t.Helper()
			if st.Attempts != 2 || st.Escalation != workflows.EscalationReview || st.LastErrorCode != "selfie_manipulated" ||
				st.Review == nil || st.Review.Reason != "non_retryable:selfie_manipulated" {
				t.Errorf("restored state = %+v; want 2 attempts, the review on selfie_manipulated", st)
			}
		}

		t.Run("then an event", func(t *testing.T) {
			vs := openThenTerminate()
			s.send(testevent.Options{Type: "processing", SessionID: vs})
			st := s.waitState(vs, "a new run with the review open", func(st workflows.State) bool {
				return st.Review.Open() && st.StripeStatus == "processing"
			})
			check(vs, st)
			if code := s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", adminToken,
				workflows.ReviewDecision{Decision: "reject", Reviewer: "ops-fay"}, &st); code != http.StatusOK || st.Status != workflows.StatusRejected {
				t.Fatalf("decision: %d %+v", code, st)
			}
			s.waitRow(vs, workflows.StatusRejected)
		})
		t.Run("then the decision", func(t *testing.T) {
			vs := openThenTerminate()
			var st workflows.State
			// A fraud review needs two people to approve; one rejects.
			if code := s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", adminToken,
				workflows.ReviewDecision{Decision: "reject", Reviewer: "ops-fay"}, &st); code != http.StatusOK || st.Status != workflows.StatusRejected {
				t.Fatalf("decision after terminate: %d %+v; want 200 rejected", code, st)
			}
			check(vs, st)
			s.waitRow(vs, workflows.StatusRejected)
			audit, _ := s.store.Audit(ctx, vs)
			if last := audit[len(audit)-1]; last.From != "in_review" || last.To != "rejected" {
				t.Errorf("last transition %+v; want in_review -> rejected", last)
			}
		})
		t.Run("a decision for a session whose workflow completed is refused and starts nothing", func(t *testing.T) {
			vs, _ := s.newSession(store.Contact{})
			s.send(testevent.Options{Type: "canceled", SessionID: vs})
			s.waitClosed(vs)
			desc, err := s.temporal.DescribeWorkflowExecution(ctx, workflows.WorkflowID(vs), "")
			if err != nil {
				t.Fatal(err)
			}
			var refusal map[string]string
			if code := s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", adminToken,
				workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-fay"}, &refusal); code != http.StatusConflict {
				t.Errorf("decision for a completed session: %d %v; want 409", code, refusal)
			}
			after, err := s.temporal.DescribeWorkflowExecution(ctx, workflows.WorkflowID(vs), "")
			if err != nil || after.WorkflowExecutionInfo.Execution.RunId != desc.WorkflowExecutionInfo.Execution.RunId {
				t.Errorf("a run was started for the decision: %v", err)
			}
		})
		t.Run("a decision for a session that never ran is 404", func(t *testing.T) {
			code := s.admin(http.MethodPost, "/admin/sessions/vs_never_"+testevent.RandomID(8)+"/review", adminToken,
				workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-fay"}, nil)
			if code != http.StatusNotFound {
				t.Errorf("decision for an unknown session: %d; want 404", code)
			}
		})
	})
}

// waitClosed waits until the session's current run has closed.
func (s *stack) waitClosed(vs string) {
	s.t.Helper()
	eventually(s.t, vs+" to close", func() error {
		d, err := s.temporal.DescribeWorkflowExecution(context.Background(), workflows.WorkflowID(vs), "")
		if err != nil {
			return err
		}
		if d.WorkflowExecutionInfo.CloseTime == nil {
			return errors.New("still running")
		}
		return nil
	})
}

// waitVisible waits until a visibility query finds the session's workflow,
// as ops would find it in the Temporal UI.
func (s *stack) waitVisible(vs, query string) {
	s.t.Helper()
	q := fmt.Sprintf("WorkflowId = '%s' AND %s", workflows.WorkflowID(vs), query)
	eventually(s.t, "the UI to find "+q, func() error {
		resp, err := s.temporal.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: s.namespace, Query: q})
		if err != nil {
			return err
		}
		if len(resp.Executions) == 0 {
			return errNotYet
		}
		return nil
	})
}
