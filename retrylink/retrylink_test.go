package retrylink_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"identityverification/retrylink"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/workflows"
)

const base = "https://verify.example.com"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func clock(t *time.Time) func() time.Time { return func() time.Time { return *t } }

func query(t *testing.T, link string) (string, url.Values) {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, retrylink.Path), u.Query()
}

func TestTokenBindsSessionAttemptAndExpiry(t *testing.T) {
	now := t0
	links := retrylink.New(base, "secret").WithTTL(time.Hour).WithClock(clock(&now))
	link := links.URL("vs_1", true, 2)
	if !strings.HasPrefix(link, base+retrylink.Path+"vs_1?") {
		t.Fatalf("link %q", link)
	}
	id, q := query(t, link)
	got, err := links.Check(id, q)
	if err != nil || got != (retrylink.Link{SessionID: "vs_1", Alternate: true, Attempt: 2, Expires: t0.Add(time.Hour)}) {
		t.Fatalf("Check = %+v, %v", got, err)
	}
	tamper := func(k, v string) url.Values {
		c := url.Values{}
		for kk, vv := range q {
			c[kk] = append([]string(nil), vv...)
		}
		c.Set(k, v)
		return c
	}
	for name, tc := range map[string]struct {
		id string
		q  url.Values
	}{
		"another session": {"vs_2", q},
		"another attempt": {id, tamper("n", "3")},
		"another method":  {id, tamper("m", "p")},
		"a later expiry":  {id, tamper("exp", "9999999999")},
		"a changed token": {id, tamper("token", "A"+q.Get("token"))},
		"no token":        {id, tamper("token", "")},
		"not a number":    {id, tamper("n", "x")},
		"another secret's token": {id, func() url.Values {
			_, q := query(t, retrylink.New(base, "other").WithTTL(time.Hour).WithClock(clock(&now)).URL("vs_1", true, 2))
			return q
		}()},
		"the old unbound token": {id, url.Values{"token": {"abc"}}},
	} {
		if _, err := links.Check(tc.id, tc.q); !errors.Is(err, retrylink.ErrTampered) {
			t.Errorf("%s: %v; want ErrTampered", name, err)
		}
	}
	// A link from before links expired (its token an HMAC of the session id
	// alone) has expired.
	legacy := hmac.New(sha256.New, []byte("secret"))
	legacy.Write([]byte("retry:vs_1"))
	old := url.Values{"token": {base64.RawURLEncoding.EncodeToString(legacy.Sum(nil)[:18])}}
	if _, err := links.Check("vs_1", old); !errors.Is(err, retrylink.ErrExpired) {
		t.Errorf("a link of the old kind: %v; want ErrExpired", err)
	}
	if _, err := links.Check("vs_2", old); !errors.Is(err, retrylink.ErrTampered) {
		t.Errorf("a link of the old kind for another session: %v; want ErrTampered", err)
	}
	now = t0.Add(time.Hour)
	if _, err := links.Check(id, q); !errors.Is(err, retrylink.ErrExpired) {
		t.Errorf("at expiry: %v; want ErrExpired", err)
	}
	if retrylink.New(base, "s").WithTTL(0) == nil {
		t.Error("WithTTL(0)")
	}
}

func TestDefaultTTL(t *testing.T) {
	now := t0
	links := retrylink.New(base, "secret").WithClock(clock(&now))
	_, q := query(t, links.URL("vs_1", false, 0))
	got, err := links.Check("vs_1", q)
	if err != nil || !got.Expires.Equal(t0.Add(retrylink.DefaultTTL)) {
		t.Errorf("%+v, %v", got, err)
	}
}

type fakeStates struct {
	st  retrylink.State
	err error
}

func (f fakeStates) State(context.Context, string) (retrylink.State, error) { return f.st, f.err }

type fakeStripe struct {
	url   string
	err   error
	calls atomic.Int32
}

func (f *fakeStripe) URL(context.Context, string) (string, error) {
	f.calls.Add(1)
	return f.url, f.err
}

func open(attempts int) retrylink.State {
	return retrylink.State{Status: workflows.StatusRequiresInput, Escalation: workflows.EscalationNone, Attempts: attempts}
}

func withLink(st retrylink.State, l workflows.RetryLane) retrylink.State {
	st.RetryLink = &l
	return st
}

