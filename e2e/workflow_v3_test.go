package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"identityverification/config"
	"identityverification/store"
	"identityverification/testevent"
	"identityverification/workflows"
)

// Workflow v3 (issue 19), where it crosses processes: the retry link a user
// holds (webhook, worker, Mailpit), the page Stripe sends the user back to,
// and an operator's reset (Temporal, the database).

// Failures evt_2 then evt_1 (older) arrive: two attempts count, but the user
// holds one email. Its link keeps working (no reminder would bring another).
func TestAReorderedFailureLeavesTheUsersLinkWorking(t *testing.T) {
	p := startSessionProxy(t)
	forEachDatabaseWith(t, config.Map{"STRIPE_API_BASE": p.URL, "REMINDER_AFTER": "0"}, func(t *testing.T, s *stack) {
		vs, to := s.newSession(store.Contact{FirstName: "Ada"})
		s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "document_expired",
			EventID: "evt_2_" + testevent.RandomID(16), Created: time.Now().Add(-time.Minute)})
		link := retryLink(t, waitMails(t, to, 1)[0])
		s.waitState(vs, "the email's link recorded as the newest", func(st workflows.State) bool { return st.RetryLink != nil })
		s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "document_unverified_other",
			EventID: "evt_1_" + testevent.RandomID(16), Created: time.Now().Add(-2 * time.Minute)})
		s.waitState(vs, "two attempts", func(st workflows.State) bool { return st.Attempts == 2 })
		if n := len(mails(t, to)); n != 1 {
			t.Fatalf("%d emails; want the one failure email (the older failure is counted silently)", n)
		}
		click(t, p, vs, link, http.StatusSeeOther)
	})
}

