package activities

import (
	"context"
	"errors"
	"strings"
	"unicode"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"identityverification/store"
	"identityverification/stripeapi"
)

// Comparison is all of the verified outputs that enters the workflow: whether
// they match what the business expected and, if not, the names (never the
// values) of the fields that differ.
type Comparison struct {
	// Compared is false when nothing was expected (no stored values).
	Compared         bool     `json:"compared"`
	Match            bool     `json:"match"`
	MismatchedFields []string `json:"mismatched_fields,omitempty"`
}

// CompareVerifiedOutputs fetches the session with verified_outputs expanded
// and compares it with the expected values stored for the session: names
// ignoring case, spacing and diacritics; date of birth exactly. A field with
// no expected value is not compared. Stripe is asked whatever is expected:
// a session Stripe has not verified (a verified event that is not Stripe's
// word: sent to Temporal by someone else) differs in NotVerified.
func (a *Activities) CompareVerifiedOutputs(ctx context.Context, sessionID string) (Comparison, error) {
	want, err := a.Store.Contact(ctx, sessionID)
	if errors.Is(err, store.ErrNotFound) {
		want = store.Contact{}
	} else if err != nil {
		return Comparison{}, storeError(err)
	}
	got, err := a.Stripe.VerifiedOutputs(ctx, sessionID)
	if err := stripeCall(ctx, "verified_outputs", err); err != nil {
		return Comparison{}, err
	}
	if got.Status != stripeapi.StatusVerified {
		return Comparison{Compared: true, MismatchedFields: []string{NotVerified}}, nil
	}
	if want.FirstName == "" && want.LastName == "" && want.DOB == "" {
		return Comparison{Match: true}, nil
	}
	c := Comparison{Compared: true}
	if want.FirstName != "" && NormalizeName(want.FirstName) != NormalizeName(got.FirstName) {
		c.MismatchedFields = append(c.MismatchedFields, "first_name")
	}
	if want.LastName != "" && NormalizeName(want.LastName) != NormalizeName(got.LastName) {
		c.MismatchedFields = append(c.MismatchedFields, "last_name")
	}
	if want.DOB != "" && want.DOB != got.DOB {
		c.MismatchedFields = append(c.MismatchedFields, "dob")
	}
	c.Match = len(c.MismatchedFields) == 0
	return c, nil
}

// NotVerified is the "field" a comparison names when Stripe has not
// verified the session at all.
const NotVerified = "not_verified_at_stripe"

// NormalizeName folds case, strips diacritics and collapses whitespace, so
// "  José  GARCÍA" and "jose garcia" compare equal.
func NormalizeName(s string) string {
	t := transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
	folded, _, err := transform.String(t, s)
	if err != nil {
		folded = s
	}
	return strings.Join(strings.Fields(strings.ToLower(folded)), " ")
}
