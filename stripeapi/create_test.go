package stripeapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"identityverification/stripeapi"
)

func TestCreateSendsTypeOptionsReturnURLReferenceAndIdempotencyKey(t *testing.T) {
	rec := startStripe(t)
	c := stripeapi.New(testKey, rec.URL)
	got, err := c.Create(context.Background(), stripeapi.CreateParams{ReturnURL: "https://shop.example.com/back",
		ClientReferenceID: "ref_0123", RequireMatchingSelfie: true, RequireLiveCapture: true,
		IdempotencyKey: "admin-create-abc"})
	if err != nil {
		t.Fatal(err)
	}
	// stripe-mock's fixture session has no client_secret or url.
	if !strings.HasPrefix(got.ID, "vs_") || got.Status == "" {
		t.Errorf("created = id %q status %q; want a session", got.ID, got.Status)
	}
	reqs := rec.Requests()
	if len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Path != "/v1/identity/verification_sessions" {
		t.Fatalf("requests = %+v, want one create", reqs)
	}
	f := reqs[0].Form
	if f.Get("type") != "document" || f.Get("return_url") != "https://shop.example.com/back" ||
		f.Get("client_reference_id") != "ref_0123" || f.Get("options[document][require_matching_selfie]") != "true" ||
		f.Get("options[document][require_live_capture]") != "true" || f.Has("options[document][allowed_types]") {
		t.Errorf("create form = %v", f)
	}
}

func TestCreateRefusedByStripeIsPermanent(t *testing.T) {
	rec := startStripe(t)
	_, err := stripeapi.New(testKey, rec.URL).Create(context.Background(), stripeapi.CreateParams{Type: "no_such_type"})
	if !errors.Is(err, stripeapi.ErrPermanent) {
		t.Errorf("err = %v; want ErrPermanent", err)
	}
}

// Issue 19, item 2: a refused key (401, 403) is an outage of the service,
// never a refusal that concerns the session; 429 and 5xx are transient; any
// other 4xx is final.
func TestErrorsSayWhetherToRetry(t *testing.T) {
	for _, tc := range []struct {
		status             int
		code               string
		permanent, keyFail bool
	}{
		{401, "api_key_expired", false, true},
		{403, "", false, true},
		{400, "parameter_invalid_empty", true, false},
		{404, "resource_missing", true, false},
		{429, "rate_limit", false, false},
		{503, "", false, false},
	} {
		t.Run(fmt.Sprintf("HTTP %d %s", tc.status, tc.code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				fmt.Fprintf(w, `{"error":{"type":"invalid_request_error","code":%q,"message":"no"}}`, tc.code)
			}))
			defer srv.Close()
			_, err := stripeapi.New(testKey, srv.URL).Status(context.Background(), "vs_x")
			if err == nil || errors.Is(err, stripeapi.ErrPermanent) != tc.permanent || errors.Is(err, stripeapi.ErrUnauthorized) != tc.keyFail {
				t.Errorf("err = %v; want permanent %v, key refused %v", err, tc.permanent, tc.keyFail)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("the error shows the key: %v", err)
			}
		})
	}
}
