package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

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
		if err != nil || len(all) != 3 || all[0].Action != store.AuditSignIn || all[2].Action != store.AuditAPIAuth {
			t.Fatalf("log = %+v, %v; want the three rows in order", all, err)
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
		if err := s.CreateAPIKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAPIKey(ctx, k); !errors.Is(err, store.ErrRejected) {
			t.Errorf("a second key with the same id: %v; want ErrRejected", err)
		}
		got, err := s.APIKey(ctx, "k1")
		if err != nil || got.Name != "backend" || !reflect.DeepEqual(got.Scopes, k.Scopes) || got.Revoked() {
			t.Fatalf("key = %+v, %v", got, err)
		}
		if err := s.RevokeAPIKey(ctx, "k1"); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeAPIKey(ctx, "k1"); err != nil {
			t.Errorf("revoking again: %v", err)
		}
		if err := s.RevokeAPIKey(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("revoking an unknown key: %v; want ErrNotFound", err)
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
		if err != nil || got2.Subject != "oidc:ann" || !reflect.DeepEqual(got2.Roles, []string{"reviewer"}) || !got2.ExpiresAt.Equal(exp) {
			t.Errorf("session = %+v, %v", got2, err)
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
