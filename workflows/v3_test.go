package workflows_test

// Workflow v3 (issue 19): only Stripe's own answer about a session decides
// against its user, and every user keeps a working way to retry. Each test
// names the scenario that the code before v3 got wrong; where it matters for
// replay, a subtest shows that a run started before v3 still takes the old
// path (beforeV3), which is also the defect the change mends.

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	sdkpb "go.temporal.io/api/sdk/v1"
	"go.temporal.io/sdk/temporal"

	"identityverification/activities"
	"identityverification/email"
	"identityverification/workflows"
)

// errKeyRefused is a Stripe 401 as the activities type it: an expired key.
var errKeyRefused = temporal.NewApplicationError("stripe: key refused: switch: HTTP 401 api_key_expired",
	activities.ErrTypeStripeUnauthorized)

// Item 1 (must-fix): ESCALATION=alternate, three failures, and Stripe cannot
// switch the session's type: a person decides, the user is not rejected.
func TestASwitchStripeCannotMakeSendsTheSessionToReview(t *testing.T) {
	threeFailures := func(h *harness) {
		h.policy.Escalation = workflows.PolicyAlternate
		for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
			h.deliver(time.Duration(i+1)*hour, failed(id, "document_expired", time.Duration(i+1)*hour))
		}
		// Stripe fails from the third failure on, for 20 minutes: longer
		// than the switch waits (10 minutes).
		h.stripeDown = func(now time.Time) bool { return !now.Before(t0.Add(3*hour)) && now.Before(t0.Add(3*hour+20*min)) }
	}
	for _, tc := range []struct {
		name  string
		err   error
		issue string
	}{
		{"Stripe answers 503 for 20 minutes", errStripeDown, workflows.IssueStripeUnavailable},
		{"Stripe refuses a rotated key (401 api_key_expired)", errKeyRefused, workflows.IssueStripeUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			threeFailures(h)
			h.stripeErr = tc.err
			h.snapshotAt(3*hour+5*min, "switching")
			h.snapshotAt(4*hour, "after")
			h.decide(5*hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
			st := h.run(workflows.Input{})
			sw := h.states["switching"]
			equal(t, "while Stripe fails", []any{sw.Status, issueCodes(sw)}, []any{workflows.StatusRequiresInput, []string{tc.issue}})
			r := h.states["after"]
			equal(t, "a person decides", []any{r.Status, r.Escalation, r.Review.Reason},
				[]any{workflows.StatusInReview, workflows.EscalationReview, "attempts_exhausted"})
			equal(t, "the issue cleared once Stripe answered", r.Issues, []workflows.Issue(nil))
			equal(t, "emails", h.emailKinds(), "failed,failed,under_review,ops_review_opened,review_approved")
			equal(t, "the Stripe session is canceled once Stripe is back", h.count("CancelSession"), 1)
			equal(t, "final", st.Status, workflows.StatusVerified)
		})
	}
	t.Run("before v3 the same outage rejected the user", func(t *testing.T) {
		h := newHarness(t)
		h.beforeV3()
		threeFailures(h)
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusRejected)
		equal(t, "emails", h.emailKinds(), "failed,failed,review_rejected")
	})
}

