package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// DeskCase is a review case as the review desk shows it: what a reviewer
// needs to decide, and no personal data (no name, email or date of birth).
type DeskCase struct {
	SessionID        string
	Reason           string
	MismatchedFields []string // names of the outputs that differed, never values
	Status           string   // the case's: open, approved, rejected, closed
	Reviewer         string   // who decided, once decided
	OpenedAt         time.Time
	DecidedAt        time.Time // zero while open
	// From the session's row (zero when the row is missing).
	SessionStatus string
	Attempts      int
	LastErrorCode string
	// DeadlineAt is the review's deadline as the newest stored workflow
	// state says it; zero when that state does not say.
	DeadlineAt time.Time
}

const deskCaseColumns = `
SELECT rc.session_id, rc.reason, rc.mismatched_fields, rc.status, rc.reviewer, rc.opened_at, rc.decided_at,
       COALESCE(s.status, ''), COALESCE(s.attempts, 0), COALESCE(s.last_error_code, ''), COALESCE(s.state, '')
FROM review_cases rc LEFT JOIN sessions s ON s.session_id = rc.session_id`

// DeskOpenCases lists up to limit open review cases, oldest first, for the
// review desk.
func (s *Store) DeskOpenCases(ctx context.Context, limit int) ([]DeskCase, error) {
	rows, err := s.db.QueryContext(ctx, deskCaseColumns+`
WHERE rc.status = $1 ORDER BY rc.opened_at, rc.session_id LIMIT $2`, ReviewOpen, limit)
	if err != nil {
		return nil, fmt.Errorf("store: desk cases: %w", classify(err))
	}
	defer rows.Close()
	var out []DeskCase
	for rows.Next() {
		c, err := scanDeskCase(rows)
		if err != nil {
			return nil, fmt.Errorf("store: desk cases: %w", classify(err))
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: desk cases: %w", classify(err))
	}
	return out, nil
}

// DeskCase reads one session's review case, whatever its status, or
// ErrNotFound.
func (s *Store) DeskCase(ctx context.Context, sessionID string) (DeskCase, error) {
	c, err := scanDeskCase(s.db.QueryRowContext(ctx, deskCaseColumns+`
WHERE rc.session_id = $1`, sessionID))
	if errors.Is(err, sql.ErrNoRows) {
		return DeskCase{}, ErrNotFound
	}
	if err != nil {
		return DeskCase{}, fmt.Errorf("store: desk case: %w", classify(err))
	}
	return c, nil
}

func scanDeskCase(row interface{ Scan(...any) error }) (DeskCase, error) {
	var c DeskCase
	var fields, state string
	var decided sql.NullTime
	if err := row.Scan(&c.SessionID, &c.Reason, &fields, &c.Status, &c.Reviewer, &c.OpenedAt, &decided,
		&c.SessionStatus, &c.Attempts, &c.LastErrorCode, &state); err != nil {
		return DeskCase{}, err
	}
	c.MismatchedFields, c.DecidedAt = splitFields(fields), decided.Time
	// The stored state is the workflow's State as JSON; only the review's
	// deadline is read from it (store does not import workflows).
	var st struct {
		Review *struct {
			DeadlineAt time.Time `json:"deadline_at"`
		} `json:"review"`
	}
	if state != "" && json.Unmarshal([]byte(state), &st) == nil && st.Review != nil {
		c.DeadlineAt = st.Review.DeadlineAt
	}
	return c, nil
}
