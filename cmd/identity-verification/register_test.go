package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"identityverification/config"
	"identityverification/devstack"
)

const (
	hookURL   = "https://id.example.com/webhooks/stripe"
	newSecret = "whsec_created_0123456789abcdefghijklmnop"
)

// wantEvents are the events the endpoint must get, spelled out.
var wantEvents = []string{
	"identity.verification_session.created", "identity.verification_session.processing",
	"identity.verification_session.requires_input", "identity.verification_session.verified",
	"identity.verification_session.canceled", "identity.verification_session.redacted",
}

// startStripe starts stripe-mock behind a recording proxy for one test and
// returns it with an environment pointing the command at it.
func startStripe(t *testing.T) (*devstack.StripeRecorder, config.Map) {
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
	rec.CreateSecret(newSecret) // as Stripe does; a create where none should happen would show it
	return rec, config.Map{"STRIPE_API_KEY": "sk_test_register", "STRIPE_API_BASE": rec.URL}
}

func TestRegisterEndpointCreatesItAndPrintsTheSecretOnce(t *testing.T) {
	rec, env := startStripe(t)
	var out bytes.Buffer
	if err := registerEndpoint(context.Background(), env, []string{"-url", hookURL}, &out); err != nil {
		t.Fatal(err)
	}

	reqs := rec.Requests()
	if len(reqs) != 2 || reqs[1].Method != "POST" || reqs[1].Path != "/v1/webhook_endpoints" {
		t.Fatalf("requests = %+v, want the list then the create", reqs)
	}
	f := reqs[1].Form
	var events []string
	for i := 0; f.Has(fmt.Sprintf("enabled_events[%d]", i)); i++ {
		events = append(events, f.Get(fmt.Sprintf("enabled_events[%d]", i)))
	}
	if f.Get("url") != hookURL || f.Get("api_version") != "2023-10-16" || !reflect.DeepEqual(events, wantEvents) {
		t.Errorf("create form = %v, want url %s, api_version 2023-10-16 and enabled_events %q", f, hookURL, wantEvents)
	}

	id := regexp.MustCompile(`we_\w+`).FindString(out.String())
	want := "note: STRIPE_API_BASE is set: registering at " + rec.URL + ", not at Stripe\n" +
		"created webhook endpoint " + id + " (test mode)\n" +
		"  url:          " + hookURL + "\n" +
		"  api version:  2023-10-16\n" +
		"  events:       " + strings.Join(wantEvents, ", ") + "\n" +
		"signing secret, shown this once (Stripe will not return it again; it is not logged or stored):\n" +
		"  " + newSecret + "\n" +
		"Set it in STRIPE_WEBHOOK_SECRET on every webhook process and restart them. While another endpoint still " +
		"delivers to this service (a rotation), keep its secret too, comma-separated: STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old.\n"
	if id == "" || out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	if n := strings.Count(out.String(), newSecret); n != 1 {
		t.Errorf("the secret is printed %d times, want once", n)
	}
}