// Item 2: a cancel Stripe refuses for a reason other than "already canceled
// or verified" (the activity answers success for those) is shown to ops.
func TestARefusedCancelIsAnIssue(t *testing.T) {
	h := newHarness(t)
	h.cancelErr = errNonRetryable
	h.deliver(min, failed("evt_f", "under_supported_age", min))
	h.snapshotAt(hour, "review")
	h.decide(2*hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops"})
	st := h.run(workflows.Input{})
	equal(t, "issue", issueCodes(h.states["review"]), []string{workflows.IssueStripeRefused})
	equal(t, "it stays on record", issueCodes(st), []string{workflows.IssueStripeRefused})
}

// Item 3: the expiry asks Stripe first; when Stripe cannot be asked it waits
// and asks again, and a verification Stripe created before this service
// expired the session wins over the expiry, however late it comes.
func TestAnExpiryDuringAStripeOutage(t *testing.T) {
	expiry := min + 7*day
	outage := func(h *harness) {
		h.stripeStatus = "requires_input"
		h.stripeDown = func(now time.Time) bool { return now.After(t0.Add(expiry-hour)) && now.Before(t0.Add(expiry+2*hour)) }
		h.deliver(min, failed("evt_f", "document_expired", min))
		h.snapshotAt(expiry+hour, "outage")
	}
	t.Run("is deferred until Stripe answers", func(t *testing.T) {
		h := newHarness(t)
		outage(h)
		st := h.run(workflows.Input{})
		o := h.states["outage"]
		equal(t, "still waiting for the user", []any{o.Status, o.NextTimer, issueCodes(o)},
			[]any{workflows.StatusRequiresInput, "expiry", []string{workflows.IssueStripeUnavailable}})
		// 15 minutes, then twice as long each time: not every 15 minutes
		// for every waiting session through a long outage.
		equal(t, "asked again, backing off", []any{o.StripeRetries >= 2, o.NextTimerAt.Before(t0.Add(expiry + 7*hour))}, []any{true, true})
		var asks []time.Duration
		for _, c := range h.calls {
			if c.Name == "FetchSessionStatus" {
				asks = append(asks, c.At.Sub(t0))
			}
		}
		equal(t, "Stripe answered once it was back", len(asks), 1)
		equal(t, "expired once Stripe said requires_input", st.Status, workflows.StatusExpired)
		if st.ExpiredAt.Before(t0.Add(expiry + 2*hour)) {
			t.Errorf("expired at %s; want after the outage", st.ExpiredAt)
		}
	})
	t.Run("before v3 the outage expired the session", func(t *testing.T) {
		h := newHarness(t)
		h.beforeV3()
		outage(h)
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusExpired)
		i := slices.IndexFunc(h.calls, func(c call) bool {
			return c.Name == "SendEmail" && c.Input.(activities.EmailRequest).Kind == email.KindExpired
		})
		equal(t, "expired during the outage", h.calls[i].At.Before(t0.Add(expiry+2*hour)), true)
	})

	expired := workflows.State{Status: workflows.StatusExpired, StripeStatus: "requires_input", Escalation: "none",
		Attempts: 1, Seq: 5, LastEventCreated: t0.Add(-7 * day).Unix(), ExpiredAt: t0.Add(-hour)}
	t.Run("a verified created before the expiry, delivered an hour late, wins", func(t *testing.T) {
		h := newHarness(t)
		h.stored(expired, "evt_f")
		h.deliver(0, ev("evt_v", "verified", -hour-min)) // created a minute before this service expired it
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusVerified)
		equal(t, "emails", h.emailKinds(), "verified")
		equal(t, "compared", h.count("CompareVerifiedOutputs"), 1)
	})
	t.Run("so does one created after it: Stripe never verifies a session its cancel reached", func(t *testing.T) {
		h := newHarness(t)
		h.stored(expired, "evt_f")
		h.deliver(0, ev("evt_v", "verified", -30*min))
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusVerified)
		equal(t, "emails", h.emailKinds(), "verified")
	})
	t.Run("a cancel Stripe refuses because it verified the user reopens the session", func(t *testing.T) {
		h := newHarness(t)
		h.stripeStatus = "requires_input"
		h.cancelErr = temporal.NewNonRetryableApplicationError("stripe: cancel refused: the session is verified",
			activities.ErrTypeStripeSessionVerified, nil)
		h.deliver(min, failed("evt_f", "document_expired", min))
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusVerified)
		// The expiry notice went out, or (the lanes race) was dropped once
		// the verification won.
		sent := strings.Contains(h.emailKinds(), "expired")
		equal(t, "emails", strings.Replace(h.emailKinds(), "expired,", "", 1), "failed,reminder,expiry_warning,verified")
		equal(t, "the expiry notice sent or dropped", sent != (st.StaleEmailsDropped == 1), true)
		equal(t, "compared", h.count("CompareVerifiedOutputs"), 1)
	})
	t.Run("a reviewer's rejection stands", func(t *testing.T) {
		h := newHarness(t)
		rejected := expired
		rejected.Status, rejected.Review = workflows.StatusRejected, &workflows.Review{Reason: "attempts_exhausted",
			Decision: workflows.DecisionReject, Reviewer: "ops"}
		h.stored(rejected, "evt_f")
		h.deliver(0, ev("evt_v", "verified", -30*min))
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusRejected)
	})
	t.Run("while the expiry notice waits out an SMTP outage, the verification wins and the notice is dropped", func(t *testing.T) {
		h := newHarness(t)
		h.stripeStatus = "requires_input"
		h.smtpDown = func(now time.Time) bool { return now.After(t0.Add(expiry-min)) && now.Before(t0.Add(expiry+day)) }
		h.deliver(min, failed("evt_f", "document_expired", min))
		h.deliver(expiry+hour, ev("evt_v", "verified", expiry-min)) // created before the expiry
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusVerified)
		equal(t, "emails", h.emailKinds(), "failed,reminder,expiry_warning,verified")
		equal(t, "dropped", st.StaleEmailsDropped, 1)
	})
}