// Stripe sends the user back to a page of the webhook's by default.
func TestTheReturnPage(t *testing.T) {
	p := startSessionProxy(t)
	forEachDatabaseWith(t, config.Map{"STRIPE_API_BASE": p.URL}, func(t *testing.T, s *stack) {
		var created map[string]string
		to := "return-" + testevent.RandomID(8) + "@example.com"
		if code := s.admin(http.MethodPost, "/admin/sessions", adminToken, map[string]string{"email": to}, &created); code != http.StatusCreated {
			t.Fatalf("create: %d %v", code, created)
		}
		p.mu.Lock()
		back := p.creates[len(p.creates)-1].Get("return_url")
		p.mu.Unlock()
		if want := s.env["PUBLIC_BASE_URL"] + "/verify/done"; back != want {
			t.Fatalf("return_url sent to Stripe = %q; want %q", back, want)
		}
		resp, err := http.Get(back)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(string(body), "will email you") {
			t.Errorf("the return page: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	})
}

// An operator resets a session's workflow to before its second failure
// (`temporal workflow reset`, signals after it not reapplied). The reset run
// numbers its transitions again from there; they win in the database, and a
// run restored after it closes carries on from the reset run's state, not
// from the state the reset undid.
func TestAResetRunsTransitionsWin(t *testing.T) {
	forEachDatabaseWith(t, config.Map{"MAX_ATTEMPTS": "5"}, func(t *testing.T, s *stack) {
		ctx := context.Background()
		vs, to := s.newSession(store.Contact{})
		now := time.Now()
		first := testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "document_expired",
			Created: now.Add(-6 * time.Minute), EventID: "evt_" + testevent.RandomID(24)}
		s.send(first)
		waitMails(t, to, 1)
		s.waitState(vs, "the failure email recorded", func(st workflows.State) bool { return st.RetryLink != nil })
		// The first workflow task restored the session from the database,
		// applied the failure and sent its email (one step). Stripe
		// delivers the event again: a second task, which changes nothing,
		// is the reset point below.
		s.send(first)
		eventually(t, "a workflow task completed after the redelivery", func() error {
			signals, completedAfter := 0, false
			it := s.temporal.GetWorkflowHistory(ctx, workflows.WorkflowID(vs), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				e, err := it.Next()
				if err != nil {
					return err
				}
				switch e.GetEventType() {
				case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
					signals++
				case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
					completedAfter = completedAfter || signals == 2
				}
			}
			if !completedAfter {
				return errNotYet
			}
			return nil
		})
		// Three more failures the reset will undo: the undone run's seq
		// then stays above what the reset run writes next.
		for i := range 3 {
			s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "document_expired",
				Created: now.Add(time.Duration(i-5) * time.Minute)})
		}
		s.waitState(vs, "four attempts", func(st workflows.State) bool { return st.Attempts == 4 })
		eventually(t, "the row to hold four attempts", func() error {
			row, err := s.store.Session(ctx, vs)
			if err == nil && row.Attempts != 4 {
				return errNotYet
			}
			return err
		})

		// Reset to the last workflow task before the second failure came
		// (the redelivery's). Not to the first task: the reset run would
		// read the database again to restore, and find what it means to
		// undo.
		desc, err := s.temporal.DescribeWorkflowExecution(ctx, workflows.WorkflowID(vs), "")
		if err != nil {
			t.Fatal(err)
		}
		var resetTo int64
		signals := 0
		it := s.temporal.GetWorkflowHistory(ctx, workflows.WorkflowID(vs), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() && signals < 3 {
			e, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			switch e.GetEventType() {
			case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
				signals++
			case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
				resetTo = e.GetEventId()
			}
		}
		reset, err := s.temporal.ResetWorkflowExecution(ctx, &workflowservice.ResetWorkflowExecutionRequest{
			Namespace: s.namespace, Reason: "e2e: operator reset", RequestId: testevent.RandomID(16),
			WorkflowExecution:         &commonpb.WorkflowExecution{WorkflowId: workflows.WorkflowID(vs), RunId: desc.WorkflowExecutionInfo.Execution.RunId},
			WorkflowTaskFinishEventId: resetTo,
			ResetReapplyType:          enumspb.RESET_REAPPLY_TYPE_NONE, // the second failure is not applied again
			ResetReapplyExcludeTypes:  []enumspb.ResetReapplyExcludeType{enumspb.RESET_REAPPLY_EXCLUDE_TYPE_SIGNAL},
		})
		if err != nil {
			t.Fatal(err)
		}
		s.waitState(vs, "the reset run, one attempt", func(st workflows.State) bool { return st.Attempts == 1 })

		// The reset run's next transition wins over the higher seq the
		// undone run wrote.
		s.send(testevent.Options{Type: "verified", SessionID: vs, Created: now.Add(-time.Minute)})
		row := s.waitRow(vs, workflows.StatusVerified)
		if row.Attempts != 1 {
			t.Errorf("row = %+v; want the reset run's one attempt", row)
		}
		s.waitClosed(vs)

		// A late event starts a run that restores what the reset run left.
		s.send(testevent.Options{Type: "processing", SessionID: vs, Created: now.Add(-90 * time.Second)})
		eventually(t, "a third run", func() error {
			d, err := s.temporal.DescribeWorkflowExecution(ctx, workflows.WorkflowID(vs), "")
			if err != nil {
				return err
			}
			if id := d.WorkflowExecutionInfo.Execution.RunId; id == reset.RunId || d.WorkflowExecutionInfo.CloseTime == nil {
				return errNotYet
			}
			return nil
		})
		row, err = s.store.Session(ctx, vs)
		if err != nil || row.Status != string(workflows.StatusVerified) || row.Attempts != 1 {
			t.Errorf("after the late event: %+v, %v; want verified with the reset run's one attempt", row, err)
		}
		audit, err := s.store.Audit(ctx, vs)
		if err != nil || audit[len(audit)-1].Note != "session already verified" {
			t.Errorf("the late event's transition: %+v, %v; want it recorded against the verified session", audit[len(audit)-1], err)
		}
	})
}
