package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A lease names the one replica that runs a job for the whole cluster
// (worker.Lease). Expiry is in the replicas' clocks (at): they must agree
// to well within a lease's term, as NTP keeps them.

// AcquireLease takes the lease name for holder until at+ttl, when it is
// free, lapsed (expired before at) or already holder's (a renewal), and
// says whether holder now holds it. One statement: two replicas that try
// at once cannot both win.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, at time.Time) (bool, error) {
	at = at.UTC().Truncate(time.Microsecond)
	var got string
	err := s.db.QueryRowContext(ctx, `
INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder OR leases.expires_at < $4
RETURNING holder`, name, clean(holder), at.Add(ttl), at).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) { // held by another, not lapsed
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: lease %s: %w", name, classify(err))
	}
	return got == clean(holder), nil
}

// ReleaseLease gives the lease up when holder holds it (a replica shutting
// down), so that another takes it over at its next try rather than at
// expiry.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, clean(holder)); err != nil {
		return fmt.Errorf("store: release lease %s: %w", name, classify(err))
	}
	return nil
}

// LeaseHolder says who holds the lease name and until when (ErrNotFound:
// nobody does), lapsed or not.
func (s *Store) LeaseHolder(ctx context.Context, name string) (holder string, expires time.Time, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT holder, expires_at FROM leases WHERE name = $1`, name).Scan(&holder, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, ErrNotFound
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("store: lease %s: %w", name, classify(err))
	}
	return holder, expires.UTC(), nil
}
