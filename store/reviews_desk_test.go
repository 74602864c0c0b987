package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"identityverification/store"
)

func TestDeskListsOpenCasesOldestFirstWithTheSessionsFacts(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
		deadline := at.Add(48 * time.Hour)
		if _, err := s.RecordTransition(ctx, store.Transition{SessionID: "vs_desk_b", Key: "evt_b", Seq: 1, From: "new",
			To: "in_review", Attempts: 2, LastErrorCode: "selfie_manipulated", Escalation: "manual_review",
			State: `{"status":"in_review","review":{"reason":"x","deadline_at":"` + deadline.Format(time.RFC3339) + `"}}`}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []store.ReviewCase{
			{SessionID: "vs_desk_b", Reason: "non_retryable:selfie_manipulated", OpenedAt: at},
			{SessionID: "vs_desk_a", Reason: "mismatch", MismatchedFields: []string{"dob", "last_name"}, OpenedAt: at.Add(time.Hour)},
			{SessionID: "vs_desk_c", Reason: "mismatch", OpenedAt: at.Add(-time.Hour)},
		} {
			if err := s.OpenReview(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DecideReview(ctx, store.ReviewCase{SessionID: "vs_desk_c", Status: store.ReviewApproved, Reviewer: "ann", DecidedAt: at}); err != nil {
			t.Fatal(err)
		}
		open, err := s.DeskOpenCases(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		open = slices.DeleteFunc(open, func(c store.DeskCase) bool { return !strings.HasPrefix(c.SessionID, "vs_desk_") })
		if len(open) != 2 || open[0].SessionID != "vs_desk_b" || open[1].SessionID != "vs_desk_a" {
			t.Fatalf("open cases %+v; want vs_desk_b then vs_desk_a (the decided one left out)", open)
		}
		b, a := open[0], open[1]
		if b.Attempts != 2 || b.LastErrorCode != "selfie_manipulated" || b.SessionStatus != "in_review" ||
			!b.DeadlineAt.Equal(deadline) || !b.OpenedAt.Equal(at) || b.Status != store.ReviewOpen {
			t.Errorf("case with a session row: %+v", b)
		}
		if !slices.Equal(a.MismatchedFields, []string{"dob", "last_name"}) || a.SessionStatus != "" || !a.DeadlineAt.IsZero() {
			t.Errorf("case without a session row: %+v", a)
		}
		c, err := s.DeskCase(ctx, "vs_desk_c")
		if err != nil || c.Status != store.ReviewApproved || c.Reviewer != "ann" || !c.DecidedAt.Equal(at) {
			t.Errorf("decided case: %+v, %v", c, err)
		}
		if _, err := s.DeskCase(ctx, "vs_desk_none"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing case: %v; want ErrNotFound", err)
		}
	})
}
