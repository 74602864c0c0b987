package store_test

import (
	"context"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/pressly/goose/v3"

	"identityverification/store"
)

// Issue 19, item 8: `temporal workflow reset` starts a run that numbers its
// transitions from the reset point, lower than those of the run it replaced.
// Its transitions win; a late write of the replaced run does not.
func TestAResetRunsTransitionsWin(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		tr := func(run, key string, seq int64, to string, attempts int) store.Transition {
			return store.Transition{SessionID: "vs_reset", RunID: run, Key: key, Seq: seq, EventID: key,
				EventType: "identity.verification_session.requires_input", From: "x", To: to, Attempts: attempts,
				Escalation: "none", State: `{"status":"` + to + `","seq":` + string(rune('0'+seq)) + `}`}
		}
		record := func(t store.Transition) bool {
			applied, err := s.RecordTransition(ctx, t)
			if err != nil {
				panic(err)
			}
			return applied
		}
		// The first run: two failures.
		record(tr("run_a", "evt_1", 1, "requires_input", 1))
		record(tr("run_a", "evt_2", 2, "requires_input", 2))
		// Reset to after evt_1: the new run applies evt_2 again (signals
		// reapplied), then a verification, numbered from 2.
		if !record(tr("run_b", "evt_2", 2, "requires_input", 2)) {
			t.Error("the reset run's transition for evt_2 was not recorded: the key is the first run's")
		}
		record(tr("run_b", "evt_v", 3, "processing", 2))
		// A late retry of the first run's write, from a worker that had not
		// heard of the reset, changes nothing.
		record(tr("run_a", "evt_3", 3, "canceled", 2))
		got, err := s.Session(ctx, "vs_reset")
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != "processing" || got.Seq != 3 {
			t.Errorf("session = %s@%d; want the reset run's processing@3", got.Status, got.Seq)
		}
		// The row then moves with the reset run's seq.
		record(tr("run_b", "evt_x", 2, "requires_input", 2)) // a late, lower write of the reset run
		record(tr("run_b", "evt_y", 4, "verified", 2))
		got, _ = s.Session(ctx, "vs_reset")
		if got.Status != "verified" || got.Seq != 4 {
			t.Errorf("session = %s@%d; want verified@4", got.Status, got.Seq)
		}
		// The audit trail keeps every run's transitions, run by run.
		audit, err := s.Audit(ctx, "vs_reset")
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, e := range audit {
			keys = append(keys, e.Key)
		}
		want := []string{"evt_1", "evt_2", "evt_3", "evt_2", "evt_x", "evt_v", "evt_y"}
		if !reflect.DeepEqual(keys, want) {
			t.Errorf("audit keys = %v; want %v", keys, want)
		}
		// A restored run (after this one closes) loads the reset run's state.
		if got.State != `{"status":"verified","seq":4}` {
			t.Errorf("stored state = %s; want the reset run's newest", got.State)
		}
	})
}

// A row written before runs were kept moves only to a higher seq, as it did
// then, whichever run writes next.
func TestARowFromBeforeRunsKeepsTheSeqRule(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.RecordTransition(ctx, store.Transition{SessionID: "vs_old", Key: "evt_1", Seq: 5, To: "requires_input",
			Escalation: "none"}); err != nil {
			t.Fatal(err)
		}
		for _, tr := range []store.Transition{
			{SessionID: "vs_old", RunID: "run_a", Key: "late", Seq: 4, To: "canceled", Escalation: "none"},
			{SessionID: "vs_old", RunID: "run_a", Key: "next", Seq: 6, To: "verified", Escalation: "none"},
		} {
			if _, err := s.RecordTransition(ctx, tr); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := s.Session(ctx, "vs_old")
		if got.Status != "verified" || got.Seq != 6 {
			t.Errorf("session = %s@%d; want verified@6", got.Status, got.Seq)
		}
	})
}

// Item 11: the ledger takes an event on its own, once.
func TestAnEventIsRecordedInTheLedgerOnItsOwn(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		for range 2 {
			if err := s.RecordProcessedEvent(ctx, "vs_l", "evt_refused", "identity.verification_session.canceled"); err != nil {
				t.Fatal(err)
			}
		}
		ids, err := s.ProcessedEventIDs(ctx, "vs_l", 10)
		if err != nil || !slices.Equal(ids, []string{"evt_refused"}) {
			t.Errorf("ledger = %v, %v; want [evt_refused]", ids, err)
		}
	})
}

// Migration 00004 rebuilds the audit table with the run in its key: rolled
// back and applied again, the trail and the row survive.
func TestRunsMigrationRollsBackAndReapplies(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		for _, tr := range []store.Transition{
			{SessionID: "vs_m", RunID: "run_a", Key: "evt_1", Seq: 1, To: "requires_input", Escalation: "none"},
			{SessionID: "vs_m", RunID: "run_b", Key: "evt_1", Seq: 1, To: "requires_input", Escalation: "none"},
			{SessionID: "vs_m", RunID: "run_b", Key: "evt_2", Seq: 2, To: "verified", Escalation: "none"},
		} {
			if _, err := s.RecordTransition(ctx, tr); err != nil {
				t.Fatal(err)
			}
		}
		p, err := goose.NewProvider(goose.Dialect(s.Dialect()), s.DB(), os.DirFS("migrations"), store.GoMigrations(s.Dialect()))
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.DownTo(ctx, 3)
		if err != nil || len(res) == 0 || res[len(res)-1].Source.Version != 4 {
			t.Fatalf("down to 00003: %v, %v; want 00004 rolled back last", res, err)
		}
		if n, err := s.Migrate(ctx); err != nil || n != len(res) {
			t.Fatalf("migrate: %d, %v; want %d", n, err, len(res))
		}
		audit, err := s.Audit(ctx, "vs_m")
		if err != nil || len(audit) != 2 {
			t.Errorf("audit after the round trip = %+v, %v; want the 2 keys (runs merged by the down migration)", audit, err)
		}
		if len(audit) == 2 && audit[0].Key != "evt_1" {
			t.Errorf("audit = %+v", audit)
		}
		got, _ := s.Session(ctx, "vs_m")
		if got.Status != "verified" || got.Seq != 2 {
			t.Errorf("session = %s@%d; want verified@2", got.Status, got.Seq)
		}
	})
}
