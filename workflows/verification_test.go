package workflows_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"

	"identityverification/activities"
	"identityverification/email"
	"identityverification/workflows"
)

const (
	min  = time.Minute
	hour = time.Hour
	day  = 24 * time.Hour
)

func TestVerifiedWithMatchingOutputsEndsVerified(t *testing.T) {
	t.Run("Stripe answers at once: one step", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, ev("evt_v", "verified", min))
		st := h.run(workflows.Input{})
		equal(t, "status", st.Status, workflows.StatusVerified)
		// The comparison with Stripe's verified outputs runs within the
		// event's step: one transition, then the email.
		equal(t, "activities", h.names(), []string{"LoadSession", "CompareVerifiedOutputs", "RecordTransition:verified",
			"SendEmail:verified"})
		tr := h.transitions()[0]
		equal(t, "transition", []any{tr.Key, tr.EventID, tr.EventType, tr.From, tr.St.Seq, tr.St.StripeStatus, tr.Note, owedKinds(tr.St)},
			[]any{"evt_v", "evt_v", workflows.EventVerified, "new", int64(1), "verified", "verified outputs compared", "verified"})
		equal(t, "email", h.emails()[0], activities.EmailRequest{SessionID: vs, Kind: email.KindVerified, Ref: "1"})
		equal(t, "nothing owed at the end", len(st.Owed), 0)
	})
	t.Run("Stripe is slow: the event is recorded at once, the outcome when Stripe answers", func(t *testing.T) {
		h := newHarness(t)
		h.compareFails = 1 // the try within the step
		h.deliver(min, ev("evt_v", "verified", min))
		st := h.run(workflows.Input{})
		equal(t, "status", st.Status, workflows.StatusVerified)
		equal(t, "activities", h.sequential(), []string{"LoadSession", "RecordTransition:new",
			"RecordTransition:verified", "SendEmail:verified"})
		tr := h.transitions()[0]
		equal(t, "event transition", []any{tr.Key, tr.EventID, tr.EventType, tr.From, tr.St.Seq, tr.St.StripeStatus, tr.Note},
			[]any{"evt_v", "evt_v", workflows.EventVerified, "new", int64(1), "verified", "comparing verified outputs"})
		tr = h.transitions()[1]
		equal(t, "outcome transition", []any{tr.Key, tr.From, tr.St.Seq, tr.St.Status, owedKinds(tr.St)},
			[]any{"compared:evt_v:2", "new", int64(2), workflows.StatusVerified, "verified"})
		equal(t, "email", h.emails()[0], activities.EmailRequest{SessionID: vs, Kind: email.KindVerified, Ref: "2"})
	})
}

func TestASkippedEmailIsShownToOps(t *testing.T) {
	h := newHarness(t)
	h.emailResult = map[email.Kind]activities.EmailResult{
		email.KindVerified: {Status: "skipped", Detail: "no contact registered for the session"}}
	h.deliver(min, ev("evt_v", "verified", min))
	st := h.run(workflows.Input{})
	equal(t, "status", st.Status, workflows.StatusVerified)
	equal(t, "email issue", st.EmailIssue, "verified email skipped: no contact registered for the session")
}