// Item 4: failures evt_2 then evt_1 (older) arrive: two attempts are
// counted, but the user holds one email, for attempt 1. Its link must keep
// working: the state names the lane of the newest link sent.
func TestAReorderedFailureKeepsTheUsersLinkWorking(t *testing.T) {
	h := newHarness(t)
	h.policy.ReminderAfter = 0 // no later email would bring a new link
	h.deliver(min, failed("evt_2", "document_expired", 20*min))
	h.deliver(2*min, failed("evt_1", "document_unverified_other", 10*min))
	h.snapshotAt(hour, "after")
	h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
	h.run(workflows.Input{})
	st := h.states["after"]
	equal(t, "attempts", st.Attempts, 2)
	equal(t, "one failure email", h.count("SendEmail:failed"), 1)
	equal(t, "its link's lane", *h.emails()[0].Link, activities.LinkLane{Attempt: 1})
	equal(t, "the newest link sent", *st.RetryLink, workflows.RetryLane{Attempt: 1})
}

// Item 5: the first method is the session's type from its first event, a
// switch to the type it has is refused (next rung), and emails are named by
// method, so two methods never share a key.
func TestTheFirstMethodIsTheSessionsOwnType(t *testing.T) {
	typed := func(e workflows.Event, typ string) workflows.Event { e.SessionType = typ; return e }
	t.Run("a session created as id_number, alternate document: alternate emails have keys of their own", func(t *testing.T) {
		h := newHarness(t)
		h.policy.AlternateType = "document"
		for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
			h.deliver(time.Duration(i+1)*hour, typed(failed(id, "id_number_mismatch", time.Duration(i+1)*hour), "id_number"))
		}
		h.deliver(4*hour, typed(failed("evt_d", "document_expired", 4*hour), "document"))
		h.snapshotAt(5*hour, "after")
		h.deliver(6*hour, ev("evt_v", "verified", 6*hour))
		h.run(workflows.Input{})
		st := h.states["after"]
		equal(t, "first type", st.FirstType, "id_number")
		equal(t, "attempts per method", []int{st.Attempts, st.AlternateAttempts}, []int{3, 1})
		var refs []string
		for _, e := range h.emails() {
			if e.Kind == email.KindFailed {
				refs = append(refs, e.Ref)
			}
		}
		equal(t, "failure emails, each sent", refs, []string{"id_number-1", "id_number-2", "alternate-document-1"})
	})
	t.Run("before v3 the alternate failure email shared the first one's key and was dropped", func(t *testing.T) {
		h := newHarness(t)
		h.beforeV3()
		h.policy.AlternateType = "document"
		for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
			h.deliver(time.Duration(i+1)*hour, typed(failed(id, "id_number_mismatch", time.Duration(i+1)*hour), "id_number"))
		}
		h.deliver(4*hour, typed(failed("evt_d", "document_expired", 4*hour), "document"))
		h.deliver(6*hour, ev("evt_v", "verified", 6*hour))
		h.run(workflows.Input{})
		equal(t, "failure emails sent", h.count("SendEmail:failed"), 2)
	})
	t.Run("a session created as id_number is not switched to id_number: a person decides", func(t *testing.T) {
		h := newHarness(t)
		for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
			h.deliver(time.Duration(i+1)*hour, typed(failed(id, "id_number_mismatch", time.Duration(i+1)*hour), "id_number"))
		}
		h.snapshotAt(4*hour, "after")
		h.decide(5*hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops"})
		h.run(workflows.Input{})
		st := h.states["after"]
		equal(t, "no switch", h.count("SwitchSessionType"), 0)
		equal(t, "review", []any{st.Status, st.Review.Reason}, []any{workflows.StatusInReview, "attempts_exhausted"})
	})
	t.Run("when both methods have one type, the time of the switch tells a late failure's method", func(t *testing.T) {
		h := newHarness(t)
		// Switched before v3 (restored): both methods are id_number.
		h.stored(workflows.State{Status: workflows.StatusRequiresInput, StripeStatus: "requires_input",
			Escalation: workflows.EscalationAlternate, SessionType: "id_number", FirstType: "id_number", Attempts: 3,
			AlternateSince: t0.Add(-hour).Unix(), LastEventCreated: t0.Add(-hour).Unix(), Seq: 4}, "evt_a", "evt_b", "evt_c")
		h.deliver(0, typed(failed("evt_late", "id_number_mismatch", -2*hour), "id_number")) // before the switch
		h.snapshotAt(hour, "after")
		h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
		h.run(workflows.Input{})
		st := h.states["after"]
		equal(t, "booked on the first method", []int{st.Attempts, st.AlternateAttempts}, []int{4, 0})
	})
}

