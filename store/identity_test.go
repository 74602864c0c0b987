package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"identityverification/store"
)

func TestExpectedValuesFreezeOnceTheUserStartsVerifying(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		ada := store.Contact{SessionID: "vs_freeze", Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", DOB: "1815-12-10"}
		record := func(key string, seq int64, to string, comparing bool) {
			t.Helper()
			if _, err := s.RecordTransition(ctx, store.Transition{SessionID: ada.SessionID, Key: key, Seq: seq, To: to,
				Escalation: "none", Comparing: comparing}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.UpsertContact(ctx, ada); err != nil {
			t.Fatal(err)
		}
		// Before the user starts, a registration may change anything.
		record("evt_created", 1, "created", false)
		record("evt_ri", 2, "requires_input", false)
		eve := ada
		eve.Email = "eve@example.com"
		if err := s.UpsertContact(ctx, eve); err != nil {
			t.Fatalf("change before processing: %v", err)
		}
		// processing: frozen for good, even when the session later waits
		// for the user again.
		record("evt_processing", 3, "processing", false)
		record("evt_ri2", 4, "requires_input", false)
		err := s.UpsertContact(ctx, ada)
		var frozen *store.FrozenError
		if !errors.Is(err, store.ErrFrozen) || !errors.As(err, &frozen) || !reflect.DeepEqual(frozen.Fields, []string{"email"}) ||
			frozen.Status != "requires_input" {
			t.Fatalf("change after processing: %v; want a FrozenError naming email", err)
		}
		// The same registration again is fine; the client reference may change.
		same := eve
		same.ClientReferenceID = "ref_new"
		if err := s.UpsertContact(ctx, same); err != nil {
			t.Errorf("identical re-registration: %v", err)
		}
		if c, _ := s.Contact(ctx, ada.SessionID); c.Email != "eve@example.com" || c.ClientReferenceID != "ref_new" {
			t.Errorf("contact = %+v; want the values from before the freeze", c)
		}
	})
}

func TestAComparisonFreezesTheExpectedValues(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		c := store.Contact{SessionID: "vs_cmp", Email: "cmp@example.com", LastName: "Lovelace"}
		if err := s.UpsertContact(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordTransition(ctx, store.Transition{SessionID: c.SessionID, Key: "evt_v", Seq: 1, To: "created",
			Escalation: "none", Comparing: true}); err != nil {
			t.Fatal(err)
		}
		c.LastName = "Byron"
		if err := s.UpsertContact(ctx, c); !errors.Is(err, store.ErrFrozen) {
			t.Errorf("change while comparing: %v; want ErrFrozen", err)
		}
	})
}

func TestEveryRegistrationIsAuditedWithTheFieldsItChanged(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		c := store.Contact{SessionID: "vs_reg_audit", Email: "a@example.com", LastName: "Lovelace"}
		for _, step := range []struct {
			change func()
			want   []string
		}{
			{func() {}, []string{"email", "last_name"}},
			{func() {}, nil},
			{func() { c.Email, c.DOB = "b@example.com", "1815-12-10" }, []string{"email", "dob"}},
		} {
			step.change()
			got, err := s.RegisterContact(ctx, c, &store.AuditRecord{Actor: "key:k1", ActorName: "backend",
				Action: store.AuditSessionRegister, Source: "127.0.0.1", Result: store.AuditOK})
			if err != nil || !reflect.DeepEqual(got, step.want) {
				t.Fatalf("register: %v, %v; want %v", got, err, step.want)
			}
		}
		rows, err := s.AuditLog(ctx, store.AuditFilter{SessionID: c.SessionID})
		if err != nil {
			t.Fatal(err)
		}
		slices.Reverse(rows) // oldest first
		var details []string
		for _, r := range rows {
			details = append(details, r.Detail)
			if r.Actor != "key:k1" || r.Action != store.AuditSessionRegister || r.Result != store.AuditOK || r.At.IsZero() {
				t.Errorf("row %+v", r)
			}
		}
		if want := []string{"registered: email,last_name", "unchanged", "changed: email,dob"}; !reflect.DeepEqual(details, want) {
			t.Errorf("details %q; want %q", details, want)
		}
	})
}

