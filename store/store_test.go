package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"identityverification/store"
	"identityverification/store/storetest"
)

// forEachDatabase runs the contract against every engine the suite has.
func forEachDatabase(t *testing.T, fn func(t *testing.T, s *store.Store)) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			s, err := store.Open(context.Background(), db.URL)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			fn(t, s)
		})
	}
}

func TestMigrationsApplyFromScratchThenAreANoOp(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		// Open applied them from scratch; a second run applies none.
		n, err := s.Migrate(context.Background())
		if err != nil || n != 0 {
			t.Fatalf("re-apply: applied %d, err %v; want 0, nil", n, err)
		}
		var tables int
		if err := s.DB().QueryRow(`SELECT COUNT(*) FROM sessions`).Scan(&tables); err != nil {
			t.Fatalf("sessions table missing: %v", err)
		}
	})
}

func TestTransitionsAreIdempotentAndNeverRegress(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		first := store.Transition{SessionID: "vs_1", Key: "evt_1", Seq: 1, EventID: "evt_1",
			EventType: "identity.verification_session.requires_input", From: "new", To: "requires_input",
			Attempts: 1, LastErrorCode: "document_expired", Escalation: "none"}
		second := store.Transition{SessionID: "vs_1", Key: "evt_2", Seq: 2, EventID: "evt_2",
			EventType: "identity.verification_session.verified", From: "requires_input", To: "verified",
			Attempts: 1, Escalation: "none"}
		for _, tr := range []store.Transition{first, second} {
			if applied, err := s.RecordTransition(ctx, tr); err != nil || !applied {
				t.Fatalf("record %s: applied=%v err=%v", tr.Key, applied, err)
			}
		}
		// A late retry of the first write changes nothing.
		if applied, err := s.RecordTransition(ctx, first); err != nil || applied {
			t.Fatalf("retry: applied=%v err=%v; want false, nil", applied, err)
		}
		got, err := s.Session(ctx, "vs_1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != "verified" || got.Seq != 2 || got.Attempts != 1 {
			t.Errorf("session = %+v; want verified at seq 2 with 1 attempt", got)
		}
		ids, err := s.ProcessedEventIDs(ctx, "vs_1", 10)
		if err != nil || !slices.Equal(ids, []string{"evt_1", "evt_2"}) {
			t.Errorf("processed = %v, %v; want [evt_1 evt_2]", ids, err)
		}
		audit, err := s.Audit(ctx, "vs_1")
		if err != nil || len(audit) != 2 || audit[1].To != "verified" {
			t.Errorf("audit = %+v, %v; want two entries ending in verified", audit, err)
		}
	})
}

func TestConcurrentWritersOnOneSessionKeepTheNewest(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := 1; i <= 20; i++ {
			for range 2 { // every transition written twice, concurrently
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := s.RecordTransition(ctx, store.Transition{SessionID: "vs_race",
						Key: fmt.Sprintf("k%d", i), Seq: int64(i), From: "x", To: fmt.Sprintf("s%d", i), Escalation: "none"})
					errs <- err
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent write: %v", err)
			}
		}
		got, _ := s.Session(ctx, "vs_race")
		if got.Status != "s20" || got.Seq != 20 {
			t.Errorf("session = %s@%d; want s20@20", got.Status, got.Seq)
		}
		audit, _ := s.Audit(ctx, "vs_race")
		if len(audit) != 20 {
			t.Errorf("audit has %d entries; want 20", len(audit))
		}
	})
}

func TestRedactionPurgesPersonalDataAndKeepsTheTrail(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		c := store.Contact{SessionID: "vs_r", Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", DOB: "1815-12-10"}
		if err := s.UpsertContact(ctx, c); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Contact(ctx, "vs_r"); err != nil || got != c {
			t.Fatalf("contact = %+v, %v; want %+v", got, err, c)
		}
		s.RecordTransition(ctx, store.Transition{SessionID: "vs_r", Key: "evt_v", Seq: 1, EventID: "evt_v", To: "verified", Escalation: "none"})
		s.OpenReview(ctx, store.ReviewCase{SessionID: "vs_r", Reason: "mismatch"})
		if err := s.Redact(ctx, "vs_r"); err != nil {
			t.Fatal(err)
		}
		if err := s.Redact(ctx, "vs_r"); err != nil {
			t.Fatalf("second redaction: %v", err)
		}
		if _, err := s.Contact(ctx, "vs_r"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("contact after redaction: err = %v; want ErrNotFound", err)
		}
		got, _ := s.Session(ctx, "vs_r")
		if !got.Redacted || got.HasContact || got.Status != "verified" {
			t.Errorf("session = %+v; want redacted, no contact, status kept", got)
		}
		if ids, _ := s.ProcessedEventIDs(ctx, "vs_r", 10); !slices.Equal(ids, []string{"evt_v"}) {
			t.Errorf("event ledger = %v; want kept", ids)
		}
	})
}

func TestReviewDecisionsNeedAnOpenCase(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		d := store.ReviewCase{SessionID: "vs_d", Status: store.ReviewApproved, Reviewer: "ops-1", Note: "ok"}
		if err := s.DecideReview(ctx, d); !errors.Is(err, store.ErrNoReviewOpen) {
			t.Fatalf("decide without case: %v; want ErrNoReviewOpen", err)
		}
		if err := s.OpenReview(ctx, store.ReviewCase{SessionID: "vs_d", Reason: "mismatch", MismatchedFields: []string{"dob", "last_name"}}); err != nil {
			t.Fatal(err)
		}
		if err := s.DecideReview(ctx, d); err != nil {
			t.Fatalf("decide: %v", err)
		}
		if err := s.DecideReview(ctx, d); err != nil {
			t.Fatalf("retried decision: %v", err)
		}
		other := d
		other.Status = store.ReviewRejected
		if err := s.DecideReview(ctx, other); !errors.Is(err, store.ErrNoReviewOpen) {
			t.Errorf("second, different decision: %v; want ErrNoReviewOpen", err)
		}
		got, err := s.Review(ctx, "vs_d")
		if err != nil || got.Status != store.ReviewApproved || !slices.Equal(got.MismatchedFields, []string{"dob", "last_name"}) {
			t.Errorf("review = %+v, %v", got, err)
		}
	})
}

func TestEmailLedgerFirstEntryWins(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.Email(ctx, "vs_e:verified:0"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("empty ledger: %v", err)
		}
		s.RecordEmail(ctx, store.EmailRecord{Key: "vs_e:verified:0", SessionID: "vs_e", Kind: "verified", Status: store.EmailSent})
		s.RecordEmail(ctx, store.EmailRecord{Key: "vs_e:verified:0", SessionID: "vs_e", Kind: "verified", Status: store.EmailRefused})
		got, err := s.Email(ctx, "vs_e:verified:0")
		if err != nil || got.Status != store.EmailSent {
			t.Errorf("ledger = %+v, %v; want sent", got, err)
		}
	})
}
