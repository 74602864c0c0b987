package workflows_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"identityverification/activities"
	"identityverification/email"
	"identityverification/workflows"
)

// Every step stores the state it leaves, with what it owes and the timers it
// armed, so a run restored from the database (after an operator terminated
// the last one) carries on exactly.
func TestARunRestoredFromWhatAStepStoredCarriesOn(t *testing.T) {
	t.Run("the verified email owed when the run was terminated goes out", func(t *testing.T) {
		h := newHarness(t)
		h.smtpDown = func(time.Time) bool { return true }
		h.deliver(min, ev("evt_v", "verified", min))
		h.env.SetWorkflowRunTimeout(hour) // ends the run during the outage, as a terminate would
		h.env.ExecuteWorkflow(workflows.WorkflowName, workflows.Input{SessionID: vs, Policy: h.policy})
		if h.env.GetWorkflowError() == nil {
			t.Fatal("the first run was not cut short")
		}
		last := h.transitions()[len(h.transitions())-1].St
		equal(t, "the stored state owes the verified email", owedKinds(last), "verified")

		h.restoreFromTransitions()
		h.calls, h.smtpDown = nil, nil
		h.deliver(0, ev("evt_late", "processing", -hour)) // any event starts the new run
		h.run(workflows.Input{})
		equal(t, "emails sent by the restored run", h.emailKinds(), "verified")
	})
	t.Run("a failure's timers and email are in what it stored", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_f", "document_expired", min))
		h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
		h.run(workflows.Input{})
		st := h.transitions()[0].St
		equal(t, "timers", []any{st.NextTimer, st.ExpiresAt}, []any{"reminder", t0.Add(min + 7*day)})
		equal(t, "owed", owedKinds(st), "failed")
	})
	t.Run("an overdue review keeps its count and deadline", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_f", "under_supported_age", min))
		h.decide(5*day, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
		h.run(workflows.Input{})
		var overdue []workflows.State
		for _, tr := range h.transitions() {
			if strings.HasPrefix(tr.Key, "review:overdue:") {
				overdue = append(overdue, tr.St)
			}
		}
		if len(overdue) != 2 {
			t.Fatalf("%d overdue transitions; want 2 (at 2 and 4 days)", len(overdue))
		}
		r := overdue[1].Review
		equal(t, "stored count and deadline", []any{r.Overdue, r.DeadlineAt}, []any{2, t0.Add(min + 6*day)})
		equal(t, "stored owes the notice", owedKinds(overdue[1]), "ops_review_overdue")
	})
}