// However many rows there are, a read gets the newest, and pages back
// from there without a row twice or one left out, also where rows share
// a time.
func TestTheAuditLogReadsTheNewestFirstAndPagesBack(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
		second := func(i int) time.Time { return at.Add(time.Duration(i/2) * time.Second) } // two rows a second
		for i := range 25 {
			session := "vs_other"
			if i%2 == 0 {
				session = "vs_even"
			}
			if err := s.AppendAudit(ctx, store.AuditRecord{At: second(i), Actor: "key:k1",
				Action: store.AuditSessionRegister, SessionID: session, Result: store.AuditOK, Detail: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		// read pages through f 10 rows at a time and returns each row's
		// number, checking the rows come newest first.
		read := func(f store.AuditFilter) (got []int) {
			t.Helper()
			f.Limit = 10
			var last time.Time
			for range 5 {
				rows, err := s.AuditLog(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rows {
					var n int
					fmt.Sscan(r.Detail, &n)
					if !last.IsZero() && r.At.After(last) {
						t.Errorf("row %d (%v) after a row of %v: want newest first", n, r.At, last)
					}
					last = r.At
					got = append(got, n)
				}
				if len(rows) < f.Limit {
					return got
				}
				f.Before = rows[len(rows)-1].ID
			}
			t.Fatal("more pages than rows")
			return nil
		}
		check := func(name string, got []int, want func(i int) bool) {
			t.Helper()
			var exp []int
			for i := 24; i >= 0; i-- {
				if want(i) {
					exp = append(exp, i)
				}
			}
			if len(got) > 0 && second(got[0]) != second(exp[0]) {
				t.Errorf("%s: the first row is %d; want one of the newest second (%d)", name, got[0], exp[0])
			}
			slices.Sort(got)
			slices.Reverse(got)
			if !reflect.DeepEqual(got, exp) {
				t.Errorf("%s: rows %v; want each of %v once", name, got, exp)
			}
		}
		check("every row", read(store.AuditFilter{}), func(int) bool { return true })
		check("one session's rows", read(store.AuditFilter{SessionID: "vs_even"}), func(i int) bool { return i%2 == 0 })
		check("rows since 09:00:10", read(store.AuditFilter{Since: at.Add(10 * time.Second)}), func(i int) bool { return i >= 20 })
	})
}

func TestTheAuditLogIsAppendOnly(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		start := time.Now().Add(-time.Second)
		for _, r := range []store.AuditRecord{
			{Actor: "oidc:ann", ActorName: "ann@example.com", Action: store.AuditSignIn, Source: "10.0.0.1", Result: store.AuditOK},
			{Actor: "oidc:ann", Action: store.AuditReviewDecide, SessionID: "vs_a", Source: "10.0.0.1", Result: store.AuditOK, Detail: "approve"},
			{Action: store.AuditAPIAuth, Source: "10.0.0.2", Result: store.AuditDenied},
		} {
			if err := s.AppendAudit(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		all, err := s.AuditLog(ctx, store.AuditFilter{Since: start})
		if err != nil || len(all) != 3 || all[0].Action != store.AuditAPIAuth || all[2].Action != store.AuditSignIn {
			t.Fatalf("log = %+v, %v; want the three rows, newest first", all, err)
		}
		one, err := s.AuditLog(ctx, store.AuditFilter{SessionID: "vs_a"})
		if err != nil || len(one) != 1 || one[0].Detail != "approve" {
			t.Errorf("session's rows = %+v, %v", one, err)
		}
		if later, _ := s.AuditLog(ctx, store.AuditFilter{Since: time.Now().Add(time.Hour)}); len(later) != 0 {
			t.Errorf("rows since an hour from now: %+v", later)
		}
		// The database itself refuses to change or remove a row.
		for _, q := range []string{`UPDATE audit_log SET result = 'ok'`, `DELETE FROM audit_log`} {
			if _, err := s.DB().ExecContext(ctx, q); err == nil {
				t.Errorf("%s: no error; want the append-only trigger to refuse it", q)
			}
		}
		if s.Dialect() == "postgres" {
			if _, err := s.DB().ExecContext(ctx, `TRUNCATE audit_log`); err == nil {
				t.Error("TRUNCATE: no error; want the trigger to refuse it")
			}
		}
		if n, _ := s.AuditLog(ctx, store.AuditFilter{}); len(n) != 3 {
			t.Errorf("%d rows after the refused changes; want 3", len(n))
		}
	})
}

func TestAPIKeysAreListedAndRevoked(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		k := store.APIKey{ID: "k1", Name: "backend", Scopes: []string{"sessions:create", "sessions:read"}, SecretHash: "ab12"}
		row := func(action, detail string) *store.AuditRecord {
			return &store.AuditRecord{Actor: "cli", Action: action, Result: store.AuditOK, Detail: detail}
		}
		if err := s.CreateAPIKey(ctx, k, row(store.AuditKeyCreate, "first")); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAPIKey(ctx, k, row(store.AuditKeyCreate, "again")); !errors.Is(err, store.ErrRejected) {
			t.Errorf("a second key with the same id: %v; want ErrRejected", err)
		}
		got, err := s.APIKey(ctx, "k1")
		if err != nil || got.Name != "backend" || !reflect.DeepEqual(got.Scopes, k.Scopes) || got.Revoked() {
			t.Fatalf("key = %+v, %v", got, err)
		}
		if err := s.RevokeAPIKey(ctx, "k1", row(store.AuditKeyRevoke, "first")); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeAPIKey(ctx, "k1", row(store.AuditKeyRevoke, "again")); err != nil {
			t.Errorf("revoking again: %v", err)
		}
		if err := s.RevokeAPIKey(ctx, "nope", row(store.AuditKeyRevoke, "unknown")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("revoking an unknown key: %v; want ErrNotFound", err)
		}
		// Each change has its row, in its transaction; what did not happen
		// has none.
		rows, _ := s.AuditLog(ctx, store.AuditFilter{})
		var actions []string
		for _, r := range rows {
			actions = append(actions, r.Action+" "+r.Detail)
		}
		if want := []string{"api_key.revoke again", "api_key.revoke first", "api_key.create first"}; !reflect.DeepEqual(actions, want) {
			t.Errorf("audit rows %q; want %q", actions, want)
		}
		list, err := s.APIKeys(ctx)
		if err != nil || len(list) != 1 || !list[0].Revoked() {
			t.Errorf("keys = %+v, %v; want the one, revoked", list, err)
		}
		if _, err := s.APIKey(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown key: %v", err)
		}
	})
}

