package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

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
			Attempts: 1, LastErrorCode: "document_expired", Escalation: "none", State: `{"status":"requires_input"}`}
		second := store.Transition{SessionID: "vs_1", Key: "evt_2", Seq: 2, EventID: "evt_2",
			EventType: "identity.verification_session.verified", From: "requires_input", To: "verified",
			Attempts: 1, Escalation: "none", State: `{"status":"verified"}`}
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
		want := store.Session{SessionID: "vs_1", Status: "verified", Attempts: 1, Escalation: "none", Seq: 2,
			State: second.State}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("session = %+v, %v; want %+v", got, err, want)
		}
		ids, err := s.ProcessedEventIDs(ctx, "vs_1", 10)
		if err != nil || !slices.Equal(ids, []string{"evt_1", "evt_2"}) {
			t.Errorf("processed = %v, %v; want [evt_1 evt_2]", ids, err)
		}
		audit, err := s.Audit(ctx, "vs_1")
		wantAudit := []store.AuditEntry{
			{Key: "evt_1", EventID: "evt_1", From: "new", To: "requires_input", LastErrorCode: "document_expired",
				Escalation: "none", Seq: 1, Attempts: 1},
			{Key: "evt_2", EventID: "evt_2", From: "requires_input", To: "verified", Escalation: "none", Seq: 2, Attempts: 1},
		}
		if err != nil || !reflect.DeepEqual(audit, wantAudit) {
			t.Errorf("audit = %+v, %v; want %+v", audit, err, wantAudit)
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
		c := store.Contact{SessionID: "vs_r", ClientReferenceID: "ada@example.com", Email: "ada@example.com",
			FirstName: "Ada", LastName: "Lovelace", DOB: "1815-12-10"}
		if err := s.UpsertContact(ctx, c); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Contact(ctx, "vs_r"); err != nil || got != c {
			t.Fatalf("contact = %+v, %v; want %+v", got, err, c)
		}
		s.RecordTransition(ctx, store.Transition{SessionID: "vs_r", Key: "evt_v", Seq: 1, EventID: "evt_v", To: "verified",
			Escalation: "none", State: `{"status":"verified"}`})
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
		if !got.Redacted || got.HasContact || got.Status != "verified" || got.State != `{"status":"verified"}` {
			t.Errorf("session = %+v; want redacted, no contact, status and state kept", got)
		}
		var ref, email, first, last, dob sql.NullString
		if err := s.DB().QueryRow(`SELECT client_reference_id, contact_email, expected_first_name, expected_last_name,
       expected_dob FROM sessions WHERE session_id = 'vs_r'`).Scan(&ref, &email, &first, &last, &dob); err != nil {
			t.Fatal(err)
		}
		if left := []sql.NullString{ref, email, first, last, dob}; !reflect.DeepEqual(left, make([]sql.NullString, 5)) {
			t.Errorf("personal data columns after redaction = %v; want all NULL, client reference included", left)
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
		first, err := s.RecordEmail(ctx, store.EmailRecord{Key: "vs_e:verified:0", SessionID: "vs_e", Kind: "verified", Status: store.EmailSent})
		if err != nil || first.Status != store.EmailSent {
			t.Fatalf("first entry: %+v, %v", first, err)
		}
		// A second attempt that raced past the ledger read is told what
		// the ledger holds, not what it tried to record.
		second, err := s.RecordEmail(ctx, store.EmailRecord{Key: "vs_e:verified:0", SessionID: "vs_e", Kind: "verified",
			Status: store.EmailRefused, Detail: "550 no such user"})
		if err != nil || second.Status != store.EmailSent || second.Detail != "" {
			t.Errorf("second entry returned %+v, %v; want the first (sent)", second, err)
		}
		got, err := s.Email(ctx, "vs_e:verified:0")
		if err != nil || got.Status != store.EmailSent {
			t.Errorf("ledger = %+v, %v; want sent", got, err)
		}
	})
}

