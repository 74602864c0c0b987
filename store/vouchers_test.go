package store_test

import (
	"context"
	"testing"
	"time"

	"identityverification/store"
)

// A voucher vouches for one decision of one review: its session, principal
// and decision, made after the review opened, and once bound to a review,
// never for another (a voucher copied from history).
func TestADecisionVoucherDecidesOneReview(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		v := store.DecisionVoucher{ID: "v1", SessionID: "vs_v", Subject: "oidc:ann", Decision: "approve"}
		opened := time.Now().Add(-10 * time.Second)
		if err := s.VouchDecision(ctx, v); err != nil {
			t.Fatal(err)
		}
		redeem := func(v store.DecisionVoucher, review time.Time) bool {
			t.Helper()
			ok, err := s.RedeemDecisionVoucher(ctx, v, review)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		other := v
		other.Subject = "oidc:mallory"
		if redeem(other, opened) {
			t.Error("vouched for another principal")
		}
		other = v
		other.Decision = "reject"
		if redeem(other, opened) {
			t.Error("vouched for another decision")
		}
		if redeem(v, time.Now().Add(time.Hour)) {
			t.Error("vouched for a review that opened after it was made")
		}
		if !redeem(v, opened) || !redeem(v, opened) {
			t.Error("did not vouch for its review (twice: a retried check)")
		}
		if redeem(v, opened.Add(time.Second)) {
			t.Error("vouched for a second review of the session")
		}
	})
}
