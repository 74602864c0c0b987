package workflows_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"identityverification/email"
	"identityverification/workflows"
)

func TestALateFailureStillCounts(t *testing.T) {
	t.Run("a failure created before processing but delivered after it counts an attempt", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_1", "document_expired", min))
		h.deliver(2*min, ev("evt_p", "processing", 20*min))
		h.deliver(3*min, failed("evt_2", "document_unverified_other", 10*min)) // Stripe retried it late
		h.snapshotAt(hour, "after")
		h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
		h.run(workflows.Input{})
		st := h.states["after"]
		equal(t, "status follows the newest event", st.Status, workflows.StatusProcessing)
		equal(t, "attempts", st.Attempts, 2)
		equal(t, "last error is the newest failure's", st.LastErrorCode, "document_unverified_other")
		equal(t, "failure emails", h.count("SendEmail:failed"), 1)
	})
	t.Run("the attempt limit cannot be walked around by reordering", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, failed("evt_3", "document_expired", 30*min))
		h.deliver(2*min, ev("evt_p", "processing", 40*min))
		h.deliver(3*min, failed("evt_1", "document_expired", 10*min))
		h.deliver(4*min, failed("evt_2", "document_expired", 20*min))
		h.snapshotAt(hour, "after")
		h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
		h.run(workflows.Input{})
		st := h.states["after"]
		equal(t, "attempts", st.Attempts, 3)
		equal(t, "escalation", st.Escalation, workflows.EscalationAlternate)
		equal(t, "switched", h.count("SwitchSessionType"), 1)
	})
	t.Run("a late fraud code escalates while the session is open", func(t *testing.T) {
		h := newHarness(t)
		h.deliver(min, ev("evt_p", "processing", 20*min))
		h.deliver(2*min, failed("evt_f", "selfie_manipulated", 10*min))
		h.snapshotAt(hour, "after")
		h.decide(2*hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops"})
		st := h.run(workflows.Input{})
		r := h.states["after"]
		equal(t, "status", r.Status, workflows.StatusInReview)
		equal(t, "reason", r.Review.Reason, "non_retryable:selfie_manipulated")
		equal(t, "canceled at Stripe", h.count("CancelSession"), 1)
		equal(t, "final", st.Status, workflows.StatusRejected)
	})
	t.Run("a failure of the first method arriving after the switch counts for the first method", func(t *testing.T) {
		h := newHarness(t)
		for i, id := range []string{"evt_a", "evt_b", "evt_c"} {
			h.deliver(time.Duration(i+1)*min, failed(id, "document_expired", time.Duration(i+1)*min))
		}
		late := failed("evt_late", "document_expired", 150*time.Second) // before the switch at 3 min
		h.deliver(10*min, late)
		alt := failed("evt_alt", "id_number_mismatch", 20*min)
		alt.SessionType = "id_number"
		h.deliver(20*min, alt)
		h.snapshotAt(hour, "after")
		h.deliver(2*hour, ev("evt_v", "verified", 2*hour))
		h.run(workflows.Input{})
		st := h.states["after"]
		equal(t, "attempts per method", []int{st.Attempts, st.AlternateAttempts}, []int{4, 1})
		equal(t, "escalation", st.Escalation, workflows.EscalationAlternate)
		equal(t, "emails", h.emailKinds(), "failed,failed,alternate_offered,failed,verified")
	})
}

func TestALateFraudCodeAfterVerification(t *testing.T) {
	t.Run("reopens the session as a review by default", func(t *testing.T) {
		h := newHarness(t)
		h.stored(workflows.State{Status: "verified", StripeStatus: "verified", Escalation: "none", Seq: 3,
			LastEventCreated: t0.Add(time.Hour).Unix()}, "evt_v")
		h.deliver(0, failed("evt_f", "selfie_manipulated", 10*min))
		h.snapshotAt(hour, "reopened")
		h.decide(2*hour, "reject", workflows.ReviewDecision{Decision: "reject", Reviewer: "ops"})
		st := h.run(workflows.Input{})
		r := h.states["reopened"]
		equal(t, "status", r.Status, workflows.StatusInReview)
		equal(t, "escalation", r.Escalation, workflows.EscalationReview)
		equal(t, "attempts", r.Attempts, 1)
		equal(t, "reason", r.Review.Reason, "non_retryable:selfie_manipulated")
		equal(t, "nothing to cancel: Stripe verified it", h.count("CancelSession"), 0)
		equal(t, "final", st.Status, workflows.StatusRejected)
	})
	t.Run("is only recorded under the record policy", func(t *testing.T) {
		h := newHarness(t)
		h.policy.LateFraud = workflows.LateFraudRecord
		h.stored(workflows.State{Status: "verified", StripeStatus: "verified", Escalation: "none", Seq: 3}, "evt_v")
		h.deliver(0, failed("evt_f", "selfie_manipulated", 10*min))
		st := h.run(workflows.Input{})
		equal(t, "status", st.Status, workflows.StatusVerified)
		equal(t, "recorded", h.names(), []string{"LoadSession", "RecordTransition:verified"})
		equal(t, "code kept", st.LastErrorCode, "selfie_manipulated")
	})
}