func TestEachEventAlone(t *testing.T) {
	cases := []struct {
		typ        string
		wantStatus workflows.Status
		wantNames  []string
		cancelBy   []string // the transitions that owe a Stripe cancel
	}{
		// created and requires_input without an error wait for the user
		// until expiry: a reminder first, then the session expires.
		// Before it expires a session, the workflow asks Stripe whether the
		// user came back meanwhile.
		{"created", workflows.StatusExpired, []string{"LoadSession", "RecordTransition:created",
			"RecordTransition:created", "SendEmail:reminder", "RecordTransition:created", "SendEmail:expiry_warning",
			"FetchSessionStatus", "RecordTransition:expired",
			"SendEmail:expired"}, []string{"RecordTransition:expired"}},
		{"requires_input", workflows.StatusExpired, []string{"LoadSession", "RecordTransition:requires_input",
			"RecordTransition:requires_input", "SendEmail:reminder", "RecordTransition:requires_input",
			"SendEmail:expiry_warning", "FetchSessionStatus", "RecordTransition:expired",
			"SendEmail:expired"}, []string{"RecordTransition:expired"}},
		{"canceled", workflows.StatusCanceled, []string{"LoadSession", "RecordTransition:canceled"}, nil},
		{"redacted", workflows.StatusRedacted, []string{"LoadSession", "RedactSession", "RecordTransition:redacted"}, nil},
		{"verified", workflows.StatusVerified, []string{"LoadSession", "RecordTransition:verified", "SendEmail:verified"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.typ+" alone", func(t *testing.T) {
			h := newHarness(t)
			e := ev("evt_1", tc.typ, min)
			h.deliver(min, e)
			st := h.run(workflows.Input{})
			equal(t, "status", st.Status, tc.wantStatus)
			h.calls = slices.DeleteFunc(h.calls, func(c call) bool { return c.Name == "CompareVerifiedOutputs" })
			equal(t, "activities", h.lanes(tc.cancelBy...), tc.wantNames)
		})
	}
	t.Run("processing alone waits for the next event, asking Stripe once a day", func(t *testing.T) {
		h := newHarness(t)
		h.stripeStatus = "processing"
		h.deliver(min, ev("evt_p", "processing", min))
		h.snapshotAt(2*day+hour, "processing")
		h.deliver(2*day+2*hour, ev("evt_v", "verified", 2*day+2*hour))
		h.run(workflows.Input{})
		st := h.states["processing"]
		equal(t, "status", st.Status, workflows.StatusProcessing)
		equal(t, "next timer", []any{st.NextTimer, st.NextTimerAt}, []any{"processing_watchdog", t0.Add(min + 3*day)})
		equal(t, "activities", h.sequential(), []string{"LoadSession", "RecordTransition:processing",
			"FetchSessionStatus", "RecordTransition:processing", "FetchSessionStatus", "RecordTransition:processing",
			"RecordTransition:verified", "SendEmail:verified"})
	})
}

func TestVerifiedWithDifferentOutputsOpensAReview(t *testing.T) {
	h := newHarness(t)
	h.compare = activities.Comparison{Compared: true, MismatchedFields: []string{"last_name", "dob"}}
	h.deliver(min, ev("evt_v", "verified", min))
	h.snapshotAt(hour, "review")
	// A name or date of birth that differs: two people must approve.
	h.decide(2*hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ann@example.com", Subject: "oidc:ann"})
	h.snapshotAt(2*hour+min, "one approval")
	h.decide(3*hour, "approve again", workflows.ReviewDecision{Decision: "approve", Reviewer: "ann@example.com", Subject: "oidc:ann"})
	h.decide(4*hour, "second approval", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-ann", Subject: "oidc:bo"})
	st := h.run(workflows.Input{})

	r := h.states["review"]
	equal(t, "status in review", r.Status, workflows.StatusInReview)
	equal(t, "fields", r.Review.MismatchedFields, []string{"last_name", "dob"})
	equal(t, "next timer", r.NextTimer, "review_deadline")
	equal(t, "approvals needed", r.Review.ApprovalsNeeded, 2)
	one := h.states["one approval"]
	equal(t, "after one approval", []any{one.Status, one.Review.Open(), one.Review.Approvals},
		[]any{workflows.StatusInReview, true, []workflows.Approval{{Subject: "oidc:ann", Reviewer: "ann@example.com", At: t0.Add(2 * hour)}}})
	refused(t, "the same person twice", h.updates["approve again"], workflows.ErrSameApprover)
	// The session is verified at Stripe: nothing to cancel.
	equal(t, "activities", h.sequential(), []string{"LoadSession",
		"OpenReview", "RecordTransition:in_review", "SendEmail:under_review", "SendEmail:ops_review_opened",
		"CheckDecision", "RecordTransition:in_review", "CheckDecision", "DecideReview", "RecordTransition:verified", "SendEmail:review_approved"})
	equal(t, "review opened", h.inputs("OpenReview")[0], activities.ReviewInput{SessionID: vs, Reason: "mismatch",
		MismatchedFields: []string{"last_name", "dob"}, OpenedAt: t0.Add(min)})
	var from []string
	for _, tr := range h.transitions() {
		from = append(from, tr.From)
	}
	equal(t, "from statuses", from, []string{"new", "in_review", "in_review"})
	equal(t, "final", st.Status, workflows.StatusVerified)
	equal(t, "decision", st.Review.Decision+" by "+st.Review.Reviewer+" ("+st.Review.Subject+")", "approve by ops-ann (oidc:bo)")
	for _, u := range []string{"approve", "second approval"} {
		if err := h.updates[u]; err != nil {
			t.Errorf("update %s: %v", u, err)
		}
	}
}

func TestFailuresCountAttemptsAgainstTheLimit(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d failures count %d attempts", n, n), func(t *testing.T) {
			h := newHarness(t)
			for i := range n {
				h.deliver(time.Duration(i+1)*hour, failed("evt_f"+string(rune('a'+i)), "document_expired", time.Duration(i+1)*hour))
			}
			h.snapshotAt(time.Duration(n)*hour+min, "after")
			h.deliver(20*hour, ev("evt_v", "verified", 20*hour))
			h.run(workflows.Input{})
			st := h.states["after"]
			equal(t, "attempts", st.Attempts, n)
			equal(t, "status", st.Status, workflows.StatusRequiresInput)
			equal(t, "escalation", st.Escalation, workflows.EscalationNone)
			equal(t, "code", st.LastErrorCode, "document_expired")
			var fails []activities.EmailRequest
			for _, r := range h.emails() {
				if r.Kind == email.KindFailed {
					fails = append(fails, r)
				}
			}
			if len(fails) != n {
				t.Fatalf("failure emails = %d; want %d", len(fails), n)
			}
			equal(t, "last failure email", fails[n-1], activities.EmailRequest{SessionID: vs, Kind: email.KindFailed,
				Ref: fmt.Sprintf("document-%d", n), Attempt: n, MaxAttempts: 3, Reason: "reason for document_expired",
				Link: &activities.LinkLane{Attempt: n}})
		})
	}
	t.Run("the limit escalates to the alternate method", func(t *testing.T) {
		h := newHarness(t)
		for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
			h.deliver(time.Duration(i+1)*hour, failed(id, "document_expired", time.Duration(i+1)*hour))
		}
		h.snapshotAt(3*hour+min, "escalated")
		h.deliver(20*hour, ev("evt_v", "verified", 20*hour))
		st := h.run(workflows.Input{})
		esc := h.states["escalated"]
		equal(t, "escalation", esc.Escalation, workflows.EscalationAlternate)
		equal(t, "session type", esc.SessionType, "id_number")
		equal(t, "attempts", esc.Attempts, 3)
		equal(t, "emails", h.emailKinds(), "failed,failed,alternate_offered,verified")
		equal(t, "switch", h.inputs("SwitchSessionType"), []any{activities.SwitchInput{SessionID: vs, Type: "id_number"}})
		equal(t, "final", st.Status, workflows.StatusVerified)
	})
}