// Item 6: under LATE_FRAUD_POLICY=record, a fraud code that Stripe created
// before a later pass ends verified in either order of delivery (the every-
// order test covers all orders).
func TestLateFraudUnderTheRecordPolicyIsDecidedByCreated(t *testing.T) {
	for _, order := range [][]string{{"fraud", "verified"}, {"verified", "fraud"}} {
		t.Run(strings.Join(order, " then "), func(t *testing.T) {
			h := newHarness(t)
			h.policy.LateFraud = workflows.LateFraudRecord
			events := map[string]workflows.Event{"fraud": failed("evt_f", "selfie_manipulated", min),
				"verified": ev("evt_v", "verified", 2*min)}
			for i, name := range order {
				h.deliver(time.Duration(i+1)*hour, events[name])
			}
			st := h.run(workflows.Input{})
			equal(t, "final", []any{st.Status, st.Escalation, st.Review == nil}, []any{workflows.StatusVerified, workflows.EscalationNone, true})
		})
	}
}

// Item 7: emails that ask the user to act are dropped when the session
// reached an outcome before they could go; emails never wait for Stripe.
func TestStaleEmailsAreDroppedAndEmailsNeverWaitForStripe(t *testing.T) {
	t.Run("a reminder held by a 17-hour SMTP outage is not sent after the session was verified", func(t *testing.T) {
		h := newHarness(t)
		h.smtpDown = func(now time.Time) bool { return now.After(t0.Add(day)) && now.Before(t0.Add(day+17*hour)) }
		h.deliver(min, ev("evt_c", "created", min))
		h.deliver(day+2*hour, ev("evt_v", "verified", day+2*hour))
		st := h.run(workflows.Input{})
		equal(t, "emails", h.emailKinds(), "verified")
		equal(t, "dropped", st.StaleEmailsDropped, 1)
	})
	t.Run("the review emails go out while the Stripe cancel retries", func(t *testing.T) {
		h := newHarness(t)
		h.stripeDown = func(now time.Time) bool { return now.Before(t0.Add(3 * hour)) }
		h.deliver(min, failed("evt_f", "under_supported_age", min))
		h.snapshotAt(hour, "review")
		h.decide(5*hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
		h.run(workflows.Input{})
		r := h.states["review"]
		equal(t, "owed at 1h: only the cancel", len(r.Owed) == 1 && r.Owed[0].CancelSession, true)
		for _, c := range h.calls {
			if req, ok := c.Input.(activities.EmailRequest); ok && req.Kind != email.KindReviewApproved && c.At.After(t0.Add(2*min)) {
				t.Errorf("%s email sent at %s: it waited for Stripe", req.Kind, c.At.Sub(t0))
			}
		}
	})
}

// Item 10: a restored run keeps the policy the session started with, not the
// one of the process that started the new run.
func TestARestoredRunKeepsItsSessionsPolicy(t *testing.T) {
	h := newHarness(t)
	started := workflows.DefaultPolicy()
	started.MaxAttempts = 5
	h.stored(workflows.State{Status: workflows.StatusRequiresInput, StripeStatus: "requires_input", Escalation: "none",
		Attempts: 2, Seq: 2, LastEventCreated: t0.Add(-hour).Unix(), Policy: &started}, "evt_1", "evt_2")
	h.deliver(0, failed("evt_3", "document_expired", 0)) // a third failure: the input's limit (3), not the session's (5)
	h.snapshotAt(hour, "after")
	h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
	h.run(workflows.Input{})
	st := h.states["after"]
	equal(t, "not escalated", []any{st.Attempts, st.Escalation}, []any{3, workflows.EscalationNone})
	equal(t, "the failure email says the session's limit", h.emails()[0].MaxAttempts, 5)
}

// Item 11: a transition the database refuses still leaves its event id in
// the ledger, so a redelivery after the run ends does not apply it again.
func TestARefusedTransitionStillRecordsItsEvent(t *testing.T) {
	h := newHarness(t)
	h.recordErr = temporal.NewNonRetryableApplicationError("store: record transition: rejected by the database",
		activities.ErrTypeStoreRejected, nil)
	h.deliver(min, ev("evt_c", "canceled", min))
	h.run(workflows.Input{})
	equal(t, "ledger", h.inputs("RecordEventID"), []any{activities.EventRecord{SessionID: vs, EventID: "evt_c",
		EventType: workflows.EventCanceled}})
}

// Item 12: a session stuck in processing asks Stripe after a day.
func TestTheProcessingWatchdog(t *testing.T) {
	for _, tc := range []struct {
		stripe string
		want   workflows.Status
		emails string
	}{
		{"verified", workflows.StatusVerified, "verified"},
		{"canceled", workflows.StatusCanceled, ""},
		{"requires_input", workflows.StatusExpired, "reminder,expiry_warning,expired"},
	} {
		t.Run("Stripe says "+tc.stripe, func(t *testing.T) {
			h := newHarness(t)
			h.stripeStatus = tc.stripe
			h.deliver(min, ev("evt_p", "processing", min))
			st := h.run(workflows.Input{})
			equal(t, "final", st.Status, tc.want)
			equal(t, "emails", h.emailKinds(), tc.emails)
			equal(t, "asked after a day", h.calls[slices.IndexFunc(h.calls, func(c call) bool { return c.Name == "FetchSessionStatus" })].At,
				t0.Add(min+day))
		})
	}
	t.Run("Stripe cannot be asked: it asks again within the hour", func(t *testing.T) {
		h := newHarness(t)
		h.stripeStatus = "canceled"
		h.stripeDown = func(now time.Time) bool { return now.Before(t0.Add(day + 2*hour)) }
		h.deliver(min, ev("evt_p", "processing", min))
		h.snapshotAt(day+30*min, "outage")
		st := h.run(workflows.Input{})
		o := h.states["outage"]
		equal(t, "re-armed", []any{o.Status, o.NextTimer, o.NextTimerAt.Before(t0.Add(day + 2*hour))},
			[]any{workflows.StatusProcessing, workflows.TimerWatchdog, true})
		equal(t, "final", st.Status, workflows.StatusCanceled)
	})
}

// Four eyes (issue 20): a review opened for a fraud code or a mismatch needs
// two distinct approvals; a reject needs one; other reviews need one.
func TestFourEyes(t *testing.T) {
	ann := workflows.ReviewDecision{Decision: "approve", Reviewer: "ann@example.com", Subject: "oidc:ann"}
	bo := workflows.ReviewDecision{Decision: "approve", Reviewer: "bo@example.com", Subject: "oidc:bo"}
	t.Run("a fraud code: the same person twice is refused, a second person approves", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_f", "selfie_manipulated", min))
		h.decide(hour, "ann", ann)
		h.decide(2*hour, "ann again", ann)
		h.snapshotAt(3*hour, "one")
		h.decide(4*hour, "bo", bo)
		st := h.run(workflows.Input{})
		refused(t, "ann again", h.updates["ann again"], workflows.ErrSameApprover)
		one := h.states["one"]
		equal(t, "1 of 2", []any{one.Status, len(one.Review.Approvals), one.Review.ApprovalsNeeded}, []any{workflows.StatusInReview, 1, 2})
		equal(t, "final", []any{st.Status, st.Review.Subject}, []any{workflows.StatusVerified, "oidc:bo"})
		equal(t, "decided once", h.count("DecideReview"), 1)
	})
	t.Run("a fraud code: one reject rejects", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_f", "selfie_manipulated", min))
		h.decide(hour, "ann", ann)
		h.decide(2*hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "bo@example.com", Subject: "oidc:bo"})
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusRejected)
	})
	t.Run("attempts exhausted: one approval", func(t *testing.T) {
		h := newHarness(t)
		h.policy.Escalation = workflows.PolicyReview
		for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
			h.deliver(time.Duration(i+1)*hour, failed(id, "document_expired", time.Duration(i+1)*hour))
		}
		h.decide(5*hour, "ann", ann)
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusVerified)
	})
	t.Run("before v3 a mismatch needed one approval", func(t *testing.T) {
		h := newHarness(t)
		h.beforeV3()
		h.compare = activities.Comparison{Compared: true, MismatchedFields: []string{"dob"}}
		h.deliver(min, ev("evt_v", "verified", min))
		h.decide(hour, "ann", ann)
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusVerified)
	})
}

