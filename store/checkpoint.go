package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Checkpoint is how far a reconciliation has read a list of events.
type Checkpoint struct {
	Name string
	// Created is Stripe's `created` (Unix seconds) of the newest event
	// seen, EventID that event's id.
	Created int64
	EventID string
	// ResumeAfter, when set, is the event after which the last run stopped
	// at its page bound: the next run continues there.
	ResumeAfter string
	UpdatedAt   time.Time
}

// Checkpoint reads the named checkpoint, or ErrNotFound before the first
// one is saved.
func (s *Store) Checkpoint(ctx context.Context, name string) (Checkpoint, error) {
	c := Checkpoint{Name: name}
	err := s.db.QueryRowContext(ctx, `
SELECT event_created, event_id, resume_after, updated_at FROM reconcile_checkpoints WHERE name = $1`, name).
		Scan(&c.Created, &c.EventID, &c.ResumeAfter, &c.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Checkpoint{}, ErrNotFound
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("store: checkpoint: %w", classify(err))
	}
	return c, nil
}

// SaveCheckpoint stores a checkpoint. It never moves one back: a checkpoint
// older than the stored one (a late retry of an earlier run) changes
// nothing.
func (s *Store) SaveCheckpoint(ctx context.Context, c Checkpoint) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO reconcile_checkpoints (name, event_created, event_id, resume_after, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET
    event_created = excluded.event_created, event_id = excluded.event_id,
    resume_after = excluded.resume_after, updated_at = excluded.updated_at
WHERE reconcile_checkpoints.event_created <= excluded.event_created`,
		c.Name, c.Created, c.EventID, c.ResumeAfter, now())
	if err != nil {
		return fmt.Errorf("store: save checkpoint: %w", classify(err))
	}
	return nil
}
