package stripeapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"

	"identityverification/devstack"
	"identityverification/stripeapi"
)

const (
	testKey    = "sk_test_endpoints"
	endpointID = "we_registered"
	hookURL    = "https://id.example.com/webhooks/stripe"
	newSecret  = "whsec_created_0123456789abcdefghijklmnop"
)

var spec = stripeapi.EndpointSpec{
	URL: hookURL,
	Events: []string{"identity.verification_session.verified", "identity.verification_session.requires_input",
		"identity.verification_session.canceled"},
	APIVersion:  "2023-10-16",
	Description: "identity-verification",
}

// startStripe starts stripe-mock behind a recording proxy for one test.
func startStripe(t *testing.T) *devstack.StripeRecorder {
	t.Helper()
	wd, _ := os.Getwd()
	root, err := devstack.Root(wd)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := devstack.StartStripeRecorder(context.Background(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Stop)
	return rec
}

// formList reads a form-encoded array (name[0], name[1], ...).
func formList(f url.Values, name string) []string {
	var out []string
	for i := 0; f.Has(fmt.Sprintf("%s[%d]", name, i)); i++ {
		out = append(out, f.Get(fmt.Sprintf("%s[%d]", name, i)))
	}
	return out
}

func TestRegisterEndpointCreatesOneWhenNoEndpointHasTheURL(t *testing.T) {
	rec := startStripe(t)
	rec.CreateSecret(newSecret) // stripe-mock's list holds only its fixture, at another URL
	reg, err := stripeapi.New(testKey, rec.URL).RegisterEndpoint(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if !reg.Created || reg.Secret != newSecret || reg.APIVersion != "2023-10-16" {
		t.Errorf("registration = %+v, want created with the secret and 2023-10-16", reg)
	}
	reqs := rec.Requests()
	if len(reqs) != 2 || reqs[0].Method != "GET" || reqs[0].Path != "/v1/webhook_endpoints" ||
		reqs[1].Method != "POST" || reqs[1].Path != "/v1/webhook_endpoints" {
		t.Fatalf("requests = %+v, want the list then the create", reqs)
	}
	if got := reqs[0].Form.Get("limit"); got != "100" {
		t.Errorf("list limit = %q, want 100", got)
	}
	f := reqs[1].Form
	if f.Get("url") != hookURL || f.Get("api_version") != "2023-10-16" || f.Get("description") != spec.Description {
		t.Errorf("create form = %v", f)
	}
	if got := formList(f, "enabled_events"); !reflect.DeepEqual(got, spec.Events) {
		t.Errorf("enabled_events = %q, want %q", got, spec.Events)
	}
	if f.Has("disabled") {
		t.Errorf("create sends disabled: %v", f)
	}
}

func TestRegisterEndpointUpdatesTheEndpointWithTheURL(t *testing.T) {
	rec := startStripe(t)
	rec.CreateSecret(newSecret) // a create would show it
	other := map[string]any{"id": "we_other", "url": "https://other.example.com/hook", "status": "disabled"}
	for _, tc := range []struct {
		name    string
		listed  map[string]any
		form    url.Values // the update's form but enabled_events; nil: no update
		events  []string   // the update's enabled_events
		reg     stripeapi.Registration
		version string
	}{{
		name:   "a disabled endpoint with other events gets the events and is re-enabled",
		listed: map[string]any{"status": "disabled", "enabled_events": []string{"charge.failed"}, "api_version": "2023-10-16"},
		form:   url.Values{"disabled": {"false"}}, events: spec.Events,
		reg: stripeapi.Registration{ID: endpointID, APIVersion: "2023-10-16", EventsSet: true, Reenabled: true,
			PreviousEvents: []string{"charge.failed"}},
	}, {
		name:   "an enabled endpoint with other events gets the events only",
		listed: map[string]any{"status": "enabled", "enabled_events": []string{"*"}, "api_version": "2023-10-16"},
		form:   url.Values{}, events: spec.Events,
		reg: stripeapi.Registration{ID: endpointID, APIVersion: "2023-10-16", EventsSet: true,
			PreviousEvents: []string{"*"}},
	}, {
		name:   "a disabled endpoint with the events is re-enabled only",
		listed: map[string]any{"status": "disabled", "enabled_events": spec.Events, "api_version": "2023-10-16"},
		form:   url.Values{"disabled": {"false"}},
		reg: stripeapi.Registration{ID: endpointID, APIVersion: "2023-10-16", Reenabled: true,
			PreviousEvents: spec.Events},
	}, {
		name: "an endpoint already as asked, events in another order, is left alone",
		listed: map[string]any{"status": "enabled", "enabled_events": []string{spec.Events[2], spec.Events[0], spec.Events[1]},
			"api_version": "2023-10-16"},
		reg: stripeapi.Registration{ID: endpointID, APIVersion: "2023-10-16",
			PreviousEvents: []string{spec.Events[2], spec.Events[0], spec.Events[1]}},
	}, {
		name:   "an endpoint of another API version is updated and keeps its version",
		listed: map[string]any{"status": "enabled", "enabled_events": []string{"charge.failed"}, "api_version": "2020-08-27"},
		form:   url.Values{}, events: spec.Events,
		reg: stripeapi.Registration{ID: endpointID, APIVersion: "2020-08-27", EventsSet: true,
			PreviousEvents: []string{"charge.failed"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			listed := map[string]any{"id": endpointID, "url": hookURL}
			for k, v := range tc.listed {
				listed[k] = v
			}
			rec.ListEndpoints(other, listed)
			before := len(rec.Requests())
			reg, err := stripeapi.New(testKey, rec.URL).RegisterEndpoint(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(reg, tc.reg) {
				t.Errorf("registration = %+v\nwant %+v", reg, tc.reg)
			}
			reqs := rec.Requests()[before:]
			if reqs[0].Method != "GET" || reqs[0].Path != "/v1/webhook_endpoints" {
				t.Errorf("first request = %+v, want the list", reqs[0])
			}
			if tc.form == nil {
				if len(reqs) != 1 {
					t.Errorf("requests = %+v, want the list only", reqs)
				}
				return
			}
			if len(reqs) != 2 || reqs[1].Method != "POST" || reqs[1].Path != "/v1/webhook_endpoints/"+endpointID {
				t.Fatalf("requests = %+v, want the list then POST /v1/webhook_endpoints/%s", reqs, endpointID)
			}
			f := reqs[1].Form
			if got := formList(f, "enabled_events"); !reflect.DeepEqual(got, tc.events) {
				t.Errorf("enabled_events = %q, want %q", got, tc.events)
			}
			for i := range tc.events {
				f.Del(fmt.Sprintf("enabled_events[%d]", i))
			}
			if !reflect.DeepEqual(f, tc.form) {
				t.Errorf("update form = %v, want %v besides the events (never url or api_version)", f, tc.form)
			}
		})
	}
}

func TestRegisterEndpointRefusesToChooseBetweenEndpointsWithTheURL(t *testing.T) {
	rec := startStripe(t)
	rec.ListEndpoints(map[string]any{"id": "we_1", "url": hookURL}, map[string]any{"id": "we_2", "url": hookURL})
	_, err := stripeapi.New(testKey, rec.URL).RegisterEndpoint(context.Background(), spec)
	if !errors.Is(err, stripeapi.ErrDuplicateEndpoints) {
		t.Fatalf("err = %v, want ErrDuplicateEndpoints", err)
	}
	if want := "stripe: several webhook endpoints have this URL: we_1, we_2 (delete all but one, then register again)"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	if reqs := rec.Requests(); len(reqs) != 1 {
		t.Errorf("requests = %+v, want the list only", reqs)
	}
}

func TestRegisterEndpointReportsARefusedKey(t *testing.T) {
	rec := startStripe(t)
	_, err := stripeapi.New("not_a_key", rec.URL).RegisterEndpoint(context.Background(), spec)
	if !errors.Is(err, stripeapi.ErrUnauthorized) || errors.Is(err, stripeapi.ErrPermanent) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if want := "stripe: key refused: list webhook endpoints: HTTP 401"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want it to start %q", err, want)
	}
}
