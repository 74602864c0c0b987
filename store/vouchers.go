package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// DecisionVoucher vouches that the admin API or the review desk
// authenticated the principal (Subject) of a review decision it is about to
// send to the session's workflow.
type DecisionVoucher struct {
	ID        string // random; it travels with the decision
	SessionID string
	Subject   string
	Decision  string
}

// VoucherTTL bounds how long a voucher vouches: a decision is sent at once,
// and a retry (the same update) within minutes.
const VoucherTTL = time.Hour

// clockSkew allows for the database's clock and Temporal's to differ.
const clockSkew = time.Minute

// VouchDecision records a voucher.
func (s *Store) VouchDecision(ctx context.Context, v DecisionVoucher) error {
	if v.ID == "" || v.SessionID == "" || v.Subject == "" {
		return errors.New("store: voucher without id, session or subject")
	}
	_, err := s.db.ExecContext(ctx, `
INSERT INTO decision_vouchers (id, session_id, subject, decision, created_at) VALUES ($1, $2, $3, $4, $5)`,
		v.ID, v.SessionID, clean(v.Subject), clean(v.Decision), now())
	if err != nil {
		return fmt.Errorf("store: vouch decision: %w", classify(err))
	}
	return nil
}

// DecisionVouched reports whether a voucher of that id vouches for exactly
// this decision (session, subject, decision), was made after notBefore (the
// review's opening: a voucher of an earlier review of the session does not
// carry over) and is younger than VoucherTTL. Asking again gives the same
// answer: a retried check, or a voucher copied from history for the same
// decision, gains nothing.
func (s *Store) DecisionVouched(ctx context.Context, v DecisionVoucher, notBefore time.Time) (bool, error) {
	var created time.Time
	err := s.db.QueryRowContext(ctx, `
SELECT created_at FROM decision_vouchers WHERE id = $1 AND session_id = $2 AND subject = $3 AND decision = $4`,
		v.ID, v.SessionID, clean(v.Subject), clean(v.Decision)).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: decision voucher: %w", classify(err))
	}
	created = created.UTC()
	return !created.Before(notBefore.Add(-clockSkew)) && now().Sub(created) < VoucherTTL, nil
}
