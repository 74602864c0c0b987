package workflows_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"identityverification/activities"
	"identityverification/workflows"
)

func issueCodes(st workflows.State) []string {
	codes := []string{}
	for _, is := range st.Issues {
		codes = append(codes, is.Code)
	}
	return codes
}

func TestAnSMTPOutageNeverHoldsUpDecisions(t *testing.T) {
	h := newHarness(t)
	h.smtpDown = func(now time.Time) bool { return now.Before(t0.Add(2 * hour)) }
	h.deliver(min, failed("evt_f", "document_expired", min))
	h.deliver(10*min, ev("evt_v", "verified", 10*min))
	h.snapshotAt(11*min, "outage")
	st := h.run(workflows.Input{})

	o := h.states["outage"]
	equal(t, "verified at once", o.Status, workflows.StatusVerified)
	equal(t, "persisted at once", h.transitions()[len(h.transitions())-1].St.Status, workflows.StatusVerified)
	// The "please retry" email the outage held would now mislead: dropped,
	// while SMTP is still down.
	equal(t, "emails owed", owedKinds(o), "verified")
	equal(t, "stale emails dropped", o.StaleEmailsDropped, 1)
	equal(t, "the outage is shown", issueCodes(o), []string{workflows.IssueEmailDelayed})
	if !slices.ContainsFunc(o.Issues, func(is workflows.Issue) bool { return is.Detail == errSMTPDown.Error() }) {
		t.Errorf("issue detail = %+v; want the SMTP error", o.Issues)
	}
	// SMTP back: the outcome email exactly once; then the run ends.
	equal(t, "emails sent", h.emailKinds(), "verified")
	equal(t, "issues after", issueCodes(st), []string{})
	equal(t, "nothing owed", len(st.Owed), 0)
	equal(t, "final", st.Status, workflows.StatusVerified)
}

func TestAReviewDecisionReturnsWhenAppliedNotWhenEmailed(t *testing.T) {
	h := newHarness(t)
	h.smtpDown = func(now time.Time) bool { return now.Before(t0.Add(day)) }
	h.deliver(min, failed("evt_f", "under_supported_age", min))
	var answered time.Time
	h.env.RegisterDelayedCallback(func() {
		h.env.UpdateWorkflow(workflows.UpdateReviewDecision, "approve", &updateAt{onDone: func(err error) {
			h.updates["approve"], answered = err, h.env.Now()
		}}, workflows.ReviewDecision{Decision: "approve", Reviewer: "ops", Subject: "oidc:ops", Voucher: vouchFor("oidc:ops", "approve")})
	}, hour)
	st := h.run(workflows.Input{})
	if err := h.updates["approve"]; err != nil {
		t.Fatalf("update: %v", err)
	}
	if answered.IsZero() || answered.After(t0.Add(hour+time.Minute)) {
		t.Errorf("the update answered at %s; want at once (SMTP is down until %s)", answered, t0.Add(day))
	}
	equal(t, "final", st.Status, workflows.StatusVerified)
	equal(t, "emails, once each, after SMTP came back", h.emailKinds(), "under_review,ops_review_opened,review_approved")
}

// updateAt is an update callback that reports the outcome.
type updateAt struct{ onDone func(error) }

func (u *updateAt) Accept()                   {}
func (u *updateAt) Reject(err error)          { u.onDone(err) }
func (u *updateAt) Complete(_ any, err error) { u.onDone(err) }