func TestProcessingDuringAReviewKeepsItInReview(t *testing.T) {
	h := newHarness(t)
	h.deliver(min, failed("evt_f", "under_supported_age", min))
	h.deliver(hour, ev("evt_p", "processing", hour))
	h.snapshotAt(2*hour, "after")
	h.decide(3*hour, "approve", workflows.ReviewDecision{Decision: "approve", Reviewer: "ops"})
	h.run(workflows.Input{})
	st := h.states["after"]
	equal(t, "status", st.Status, workflows.StatusInReview)
	equal(t, "review still open", st.Review.Open(), true)
	equal(t, "stripe status recorded", st.StripeStatus, "processing")
}

// outcomeKinds are the emails about where a session ended up (not the
// progress notes "failed" and "reminder", which go out only while they are
// current: a failure delivered after a newer event tells nobody to retry).
var outcomeKinds = map[email.Kind]bool{email.KindVerified: true, email.KindAlternateOffered: true,
	email.KindUnderReview: true, email.KindReviewApproved: true, email.KindReviewRejected: true, email.KindExpired: true}

// TestEveryOrderOfDeliveryEndsTheSame delivers each scenario's events in
// every order, one workflow task apart (the hardest case: nothing is
// batched), and checks the same status, attempts, escalation, review reason
// and last outcome email, with no email sent twice.
func TestEveryOrderOfDeliveryEndsTheSame(t *testing.T) {
	typed := func(e workflows.Event, typ string) workflows.Event { e.SessionType = typ; return e }
	// switched is a session on the alternate method since t0, restored from
	// the database; firstType is its first method's.
	switched := func(firstType string) func(h *harness) {
		return func(h *harness) {
			h.stored(workflows.State{Status: workflows.StatusRequiresInput, StripeStatus: "requires_input",
				Escalation: workflows.EscalationAlternate, FirstType: firstType, SessionType: h.policy.AlternateType,
				Attempts: 3, AlternateSince: t0.Unix(), LastEventCreated: t0.Unix(), Seq: 4})
		}
	}
	scenarios := []struct {
		name   string
		setup  func(h *harness)
		events []workflows.Event
		want   string
		// notOps: the ops notice of a review that a later event superseded
		// is sent in some orders only (it cannot be unsent).
		notOps bool
	}{
		{"failures, processing and verified, with a duplicate",
			nil, []workflows.Event{failed("evt_1", "document_expired", min), failed("evt_2", "document_unverified_other", 2*min),
				ev("evt_p", "processing", 3*min), ev("evt_v", "verified", 4*min), failed("evt_1", "document_expired", min)},
			"verified attempts=2/0 escalation=none code=document_unverified_other review= last=verified ops=0", false},
		{"a fraud code among failures, processing and verified",
			nil, []workflows.Event{failed("evt_1", "document_expired", min), failed("evt_2", "selfie_manipulated", 2*min),
				ev("evt_p", "processing", 3*min), ev("evt_v", "verified", 4*min)},
			"in_review attempts=2/0 escalation=manual_review code=selfie_manipulated review=non_retryable:selfie_manipulated last=under_review ops=1", false},
		{"the attempt limit reached in any order",
			nil, []workflows.Event{ev("evt_c", "created", 0), failed("evt_1", "document_expired", min),
				failed("evt_2", "document_expired", 2*min), failed("evt_3", "document_expired", 3*min)},
			"requires_input attempts=3/0 escalation=alternate_method code=document_expired review= last=alternate_offered ops=0", false},
		{"a failure, processing and canceled, with duplicates",
			nil, []workflows.Event{ev("evt_c", "created", 0), failed("evt_1", "document_expired", min),
				ev("evt_p", "processing", 2*min), ev("evt_x", "canceled", 3*min), ev("evt_p", "processing", 2*min),
				ev("evt_x", "canceled", 3*min)},
			"canceled attempts=1/0 escalation=none code=document_expired review= last= ops=0", false},
		{"after the switch: a late failure of the first method and the alternate's failures",
			switched("document"),
			[]workflows.Event{typed(failed("evt_late", "document_expired", -min), "document"),
				typed(failed("evt_a1", "id_number_mismatch", min), "id_number"),
				typed(failed("evt_a2", "id_number_mismatch", 2*min), "id_number")},
			"in_review attempts=4/2 escalation=manual_review code=id_number_mismatch review=attempts_exhausted last=under_review ops=1", false},
		{"after the switch, both methods documents: the time of the switch tells",
			func(h *harness) { h.policy.AlternateType = "document"; switched("document")(h) },
			[]workflows.Event{typed(failed("evt_late", "document_expired", -min), "document"),
				typed(failed("evt_a1", "document_expired", min), "document"),
				typed(failed("evt_a2", "document_expired", 2*min), "document")},
			"in_review attempts=4/2 escalation=manual_review code=document_expired review=attempts_exhausted last=under_review ops=1", false},
		{"LATE_FRAUD_POLICY=record: a fraud code before a later pass",
			func(h *harness) { h.policy.LateFraud = workflows.LateFraudRecord },
			[]workflows.Event{failed("evt_1", "document_expired", min), failed("evt_2", "selfie_manipulated", 2*min),
				ev("evt_p", "processing", 3*min), ev("evt_v", "verified", 4*min)},
			"verified attempts=2/0 escalation=none code=selfie_manipulated review= last=verified", true},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			orders := 0
			for _, order := range permutations(len(sc.events)) {
				orders++
				h := newHarness(t)
				if sc.setup != nil {
					sc.setup(h)
				}
				var events []workflows.Event
				var ids []string
				for _, k := range order {
					events = append(events, sc.events[k])
					ids = append(ids, sc.events[k].ID)
				}
				end, _ := h.deliverAcrossRuns(events, day)
				got := summary(h, end)
				if sc.notOps {
					got = got[:strings.LastIndex(got, " ops=")]
				}
				if got != sc.want {
					t.Fatalf("delivered as %v:\n got %s\nwant %s", ids, got, sc.want)
				}
			}
			t.Logf("%d orders", orders)
		})
	}
}

