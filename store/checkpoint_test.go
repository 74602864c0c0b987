package store_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/pressly/goose/v3"

	"identityverification/store"
)

func TestACheckpointIsSavedAndNeverMovesBack(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		const name = "stripe_identity_events"
		if _, err := s.Checkpoint(ctx, name); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("before the first save: %v; want ErrNotFound", err)
		}
		steps := []struct {
			name string
			save store.Checkpoint
			want store.Checkpoint
		}{
			{"the first checkpoint is stored",
				store.Checkpoint{Name: name, Created: 1700000100, EventID: "evt_b", ResumeAfter: "evt_b"},
				store.Checkpoint{Name: name, Created: 1700000100, EventID: "evt_b", ResumeAfter: "evt_b"}},
			{"a newer one replaces it",
				store.Checkpoint{Name: name, Created: 1700000200, EventID: "evt_c"},
				store.Checkpoint{Name: name, Created: 1700000200, EventID: "evt_c"}},
			{"one of the same second replaces it (a run that finished what it had resumed)",
				store.Checkpoint{Name: name, Created: 1700000200, EventID: "evt_d"},
				store.Checkpoint{Name: name, Created: 1700000200, EventID: "evt_d"}},
			{"an older one (a late retry of an earlier run) changes nothing",
				store.Checkpoint{Name: name, Created: 1700000000, EventID: "evt_a", ResumeAfter: "evt_a"},
				store.Checkpoint{Name: name, Created: 1700000200, EventID: "evt_d"}},
		}
		for _, step := range steps {
			t.Run(step.name, func(t *testing.T) {
				if err := s.SaveCheckpoint(ctx, step.save); err != nil {
					t.Fatal(err)
				}
				got, err := s.Checkpoint(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if got.UpdatedAt.IsZero() {
					t.Errorf("updated_at not set")
				}
				got.UpdatedAt = step.want.UpdatedAt
				if got != step.want {
					t.Errorf("checkpoint = %+v; want %+v", got, step.want)
				}
			})
		}
	})
}

func TestCheckpointMigrationRollsBackAndReapplies(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		p, err := goose.NewProvider(goose.Dialect(s.Dialect()), s.DB(), os.DirFS("migrations"), store.GoMigrations(s.Dialect()))
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.DownTo(ctx, 2)
		if err != nil || len(res) == 0 || res[len(res)-1].Source.Version != 3 {
			t.Fatalf("down to 00002: %v, %v; want 00003 rolled back last", res, err)
		}
		if _, err := s.Checkpoint(ctx, "x"); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("checkpoint table still there after rolling back 00003: %v", err)
		}
		if n, err := s.Migrate(ctx); err != nil || n != len(res) {
			t.Fatalf("migrate: %d, %v; want the %d rolled back applied again", n, err, len(res))
		}
		if _, err := s.Checkpoint(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after re-applying: %v; want ErrNotFound", err)
		}
	})
}