func TestADatabaseRefusalIsShownAndTheSessionMovesOn(t *testing.T) {
	h := newHarness(t)
	h.decideErr = temporal.NewNonRetryableApplicationError(
		"store: decide review: store: rejected by the database: invalid byte sequence (SQLSTATE 22021)", activities.ErrTypeStoreRejected, nil)
	h.deliver(min, failed("evt_f", "country_not_supported", min))
	h.decide(hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	st := h.run(workflows.Input{})
	if err := h.updates["approve"]; err != nil {
		t.Fatalf("update: %v", err)
	}
	equal(t, "final", st.Status, workflows.StatusVerified)
	equal(t, "issue", issueCodes(st), []string{workflows.IssueDatabaseRejected})
	equal(t, "one try: it cannot succeed", h.count("DecideReview"), 1)
	equal(t, "the decision still persisted", h.transitions()[len(h.transitions())-1].St.Status, workflows.StatusVerified)
}

func TestAReviewerThatCannotBeStoredIsRefused(t *testing.T) {
	for _, reviewer := range []string{"ops\x00", "ops\nann", string(make([]byte, workflows.MaxReviewerLen+1)), "ops\xff", "ops\u2028ann", "ops\u202eann"} {
		t.Run(fmt.Sprintf("reviewer %q", reviewer), func(t *testing.T) {
			h := newHarness(t)
			h.deliver(min, failed("evt_f", "under_supported_age", min))
			h.decide(hour, "bad", workflows.ReviewDecision{Decision: "approve", Reviewer: reviewer})
			h.decide(2*hour, "good", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-ann"})
			st := h.run(workflows.Input{})
			refused(t, "bad reviewer", h.updates["bad"], workflows.ErrBadReviewer)
			equal(t, "decided by the good one", st.Review.Reviewer, "ops-ann")
		})
	}
}

func TestAFreshRunRestoresExactly(t *testing.T) {
	deadline := t0.Add(30 * hour)
	stored := workflows.State{Status: workflows.StatusInReview, StripeStatus: "canceled", SessionType: "id_number",
		Attempts: 3, AlternateAttempts: 2, LastErrorCode: "id_number_mismatch", Escalation: workflows.EscalationReview,
		AlternateSince: t0.Add(-2 * day).Unix(), LastEventCreated: t0.Add(-hour).Unix(), Seq: 9,
		Review: &workflows.Review{Reason: "attempts_exhausted", OpenedAt: t0.Add(-18 * hour), DeadlineAt: deadline},
		Owed:   []workflows.Effect{{Email: &workflows.Email{SessionID: vs, Kind: "ops_review_opened", Ref: "9"}}}}

	t.Run("an event after an operator terminated the run", func(t *testing.T) {
		h := newHarness(t)
		h.stored(stored, "evt_1", "evt_2")
		h.deliver(0, ev("evt_2", "processing", -2*hour))     // a duplicate: in the ledger
		h.deliver(min, ev("evt_old", "processing", -2*hour)) // older than the last applied
		h.snapshotAt(hour, "restored")
		h.decide(40*hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
		st := h.run(workflows.Input{})
		r := h.states["restored"]
		equal(t, "review open", r.Review.Open(), true)
		equal(t, "attempts per method", []int{r.Attempts, r.AlternateAttempts}, []int{3, 2})
		equal(t, "timer", []any{r.NextTimer, r.NextTimerAt}, []any{"review_deadline", deadline})
		equal(t, "status kept", r.Status, workflows.StatusInReview)
		equal(t, "the owed email went out", h.emails()[0].Key(), vs+":ops_review_opened:9")
		equal(t, "overdue notice at the stored deadline", h.count("SendEmail:ops_review_overdue"), 1)
		equal(t, "seq continues", h.transitions()[0].St.Seq, int64(10))
		equal(t, "final", st.Status, workflows.StatusVerified)
	})
	t.Run("a decision that starts the run (update-with-start)", func(t *testing.T) {
		h := newHarness(t)
		h.stored(stored)
		h.decide(0, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
		st := h.run(workflows.Input{})
		if err := h.updates["approve"]; err != nil {
			t.Fatalf("update: %v", err)
		}
		equal(t, "final", st.Status, workflows.StatusVerified)
		equal(t, "decided", h.count("DecideReview"), 1)
	})
}

func TestAfterContinueAsNewATimerOrDecisionEndsTheRun(t *testing.T) {
	h := newHarness(t)
	carried := workflows.State{SessionID: vs, Status: workflows.StatusRequiresInput, Escalation: workflows.EscalationNone,
		Attempts: 1, Seq: 4, ExpiresAt: t0.Add(hour), ProcessedEventIDs: []string{"evt_1"}}
	st := h.run(workflows.Input{SessionID: vs, Policy: h.policy, Carried: &carried})
	equal(t, "expired and finished", st.Status, workflows.StatusExpired)
	equal(t, "runs", st.Runs, 1)
	equal(t, "activities", h.lanes("RecordTransition:expired"), []string{"FetchSessionStatus", "RecordTransition:expired", "SendEmail:expired"})
}

// The database's columns are read from the stored state by the JSON names
// of workflows.State: activities.Progress must keep to them.
func TestTheStoredColumnsReadTheStateByItsOwnNames(t *testing.T) {
	st := workflows.State{SessionID: vs, Seq: 7, Status: workflows.StatusInReview, StripeStatus: "canceled",
		SessionType: "id_number", Attempts: 3, AlternateAttempts: 2, LastErrorCode: "id_number_mismatch",
		LastErrorReason: "The number did not match.", Escalation: workflows.EscalationReview}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var p activities.Progress
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	equal(t, "progress", p, activities.Progress{SessionID: vs, Seq: 7, Status: "in_review", StripeStatus: "canceled",
		SessionType: "id_number", Attempts: 3, AlternateAttempts: 2, LastErrorCode: "id_number_mismatch",
		LastErrorReason: "The number did not match.", Escalation: "manual_review"})
}
