package stripeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/form"
)

// EventQuery selects one page of the Events API (GET /v1/events). Stripe
// lists events newest first; StartingAfter pages towards older events,
// EndingBefore towards newer ones.
type EventQuery struct {
	// Type is an event type or a group with a * wildcard
	// (identity.verification_session.*).
	Type          string
	CreatedGTE    int64  // Unix seconds; 0: no lower bound
	CreatedLT     int64  // Unix seconds; 0: no upper bound
	StartingAfter string // an event id: the page holds older events
	EndingBefore  string // an event id: the page holds the newer events next to it
	Limit         int    // 1 to 100
}

// ListedEvent is one event of a page: its id and created time, and the
// event as Stripe sent it, for the same decoding a webhook delivery gets.
type ListedEvent struct {
	ID      string
	Created int64 // Unix seconds
	Raw     json.RawMessage
}

// EventPage is a page of events, newest first as Stripe lists them.
type EventPage struct {
	Events []ListedEvent
	// HasMore says whether more events lie beyond the page in the
	// direction it was read.
	HasMore bool
}

// rawEventList is a list response whose events stay raw JSON.
type rawEventList struct {
	stripe.APIResource
	stripe.ListMeta
	Data []json.RawMessage `json:"data"`
}

// ListEvents reads one page of the Events API. Errors say whether to retry,
// as for every call of this client.
func (c *Client) ListEvents(ctx context.Context, q EventQuery) (EventPage, error) {
	f := &form.Values{}
	if q.Type != "" {
		f.Add("type", q.Type)
	}
	if q.CreatedGTE > 0 {
		f.Add("created[gte]", strconv.FormatInt(q.CreatedGTE, 10))
	}
	if q.CreatedLT > 0 {
		f.Add("created[lt]", strconv.FormatInt(q.CreatedLT, 10))
	}
	if q.StartingAfter != "" {
		f.Add("starting_after", q.StartingAfter)
	}
	if q.EndingBefore != "" {
		f.Add("ending_before", q.EndingBefore)
	}
	if q.Limit > 0 {
		f.Add("limit", strconv.Itoa(q.Limit))
	}
	var list rawEventList
	err := c.sessions.B.CallRaw(http.MethodGet, "/v1/events", c.sessions.Key, f, &stripe.Params{Context: ctx}, &list)
	if err != nil {
		return EventPage{}, mapError("list events", err)
	}
	page := EventPage{HasMore: list.HasMore, Events: make([]ListedEvent, 0, len(list.Data))}
	for _, raw := range list.Data {
		var head struct {
			ID      string `json:"id"`
			Created int64  `json:"created"`
		}
		if err := json.Unmarshal(raw, &head); err != nil || head.ID == "" {
			return EventPage{}, fmt.Errorf("%w: list events: an event without an id", ErrPermanent)
		}
		page.Events = append(page.Events, ListedEvent{ID: head.ID, Created: head.Created, Raw: raw})
	}
	return page, nil
}