func TestHandler(t *testing.T) {
	now := t0
	links := retrylink.New(base, "secret").WithTTL(time.Hour).WithClock(clock(&now))
	first2 := strings.TrimPrefix(links.URL("vs_123", false, 2), base)
	alt1 := strings.TrimPrefix(links.URL("vs_123", true, 1), base)
	expired := strings.TrimPrefix(retrylink.New(base, "secret").WithTTL(time.Minute).
		WithClock(func() time.Time { return t0.Add(-2 * time.Minute) }).URL("vs_123", false, 2), base)
	alternate := func(n int) retrylink.State {
		return retrylink.State{Status: workflows.StatusRequiresInput, Escalation: workflows.EscalationAlternate, Attempts: 3, AlternateAttempts: n}
	}
	cases := []struct {
		name      string
		path      string
		states    fakeStates
		stripe    fakeStripe
		wantCode  int
		wantLoc   string
		wantText  string
		wantCalls int32
	}{
		{"a link for the current attempt redirects to a fresh Stripe URL", first2, fakeStates{st: open(2)},
			fakeStripe{url: "https://verify.stripe.com/start/abc"}, 303, "https://verify.stripe.com/start/abc", "", 1},
		{"the alternate method's current attempt", alt1, fakeStates{st: alternate(1)},
			fakeStripe{url: "https://verify.stripe.com/start/alt"}, 303, "https://verify.stripe.com/start/alt", "", 1},
		{"a tampered token", strings.Replace(first2, "token=", "token=A", 1), fakeStates{st: open(2)}, fakeStripe{url: "https://x"}, 403, "", "not valid", 0},
		{"another session's token", strings.Replace(first2, "vs_123", "vs_124", 1), fakeStates{st: open(2)}, fakeStripe{url: "https://x"}, 403, "", "not valid", 0},
		{"a link without a token", "/verify/retry/vs_123", fakeStates{st: open(2)}, fakeStripe{url: "https://x"}, 403, "", "not valid", 0},
		{"an id of the wrong shape", "/verify/retry/x%3Cscript%3E?token=a", fakeStates{st: open(2)}, fakeStripe{url: "https://x"}, 403, "", "not valid", 0},
		{"an expired link", expired, fakeStates{st: open(2)}, fakeStripe{url: "https://x"}, 410, "", "expired", 0},
		{"an old attempt's link", first2, fakeStates{st: open(3)}, fakeStripe{url: "https://x"}, 410, "", "earlier attempt", 0},
		{"the first method's link after the switch to the alternate", first2, fakeStates{st: alternate(0)}, fakeStripe{url: "https://x"}, 409, "", "cannot be continued", 0},
		{"an old alternate attempt", alt1, fakeStates{st: alternate(2)}, fakeStripe{url: "https://x"}, 410, "", "earlier attempt", 0},
		{"while Stripe processes", first2, fakeStates{st: retrylink.State{Status: workflows.StatusProcessing, Attempts: 2}}, fakeStripe{url: "https://x"}, 409, "", "cannot be continued", 0},
		{"in review", first2, fakeStates{st: retrylink.State{Status: workflows.StatusInReview, Escalation: workflows.EscalationReview, Attempts: 2}}, fakeStripe{url: "https://x"}, 409, "", "cannot be continued", 0},
		{"escalated to review while still requires_input", first2, fakeStates{st: retrylink.State{Status: workflows.StatusRequiresInput, Escalation: workflows.EscalationReview, Attempts: 2}}, fakeStripe{url: "https://x"}, 409, "", "cannot be continued", 0},
		{"a verified session", first2, fakeStates{st: retrylink.State{Status: workflows.StatusVerified, Attempts: 2}}, fakeStripe{url: "https://x"}, 410, "", "complete or closed", 0},
		{"a session whose workflow is gone", first2, fakeStates{err: retrylink.ErrNoSession}, fakeStripe{url: "https://x"}, 410, "", "complete or closed", 0},
		{"Temporal unavailable", first2, fakeStates{err: errors.New("rpc error: unavailable")}, fakeStripe{url: "https://x"}, 503, "", "try again", 0},
		{"Stripe unavailable", first2, fakeStates{st: open(2)}, fakeStripe{err: errors.New("HTTP 503")}, 503, "", "try again", 1},
		{"Stripe has nothing to continue", first2, fakeStates{st: open(2)}, fakeStripe{}, 409, "", "complete or closed", 1},
		// Workflow v3 names the newest link sent: a failure counted
		// silently (no email) leaves the user's link working; a newer
		// email's link ends it.
		{"the newest link sent, after a late failure was counted silently", first2,
			fakeStates{st: withLink(open(3), workflows.RetryLane{Attempt: 2})},
			fakeStripe{url: "https://verify.stripe.com/start/late"}, 303, "https://verify.stripe.com/start/late", "", 1},
		{"a link older than the newest sent", first2, fakeStates{st: withLink(open(3), workflows.RetryLane{Attempt: 3})},
			fakeStripe{url: "https://x"}, 410, "", "earlier attempt", 0},
		{"the first method's link after the alternate's offer went out", first2,
			fakeStates{st: withLink(alternate(0), workflows.RetryLane{Alternate: true})}, fakeStripe{url: "https://x"}, 409, "", "cannot be continued", 0},
	}
	for i := range cases {
		tc := &cases[i]
		t.Run(tc.name, func(t *testing.T) {
			h := &retrylink.Handler{Links: links, States: tc.states, Sessions: &tc.stripe, Timeout: time.Second,
				Limiter: retrylink.NewLimiter(5, 10*time.Minute), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if w.Code != tc.wantCode || w.Header().Get("Location") != tc.wantLoc {
				t.Errorf("%d to %q; want %d to %q", w.Code, w.Header().Get("Location"), tc.wantCode, tc.wantLoc)
			}
			if !strings.Contains(w.Body.String(), tc.wantText) {
				t.Errorf("page lacks %q:\n%s", tc.wantText, w.Body)
			}
			if tc.wantCode != 303 && !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
				t.Errorf("Content-Type %q", w.Header().Get("Content-Type"))
			}
			if n := tc.stripe.calls.Load(); n != tc.wantCalls {
				t.Errorf("%d calls to Stripe; want %d", n, tc.wantCalls)
			}
			if w.Header().Get("Cache-Control") != "no-store" {
				t.Error("the answer may be cached")
			}
			if strings.Contains(w.Body.String(), "HTTP 503") || strings.Contains(w.Body.String(), "rpc error") {
				t.Error("the page echoes an internal error")
			}
		})
	}
}

