package stripeapi

import (
	"context"
	"fmt"
	"strings"

	"github.com/stripe/stripe-go/v76"
)

// ReviewView is what a reviewer sees of a session at Stripe: the checks of
// its last verification report and its verified outputs. Read at view time
// for a signed-in reviewer, and never stored, logged or put in history: the
// outputs are personal data.
type ReviewView struct {
	Livemode bool
	ReportID string  // the last verification report's id; empty when none
	Checks   []Check // document, selfie, id_number: those the report ran
	Verified Outputs
}

// Check is one check of a verification report.
type Check struct {
	Name      string // document, selfie, id_number
	Status    string // verified, unverified
	ErrorCode string // e.g. document_expired, selfie_face_mismatch; empty when none
}

// ReviewView reads the session with its verified outputs, then its last
// verification report.
func (c *Client) ReviewView(ctx context.Context, sessionID string) (ReviewView, error) {
	vs, err := c.get(ctx, "read session for review", sessionID, "verified_outputs")
	if err != nil {
		return ReviewView{}, err
	}
	v := ReviewView{Livemode: vs.Livemode}
	if o := vs.VerifiedOutputs; o != nil {
		v.Verified.FirstName, v.Verified.LastName = o.FirstName, o.LastName
		if d := o.DOB; d != nil && d.Year > 0 {
			v.Verified.DOB = fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day)
		}
	}
	if vs.LastVerificationReport == nil || vs.LastVerificationReport.ID == "" {
		return v, nil
	}
	p := &stripe.IdentityVerificationReportParams{}
	p.Context = ctx
	r, err := c.reports.Get(vs.LastVerificationReport.ID, p)
	if err != nil {
		return ReviewView{}, mapError("read verification report", err)
	}
	v.ReportID = r.ID
	if d := r.Document; d != nil {
		ch := Check{Name: "document", Status: string(d.Status)}
		if d.Error != nil {
			ch.ErrorCode = string(d.Error.Code)
		}
		v.Checks = append(v.Checks, ch)
	}
	if s := r.Selfie; s != nil {
		ch := Check{Name: "selfie", Status: string(s.Status)}
		if s.Error != nil {
			ch.ErrorCode = string(s.Error.Code)
		}
		v.Checks = append(v.Checks, ch)
	}
	if n := r.IDNumber; n != nil {
		ch := Check{Name: "id_number", Status: string(n.Status)}
		if n.Error != nil {
			ch.ErrorCode = string(n.Error.Code)
		}
		v.Checks = append(v.Checks, ch)
	}
	return v, nil
}

// DashboardURL links to the session in the Stripe Dashboard, in test mode
// for a test key (sk_test_, rk_test_) and in live mode otherwise.
func DashboardURL(apiKey, sessionID string) string {
	base := "https://dashboard.stripe.com/"
	if strings.HasPrefix(apiKey, "sk_test_") || strings.HasPrefix(apiKey, "rk_test_") {
		base += "test/"
	}
	return base + "identity/verification-sessions/" + sessionID
}