func TestStateMovesWithTheRowUnderTheSeqRule(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		at := func(key string, seq int64, to, state string) store.Transition {
			return store.Transition{Key: key, Seq: seq, From: "x", To: to, Escalation: "none", State: state}
		}
		cases := []struct {
			name        string
			transitions []store.Transition
			wantStatus  string
			wantState   string
		}{
			{"the newest transition's state is kept",
				[]store.Transition{at("evt_1", 1, "processing", `{"seq":1}`), at("evt_2", 2, "verified", `{"seq":2}`)},
				"verified", `{"seq":2}`},
			{"a late transition under another key leaves the newer state",
				[]store.Transition{at("evt_2", 2, "verified", `{"seq":2}`), at("expiry", 1, "expired", `{"seq":1}`)},
				"verified", `{"seq":2}`},
			{"a newer transition without state empties it rather than pair its status with an older state",
				[]store.Transition{at("evt_1", 1, "processing", `{"seq":1}`), at("evt_2", 2, "verified", "")},
				"verified", ""},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				id := fmt.Sprintf("vs_state_%d", i)
				for _, tr := range c.transitions {
					tr.SessionID = id
					if applied, err := s.RecordTransition(ctx, tr); err != nil || !applied {
						t.Fatalf("record %s: applied=%v err=%v", tr.Key, applied, err)
					}
				}
				got, err := s.Session(ctx, id)
				if err != nil || got.Status != c.wantStatus || got.State != c.wantState {
					t.Errorf("session = %+v, %v; want status %q with state %q", got, err, c.wantStatus, c.wantState)
				}
				if audit, _ := s.Audit(ctx, id); len(audit) != len(c.transitions) {
					t.Errorf("audit has %d entries; want %d, every transition kept", len(audit), len(c.transitions))
				}
			})
		}
	})
}

func TestTextFromOutsideIsStoredCleanedWhateverBytesItHolds(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		cases := []struct {
			name  string
			write func() error
			read  func() (any, error)
			want  any
		}{
			{"a transition's error reason, code, note, event and state are cleaned",
				func() error {
					_, err := s.RecordTransition(ctx, store.Transition{SessionID: "vs_t", Key: "evt_t", Seq: 1,
						EventID: "evt_\x00t", EventType: "identity.\xffverified", From: "new", To: "requires_input",
						LastErrorCode: "document\x00_expired", LastErrorReason: "scan\x00 unreadable: \xff\xfe",
						Escalation: "none", Note: "retry\x00 \xff", State: `{"reason":"scan` + "\x00\xff" + `"}`})
					return err
				},
				func() (any, error) {
					ss, err := s.Session(ctx, "vs_t")
					if err != nil {
						return nil, err
					}
					audit, err := s.Audit(ctx, "vs_t")
					if err != nil || len(audit) != 1 {
						return nil, fmt.Errorf("audit = %+v, %v", audit, err)
					}
					ids, err := s.ProcessedEventIDs(ctx, "vs_t", 10)
					return []any{ss.LastErrorReason, ss.LastErrorCode, ss.State, audit[0].Note,
						audit[0].LastErrorCode, audit[0].EventID, ids}, err
				},
				[]any{"scan unreadable: \uFFFD", "document_expired", `{"reason":"scan` + "\uFFFD" + `"}`, "retry \uFFFD",
					"document_expired", "evt_t", []string{"evt_t"}}},
			{"a contact's fields are cleaned",
				func() error {
					return s.UpsertContact(ctx, store.Contact{SessionID: "vs_c", ClientReferenceID: "ref\x00-1",
						Email: "zo\xeb@example.com", FirstName: "Zo\xeb", LastName: "Lee\x00", DOB: "1990-01-02\x00"})
				},
				func() (any, error) { return s.Contact(ctx, "vs_c") },
				store.Contact{SessionID: "vs_c", ClientReferenceID: "ref-1", Email: "zo\uFFFD@example.com",
					FirstName: "Zo\uFFFD", LastName: "Lee", DOB: "1990-01-02"}},
			{"an email ledger detail is cleaned",
				func() error {
					_, err := s.RecordEmail(ctx, store.EmailRecord{Key: "vs_e:verified:0", SessionID: "vs_e", Kind: "verified",
						Status: store.EmailRefused, Detail: "550 mailbox\x00 unavailable \xff"})
					return err
				},
				func() (any, error) { return s.Email(ctx, "vs_e:verified:0") },
				store.EmailRecord{Key: "vs_e:verified:0", SessionID: "vs_e", Kind: "verified", Status: store.EmailRefused,
					Detail: "550 mailbox unavailable \uFFFD"}},
			{"a review case's reason, fields, reviewer and note are cleaned, and a retried decision still matches",
				func() error {
					if err := s.OpenReview(ctx, store.ReviewCase{SessionID: "vs_rv", Reason: "mis\x00match",
						MismatchedFields: []string{"dob\xff", "last_name"}}); err != nil {
						return err
					}
					d := store.ReviewCase{SessionID: "vs_rv", Status: store.ReviewApproved, Reviewer: "ops\x00-1\xff", Note: "ok\xff"}
					if err := s.DecideReview(ctx, d); err != nil {
						return err
					}
					return s.DecideReview(ctx, d)
				},
				func() (any, error) {
					c, err := s.Review(ctx, "vs_rv")
					return []any{c.Reason, c.MismatchedFields, c.Status, c.Reviewer, c.Note}, err
				},
				[]any{"mismatch", []string{"dob\uFFFD", "last_name"}, store.ReviewApproved, "ops-1\uFFFD", "ok\uFFFD"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if err := c.write(); err != nil {
					t.Fatalf("write: %v", err)
				}
				got, err := c.read()
				if err != nil || !reflect.DeepEqual(got, c.want) {
					t.Errorf("read back %q, %v; want %q", got, err, c.want)
				}
			})
		}
	})
}