// summary is what must not depend on the order of delivery, as it stood
// after the last event (emails: those sent or owed by then).
func summary(h *harness, st workflows.State) string {
	last, ops := "", 0
	keys := map[string]bool{}
	for _, r := range h.emails() {
		if keys[r.Key()] {
			h.t.Errorf("email %s sent twice", r.Key())
		}
		keys[r.Key()] = true
	}
	h.calls = h.calls[:h.callsAt["end"]]
	var sent []email.Kind
	for _, r := range h.emails() {
		sent = append(sent, r.Kind)
	}
	for _, e := range st.Owed {
		if e.Email != nil {
			sent = append(sent, email.Kind(e.Email.Kind))
		}
	}
	for _, k := range sent {
		if outcomeKinds[k] {
			last = string(k)
		}
		if k == email.KindOpsReviewOpened {
			ops++
		}
	}
	reason := ""
	if st.Review != nil {
		reason = st.Review.Reason
	}
	return fmt.Sprintf("%s attempts=%d/%d escalation=%s code=%s review=%s last=%s ops=%d", st.Status, st.Attempts,
		st.AlternateAttempts, st.Escalation, st.LastErrorCode, reason, last, ops)
}

// permutations lists every order of n items (Heap's algorithm).
func permutations(n int) [][]int {
	a := make([]int, n)
	for i := range a {
		a[i] = i
	}
	var out [][]int
	var gen func(k int)
	gen = func(k int) {
		if k == 1 {
			out = append(out, append([]int(nil), a...))
			return
		}
		for i := range k {
			gen(k - 1)
			if k%2 == 0 {
				a[i], a[k-1] = a[k-1], a[i]
			} else {
				a[0], a[k-1] = a[k-1], a[0]
			}
		}
	}
	gen(n)
	return out
}