func TestCodesNoRetryCanFixEscalateAtOnce(t *testing.T) {
	for _, code := range []string{"under_supported_age", "country_not_supported", "selfie_manipulated"} {
		t.Run(code, func(t *testing.T) {
			h := newHarness(t)
			h.deliver(min, failed("evt_f", code, min))
			h.snapshotAt(hour, "review")
			h.decide(2*hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops-bo"})
			st := h.run(workflows.Input{})
			r := h.states["review"]
			equal(t, "escalation", r.Escalation, workflows.EscalationReview)
			equal(t, "attempts", r.Attempts, 1)
			equal(t, "reason", r.Review.Reason, "non_retryable:"+code)
			// One step: the failure opens the review; its record holds
			// the effects it owes, which go out after it: the cancel in a
			// lane of its own, so no email waits for Stripe.
			equal(t, "activities", h.lanes("RecordTransition:in_review"), []string{"LoadSession",
				"OpenReview", "RecordTransition:in_review", "SendEmail:under_review", "SendEmail:ops_review_opened",
				"CheckDecision", "DecideReview", "RecordTransition:rejected", "SendEmail:review_rejected"})
			equal(t, "owed by the record", owedKinds(h.transitions()[0].St), "under_review,ops_review_opened")
			equal(t, "final", st.Status, workflows.StatusRejected)
		})
	}
}

func TestNullAndUnknownCodesAreGenericFailures(t *testing.T) {
	for _, code := range []string{"", "a_code_stripe_adds_next_year"} {
		t.Run("code "+code, func(t *testing.T) {
			h := newHarness(t)
			h.deliver(min, failed("evt_f", code, min))
			h.snapshotAt(hour, "after")
			h.deliver(20*hour, ev("evt_v", "verified", 20*hour))
			h.run(workflows.Input{})
			st := h.states["after"]
			want := code
			if want == "" {
				want = "unspecified"
			}
			equal(t, "code", st.LastErrorCode, want)
			equal(t, "attempts", st.Attempts, 1)
			equal(t, "escalation", st.Escalation, workflows.EscalationNone)
			equal(t, "emails", h.emailKinds(), "failed,verified")
		})
	}
}

func TestAlternateExhaustedGoesToReview(t *testing.T) {
	h := newHarness(t)
	at := time.Duration(0)
	for _, id := range []string{"evt_1", "evt_2", "evt_3", "evt_4", "evt_5"} {
		at += hour
		h.deliver(at, failed(id, "document_unverified_other", at))
	}
	h.snapshotAt(at+min, "review")
	h.decide(at+hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-cy"})
	st := h.run(workflows.Input{})
	r := h.states["review"]
	equal(t, "status", r.Status, workflows.StatusInReview)
	equal(t, "attempts", r.Attempts, 3)
	equal(t, "alternate attempts", r.AlternateAttempts, 2)
	equal(t, "reason", r.Review.Reason, "attempts_exhausted")
	equal(t, "emails", h.emailKinds(), "failed,failed,alternate_offered,failed,under_review,ops_review_opened,review_approved")
	equal(t, "cancels", h.count("CancelSession"), 1)
	// The alternate method has its own count: "attempt 1 of 2", not "4 of 2".
	alt := h.emails()[3]
	equal(t, "alternate failure email", []any{alt.Ref, alt.Attempt, alt.MaxAttempts, *alt.Link},
		[]any{"alternate-id_number-1", 1, 2, activities.LinkLane{Alternate: true, Attempt: 1}})
	equal(t, "alternate offer says the budget", h.emails()[2].MaxAttempts, 2)
	equal(t, "final", st.Status, workflows.StatusVerified)
}

func TestAlternateOnlyPolicyRejectsWhenExhausted(t *testing.T) {
	h := newHarness(t)
	h.policy.Escalation = workflows.PolicyAlternate
	at := time.Duration(0)
	for _, id := range []string{"evt_1", "evt_2", "evt_3", "evt_4", "evt_5"} {
		at += hour
		h.deliver(at, failed(id, "document_unverified_other", at))
	}
	st := h.run(workflows.Input{})
	equal(t, "status", st.Status, workflows.StatusRejected)
	equal(t, "emails", h.emailKinds(), "failed,failed,alternate_offered,failed,review_rejected")
}

func TestAlternateRefusedByStripeFallsBackToReview(t *testing.T) {
	h := newHarness(t)
	h.switchErr = errNonRetryable
	for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
		h.deliver(time.Duration(i+1)*hour, failed(id, "document_expired", time.Duration(i+1)*hour))
	}
	h.snapshotAt(4*hour, "review")
	h.decide(5*hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops"})
	h.run(workflows.Input{})
	equal(t, "escalation", h.states["review"].Escalation, workflows.EscalationReview)
}

func TestReviewDecisions(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "under_supported_age", min))
	h.decide(hour, "unknown decision", workflows.ReviewDecision{Decision: "maybe", Reviewer: "ops"})
	h.decide(hour, "no reviewer", workflows.ReviewDecision{Decision: "approve"})
	h.decide(2*hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops-dee"})
	h.decide(3*hour, "after close", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-dee"})
	st := h.run(workflows.Input{})

	refused(t, "unknown decision", h.updates["unknown decision"], workflows.ErrUnknownDecision)
	refused(t, "no reviewer", h.updates["no reviewer"], workflows.ErrNoReviewer)
	if err := h.updates["reject"]; err != nil {
		t.Errorf("reject: %v", err)
	}
	equal(t, "final", st.Status, workflows.StatusRejected)
	equal(t, "decided", h.count("DecideReview"), 1)
	equal(t, "decision recorded", h.inputs("DecideReview")[0], activities.ReviewInput{SessionID: vs, Status: "rejected",
		Reviewer: "ops-dee", DecidedAt: t0.Add(2 * hour)})
}

func TestTwoDecisionsAtOnceTheSecondIsRefused(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "under_supported_age", min))
	h.decide(hour, "first", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-a"})
	h.decide(hour, "second", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops-b"})
	st := h.run(workflows.Input{})
	if err := h.updates["first"]; err != nil {
		t.Fatalf("first: %v", err)
	}
	refused(t, "second", h.updates["second"], workflows.ErrDecisionUnderWay)
	equal(t, "decided by the first", []any{st.Status, st.Review.Reviewer}, []any{workflows.StatusVerified, "ops-a"})
}

func TestADecisionWithoutAnOpenReviewIsRefused(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.decide(hour, "no review", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
	h.run(workflows.Input{})
	refused(t, "decision without a review", h.updates["no review"], workflows.ErrNoReviewOpen)
	equal(t, "decided", h.count("DecideReview"), 0)
}

func TestAnUndecidedReviewRenotifiesOpsAtEachDeadline(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "country_not_supported", min))
	h.snapshotAt(5*day, "overdue")
	h.decide(5*day+hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	h.run(workflows.Input{})
	// Deadlines at 2 and 4 days after opening (48h each) have passed by day 5.
	equal(t, "emails", h.emailKinds(), "under_review,ops_review_opened,ops_review_overdue,ops_review_overdue,review_approved")
	equal(t, "overdue notices", h.states["overdue"].Review.Overdue, 2)
	var notices []int
	for _, r := range h.emails() {
		if r.Kind == email.KindOpsReviewOverdue {
			notices = append(notices, r.Attempt)
		}
	}
	equal(t, "notice numbers", notices, []int{1, 2})
}

func TestReminderThenExpiry(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.snapshotAt(hour, "waiting")
	st := h.run(workflows.Input{})
	w := h.states["waiting"]
	equal(t, "next timer", w.NextTimer, "reminder")
	equal(t, "reminder at", w.NextTimerAt, t0.Add(min+day))
	equal(t, "expires at", w.ExpiresAt, t0.Add(min+7*day))
	equal(t, "warning at", w.WarningAt, t0.Add(min+6*day))
	equal(t, "activities", h.lanes("RecordTransition:expired"), []string{"LoadSession", "RecordTransition:requires_input",
		"SendEmail:failed", "RecordTransition:requires_input", "SendEmail:reminder", "RecordTransition:requires_input",
		"SendEmail:expiry_warning", "FetchSessionStatus", "RecordTransition:expired", "SendEmail:expired"})
	equal(t, "final", st.Status, workflows.StatusExpired)
	equal(t, "timer transitions", []string{h.transitions()[1].Key, h.transitions()[2].Key, h.transitions()[3].Key},
		[]string{"reminder:2", "expiry_warning:3", "expiry:4"})
	for _, e := range h.emails() {
		if e.Kind == "expiry_warning" {
			equal(t, "warning says when", e.Deadline, t0.Add(min+7*day))
		}
	}
}

func TestTimersAreCancelledWhenTheStateMovesOn(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.deliver(hour, ev("evt_p", "processing", hour))
	h.snapshotAt(2*hour, "processing")
	h.deliver(30*day, ev("evt_v", "verified", 30*day))
	st := h.run(workflows.Input{})
	equal(t, "next timer while processing", h.states["processing"].NextTimer, "processing_watchdog")
	equal(t, "emails", h.emailKinds(), "failed,verified")
	equal(t, "final", st.Status, workflows.StatusVerified)

	t.Run("a new failure restarts the reminder window", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_1", "document_expired", min))
		h.deliver(20*hour, failed("evt_2", "document_expired", 20*hour))
		h.snapshotAt(21*hour, "second")
		h.deliver(30*hour, ev("evt_v", "verified", 30*hour))
		h.run(workflows.Input{})
		equal(t, "reminder at", h.states["second"].ReminderAt, t0.Add(20*hour+day))
		equal(t, "no reminder sent", h.count("SendEmail:reminder"), 0)
	})
}

func TestEachEventDeliveredThreeTimesTakesEffectOnce(t *testing.T) {
	events := []workflows.Event{ev("evt_c", "created", min), ev("evt_p", "processing", 2*min),
		failed("evt_f", "document_expired", 3*min), ev("evt_v", "verified", 4*min)}
	h := newHarness(t)
	at := time.Duration(0)
	for _, e := range events {
		for range 3 {
			at += time.Second
			h.deliver(min+at, e)
		}
	}
	st := h.run(workflows.Input{})
	equal(t, "transitions (one per event; the comparison within the verified one's step)", len(h.transitions()), 4)
	equal(t, "attempts", st.Attempts, 1)
	equal(t, "emails", h.emailKinds(), "failed,verified")
	equal(t, "processed ids", st.ProcessedEventIDs, []string{"evt_c", "evt_p", "evt_f", "evt_v"})
}

func TestShuffledDeliveriesNeverMoveTheStateBackwards(t *testing.T) {
	h := newHarness(t)
	h.compareFails = 1 // Stripe is slow: the comparison goes on beside the main loop
	// Stripe's order: created, requires_input, processing, verified. Delivered
	// together, verified first:
	h.deliverAll(min, ev("evt_v", "verified", 40*min), ev("evt_p", "processing", 30*min),
		failed("evt_f", "document_expired", 20*min), ev("evt_c", "created", 10*min))
	st := h.run(workflows.Input{})
	equal(t, "final", st.Status, workflows.StatusVerified)
	// The late failure still counts, but tells nobody to retry.
	equal(t, "attempts", st.Attempts, 1)
	equal(t, "last error", st.LastErrorCode, "document_expired")
	equal(t, "emails", h.emailKinds(), "verified")
	// The late ones are recorded (the ledger keeps them) with no other effect.
	var notes []string
	for _, tr := range h.transitions() {
		notes = append(notes, tr.EventID+"="+string(tr.St.Status)+" "+tr.Note)
	}
	equal(t, "transitions", notes, []string{"evt_v=new comparing verified outputs",
		"evt_p=new older than the verified outcome being compared", "evt_f=new older than the verified outcome being compared",
		"evt_c=new older than the verified outcome being compared", "=verified "})
}

func TestAnOlderEventIsStaleAndASameSecondOneAsksStripe(t *testing.T) {
	h := newHarness(t)
	h.stripeStatus = "processing"
	h.deliver(1*min, ev("evt_p", "processing", 30*min))
	h.deliver(2*min, failed("evt_old", "document_expired", 20*min))  // older: stale
	h.deliver(3*min, failed("evt_same", "document_expired", 30*min)) // same second: Stripe says processing
	h.snapshotAt(hour, "after")
	h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
	h.run(workflows.Input{})
	st := h.states["after"]
	equal(t, "status", st.Status, workflows.StatusProcessing)
	// Both failures count, whenever they came: neither changes the status.
	equal(t, "attempts", st.Attempts, 2)
	equal(t, "asked Stripe", h.count("FetchSessionStatus"), 1)
	equal(t, "no failure email for an outdated attempt", h.count("SendEmail:failed"), 0)
}

func TestRedactionAtAnyPoint(t *testing.T) {
	t.Run("while waiting for the user", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_f", "document_expired", min))
		h.deliver(hour, ev("evt_r", "redacted", hour))
		st := h.run(workflows.Input{})
		equal(t, "status", st.Status, workflows.StatusRedacted)
		equal(t, "redacted", st.Redacted, true)
		equal(t, "no reminder after redaction", h.count("SendEmail:reminder"), 0)
	})
	t.Run("during a review", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_f", "under_supported_age", min))
		h.deliver(hour, ev("evt_r", "redacted", hour))
		st := h.run(workflows.Input{})
		equal(t, "status", st.Status, workflows.StatusRedacted)
		equal(t, "review closed", st.Review.Open(), false)
		equal(t, "no overdue notice", h.count("SendEmail:ops_review_overdue"), 0)
	})
	t.Run("after the workflow finished, in a new run", func(t *testing.T) {
		h := newHarness(t)
		h.stored(workflows.State{Status: "verified", StripeStatus: "verified", Escalation: "none", Seq: 1}, "evt_v")
		h.deliver(0, ev("evt_r", "redacted", min)) // it starts the run, as SignalWithStart does
		st := h.run(workflows.Input{})
		equal(t, "status", st.Status, workflows.StatusRedacted)
		equal(t, "activities", h.names(), []string{"LoadSession", "RedactSession", "RecordTransition:redacted"})
		equal(t, "seq continues", h.transitions()[0].St.Seq, int64(2))
		equal(t, "from", h.transitions()[0].From, "verified")
	})
	t.Run("a late processing event after the workflow finished has no effect", func(t *testing.T) {
		h := newHarness(t)
		h.stored(workflows.State{Status: "verified", StripeStatus: "verified", Escalation: "none", Seq: 1})
		h.deliver(0, ev("evt_p", "processing", -hour))
		st := h.run(workflows.Input{})
		equal(t, "status", st.Status, workflows.StatusVerified)
		equal(t, "activities", h.names(), []string{"LoadSession", "RecordTransition:verified"})
	})
}