// Issue 20: a person's name that reaches the Temporal UI's markdown details
// is text, never a link or markup.
func TestTheUIDetailsEscapeWhatComesFromOutside(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "selfie_manipulated", min))
	h.decide(hour, "ann", workflows.ReviewDecision{Decision: "approve", Reviewer: "[click](https://evil.example)", Subject: "oidc:ann"})
	var details string
	h.env.RegisterDelayedCallback(func() {
		v, err := h.env.QueryWorkflow("__temporal_workflow_metadata")
		if err != nil {
			t.Fatal(err)
		}
		var meta sdkpb.WorkflowMetadata
		if err := v.Get(&meta); err != nil {
			t.Fatal(err)
		}
		details = meta.GetCurrentDetails()
	}, 2*hour)
	h.decide(3*hour, "bo", workflows.ReviewDecision{Decision: "reject", Reviewer: "bo", Subject: "oidc:bo"})
	h.run(workflows.Input{})
	if !strings.Contains(details, `1 of 2 approvals, by \[click\]\(https\://evil\.example\)`) {
		t.Errorf("details do not escape the reviewer:\n%s", details)
	}
}

// Item 12: durations in the workflow's input and state read as Go
// durations in the Temporal UI; inputs written before as nanoseconds read.
func TestPolicyDurationsAreGoDurationStrings(t *testing.T) {
	p := workflows.DefaultPolicy()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"reminder_after":"24h0m0s"`, `"expire_after":"168h0m0s"`, `"review_deadline":"48h0m0s"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("policy JSON %s lacks %s", b, want)
		}
	}
	var back workflows.Policy
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, p) {
		t.Errorf("round trip: %+v, %v; want %+v", back, err, p)
	}
	var old workflows.Policy
	if err := json.Unmarshal([]byte(`{"max_attempts":3,"reminder_after":86400000000000,"expire_after":604800000000000,"review_deadline":172800000000000}`), &old); err != nil ||
		old.ReminderAfter != 24*time.Hour || old.ExpireAfter != 7*24*time.Hour || old.ReviewDeadline != 48*time.Hour {
		t.Errorf("an input from before: %+v, %v", old, err)
	}
	if err := json.Unmarshal([]byte(`{"expire_after":"a week"}`), &old); err == nil {
		t.Error("a duration that is none was accepted")
	}
}