func TestDeskSessionsLiveInTheDatabase(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		l := store.DeskLogin{IDHash: "h1", State: "st", Nonce: "n", Verifier: "v", ExpiresAt: exp}
		if err := s.CreateDeskLogin(ctx, l); err != nil {
			t.Fatal(err)
		}
		got, err := s.TakeDeskLogin(ctx, "h1")
		if err != nil || got != l {
			t.Fatalf("login = %+v, %v; want %+v", got, err, l)
		}
		if _, err := s.TakeDeskLogin(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second take: %v; want ErrNotFound (one callback per sign-in)", err)
		}
		ds := store.DeskSession{IDHash: "s1", Subject: "oidc:ann", Email: "ann@example.com", Roles: []string{"reviewer"},
			CSRF: "c", ExpiresAt: exp}
		if err := s.CreateDeskSession(ctx, ds, ""); err != nil {
			t.Fatal(err)
		}
		ds2 := ds
		ds2.IDHash = "s2"
		if err := s.CreateDeskSession(ctx, ds2, "s1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeskSessionByHash(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the replaced session: %v; want ErrNotFound", err)
		}
		if err := s.SetDeskFlash(ctx, "s2", "Decided."); err != nil {
			t.Fatal(err)
		}
		if f, err := s.TakeDeskFlash(ctx, "s2"); err != nil || f != "Decided." {
			t.Errorf("flash = %q, %v", f, err)
		}
		if f, _ := s.TakeDeskFlash(ctx, "s2"); f != "" {
			t.Errorf("flash again = %q; want it shown once", f)
		}
		got2, err := s.DeskSessionByHash(ctx, "s2")
		if err != nil || got2.Subject != "oidc:ann" || !reflect.DeepEqual(got2.Roles, []string{"reviewer"}) || !got2.ExpiresAt.Equal(exp) ||
			!got2.LastUsedAt.Equal(got2.CreatedAt) {
			t.Errorf("session = %+v, %v; want it last used when it was made", got2, err)
		}
		// When a session was last used is shared by every replica, and
		// never moves back (a slower replica's older use).
		used := got2.CreatedAt.Add(20 * time.Minute)
		for _, at := range []time.Time{used, used.Add(-time.Minute)} {
			if err := s.TouchDeskSession(ctx, "s2", at); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := s.DeskSessionByHash(ctx, "s2"); !got.LastUsedAt.Equal(used) {
			t.Errorf("last used %v; want %v", got.LastUsedAt, used)
		}
		if err := s.DeleteDeskSession(ctx, "s2"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeskSessionByHash(ctx, "s2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after sign-out: %v; want ErrNotFound", err)
		}
	})
}