func TestHandlerRateLimitsPerSession(t *testing.T) {
	now := t0
	links := retrylink.New(base, "secret").WithClock(clock(&now))
	lim := retrylink.NewLimiter(5, 10*time.Minute)
	lim.Now = clock(&now)
	stripe := &fakeStripe{url: "https://verify.stripe.com/start/abc"}
	h := &retrylink.Handler{Links: links, States: fakeStates{st: open(1)}, Sessions: stripe, Limiter: lim,
		Timeout: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	get := func(sessionID string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, strings.TrimPrefix(links.URL(sessionID, false, 1), base), nil))
		return w.Code
	}
	for i := range 5 {
		if c := get("vs_a"); c != 303 {
			t.Fatalf("click %d: %d", i+1, c)
		}
	}
	if c := get("vs_a"); c != 429 {
		t.Fatalf("sixth click: %d; want 429", c)
	}
	if stripe.calls.Load() != 5 {
		t.Errorf("%d calls to Stripe; want 5", stripe.calls.Load())
	}
	if c := get("vs_b"); c != 303 {
		t.Errorf("another session: %d", c)
	}
	now = now.Add(2 * time.Minute) // one click refilled
	if c := get("vs_a"); c != 303 {
		t.Errorf("after 2 minutes: %d", c)
	}
	if c := get("vs_a"); c != 429 {
		t.Errorf("then: %d; want 429", c)
	}
	// A tampered link does not spend the session's budget.
	now = now.Add(10 * time.Minute)
	for range 10 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/verify/retry/vs_a?token=x", nil))
	}
	if c := get("vs_a"); c != 303 {
		t.Errorf("after tampered clicks: %d", c)
	}
}

