package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"identityverification/store"
)

func TestOpenReviewsAreListedOldestFirstWithWhatAReviewerNeeds(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
		deadline := t0.Add(48 * time.Hour)
		// vs_new opened last, vs_old first; vs_done is decided, vs_bare has no session row.
		if _, err := s.RecordTransition(ctx, store.Transition{SessionID: "vs_old", Key: "evt_1", Seq: 1, From: "new",
			To: "in_review", Attempts: 3, LastErrorCode: "document_expired", Escalation: "manual_review",
			State: `{"session_id":"vs_old","review":{"reason":"attempts_exhausted","deadline_at":"` + deadline.Format(time.RFC3339) + `"}}`}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []store.ReviewCase{
			{SessionID: "vs_new", Reason: "mismatch", MismatchedFields: []string{"dob", "last_name"}, OpenedAt: t0.Add(2 * time.Hour)},
			{SessionID: "vs_old", Reason: "attempts_exhausted", OpenedAt: t0},
			{SessionID: "vs_done", Reason: "mismatch", OpenedAt: t0.Add(-time.Hour)},
		} {
			if err := s.OpenReview(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DecideReview(ctx, store.ReviewCase{SessionID: "vs_done", Status: store.ReviewApproved, Reviewer: "ops"}); err != nil {
			t.Fatal(err)
		}
		got, err := s.OpenReviews(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].SessionID != "vs_old" || got[1].SessionID != "vs_new" {
			t.Fatalf("open reviews = %+v; want vs_old then vs_new", got)
		}
		old, nw := got[0], got[1]
		if old.Reason != "attempts_exhausted" || old.Attempts != 3 || old.LastErrorCode != "document_expired" ||
			!old.OpenedAt.Equal(t0) || !old.DeadlineAt.Equal(deadline) {
			t.Errorf("vs_old = %+v", old)
		}
		if nw.Reason != "mismatch" || !slices.Equal(nw.MismatchedFields, []string{"dob", "last_name"}) ||
			!nw.OpenedAt.Equal(t0.Add(2*time.Hour)) || !nw.DeadlineAt.IsZero() {
			t.Errorf("vs_new = %+v", nw)
		}
		if got, err := s.OpenReviews(ctx, 1); err != nil || len(got) != 1 || got[0].SessionID != "vs_old" {
			t.Errorf("limit 1 = %+v, %v; want vs_old only", got, err)
		}
	})
}