func TestFixedWindowCountersAreShared(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		at := time.Date(2026, 12, 1, 10, 7, 0, 0, time.UTC)
		for i := 1; i <= 3; i++ {
			if n, err := s.Hit(ctx, "signin:source:10.0.0.1", 15*time.Minute, at.Add(time.Duration(i)*time.Minute)); err != nil || n != i {
				t.Fatalf("hit %d: %d, %v", i, n, err)
			}
		}
		if n, _ := s.Hits(ctx, "signin:source:10.0.0.1", 15*time.Minute, at); n != 3 {
			t.Errorf("hits in the window: %d; want 3", n)
		}
		if n, _ := s.Hits(ctx, "signin:source:10.0.0.1", 15*time.Minute, at.Add(15*time.Minute)); n != 0 {
			t.Errorf("hits in the next window: %d; want 0", n)
		}
		if n, _ := s.Hits(ctx, "signin:source:10.0.0.2", 15*time.Minute, at); n != 0 {
			t.Errorf("another bucket: %d; want 0", n)
		}
	})
}

// Windows more than a day old go with the next hit; migration 00010's
// window_start index (which that cleanup uses) rolls back and reapplies.
func TestOldWindowsGoWithTheNextHit(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		at := time.Date(2026, 12, 1, 10, 7, 0, 0, time.UTC)
		p, err := goose.NewProvider(goose.Dialect(s.Dialect()), s.DB(), os.DirFS("migrations"), store.GoMigrations(s.Dialect()))
		if err != nil {
			t.Fatal(err)
		}
		indexed := func() bool {
			t.Helper()
			q := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'rate_limits_window'`
			if goose.Dialect(s.Dialect()) == goose.DialectPostgres {
				q = `SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'rate_limits_window'`
			}
			var n int
			if err := s.DB().QueryRowContext(ctx, q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 1
		}
		if !indexed() {
			t.Fatal("no rate_limits_window index after the migrations")
		}
		res, err := p.DownTo(ctx, 9)
		if err != nil || len(res) == 0 || res[len(res)-1].Source.Version != 10 {
			t.Fatalf("down to 00009: %v, %v; want 00010 rolled back last", res, err)
		}
		if indexed() {
			t.Error("the index is still there after rolling back 00010")
		}
		if n, err := s.Migrate(ctx); err != nil || n != len(res) {
			t.Fatalf("migrate: %d, %v; want the %d rolled back applied again", n, err, len(res))
		}
		if !indexed() {
			t.Error("no index after re-applying 00010")
		}
		if _, err := s.Hit(ctx, "retrylink:vs_old", 10*time.Minute, at); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Hit(ctx, "retrylink:vs_new", 10*time.Minute, at.Add(25*time.Hour)); err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM rate_limits WHERE bucket = 'retrylink:vs_old'`).Scan(&rows); err != nil || rows != 0 {
			t.Errorf("a window 25 hours old: %d rows, %v; want it gone", rows, err)
		}
	})
}