func TestContinueAsNewKeepsStateAndDedupe(t *testing.T) {
	h := newHarness(t)
	h.policy.EventsPerRun = 2
	h.deliver(min, failed("evt_1", "document_expired", min))
	h.deliver(2*min, failed("evt_2", "document_expired", 2*min))
	h.run(workflows.Input{})
	if h.carried == nil || h.carried.Carried == nil {
		t.Fatal("the run did not continue as new")
	}
	carried := *h.carried
	equal(t, "carried attempts", carried.Carried.Attempts, 2)
	equal(t, "carried ids", carried.Carried.ProcessedEventIDs, []string{"evt_1", "evt_2"})
	equal(t, "policy kept", carried.Policy.EventsPerRun, 2)

	// The next run: a redelivery of evt_2 has no effect, evt_3 hits the limit.
	h.calls, h.carried = nil, nil
	h.reset()
	h.policy.EventsPerRun = 0
	carried.Policy.EventsPerRun = 0
	h.deliver(min, failed("evt_2", "document_expired", 2*min))
	h.deliver(2*min, failed("evt_3", "document_expired", 3*min))
	h.snapshotAt(hour, "after")
	h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
	st := h.run(carried)
	equal(t, "no reload from the database", h.count("LoadSession"), 0)
	equal(t, "attempts", h.states["after"].Attempts, 3)
	equal(t, "escalation", h.states["after"].Escalation, workflows.EscalationAlternate)
	equal(t, "runs", st.Runs, 1)
	equal(t, "final", st.Status, workflows.StatusVerified)
}