// A run long enough to continue as new waits for the effects under way;
// while the Stripe lane retries a cancel through an outage, the email lane
// does not stop: an ops notice never waits behind Stripe.
func TestEmailsGoOutWhileALongRunWaitsForAStripeCancel(t *testing.T) {
	h := newHarness(t)
	h.policy.EventsPerRun = 2
	h.stripeDown = func(now time.Time) bool { return now.Before(t0.Add(5 * day)) }
	h.deliver(min, failed("evt_f", "under_supported_age", min))
	h.deliver(2*min, ev("evt_p", "processing", 2*min)) // the run is long now
	h.snapshotAt(2*day+hour, "outage")
	h.decide(6*day, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	h.run(workflows.Input{})
	o := h.states["outage"]
	var owedEmails int
	for _, e := range o.Owed {
		if e.Email != nil {
			owedEmails++
		}
	}
	equal(t, "emails owed at day 2 (the overdue notice went out)", owedEmails, 0)
	equal(t, "overdue notices sent by day 2", h.callsAt["outage"] > 0 && h.count("SendEmail:ops_review_overdue") >= 1, true)
}

// A Stripe call that succeeds does not clear the outage another call is
// still retrying through (a restricted key may read but not cancel).
func TestAStripeIssueStaysWhileAnyCallStillFails(t *testing.T) {
	h := newHarness(t)
	h.stripeStatus = "requires_input"
	h.cancelErr = errKeyRefused // only the cancel fails: 403 for a key that may not cancel
	expiry := min + 7*day
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.deliver(expiry+hour, ev("evt_v", "verified", expiry-min)) // reopens: its comparison reads Stripe fine
	h.snapshotAt(expiry+2*hour, "compared")
	h.env.SetWorkflowRunTimeout(expiry + 3*hour) // the cancel would retry forever
	h.env.ExecuteWorkflow(workflows.WorkflowName, workflows.Input{SessionID: vs, Policy: h.policy})
	c := h.states["compared"]
	equal(t, "verified meanwhile", c.Status, workflows.StatusVerified)
	equal(t, "the cancel's refused key still shown", issueCodes(c), []string{workflows.IssueStripeUnauthorized})
}

// A failure email SMTP held back is dropped once the user resubmitted.
func TestAFailureEmailHeldBackIsDroppedOnceTheUserResubmitted(t *testing.T) {
	h := newHarness(t)
	h.smtpDown = func(now time.Time) bool { return now.Before(t0.Add(2 * hour)) }
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.deliver(30*min, ev("evt_p", "processing", 30*min))
	h.deliver(3*hour, ev("evt_v", "verified", 3*hour))
	st := h.run(workflows.Input{})
	equal(t, "emails", h.emailKinds(), "verified")
	equal(t, "dropped", st.StaleEmailsDropped, 1)
}

// Issue 20: a decision sent straight to Temporal (the UI, the CLI) names a
// principal nobody authenticated: a review opened on v3 refuses it, as it
// refuses a voucher that vouches for another decision. The admin API and the
// desk vouch for the principals they authenticated.
func TestOnlyVouchedDecisionsDecide(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "under_supported_age", min))
	h.sendDecision(hour, "no voucher", workflows.ReviewDecision{Decision: "approve", Reviewer: "mallory", Subject: "oidc:mallory"})
	h.sendDecision(2*hour, "no subject", workflows.ReviewDecision{Decision: "approve", Reviewer: "mallory"})
	h.sendDecision(3*hour, "another decision's voucher", workflows.ReviewDecision{Decision: "approve", Reviewer: "mallory",
		Subject: "oidc:mallory", Voucher: vouchFor("oidc:mallory", "reject")})
	h.decide(4*hour, "vouched", workflows.ReviewDecision{Decision: "reject", Reviewer: "ann", Subject: "oidc:ann"})
	st := h.run(workflows.Input{})
	refused(t, "no voucher", h.updates["no voucher"], workflows.ErrUnvouched)
	refused(t, "no subject", h.updates["no subject"], workflows.ErrUnvouched)
	refused(t, "another decision's voucher", h.updates["another decision's voucher"], workflows.ErrUnvouched)
	equal(t, "decided by the vouched one", []any{st.Status, st.Review.Subject}, []any{workflows.StatusRejected, "oidc:ann"})

	t.Run("a review opened before v3 takes the decision as it did", func(t *testing.T) {
		h := newHarness(t)
		h.stored(workflows.State{Status: workflows.StatusInReview, Escalation: workflows.EscalationReview, Seq: 3,
			Review: &workflows.Review{Reason: "attempts_exhausted", OpenedAt: t0.Add(-hour), DeadlineAt: t0.Add(day)}})
		h.sendDecision(min, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
		st := h.run(workflows.Input{})
		equal(t, "final", st.Status, workflows.StatusVerified)
	})
}