func TestRegisterEndpointUpdatesTheEndpointWithTheURLAndShowsNoSecret(t *testing.T) {
	rec, env := startStripe(t)
	for _, tc := range []struct {
		name   string
		listed map[string]any
		first  string // the line after the notes
		update bool
		also   string // a line the output must have
	}{{
		name:   "a disabled endpoint with other events is given the events and re-enabled",
		listed: map[string]any{"status": "disabled", "enabled_events": []string{"charge.failed"}, "api_version": "2023-10-16"},
		first:  "updated webhook endpoint we_existing (test mode): events set, re-enabled", update: true,
		also: "  before:       charge.failed (disabled)",
	}, {
		name:   "an endpoint already as asked is left alone",
		listed: map[string]any{"status": "enabled", "enabled_events": wantEvents, "api_version": "2023-10-16"},
		first:  "webhook endpoint we_existing (test mode) is already registered as asked: nothing changed",
	}, {
		name:   "an endpoint of another API version is updated with a warning",
		listed: map[string]any{"status": "enabled", "enabled_events": []string{"*"}, "api_version": "2020-08-27"},
		first:  "updated webhook endpoint we_existing (test mode): events set", update: true,
		also: "warning: the endpoint renders events as 2020-08-27 API version, not 2023-10-16, and Stripe cannot change " +
			"an existing endpoint's version. The webhook accepts them with a warning and a metric; to fix it, delete the " +
			"endpoint in the Dashboard and run register-endpoint again (a new endpoint, with a new signing secret).",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			listed := map[string]any{"id": "we_existing", "url": hookURL}
			for k, v := range tc.listed {
				listed[k] = v
			}
			rec.ListEndpoints(map[string]any{"id": "we_other", "url": "https://other.example.com/webhooks/stripe"}, listed)
			before := len(rec.Requests())
			var out bytes.Buffer
			if err := registerEndpoint(context.Background(), env, []string{"-url", hookURL}, &out); err != nil {
				t.Fatal(err)
			}

			reqs := rec.Requests()[before:]
			var paths []string
			for _, r := range reqs {
				paths = append(paths, r.Method+" "+r.Path)
			}
			want := []string{"GET /v1/webhook_endpoints"}
			if tc.update {
				want = append(want, "POST /v1/webhook_endpoints/we_existing")
			}
			if !reflect.DeepEqual(paths, want) {
				t.Errorf("requests = %q, want %q", paths, want)
			}
			lines := strings.Split(out.String(), "\n")
			if lines[1] != tc.first {
				t.Errorf("line 2 = %q, want %q in:\n%s", lines[1], tc.first, out.String())
			}
			if tc.also != "" && !strings.Contains(out.String(), "\n"+tc.also+"\n") {
				t.Errorf("no line %q in:\n%s", tc.also, out.String())
			}
			if strings.Contains(out.String(), "whsec_created") {
				t.Errorf("a secret is printed on update:\n%s", out.String())
			}
			if !strings.Contains(out.String(), "No signing secret is shown: Stripe returns it only when it creates an endpoint") {
				t.Errorf("the output does not say why no secret is shown:\n%s", out.String())
			}
		})
	}
}

func TestRegisterEndpointRefusesABadURLBeforeCallingStripe(t *testing.T) {
	rec, env := startStripe(t)
	for _, tc := range []struct{ name, url, want string }{
		{"no url", "", "register-endpoint: -url is required"},
		{"plain http to a public host", "http://id.example.com/webhooks/stripe", "http is refused"},
		{"https without a host", "https:///webhooks/stripe", "want https://host/path"},
		{"no scheme", "id.example.com/webhooks/stripe", "want https://host/path"},
		{"another scheme", "ftp://id.example.com/webhooks/stripe", "want https://host/path"},
		{"credentials in the URL", "https://ops:hunter2@id.example.com/webhooks/stripe", "credentials in the URL are refused"},
		{"not a URL", "https://id example.com/", "-url is not a URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := registerEndpoint(context.Background(), env, []string{"-url", tc.url}, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to say %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows the URL's password: %v", err)
			}
		})
	}
	if reqs := rec.Requests(); len(reqs) != 0 {
		t.Errorf("Stripe was called: %+v", reqs)
	}
}

func TestRegisterEndpointAcceptsHTTPOnThisMachineWithANote(t *testing.T) {
	rec, env := startStripe(t)
	var out bytes.Buffer
	if err := registerEndpoint(context.Background(), env, []string{"-url", "http://127.0.0.1:8080/hooks"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"note: http://127.0.0.1:8080/hooks is this machine: fine for a local stripe-mock, but Stripe cannot deliver to it " +
			"(in development use the Stripe CLI's `stripe listen --forward-to`) and a live endpoint needs https",
		`note: the webhook serves POST /webhooks/stripe; this URL's path is "/hooks", which works only if a proxy in front maps it`,
	} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("no line %q in:\n%s", line, out.String())
		}
	}
	if reqs := rec.Requests(); len(reqs) != 2 || reqs[1].Form.Get("url") != "http://127.0.0.1:8080/hooks" {
		t.Errorf("requests = %+v, want the endpoint created at the local URL", reqs)
	}
}

func TestRegisterEndpointNeedsTheStripeKey(t *testing.T) {
	rec, env := startStripe(t)
	delete(env, "STRIPE_API_KEY")
	err := registerEndpoint(context.Background(), env, []string{"-url", hookURL}, &bytes.Buffer{})
	if !errors.Is(err, config.ErrNoStripeKey) {
		t.Errorf("err = %v, want ErrNoStripeKey", err)
	}
	if reqs := rec.Requests(); len(reqs) != 0 {
		t.Errorf("Stripe was called: %+v", reqs)
	}
}
