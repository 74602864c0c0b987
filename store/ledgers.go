package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Email ledger statuses.
const (
	EmailSent    = "sent"
	EmailSkipped = "skipped" // no contact to send to; detail says why
	EmailRefused = "refused" // the server permanently refused the recipient
)

// EmailRecord is one entry of the email ledger.
type EmailRecord struct {
	Key       string // idempotency key: session, kind, attempt
	SessionID string
	Kind      string
	Status    string
	Detail    string // no addresses, no personal data
}

// Email returns the ledger entry for an idempotency key, or ErrNotFound.
func (s *Store) Email(ctx context.Context, key string) (EmailRecord, error) {
	r := EmailRecord{Key: key}
	err := s.db.QueryRowContext(ctx, `
SELECT session_id, kind, status, detail FROM emails WHERE idempotency_key = $1`, key).
		Scan(&r.SessionID, &r.Kind, &r.Status, &r.Detail)
	if errors.Is(err, sql.ErrNoRows) {
		return EmailRecord{}, ErrNotFound
	}
	if err != nil {
		return EmailRecord{}, fmt.Errorf("store: email: %w", classify(err))
	}
	return r, nil
}

// RecordEmail adds an entry to the email ledger; the first entry for a key
// wins, and RecordEmail returns the entry the ledger holds: r, or the one
// another attempt at the same email recorded first (two attempts that raced
// past the ledger read report one outcome, the recorded one).
func (s *Store) RecordEmail(ctx context.Context, r EmailRecord) (EmailRecord, error) {
	r.Kind, r.Status, r.Detail = clean(r.Kind), clean(r.Status), clean(r.Detail)
	res, err := s.db.ExecContext(ctx, `
INSERT INTO emails (idempotency_key, session_id, kind, status, detail, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING`,
		r.Key, r.SessionID, r.Kind, r.Status, r.Detail, now())
	if err != nil {
		return EmailRecord{}, fmt.Errorf("store: record email: %w", classify(err))
	}
	if n, err := res.RowsAffected(); err == nil && n == 1 {
		return r, nil
	}
	stored, err := s.Email(ctx, r.Key)
	if err != nil {
		return EmailRecord{}, fmt.Errorf("store: record email: %w", err)
	}
	return stored, nil
}