// Four eyes are two people's: a machine's credential (an API key,
// ADMIN_TOKEN) approves no high-risk review, not even as one of two; it may
// reject one, and approve a review one approval settles.
func TestMachinesApproveNoHighRiskReview(t *testing.T) {
	key := workflows.ReviewDecision{Decision: "approve", Reviewer: "backend", Subject: "key:k1"}
	token := workflows.ReviewDecision{Decision: "approve", Reviewer: "ops", Subject: workflows.SubjectAdminToken}
	ann := workflows.ReviewDecision{Decision: "approve", Reviewer: "ann@example.com", Subject: "oidc:ann"}
	t.Run("a fraud code", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_f", "selfie_manipulated", min))
		h.decide(hour, "key", key)
		h.decide(2*hour, "token", token)
		h.decide(3*hour, "ann", ann)
		h.snapshotAt(4*hour, "after")
		h.decide(5*hour, "reject by key", workflows.ReviewDecision{Decision: "reject", Reviewer: "backend", Subject: "key:k1"})
		st := h.run(workflows.Input{})
		refused(t, "key", h.updates["key"], workflows.ErrPeopleOnly)
		refused(t, "token", h.updates["token"], workflows.ErrPeopleOnly)
		equal(t, "only the person's approval counted", len(h.states["after"].Review.Approvals), 1)
		equal(t, "a key rejects", st.Status, workflows.StatusRejected)
	})
	t.Run("attempts exhausted", func(t *testing.T) {
		h := newHarness(t)
		h.policy.Escalation = workflows.PolicyReview
		for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
			h.deliver(time.Duration(i+1)*hour, failed(id, "document_expired", time.Duration(i+1)*hour))
		}
		h.decide(5*hour, "key", key)
		st := h.run(workflows.Input{})
		equal(t, "a key approves", st.Status, workflows.StatusVerified)
	})
}