func TestASchemaThatDoesNotMatchIsNotRejectedAndLeavesNothingHalfWritten(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		// The schema lacks a column this code writes and reads, as when an
		// older schema meets a newer binary: ops can mend it, so the write
		// is not refused for good; it waits (retried, shown to ops).
		if _, err := s.DB().Exec(`ALTER TABLE sessions DROP COLUMN state`); err != nil {
			t.Fatal(err)
		}
		tr := store.Transition{SessionID: "vs_x", Key: "evt_x", Seq: 1, EventID: "evt_x", To: "verified", Escalation: "none"}
		cases := []struct {
			name     string
			call     func() error
			rejected bool
		}{
			{"recording a transition the schema cannot hold is not rejected",
				func() error { _, err := s.RecordTransition(ctx, tr); return err }, false},
			{"reading a session the schema cannot give is not rejected",
				func() error { _, err := s.Session(ctx, "vs_x"); return err }, false},
			{"a canceled call is not rejected",
				func() error { _, err := s.RecordTransition(canceled, tr); return err }, false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				err := c.call()
				if err == nil || errors.Is(err, store.ErrRejected) != c.rejected {
					t.Errorf("err = %v; want an error, ErrRejected %v", err, c.rejected)
				}
			})
		}
		var rows int
		if err := s.DB().QueryRow(`SELECT (SELECT COUNT(*) FROM status_transitions) + (SELECT COUNT(*) FROM processed_events)
     + (SELECT COUNT(*) FROM sessions)`).Scan(&rows); err != nil || rows != 0 {
			t.Errorf("rows left by the failed transitions = %d, %v; want 0: all or nothing", rows, err)
		}
		t.Run("a call on a closed store is not rejected", func(t *testing.T) {
			s.Close()
			if _, err := s.Audit(ctx, "vs_x"); err == nil || errors.Is(err, store.ErrRejected) {
				t.Errorf("err = %v; want an error, not ErrRejected", err)
			}
		})
	})
}

func TestRegistrationAfterRedactionIsRefused(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		first := store.Contact{ClientReferenceID: "ada@example.com", Email: "ada@example.com", FirstName: "Ada"}
		second := store.Contact{ClientReferenceID: "cust-7", Email: "ada.lovelace@example.com", FirstName: "Ada",
			LastName: "Lovelace", DOB: "1815-12-10"}
		nothing := store.Contact{}
		cases := []struct {
			name    string
			steps   []string // "first", "second": register that contact; "redact"
			wantErr error    // of the last registration
			want    store.Contact
		}{
			{"a registration is stored", []string{"first"}, nil, first},
			{"a re-registration replaces the contact", []string{"first", "second"}, nil, second},
			{"a registration after redaction is refused and stores nothing", []string{"redact", "first"}, store.ErrRedacted, nothing},
			{"a re-registration after redaction is refused and stores nothing", []string{"first", "redact", "second"}, store.ErrRedacted, nothing},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				id := fmt.Sprintf("vs_reg_%d", i)
				var err error
				for _, step := range c.steps {
					switch step {
					case "redact":
						if err := s.Redact(ctx, id); err != nil {
							t.Fatalf("redact: %v", err)
						}
					case "first", "second":
						contact := map[string]store.Contact{"first": first, "second": second}[step]
						contact.SessionID = id
						err = s.UpsertContact(ctx, contact)
					}
				}
				if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
					t.Fatalf("last registration: %v; want %v", err, c.wantErr)
				}
				var got store.Contact
				if err := s.DB().QueryRow(`
SELECT COALESCE(client_reference_id, ''), COALESCE(contact_email, ''), COALESCE(expected_first_name, ''),
       COALESCE(expected_last_name, ''), COALESCE(expected_dob, '')
FROM sessions WHERE session_id = $1`, id).Scan(&got.ClientReferenceID, &got.Email, &got.FirstName,
					&got.LastName, &got.DOB); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, c.want) {
					t.Errorf("stored contact = %+v; want %+v", got, c.want)
				}
			})
		}
	})
}

