package store

import (
	"context"
	"fmt"
	"time"
)

// Fixed-window counters, shared by every process on the database: sign-in
// failures per source and per account, failed bearer authentications per
// source, retry-link clicks per session.

// Hit counts one event in bucket's current window (now truncated to
// window) and returns the window's count after it.
func (s *Store) Hit(ctx context.Context, bucket string, window time.Duration, at time.Time) (int, error) {
	start := at.UTC().Truncate(window)
	var n int
	err := s.db.QueryRowContext(ctx, `
INSERT INTO rate_limits (bucket, window_start, hits) VALUES ($1, $2, 1)
ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1
RETURNING hits`, clean(bucket), start).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: rate limit: %w", classify(err))
	}
	// Windows long past are of no use: a few old rows go with each hit. The
	// hit is counted whatever becomes of that: a failed cleanup is left to
	// the next hit, not reported as a failed count (a caller would count
	// the hit again elsewhere).
	_, _ = s.db.ExecContext(ctx, `DELETE FROM rate_limits WHERE window_start < $1`, start.Add(-24*time.Hour))
	return n, nil
}

// Hits returns the count of bucket's current window.
func (s *Store) Hits(ctx context.Context, bucket string, window time.Duration, at time.Time) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `
SELECT COALESCE(SUM(hits), 0) FROM rate_limits WHERE bucket = $1 AND window_start = $2`,
		clean(bucket), at.UTC().Truncate(window)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: rate limit: %w", classify(err))
	}
	return n, nil
}
