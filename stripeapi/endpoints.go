package stripeapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhookendpoint"
)

// ErrDuplicateEndpoints: more than one webhook endpoint has the URL being
// registered, so which one to update is ambiguous. Stripe allows it; each
// delivers every event, signed with its own secret.
var ErrDuplicateEndpoints = errors.New("stripe: several webhook endpoints have this URL")

// EndpointSpec is the webhook endpoint a registration asks for.
type EndpointSpec struct {
	URL    string
	Events []string // enabled_events, exactly these
	// APIVersion is the version Stripe renders the endpoint's events in.
	// Stripe takes it only when it creates an endpoint.
	APIVersion  string
	Description string // shown in the Dashboard; set on create only
}

// Registration is what RegisterEndpoint did.
type Registration struct {
	ID       string
	Created  bool // false: the endpoint with the URL existed
	Livemode bool
	// Secret is the endpoint's signing secret (whsec_...). Stripe returns
	// it only when it creates an endpoint: empty otherwise. Print it for
	// the operator once; never log or store it.
	Secret string
	// APIVersion is the version the endpoint renders events in, empty for
	// the account's default; it can differ from the spec's on an existing
	// endpoint, which Stripe cannot change.
	APIVersion     string
	EventsSet      bool     // the existing endpoint had other events
	Reenabled      bool     // the existing endpoint was disabled
	PreviousEvents []string // the existing endpoint's events before
}

// RegisterEndpoint makes the webhook endpoint for spec.URL exist, enabled,
// with exactly spec.Events, idempotently: it lists the account's endpoints
// and updates the one with that URL (its events, and re-enables it), only
// when something differs, or creates one when none has it. Running it
// again changes nothing and never creates a second endpoint.
func (c *Client) RegisterEndpoint(ctx context.Context, spec EndpointSpec) (Registration, error) {
	ep := webhookendpoint.Client{B: c.sessions.B, Key: c.sessions.Key}
	existing, err := endpointsWithURL(ctx, ep, spec.URL)
	if err != nil {
		return Registration{}, err
	}
	switch len(existing) {
	case 0:
		return createEndpoint(ctx, ep, spec)
	case 1:
		return updateEndpoint(ctx, ep, existing[0], spec)
	default:
		ids := make([]string, len(existing))
		for i, e := range existing {
			ids[i] = e.ID
		}
		return Registration{}, fmt.Errorf("%w: %s (delete all but one, then register again)", ErrDuplicateEndpoints, strings.Join(ids, ", "))
	}
}

// endpointsWithURL lists every endpoint of the account (all pages) and
// returns those whose URL is exactly url.
func endpointsWithURL(ctx context.Context, ep webhookendpoint.Client, url string) ([]*stripe.WebhookEndpoint, error) {
	p := &stripe.WebhookEndpointListParams{}
	p.Context = ctx
	p.Limit = stripe.Int64(100)
	var out []*stripe.WebhookEndpoint
	it := ep.List(p)
	for it.Next() {
		if e := it.WebhookEndpoint(); e.URL == url {
			out = append(out, e)
		}
	}
	return out, mapError("list webhook endpoints", it.Err())
}

// createEndpoint creates the endpoint; Stripe returns its secret only now.
func createEndpoint(ctx context.Context, ep webhookendpoint.Client, spec EndpointSpec) (Registration, error) {
	p := &stripe.WebhookEndpointParams{
		URL:           stripe.String(spec.URL),
		EnabledEvents: stripe.StringSlice(spec.Events),
		APIVersion:    stripe.String(spec.APIVersion),
	}
	if spec.Description != "" {
		p.Description = stripe.String(spec.Description)
	}
	p.Context = ctx
	e, err := ep.New(p)
	if err != nil {
		return Registration{}, mapError("create webhook endpoint", err)
	}
	return Registration{ID: e.ID, Created: true, Livemode: e.Livemode, Secret: e.Secret, APIVersion: e.APIVersion}, nil
}

// updateEndpoint sets an existing endpoint's events and enables it, when either
// differs. It sends no api_version: Stripe refuses it on update.
func updateEndpoint(ctx context.Context, ep webhookendpoint.Client, e *stripe.WebhookEndpoint, spec EndpointSpec) (Registration, error) {
	r := Registration{ID: e.ID, Livemode: e.Livemode, APIVersion: e.APIVersion, PreviousEvents: e.EnabledEvents,
		EventsSet: !sameSet(e.EnabledEvents, spec.Events), Reenabled: e.Status == "disabled"}
	if !r.EventsSet && !r.Reenabled {
		return r, nil
	}
	p := &stripe.WebhookEndpointParams{}
	if r.EventsSet {
		p.EnabledEvents = stripe.StringSlice(spec.Events)
	}
	if r.Reenabled {
		p.Disabled = stripe.Bool(false)
	}
	p.Context = ctx
	if _, err := ep.Update(e.ID, p); err != nil {
		return Registration{}, mapError("update webhook endpoint", err)
	}
	return r, nil
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
