package store

import (
	"context"
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

// RedeemDecisionVoucher reports whether a voucher of that id vouches for
// exactly this decision (session, subject, decision) of the review opened
// at reviewOpenedAt: made after the review opened, younger than VoucherTTL,
// and taken for no other review. The first answer binds the voucher to the
// review; asking again for the same review gives the same answer (a
// retried check), and for another review false (a voucher copied from
// history cannot decide a later review of the session).
func (s *Store) RedeemDecisionVoucher(ctx context.Context, v DecisionVoucher, reviewOpenedAt time.Time) (bool, error) {
	opened := reviewOpenedAt.UTC()
	res, err := s.db.ExecContext(ctx, `
UPDATE decision_vouchers SET redeemed_for = $5
WHERE id = $1 AND session_id = $2 AND subject = $3 AND decision = $4
  AND (redeemed_for IS NULL OR redeemed_for = $5) AND created_at >= $6 AND created_at > $7`,
		v.ID, v.SessionID, clean(v.Subject), clean(v.Decision), opened.Format(time.RFC3339Nano),
		opened.Add(-clockSkew), now().Add(-VoucherTTL))
	if err != nil {
		return false, fmt.Errorf("store: redeem decision voucher: %w", classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: redeem decision voucher: %w", classify(err))
	}
	return n == 1, nil
}