// A create request registers the session it made; given back the session
// an earlier request made (Stripe's idempotency), it may repeat that
// registration but never change it.
func TestACreatedSessionKeepsTheRegistrationOfTheRequestThatMadeIt(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		ada := store.Contact{SessionID: "vs_made", Email: "ada@example.com", FirstName: "Ada", ClientReferenceID: "ref_1"}
		audit := func() *store.AuditRecord {
			return &store.AuditRecord{Actor: "key:k1", Action: store.AuditSessionRegister, Result: store.AuditOK}
		}
		for range 2 {
			if err := s.RegisterNewContact(ctx, ada, audit()); err != nil {
				t.Fatalf("the registration, and its retry: %v", err)
			}
		}
		for _, other := range []store.Contact{
			{SessionID: "vs_made", Email: "mallory@example.com", FirstName: "Ada", ClientReferenceID: "ref_1"},
			{SessionID: "vs_made", Email: "ada@example.com", ClientReferenceID: "ref_1"},
			{SessionID: "vs_made", Email: "ada@example.com", FirstName: "Ada", ClientReferenceID: "ref_2"},
		} {
			if err := s.RegisterNewContact(ctx, other, audit()); !errors.Is(err, store.ErrRegisteredOtherwise) {
				t.Errorf("another registration %+v: %v; want ErrRegisteredOtherwise", other, err)
			}
		}
		if c, _ := s.Contact(ctx, "vs_made"); c.Email != ada.Email || c.FirstName != ada.FirstName || c.ClientReferenceID != ada.ClientReferenceID {
			t.Errorf("contact %+v; want the first registration", c)
		}
		rows, _ := s.AuditLog(ctx, store.AuditFilter{SessionID: "vs_made"})
		var details []string
		for _, r := range rows {
			details = append(details, r.Detail)
		}
		if want := []string{"unchanged", "registered: email,first_name,client_reference_id"}; !reflect.DeepEqual(details, want) {
			t.Errorf("audit details %q; want %q (nothing for the refused ones)", details, want)
		}
	})
}

// A failed attempt freezes the expected values too: the user submitted, even
// when Stripe delivered the failure before the processing that came first
// (which the workflow then takes as stale, so no processing ever shows).
func TestAFailedAttemptFreezesTheExpectedValues(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		c := store.Contact{SessionID: "vs_failed_first", Email: "ada@example.com", FirstName: "Ada"}
		if err := s.UpsertContact(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordTransition(ctx, store.Transition{SessionID: c.SessionID, Key: "evt_f", Seq: 1, To: "requires_input",
			Attempts: 1, LastErrorCode: "document_expired", Escalation: "none"}); err != nil {
			t.Fatal(err)
		}
		c.Email, c.FirstName = "mallory@evil.example", "Mallory"
		if err := s.UpsertContact(ctx, c); !errors.Is(err, store.ErrFrozen) {
			t.Errorf("change after a failed attempt: %v; want ErrFrozen", err)
		}
	})
}