// Emails lists a session's ledger entries, for ops and tests.
func (s *Store) Emails(ctx context.Context, sessionID string) ([]EmailRecord, error) {
	rows, err := s.db.QueryContext(ctx, `
SELECT idempotency_key, kind, status, detail FROM emails WHERE session_id = $1
ORDER BY recorded_at, idempotency_key`, sessionID)
	if err != nil {
		return nil, fmt.Errorf("store: emails: %w", classify(err))
	}
	defer rows.Close()
	var out []EmailRecord
	for rows.Next() {
		r := EmailRecord{SessionID: sessionID}
		if err := rows.Scan(&r.Key, &r.Kind, &r.Status, &r.Detail); err != nil {
			return nil, fmt.Errorf("store: emails: %w", classify(err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: emails: %w", classify(err))
	}
	return out, nil
}

// Review case statuses.
const (
	ReviewOpen     = "open"
	ReviewApproved = "approved"
	ReviewRejected = "rejected"
	ReviewClosed   = "closed" // ended without a decision (e.g. redaction)
)

// ReviewCase is a manual review case.
type ReviewCase struct {
	SessionID        string
	Reason           string
	MismatchedFields []string
	Status           string
	Reviewer         string
	Note             string
	OpenedAt         time.Time
	DecidedAt        time.Time
}

// OpenReview opens a case for a session; opening it again while it is open is
// a no-op. A decided case opens anew (a fraud code after an approved review:
// the audit trail keeps the first decision); a closed one (redacted) stays
// closed.
func (s *Store) OpenReview(ctx context.Context, c ReviewCase) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO review_cases (session_id, reason, mismatched_fields, status, opened_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (session_id) DO UPDATE SET
    reason = excluded.reason, mismatched_fields = excluded.mismatched_fields, status = excluded.status,
    reviewer = '', note = '', opened_at = excluded.opened_at, decided_at = NULL
WHERE review_cases.status NOT IN ($4, $6)`,
		c.SessionID, clean(c.Reason), clean(joinFields(c.MismatchedFields)), ReviewOpen, c.OpenedAt.UTC(), ReviewClosed)
	if err != nil {
		return fmt.Errorf("store: open review: %w", classify(err))
	}
	return nil
}

// DecideReview closes an open case with a status. Repeating the same decision
// is a no-op; a case that is not open (or absent) gives ErrNoReviewOpen.
func (s *Store) DecideReview(ctx context.Context, c ReviewCase) error {
	status, reviewer := clean(c.Status), clean(c.Reviewer)
	res, err := s.db.ExecContext(ctx, `
UPDATE review_cases SET status = $2, reviewer = $3, note = $4, decided_at = $5
WHERE session_id = $1 AND status = $6`,
		c.SessionID, status, reviewer, clean(c.Note), nullTime(c.DecidedAt), ReviewOpen)
	if err != nil {
		return fmt.Errorf("store: decide review: %w", classify(err))
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: decide review: %w", classify(err))
	} else if n == 1 {
		return nil
	}
	cur, err := s.Review(ctx, c.SessionID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err // already "store: review: ...", classified: not a verdict on the case
	}
	// Compared as stored, so a retry with a reviewer name that needed
	// cleaning is still recognised.
	if err == nil && cur.Status == status && cur.Reviewer == reviewer {
		return nil // a retry of a decision already recorded
	}
	return ErrNoReviewOpen
}

// Review reads a session's case, or ErrNotFound.
func (s *Store) Review(ctx context.Context, sessionID string) (ReviewCase, error) {
	c := ReviewCase{SessionID: sessionID}
	var fields string
	var opened time.Time
	var decided sql.NullTime
	err := s.db.QueryRowContext(ctx, `
SELECT reason, mismatched_fields, status, reviewer, note, opened_at, decided_at
FROM review_cases WHERE session_id = $1`, sessionID).
		Scan(&c.Reason, &fields, &c.Status, &c.Reviewer, &c.Note, &opened, &decided)
	if errors.Is(err, sql.ErrNoRows) {
		return ReviewCase{}, ErrNotFound
	}
	if err != nil {
		return ReviewCase{}, fmt.Errorf("store: review: %w", classify(err))
	}
	c.MismatchedFields, c.OpenedAt, c.DecidedAt = splitFields(fields), opened, decided.Time
	return c, nil
}

// OpenReviewCase is an open review as the review queue shows it: why it
// opened, which fields differed (names, never values) or which failure code
// led to it, the attempts, and when it opened and is due. No personal data.
type OpenReviewCase struct {
	SessionID        string
	Reason           string
	MismatchedFields []string
	LastErrorCode    string
	Attempts         int
	OpenedAt         time.Time
	// DeadlineAt is the review's deadline as the workflow last stored it
	// (re-armed each time ops are told it is overdue); zero when the
	// stored state does not say.
	DeadlineAt time.Time
}

// OpenReviews lists up to limit open review cases, oldest first.
func (s *Store) OpenReviews(ctx context.Context, limit int) ([]OpenReviewCase, error) {
	rows, err := s.db.QueryContext(ctx, `
SELECT r.session_id, r.reason, r.mismatched_fields, r.opened_at,
       COALESCE(s.last_error_code, ''), COALESCE(s.attempts, 0), COALESCE(s.state, '')
FROM review_cases r LEFT JOIN sessions s ON s.session_id = r.session_id
WHERE r.status = $1
ORDER BY r.opened_at, r.session_id LIMIT $2`, ReviewOpen, limit)
	if err != nil {
		return nil, fmt.Errorf("store: open reviews: %w", classify(err))
	}
	defer rows.Close()
	var out []OpenReviewCase
	for rows.Next() {
		var c OpenReviewCase
		var fields, state string
		if err := rows.Scan(&c.SessionID, &c.Reason, &fields, &c.OpenedAt, &c.LastErrorCode, &c.Attempts, &state); err != nil {
			return nil, fmt.Errorf("store: open reviews: %w", classify(err))
		}
		c.MismatchedFields, c.OpenedAt = splitFields(fields), c.OpenedAt.UTC()
		c.DeadlineAt = reviewDeadline(state)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: open reviews: %w", classify(err))
	}
	return out, nil
}

// reviewDeadline reads review.deadline_at from a stored workflow state
// (workflows.State as JSON); zero when it is absent or unreadable.
func reviewDeadline(state string) time.Time {
	var st struct {
		Review *struct {
			DeadlineAt time.Time `json:"deadline_at"`
		} `json:"review"`
	}
	if state == "" || json.Unmarshal([]byte(state), &st) != nil || st.Review == nil {
		return time.Time{}
	}
	return st.Review.DeadlineAt.UTC()
}
