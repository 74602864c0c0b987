package stripeapi_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"identityverification/stripeapi"
)

// A reviewer's view reads the session (verified outputs expanded) and its
// last verification report, from stripe-mock's fixtures.
func TestTheReviewViewReadsTheSessionAndItsLastReport(t *testing.T) {
	rec := startStripe(t)
	v, err := stripeapi.New(testKey, rec.URL).ReviewView(context.Background(), "vs_review")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, r := range rec.Requests() {
		paths = append(paths, r.Method+" "+r.Path+" "+r.Form.Get("expand[0]"))
	}
	if len(paths) != 2 || paths[0] != "GET /v1/identity/verification_sessions/vs_review verified_outputs" ||
		!strings.HasPrefix(paths[1], "GET /v1/identity/verification_reports/") {
		t.Fatalf("requests %q; want the session, then its report", paths)
	}
	if v.ReportID == "" || !slices.ContainsFunc(v.Checks, func(c stripeapi.Check) bool { return c.Name == "document" && c.Status != "" }) {
		t.Errorf("view = %+v; want the report's document check", v)
	}
}

func TestTheDashboardLinkFollowsTheKeysMode(t *testing.T) {
	for key, want := range map[string]string{
		"sk_test_x": "https://dashboard.stripe.com/test/identity/verification-sessions/vs_1",
		"rk_test_x": "https://dashboard.stripe.com/test/identity/verification-sessions/vs_1",
		"sk_live_x": "https://dashboard.stripe.com/identity/verification-sessions/vs_1",
		"rk_live_x": "https://dashboard.stripe.com/identity/verification-sessions/vs_1",
	} {
		if got := stripeapi.DashboardURL(key, "vs_1"); got != want {
			t.Errorf("DashboardURL(%s) = %s; want %s", key, got, want)
		}
	}
}