func TestSearchAttributesFollowTheState(t *testing.T) {
	h := newHarness(t)
	var upserts []string
	h.env.OnUpsertTypedSearchAttributes(mock.Anything).Run(func(args mock.Arguments) {
		sa := args.Get(0).(temporal.SearchAttributes)
		status, _ := sa.GetKeyword(workflows.SAStatus)
		attempts, _ := sa.GetInt64(workflows.SAAttempts)
		code, _ := sa.GetKeyword(workflows.SALastErrorCode)
		esc, _ := sa.GetKeyword(workflows.SAEscalation)
		issues, _ := sa.GetKeywordList(workflows.SAIssues)
		upserts = append(upserts, fmt.Sprintf("%s/%d/%s/%s/%v", status, attempts, code, esc, issues))
	}).Return(nil)
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
	h.run(workflows.Input{})
	// One visibility update per step that changes them: none for the
	// "new" a run starts in (workflow v3).
	equal(t, "upserts", upserts, []string{"requires_input/1/document_expired/none/[]",
		"verified/1/document_expired/none/[]"})
}

// refused checks that an update was refused with a typed ReviewRefused
// error saying want.
func refused(t *testing.T, what string, err, want error) {
	t.Helper()
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrTypeReviewRefused || appErr.Message() != want.Error() {
		t.Errorf("%s: %v; want a %s error %q", what, err, workflows.ErrTypeReviewRefused, want)
	}
}
