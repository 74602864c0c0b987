package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"

	"identityverification/config"
	"identityverification/stripeapi"
	"identityverification/webhook"
	"identityverification/workflows"
)

// endpointEvents are the events the webhook turns into workflow signals,
// named one by one: Stripe has no wildcard per prefix, and "*" would send
// the account's every event.
var endpointEvents = []string{
	workflows.EventCreated, workflows.EventProcessing, workflows.EventRequiresInput,
	workflows.EventVerified, workflows.EventCanceled, workflows.EventRedacted,
}

// registerEndpoint is Stripe's go-live step done through the API: it makes
// the webhook endpoint at -url exist, enabled, with endpointEvents, and
// creates it with the API version the webhook speaks. It is idempotent on
// the URL: an endpoint with that URL is updated (events, re-enabled), never
// duplicated. It prints the signing secret when it creates the endpoint,
// the only time Stripe returns it, and nowhere else: not in logs, not in
// errors. The -url is checked before any call to Stripe.
func registerEndpoint(ctx context.Context, env config.Env, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("register-endpoint", flag.ContinueOnError)
	rawURL := fs.String("url", "", "the webhook's public https address, such as https://id.example.com"+webhook.Route)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("register-endpoint: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("register-endpoint: unexpected argument %q", fs.Arg(0))
	}
	u, local, err := endpointURL(*rawURL)
	if err != nil {
		return fmt.Errorf("register-endpoint: %w", err)
	}
	cfg, err := config.Load(env)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if cfg.StripeAPIKey == "" {
		return fmt.Errorf("register-endpoint: %w", config.ErrNoStripeKey)
	}

	if local {
		fmt.Fprintf(out, "note: %s is this machine: fine for a local stripe-mock, but Stripe cannot deliver to it "+
			"(in development use the Stripe CLI's `stripe listen --forward-to`) and a live endpoint needs https\n", u)
	}
	if u.Path != webhook.Route {
		fmt.Fprintf(out, "note: the webhook serves POST %s; this URL's path is %q, which works only if a proxy in front maps it\n",
			webhook.Route, u.Path)
	}
	if cfg.StripeAPIBase != "" {
		fmt.Fprintf(out, "note: STRIPE_API_BASE is set: registering at %s, not at Stripe\n", cfg.StripeAPIBase)
	}
	reg, err := stripeapi.New(cfg.StripeAPIKey, cfg.StripeAPIBase).RegisterEndpoint(ctx, stripeapi.EndpointSpec{
		URL:         u.String(),
		Events:      endpointEvents,
		APIVersion:  webhook.SupportedAPIVersion,
		Description: "identity-verification: Stripe Identity verification sessions",
	})
	if err != nil {
		return fmt.Errorf("register-endpoint: %w", err)
	}
	printRegistration(out, u.String(), reg)
	return nil
}

// endpointURL checks the address Stripe is to deliver to: https and a
// host; http only for this machine (127.0.0.1, ::1, localhost), where only
// a local stripe-mock or a test can use it (local is then true).
func endpointURL(raw string) (u *url.URL, local bool, err error) {
	if raw == "" {
		return nil, false, fmt.Errorf("-url is required: the webhook's public address, such as https://id.example.com%s", webhook.Route)
	}
	u, err = url.Parse(raw)
	if err != nil {
		return nil, false, errors.New("-url is not a URL")
	}
	if u.User != nil {
		return nil, false, fmt.Errorf("-url %s: credentials in the URL are refused: Stripe would keep and show them, "+
			"and the webhook authenticates Stripe by its signature", u.Redacted())
	}
	switch host := u.Hostname(); {
	case u.Scheme == "https" && host != "":
		return u, false, nil
	case u.Scheme == "http" && (host == "localhost" || host == "127.0.0.1" || host == "::1"):
		return u, true, nil
	case u.Scheme == "http" && host != "":
		return nil, false, fmt.Errorf("-url %s: http is refused: Stripe delivers to https endpoints "+
			"(http is accepted only for 127.0.0.1 or localhost, a local stripe-mock)", u)
	default:
		return nil, false, fmt.Errorf("-url %q: want https://host/path", raw)
	}
}

// printRegistration tells the operator what happened and what to do with
// the signing secret.
func printRegistration(out io.Writer, endpointURL string, reg stripeapi.Registration) {
	mode := "test mode"
	if reg.Livemode {
		mode = "live mode"
	}
	version := reg.APIVersion
	if version == "" {
		version = "the account's default"
	}
	switch {
	case reg.Created:
		fmt.Fprintf(out, "created webhook endpoint %s (%s)\n", reg.ID, mode)
	case reg.EventsSet || reg.Reenabled:
		var did []string
		if reg.EventsSet {
			did = append(did, "events set")
		}
		if reg.Reenabled {
			did = append(did, "re-enabled")
		}
		fmt.Fprintf(out, "updated webhook endpoint %s (%s): %s\n", reg.ID, mode, strings.Join(did, ", "))
	default:
		fmt.Fprintf(out, "webhook endpoint %s (%s) is already registered as asked: nothing changed\n", reg.ID, mode)
	}
	fmt.Fprintf(out, "  url:          %s\n", endpointURL)
	fmt.Fprintf(out, "  api version:  %s\n", version)
	fmt.Fprintf(out, "  events:       %s\n", strings.Join(endpointEvents, ", "))
	if reg.EventsSet || reg.Reenabled {
		was := strings.Join(reg.PreviousEvents, ", ")
		if reg.Reenabled {
			was += " (disabled)"
		}
		fmt.Fprintf(out, "  before:       %s\n", was)
	}
	if reg.APIVersion != webhook.SupportedAPIVersion {
		fmt.Fprintf(out, "warning: the endpoint renders events as %s API version, not %s, and Stripe cannot change an "+
			"existing endpoint's version. The webhook accepts them with a warning and a metric; to fix it, delete the "+
			"endpoint in the Dashboard and run register-endpoint again (a new endpoint, with a new signing secret).\n",
			version, webhook.SupportedAPIVersion)
	}

	if !reg.Created {
		fmt.Fprintln(out, "No signing secret is shown: Stripe returns it only when it creates an endpoint, and this one "+
			"existed. Keep its secret in STRIPE_WEBHOOK_SECRET; if it is lost, roll it in the Dashboard (Webhooks, the "+
			"endpoint, Roll secret) and list the new one with the old, comma-separated, until the old one expires.")
		return
	}
	if reg.Secret == "" {
		fmt.Fprintln(out, "Stripe returned no signing secret (stripe-mock returns none): reveal it in the Dashboard "+
			"(Webhooks, the endpoint, Signing secret) and set it in STRIPE_WEBHOOK_SECRET.")
		return
	}
	fmt.Fprintln(out, "signing secret, shown this once (Stripe will not return it again; it is not logged or stored):")
	fmt.Fprintln(out, "  "+reg.Secret)
	fmt.Fprintln(out, "Set it in STRIPE_WEBHOOK_SECRET on every webhook process and restart them. While another "+
		"endpoint still delivers to this service (a rotation), keep its secret too, comma-separated: "+
		"STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old.")
}
