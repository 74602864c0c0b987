// Package reconciletest is a stand-in for Stripe's Events API (GET
// /v1/events) serving recorded identity events, for the tests of package
// reconcile and the end-to-end tests: stripe-mock answers every list with
// the same one generic event, never an identity one.
package reconciletest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EventsAPI serves GET /v1/events over the events it holds, the way
// Stripe pages them: newest first, `type` (with a trailing * wildcard),
// `created[gte|gt|lte|lt]`, `limit` (default 10, at most 100),
// `starting_after` (older than an event) and `ending_before` (the newer
// events next to one). Other requests go to Next, or get a 404.
type EventsAPI struct {
	Next http.Handler

	mu       sync.Mutex
	events   []listed    // oldest first
	fail     map[int]int // list request number (0-based) -> status to answer with
	requests []string    // the query of each list request, in order
}

type listed struct {
	id, typ string
	created int64
	raw     json.RawMessage
}

// Add puts events into the list; each is newer than those added before
// (Stripe orders by `created`; events added in one second keep this order).
func (s *EventsAPI) Add(events ...json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, raw := range events {
		var head struct {
			ID      string `json:"id"`
			Type    string `json:"type"`
			Created int64  `json:"created"`
		}
		if err := json.Unmarshal(raw, &head); err != nil || head.ID == "" {
			return fmt.Errorf("reconciletest: not an event: %v", err)
		}
		s.events = append(s.events, listed{head.ID, head.Type, head.Created, raw})
	}
	slices.SortStableFunc(s.events, func(a, b listed) int { return cmp.Compare(a.created, b.created) })
	return nil
}

// FailNext makes the next list requests fail, one per status given.
func (s *EventsAPI) FailNext(statuses ...int) {
	for i, code := range statuses {
		s.FailRequest(i+1, code)
	}
}

// FailRequest makes the n-th list request from now (1: the next) fail
// with status.
func (s *EventsAPI) FailRequest(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail == nil {
		s.fail = map[int]int{}
	}
	s.fail[len(s.requests)+n-1] = status
}

// Requests returns the query of every list request so far.
func (s *EventsAPI) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func (s *EventsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/v1/events" {
		if s.Next != nil {
			s.Next.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusNotFound, "invalid_request_error", "resource_missing")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.requests)
	s.requests = append(s.requests, r.URL.RawQuery)
	if code, ok := s.fail[n]; ok {
		writeError(w, code, "api_error", "")
		return
	}
	data, hasMore, err := s.list(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": "/v1/events", "has_more": hasMore, "data": data})
}

// list answers one request over the events, newest first.
func (s *EventsAPI) list(r *http.Request) ([]json.RawMessage, bool, error) {
	q := r.URL.Query()
	limit := 10
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return nil, false, fmt.Errorf("parameter_invalid_integer")
		}
		limit = n
	}
	bounds := map[string]func(c, b int64) bool{
		"created[gte]": func(c, b int64) bool { return c >= b }, "created[gt]": func(c, b int64) bool { return c > b },
		"created[lte]": func(c, b int64) bool { return c <= b }, "created[lt]": func(c, b int64) bool { return c < b },
	}
	keep := func(e listed) bool {
		if t := q.Get("type"); t != "" {
			if prefix, wild := strings.CutSuffix(t, "*"); wild && !strings.HasPrefix(e.typ, prefix) || !wild && e.typ != t {
				return false
			}
		}
		for name, ok := range bounds {
			if v := q.Get(name); v != "" {
				b, err := strconv.ParseInt(v, 10, 64)
				if err != nil || !ok(e.created, b) {
					return false
				}
			}
		}
		return true
	}
	// Positions in the whole list, newest first; the cursor's position
	// bounds the page, the filters pick from the rest.
	all := slices.Clone(s.events)
	slices.Reverse(all)
	at := func(id string) (int, error) {
		i := slices.IndexFunc(all, func(e listed) bool { return e.id == id })
		if i < 0 {
			return 0, fmt.Errorf("resource_missing: no such event: %s", id)
		}
		return i, nil
	}
	var window []listed
	switch after, before := q.Get("starting_after"), q.Get("ending_before"); {
	case after != "" && before != "":
		return nil, false, fmt.Errorf("parameter_invalid: starting_after and ending_before together")
	case after != "":
		i, err := at(after)
		if err != nil {
			return nil, false, err
		}
		window = all[i+1:]
	case before != "":
		i, err := at(before)
		if err != nil {
			return nil, false, err
		}
		window = all[:i]
	default:
		window = all
	}
	var match []listed
	for _, e := range window {
		if keep(e) {
			match = append(match, e)
		}
	}
	page, hasMore := match, false
	if len(match) > limit {
		hasMore = true
		if q.Get("ending_before") != "" {
			page = match[len(match)-limit:] // the newer events next to the cursor
		} else {
			page = match[:limit]
		}
	}
	out := make([]json.RawMessage, len(page))
	for i, e := range page {
		out[i] = e.raw
	}
	return out, hasMore, nil
}

func writeError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"type": typ, "message": msg}})
}

// FromFixture makes an event from a recorded Stripe event (such as
// testdata/stripe/event_verification_session_verified.json) with its own
// event id, session id and created time.
func FromFixture(path, eventID, sessionID string, created time.Time) (json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ev map[string]any
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("reconciletest: %s: %w", path, err)
	}
	data, _ := ev["data"].(map[string]any)
	obj, _ := data["object"].(map[string]any)
	if obj == nil {
		return nil, fmt.Errorf("reconciletest: %s: no data.object", path)
	}
	ev["id"], ev["created"], obj["id"] = eventID, created.Unix(), sessionID
	return json.Marshal(ev)
}
