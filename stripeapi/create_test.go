package stripeapi_test

import (
	"context"
	"errors"
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