// A second review of the session (a fraud code after an approved review)
// must not reuse the first one's email keys: the ledger would skip them.
func TestASecondReviewHasEmailsOfItsOwn(t *testing.T) {
	h := newHarness(t)
	h.compare.Match, h.compare.MismatchedFields = false, []string{"dob"}
	h.deliver(min, ev("evt_v", "verified", min))
	h.decide(h.policy.ReviewDeadline+hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	h.decide(h.policy.ReviewDeadline+2*hour, "approve 2", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-2"})
	h.run(workflows.Input{})
	h.restoreFromTransitions()
	h.deliver(0, failed("evt_f", "selfie_manipulated", 0))
	h.decide(h.policy.ReviewDeadline+hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops"})
	st := h.run(workflows.Input{})
	equal(t, "final", st.Status, workflows.StatusRejected)
	n := map[email.Kind]int{}
	for _, r := range h.emails() {
		n[r.Kind]++
	}
	equal(t, "emails of both reviews", []int{n[email.KindUnderReview], n[email.KindOpsReviewOpened], n[email.KindOpsReviewOverdue]},
		[]int{2, 2, 2})
}

func TestAnEscalationNeverActsOnStaleInformation(t *testing.T) {
	t.Run("the limit reached by a late failure after the user moved on does not escalate", func(t *testing.T) {
		// Three failures and a newer verified, in every order: Stripe says
		// verified, so no order escalates.
		evs := []workflows.Event{failed("evt_1", "document_expired", min), failed("evt_2", "document_expired", 2*min),
			failed("evt_3", "document_expired", 3*min), ev("evt_v", "verified", 4*min)}
		for _, order := range permutations(len(evs)) {
			h := newHarness(t)
			h.stripeStatus, h.switchRefusedUnless = "verified", "requires_input"
			var events []workflows.Event
			for _, k := range order {
				events = append(events, evs[k])
			}
			end, _ := h.deliverAcrossRuns(events, day)
			if got, want := summary(h, end), "verified attempts=3/0 escalation=none code=document_expired review= last=verified ops=0"; got != want {
				t.Fatalf("order %v:\n got %s\nwant %s", order, got, want)
			}
		}
	})
	t.Run("an escalation never moves the status back", func(t *testing.T) {
		h := newHarness(t)
		h.stripeStatus = "processing"
		h.deliver(min, failed("evt_1", "document_expired", 10*min))
		h.deliver(2*min, failed("evt_2", "document_expired", 20*min))
		h.deliver(3*min, ev("evt_p", "processing", 40*min))
		h.deliver(4*min, failed("evt_3", "document_expired", 30*min))
		h.snapshotAt(hour, "after")
		h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
		h.run(workflows.Input{})
		equal(t, "status follows the newest event", h.states["after"].Status, workflows.StatusProcessing)
		equal(t, "attempts", h.states["after"].Attempts, 3)
		equal(t, "no switch", h.count("SwitchSessionType"), 0)
	})
}

func TestAVerifiedCreatedBeforeExpiryButDeliveredAfterIsNotLost(t *testing.T) {
	h := newHarness(t)
	h.stripeStatus = "verified" // the user finished just before the deadline
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.deliver(7*day+hour, ev("evt_v", "verified", 7*day-time.Minute)) // Stripe retried it late
	st := h.run(workflows.Input{})
	equal(t, "final", st.Status, workflows.StatusVerified)
	equal(t, "no cancel", h.count("CancelSession"), 0)
	equal(t, "emails", h.emailKinds(), "failed,reminder,expiry_warning,verified")
}

func TestADecisionRacingARedactionIsRefused(t *testing.T) {
	h := newHarness(t)
	h.redactDown = func(now time.Time) bool { return now.Before(t0.Add(30 * min)) }
	h.deliver(min, failed("evt_f", "under_supported_age", min))
	h.deliver(10*min, ev("evt_r", "redacted", 10*min))
	h.decide(20*min, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	st := h.run(workflows.Input{})
	refused(t, "a decision the redaction overtook", h.updates["approve"], workflows.ErrNoReviewOpen)
	equal(t, "final", st.Status, workflows.StatusRedacted)
	equal(t, "not decided", h.count("DecideReview"), 0)
}

func TestCancelingTheWorkflowDuringADatabaseOutageEndsIt(t *testing.T) {
	h := newHarness(t)
	h.recordErr = errSMTPDown
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.env.RegisterDelayedCallback(h.env.CancelWorkflow, 10*min)
	h.env.ExecuteWorkflow(workflows.WorkflowName, workflows.Input{SessionID: vs, Policy: h.policy})
	if !h.env.IsWorkflowCompleted() {
		t.Fatal("the workflow did not end")
	}
	if err := h.env.GetWorkflowError(); !temporal.IsCanceledError(err) {
		t.Errorf("workflow error %v; want canceled", err)
	}
	if n := h.count("RecordTransition:requires_input"); n > 100 {
		t.Errorf("%d tries of the write; want the retries to stop at the cancel", n)
	}
}

// A fraud code created before `verified` but handled while the comparison
// runs (the same workflow task, or any time during a Stripe outage) follows
// LATE_FRAUD_POLICY as if the session were verified, however it is timed.
func TestAFraudCodeDuringTheComparisonFollowsTheLateFraudPolicy(t *testing.T) {
	for _, batched := range []bool{false, true} {
		name := "a minute apart"
		if batched {
			name = "in one workflow task"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.policy.LateFraud = workflows.LateFraudRecord
			h.stripeStatus = "verified"
			v, f := ev("evt_v", "verified", 2*min), failed("evt_f", "selfie_manipulated", min)
			if batched {
				h.deliverAll(min, v, f)
			} else {
				h.deliver(min, v)
				h.deliver(2*min, f)
			}
			h.decide(3*day, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops"}) // ends a review, if one opened
			st := h.run(workflows.Input{})
			equal(t, "final status (record policy: the late code is only recorded)", st.Status, workflows.StatusVerified)
			equal(t, "no cancel of a verified session", h.count("CancelSession"), 0)
		})
	}
}

// A redaction and a decision that both wait while the main loop is busy
// (here a database outage slows the review deadline's step) apply in the
// order they came: the redaction closes the review, the decision is refused.
func TestADecisionBehindARedactionIsRefused(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "under_supported_age", min)) // review due at 48h+1m
	h.env.RegisterDelayedCallback(func() { h.recordErr = errSMTPDown }, 48*hour)
	h.deliver(48*hour+5*min, ev("evt_r", "redacted", 48*hour+5*min))
	h.decide(48*hour+10*min, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	h.env.RegisterDelayedCallback(func() { h.recordErr = nil }, 48*hour+20*min)
	st := h.run(workflows.Input{})
	refused(t, "a decision that came after the redaction", h.updates["approve"], workflows.ErrNoReviewOpen)
	equal(t, "final", st.Status, workflows.StatusRedacted)
	equal(t, "not decided in the database", h.count("DecideReview"), 0)
	equal(t, "no approval email", h.count("SendEmail:review_approved"), 0)
}

// A stored state that cannot be read is retried with a growing pause, not
// every 30 s (each try is a marker and a timer in history).
func TestAnUnreadableStoredStateIsRetriedWithBackoff(t *testing.T) {
	h := newHarness(t)
	h.snapshot = activities.Snapshot{Known: true, State: json.RawMessage(`{"session_id":"vs_test_1","status":7}`)}
	h.deliver(0, ev("evt_1", "processing", 0))
	h.snapshotAt(hour, "waiting")
	h.env.SetWorkflowRunTimeout(day)
	h.env.ExecuteWorkflow(workflows.WorkflowName, workflows.Input{SessionID: vs, Policy: h.policy})
	if n := h.count("LoadSession"); n > 40 {
		t.Errorf("%d loads of the stored state in one day; want a backoff to an hour", n)
	}
	equal(t, "shown to ops", issueCodes(h.states["waiting"]), []string{workflows.IssueDatabaseRejected})
	equal(t, "nothing recorded over the stored state", h.count("RecordTransition:processing"), 0)
}

// A failure created before a newer `processing`, delivered late, reaches
// the attempt limit while Stripe cannot be asked: the newest event applied
// says the user moved on, so nothing escalates.
func TestAStaleFailureDoesNotEscalateWhenStripeCannotBeAsked(t *testing.T) {
	h := newHarness(t)
	h.stripeDown = func(now time.Time) bool { return now.Before(t0.Add(12 * min)) }
	h.deliver(min, failed("evt_1", "document_expired", 10*min))
	h.deliver(2*min, failed("evt_2", "document_expired", 20*min))
	h.deliver(3*min, ev("evt_p", "processing", 40*min))
	h.deliver(4*min, failed("evt_3", "document_expired", 30*min)) // late: created before evt_p
	h.snapshotAt(hour, "after")
	h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
	h.decide(3*day, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"}) // ends a review, if one opened
	h.run(workflows.Input{})
	st := h.states["after"]
	equal(t, "status follows the newest event", st.Status, workflows.StatusProcessing)
	equal(t, "no escalation on a stale failure", st.Escalation, workflows.EscalationNone)
	equal(t, "the user's submission is not canceled", h.count("CancelSession"), 0)
}

func TestASecondVerifiedWhileComparingIsNotComparedAgain(t *testing.T) {
	h := newHarness(t)
	h.deliverAll(min, ev("evt_v1", "verified", min), ev("evt_v2", "verified", min))
	st := h.run(workflows.Input{})
	equal(t, "comparisons", h.count("CompareVerifiedOutputs"), 1)
	equal(t, "final", st.Status, workflows.StatusVerified)
}

// A run restored from the database holds exactly the stored state: every
// field (a new State field fails the fixture check until it is set here).
func TestARestoredRunHoldsExactlyTheStoredState(t *testing.T) {
	deadline := t0.Add(30 * hour)
	// The policy the session started with, not the input's: a restored run
	// keeps it, whichever process started the run.
	storedPolicy := workflows.DefaultPolicy()
	storedPolicy.MaxAttempts, storedPolicy.ExpiryWarning, storedPolicy.ReviewApprovalsHighRisk = 5, day, 2
	stored := workflows.State{SessionID: vs, Status: workflows.StatusInReview, StripeStatus: "canceled",
		SessionType: "id_number", Attempts: 3, LastErrorCode: "id_number_mismatch", LastErrorReason: "no match",
		Escalation: workflows.EscalationReview, AlternateAttempts: 2, LastErrorCreated: t0.Add(-3 * hour).Unix(),
		LastErrorEventID: "evt_2", AlternateSince: t0.Add(-2 * day).Unix(),
		Review:    &workflows.Review{Reason: "attempts_exhausted", OpenedAt: t0.Add(-18 * hour), DeadlineAt: deadline, Overdue: 1},
		NextTimer: "review_deadline", NextTimerAt: deadline,
		ReminderAt: deadline.Add(hour), WarningAt: deadline.Add(90 * min), ExpiresAt: deadline.Add(2 * hour), // later than the deadline: not due
		Seq: 9, LastEventCreated: t0.Add(-hour).Unix(), Redacted: true, ProcessedEventIDs: []string{"evt_1", "evt_2"},
		EmailIssue: "review_rejected email skipped: no contact",
		Issues:     []workflows.Issue{{Code: workflows.IssueEmailRefused, Detail: "550 no such user", Since: t0.Add(-day)}},
		Runs:       2, FirstType: "document", RetryLink: &workflows.RetryLane{Alternate: true, Attempt: 2},
		ExpiredAt: t0.Add(-4 * day), WatchdogAt: t0.Add(-5 * day), StaleEmailsDropped: 1, Policy: &storedPolicy,
	}
	// Owed and Comparing act at once (tested elsewhere); every other field is set.
	v := reflect.ValueOf(stored)
	for i := range v.NumField() {
		if name := v.Type().Field(i).Name; name != "Owed" && name != "Comparing" && v.Field(i).IsZero() {
			t.Fatalf("fixture: set State.%s", name)
		}
	}
	h := newHarness(t)
	h.stored(stored, stored.ProcessedEventIDs...)
	h.snapshotAt(min, "restored")
	h.decide(2*min, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	h.run(workflows.Input{})
	equal(t, "restored state", h.states["restored"], stored)
}