// Issue 19, item 9: the page Stripe sends a user back to by default.
func TestTheThankYouPage(t *testing.T) {
	w := httptest.NewRecorder()
	retrylink.Done(w, httptest.NewRequest(http.MethodGet, retrylink.DonePath, nil))
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(w.Body.String(), "will email you") {
		t.Errorf("%d %q:\n%s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}

// Behind a balancer, each click may reach another replica: handlers
// counting in one database share the session's budget, five clicks per
// ten-minute window in all, not five each.
func TestHandlersOnOneStoreShareTheBudget(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			ctx := context.Background()
			st, err := store.Open(ctx, db.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			now := t0.Add(time.Minute) // inside one window
			links := retrylink.New(base, "secret").WithClock(clock(&now))
			stripe := &fakeStripe{url: "https://verify.stripe.com/start/abc"}
			replica := func() *retrylink.Handler {
				lim := retrylink.NewLimiter(5, 10*time.Minute)
				lim.Now, lim.Counter = clock(&now), st
				return &retrylink.Handler{Links: links, States: fakeStates{st: open(1)}, Sessions: stripe, Limiter: lim,
					Timeout: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			}
			replicas := []*retrylink.Handler{replica(), replica()}
			get := func(h *retrylink.Handler, sessionID string) int {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, strings.TrimPrefix(links.URL(sessionID, false, 1), base), nil))
				return w.Code
			}
			var codes []int
			for i := range 8 { // round robin
				codes = append(codes, get(replicas[i%2], "vs_shared"))
			}
			if want := []int{303, 303, 303, 303, 303, 429, 429, 429}; !slices.Equal(codes, want) {
				t.Errorf("clicks across two replicas answered %v; want %v", codes, want)
			}
			if n := stripe.calls.Load(); n != 5 {
				t.Errorf("%d calls to Stripe; want 5", n)
			}
			if n, err := st.Hits(ctx, retrylink.CounterBucket("vs_shared"), 10*time.Minute, now); err != nil || n != 8 {
				t.Errorf("the database counted %d, %v; want 8", n, err)
			}
			if c := get(replicas[1], "vs_other"); c != 303 {
				t.Errorf("another session: %d", c)
			}
			now = now.Add(10 * time.Minute) // the next window
			if c := get(replicas[1], "vs_shared"); c != 303 {
				t.Errorf("in the next window: %d", c)
			}
		})
	}
}

// failingCounter is a database that does not answer.
type failingCounter struct{}

func (failingCounter) Hit(context.Context, string, time.Duration, time.Time) (int, error) {
	return 0, errors.New("connection refused")
}

// While the database fails, each replica still limits on its own.
func TestLimiterFallsBackToMemoryWhenTheCounterFails(t *testing.T) {
	now := t0
	lim := retrylink.NewLimiter(5, 10*time.Minute)
	lim.Now, lim.Counter = clock(&now), failingCounter{}
	var logs strings.Builder
	lim.Log = slog.New(slog.NewTextHandler(&logs, nil))
	allowed := 0
	for range 8 {
		if lim.Allow(context.Background(), "vs_a") {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("%d of 8 clicks allowed; want 5", allowed)
	}
	if n := strings.Count(logs.String(), "does not count"); n != 1 {
		t.Errorf("the outage logged %d times; want once:\n%s", n, logs.String())
	}
}

// notReadyCounter is a database this process has not opened yet.
type notReadyCounter struct{}

func (notReadyCounter) Hit(context.Context, string, time.Duration, time.Time) (int, error) {
	return 0, fmt.Errorf("service: %w", retrylink.ErrCounterNotReady)
}

// Before the database is open, clicks are limited in memory and no outage
// is logged: the process is starting, nothing has failed.
func TestLimiterBeforeItsCounterIsReadyLogsNoOutage(t *testing.T) {
	now := t0
	lim := retrylink.NewLimiter(5, 10*time.Minute)
	lim.Now, lim.Counter = clock(&now), notReadyCounter{}
	var logs strings.Builder
	lim.Log = slog.New(slog.NewTextHandler(&logs, nil))
	allowed := 0
	for range 8 {
		if lim.Allow(context.Background(), "vs_a") {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("%d of 8 clicks allowed; want 5", allowed)
	}
	if logs.Len() != 0 {
		t.Errorf("logged while the database was not open yet:\n%s", logs.String())
	}
}