func TestStateMigrationRollsBackAndReapplies(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.RecordTransition(ctx, store.Transition{SessionID: "vs_m", Key: "evt_m", Seq: 1, To: "verified",
			Escalation: "none", State: `{"status":"verified"}`}); err != nil {
			t.Fatal(err)
		}
		p, err := goose.NewProvider(goose.Dialect(s.Dialect()), s.DB(), os.DirFS("migrations"), store.GoMigrations(s.Dialect()))
		if err != nil {
			t.Fatal(err)
		}
		if res, err := p.DownTo(ctx, 1); err != nil || len(res) == 0 || res[len(res)-1].Source.Version != 2 {
			t.Fatalf("down to 00001: %v, %v; want 00002 rolled back last", res, err)
		}
		if _, err := s.DB().Exec(`SELECT state FROM sessions`); err == nil {
			t.Error("state column still there after rolling back 00002")
		}
		if res, err := p.Up(ctx); err != nil || len(res) == 0 || res[0].Source.Version != 2 {
			t.Fatalf("up: %v, %v; want 00002 applied again first", res, err)
		}
		got, err := s.Session(ctx, "vs_m")
		want := store.Session{SessionID: "vs_m", Status: "verified", Escalation: "none", Seq: 1}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("session = %+v, %v; want %+v: the row kept, its state back to the default", got, err, want)
		}
		if n, err := s.Migrate(ctx); err != nil || n != 0 {
			t.Errorf("migrate after re-applying: %d, %v; want 0, nil", n, err)
		}
	})
}

func TestASecondReviewOfASessionIsOpenedAndDecided(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		at := time.Now().UTC().Truncate(time.Second)
		for _, step := range []error{
			s.OpenReview(ctx, store.ReviewCase{SessionID: "vs_r2", Reason: "mismatch", OpenedAt: at}),
			s.DecideReview(ctx, store.ReviewCase{SessionID: "vs_r2", Status: store.ReviewApproved, Reviewer: "ops", DecidedAt: at}),
			s.OpenReview(ctx, store.ReviewCase{SessionID: "vs_r2", Reason: "non_retryable:selfie_manipulated", OpenedAt: at.Add(time.Hour)}),
		} {
			if step != nil {
				t.Fatal(step)
			}
		}
		c, err := s.Review(ctx, "vs_r2")
		if err != nil || c.Status != store.ReviewOpen || c.Reason != "non_retryable:selfie_manipulated" || c.Reviewer != "" {
			t.Fatalf("second review = %+v, %v; want open on the new reason", c, err)
		}
		// Opening it again (a retried activity) changes nothing.
		if err := s.OpenReview(ctx, store.ReviewCase{SessionID: "vs_r2", Reason: "other", OpenedAt: at}); err != nil {
			t.Fatal(err)
		}
		if err := s.DecideReview(ctx, store.ReviewCase{SessionID: "vs_r2", Status: store.ReviewRejected, Reviewer: "ops-2", DecidedAt: at}); err != nil {
			t.Errorf("second decision: %v", err)
		}
		if c, _ := s.Review(ctx, "vs_r2"); c.Status != store.ReviewRejected || c.Reason != "non_retryable:selfie_manipulated" {
			t.Errorf("after the second decision: %+v", c)
		}
	})
}
