package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.temporal.io/sdk/client"

	"identityverification/devstack"
	"identityverification/ops"
	"identityverification/testevent"
	"identityverification/webhook"
	"identityverification/workflows"
)

const (
	secret    = "whsec_current"
	oldSecret = "whsec_previous"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// recorder is Temporal as the handler sees it: it records each
// SignalWithStart, or fails them all with err.
type recorder struct {
	mu    sync.Mutex
	calls []signalCall
	err   error
}

type signalCall struct {
	WorkflowID, Signal string
	Event              workflows.Event
	Options            client.StartWorkflowOptions
	Input              workflows.Input
}

func (r *recorder) SignalWithStartWorkflow(_ context.Context, id, signal string, arg any,
	opts client.StartWorkflowOptions, _ any, args ...any) (client.WorkflowRun, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return nil, r.err
	}
	r.calls = append(r.calls, signalCall{id, signal, arg.(workflows.Event), opts, args[0].(workflows.Input)})
	return nil, nil
}

func newHandler(t testing.TB, temporal webhook.Signaler) (*webhook.Handler, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return &webhook.Handler{
		Temporal: temporal, Secrets: []string{oldSecret, secret}, Tolerance: 300 * time.Second,
		MaxBody: 1 << 20, SignalTimeout: 2 * time.Second, Policy: workflows.DefaultPolicy(),
		Metrics: webhook.NewMetrics(reg), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return now },
	}, reg
}

func fixture(t testing.TB, name string) []byte {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "stripe", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withField returns the fixture with one top-level field replaced.
func withField(t testing.TB, payload []byte, key string, value any) []byte {
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = value
	out, _ := json.Marshal(m)
	return out
}

func sign(payload []byte, s string, at time.Time) string { return testevent.Sign(payload, s, at) }

func TestHandler(t *testing.T) {
	verified := fixture(t, "event_verification_session_verified.json")
	requiresInput := fixture(t, "event_verification_session_requires_input.json")
	nullCode := bytes.Replace(requiresInput, []byte(`"code": "document_expired"`), []byte(`"code": null`), 1)
	noSession := bytes.Replace(verified, []byte(`"id": "vs_1OPouwJN5vQBdWExwnxAiDeP"`), []byte(`"id": ""`), 1)
	charge := withField(t, verified, "type", "charge.succeeded")
	otherVersion := withField(t, verified, "api_version", "2024-09-30.acacia")
	big := append(bytes.Repeat([]byte(" "), 1<<20), verified...)

	cases := []struct {
		name      string
		method    string
		body      []byte
		header    string // "" means a valid signature with the current secret
		noHeader  bool
		temporal  error
		wantCode  int
		wantError string
		wantEvent *workflows.Event
	}{
		{name: "a genuine verified event is signaled", body: verified, wantCode: 200,
			wantEvent: &workflows.Event{ID: "evt_1OPouqJN5vQBdWExgxCYZfvK", Type: workflows.EventVerified,
				Created: 1234567890, SessionID: "vs_1OPouwJN5vQBdWExwnxAiDeP", Status: "verified", APIVersion: "2023-10-16", SessionType: "document"}},
		{name: "a requires_input event carries its last error", body: requiresInput, wantCode: 200,
			wantEvent: &workflows.Event{ID: "evt_1OPovbJN5vQBdWExq0SgQkbr", Type: workflows.EventRequiresInput,
				Created: 1234567890, SessionID: "vs_1OPouwJN5vQBdWExwnxAiDeP", Status: "requires_input",
				HasLastError: true, LastErrorCode: "document_expired", LastErrorReason: "The document is expired.", APIVersion: "2023-10-16", SessionType: "document"}},
		{name: "a null last_error code is kept as a failure without a code", body: nullCode, wantCode: 200,
			wantEvent: &workflows.Event{ID: "evt_1OPovbJN5vQBdWExq0SgQkbr", Type: workflows.EventRequiresInput,
				Created: 1234567890, SessionID: "vs_1OPouwJN5vQBdWExwnxAiDeP", Status: "requires_input",
				HasLastError: true, LastErrorReason: "The document is expired.", APIVersion: "2023-10-16", SessionType: "document"}},
		{name: "an event signed with the rotated-out secret still verifies", body: verified,
			header: sign(verified, oldSecret, now), wantCode: 200},
		{name: "another API version is accepted and decoded", body: otherVersion, wantCode: 200,
			wantEvent: &workflows.Event{ID: "evt_1OPouqJN5vQBdWExgxCYZfvK", Type: workflows.EventVerified,
				Created: 1234567890, SessionID: "vs_1OPouwJN5vQBdWExwnxAiDeP", Status: "verified", APIVersion: "2024-09-30.acacia", SessionType: "document"}},
		{name: "a non-identity event is acknowledged and not signaled", body: charge, wantCode: 200},
		{name: "a tampered body is refused", body: verified, header: sign(requiresInput, secret, now),
			wantCode: 400, wantError: "bad_signature"},
		{name: "a wrong secret is refused", body: verified, header: sign(verified, "whsec_wrong", now),
			wantCode: 400, wantError: "bad_signature"},
		{name: "a stale timestamp is refused", body: verified, header: sign(verified, secret, now.Add(-301*time.Second)),
			wantCode: 400, wantError: "timestamp_out_of_tolerance"},
		{name: "a timestamp from the future is refused", body: verified, header: sign(verified, secret, now.Add(301*time.Second)),
			wantCode: 400, wantError: "timestamp_out_of_tolerance"},
		{name: "a missing header is refused", body: verified, noHeader: true, wantCode: 400, wantError: "missing_signature"},
		{name: "a garbled header is refused", body: verified, header: "t=notanumber,v1=zz", wantCode: 400, wantError: "malformed_signature_header"},
		{name: "a header without signatures is refused", body: verified, header: fmt.Sprintf("t=%d", now.Unix()),
			wantCode: 400, wantError: "malformed_signature_header"},
		{name: "an oversized body is refused", body: big, wantCode: 413, wantError: "body_too_large"},
		{name: "invalid JSON is refused", body: []byte(`{"id": "evt_1", "type": `), wantCode: 400, wantError: "invalid_json"},
		{name: "an event without an id is refused", body: withField(t, verified, "id", ""), wantCode: 400, wantError: "missing_event_id"},
		{name: "an identity event without a session id is refused", body: noSession, wantCode: 400, wantError: "missing_session_id"},
		{name: "Temporal unavailable is a 503 so Stripe retries", body: verified, temporal: errors.New("connection refused"),
			wantCode: 503, wantError: "temporal_unavailable"},
		{name: "GET is not allowed", method: http.MethodGet, body: nil, wantCode: 405, wantError: "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{err: tc.temporal}
			h, _ := newHandler(t, rec)
			router := webhook.NewRouter(h, nil, nil)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, webhook.Route, bytes.NewReader(tc.body))
			switch {
			case tc.noHeader:
			case tc.header != "":
				req.Header.Set("Stripe-Signature", tc.header)
			default:
				req.Header.Set("Stripe-Signature", sign(tc.body, secret, now))
			}
			w := httptest.NewRecorder()
			router.ServeHTTP(w, req)

			if w.Code != tc.wantCode {
				t.Fatalf("status %d (%s); want %d", w.Code, w.Body, tc.wantCode)
			}
			var resp map[string]string
			json.Unmarshal(w.Body.Bytes(), &resp)
			if resp["error"] != tc.wantError {
				t.Errorf("error %q; want %q", resp["error"], tc.wantError)
			}
			if strings.Contains(w.Body.String(), "connection refused") {
				t.Errorf("response echoes an internal error: %s", w.Body)
			}
			if tc.wantCode != 200 || bytes.Equal(tc.body, charge) {
				if len(rec.calls) != 0 {
					t.Errorf("signaled %d times; want none", len(rec.calls))
				}
				return
			}
			if len(rec.calls) != 1 {
				t.Fatalf("signaled %d times; want once", len(rec.calls))
			}
			c := rec.calls[0]
			if c.WorkflowID != "identity-verification-vs_1OPouwJN5vQBdWExwnxAiDeP" || c.Options.ID != c.WorkflowID ||
				c.Signal != workflows.SignalEvent || c.Options.TaskQueue != "identity-verification" {
				t.Errorf("call = %+v", c)
			}
			if c.Input.SessionID != c.Event.SessionID || c.Input.Policy.MaxAttempts != 3 {
				t.Errorf("input = %+v; want the session and the policy snapshot", c.Input)
			}
			if tc.wantEvent != nil && c.Event != *tc.wantEvent {
				t.Errorf("signal payload = %+v\nwant %+v", c.Event, *tc.wantEvent)
			}
		})
	}
}

func TestHandlerCountsOutcomesAndVersionMismatches(t *testing.T) {
	h, reg := newHandler(t, &recorder{})
	router := webhook.NewRouter(h, nil, nil)
	verified := fixture(t, "event_verification_session_verified.json")
	send := func(body []byte, header string) {
		req := httptest.NewRequest(http.MethodPost, webhook.Route, bytes.NewReader(body))
		req.Header.Set("Stripe-Signature", header)
		router.ServeHTTP(httptest.NewRecorder(), req)
	}
	send(verified, sign(verified, secret, now))
	send(verified, sign(verified, "whsec_wrong", now))
	other := withField(t, verified, "api_version", "2025-01-27.acacia")
	send(other, sign(other, secret, now))

	metrics := `
# HELP webhook_api_version_mismatch_total Events accepted whose Stripe API version differs from the one stripe-go speaks (2023-10-16).
# TYPE webhook_api_version_mismatch_total counter
webhook_api_version_mismatch_total{api_version="2025-01-27.acacia"} 1
# HELP webhook_requests_total Stripe webhook deliveries by outcome (accepted, ignored, rejected, failed) and refusal reason.
# TYPE webhook_requests_total counter
webhook_requests_total{outcome="accepted",reason=""} 2
webhook_requests_total{outcome="rejected",reason="bad_signature"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(metrics),
		"webhook_requests_total", "webhook_api_version_mismatch_total"); err != nil {
		t.Error(err)
	}
}

// TestHandlerAnswers503WhenTemporalIsDown uses a real Temporal client aimed
// at a port nothing listens on.
func TestHandlerAnswers503WhenTemporalIsDown(t *testing.T) {
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewLazyClient(client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", port)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, reg := newHandler(t, c)
	h.SignalTimeout = 500 * time.Millisecond
	h.Ready = &webhook.Readiness{Temporal: c}
	router := webhook.NewRouter(h, nil, h.Ready)
	opsRouter := ops.Handler(h.Ready.Ready, reg)
	verified := fixture(t, "event_verification_session_verified.json")
	req := httptest.NewRequest(http.MethodPost, webhook.Route, bytes.NewReader(verified))
	req.Header.Set("Stripe-Signature", sign(verified, secret, now))
	w := httptest.NewRecorder()
	router.ServeHTTP(w, req)
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("webhook: %d %s; want 503", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	opsRouter.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz: %d; want 503", w.Code)
	}
	w = httptest.NewRecorder()
	opsRouter.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/livez", nil))
	if w.Code != http.StatusOK {
		t.Errorf("/livez: %d; want 200", w.Code)
	}
	// The public listener keeps /livez and /readyz for load balancers; its
	// metrics are on the ops listener only.
	for path, want := range map[string]int{"/readyz": http.StatusServiceUnavailable, "/livez": http.StatusOK, "/metrics": http.StatusNotFound} {
		w = httptest.NewRecorder()
		router.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != want {
			t.Errorf("public %s: %d; want %d", path, w.Code, want)
		}
	}
}

// FuzzHandler: whatever arrives, signed or not, the handler neither panics
// nor answers 5xx while Temporal is up.
func FuzzHandler(f *testing.F) {
	for _, name := range []string{"event_verification_session_verified.json", "event_verification_session_requires_input.json", "verification_session.json"} {
		f.Add(fixture(f, name), true)
		f.Add(fixture(f, name), false)
	}
	f.Add([]byte(`{"id":"evt_1","type":"identity.verification_session.canceled","data":{"object":{"id":"vs_1","last_error":{"code":null}}}}`), true)
	f.Add([]byte(`{"id":"evt_1","type":"identity.verification_session.created","data":null}`), true)
	f.Add([]byte(`[]`), true)
	f.Add([]byte(``), true)
	h, _ := newHandler(f, &recorder{})
	router := webhook.NewRouter(h, nil, nil)
	f.Fuzz(func(t *testing.T, body []byte, signed bool) {
		req := httptest.NewRequest(http.MethodPost, webhook.Route, bytes.NewReader(body))
		if signed {
			req.Header.Set("Stripe-Signature", sign(body, secret, now))
		}
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("status %d for %q", w.Code, body)
		}
	})
}

// BenchmarkHandler measures verification and decoding of a typical event
// (HMAC-SHA256 over the body, JSON decode), with a Temporal that answers at once.
func BenchmarkHandler(b *testing.B) {
	h, _ := newHandler(b, nopSignaler{})
	h.Now, h.Secrets = time.Now, []string{secret}
	body := fixture(b, "event_verification_session_requires_input.json")
	header := sign(body, secret, time.Now())
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, webhook.Route, bytes.NewReader(body))
		req.Header.Set("Stripe-Signature", header)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
	}
}

type nopSignaler struct{}

func (nopSignaler) SignalWithStartWorkflow(context.Context, string, string, any, client.StartWorkflowOptions, any, ...any) (client.WorkflowRun, error) {
	return nil, nil
}

// countingSignaler counts SignalWithStart calls and fails them while down.
type countingSignaler struct {
	calls atomic.Int32
	down  atomic.Bool
}

func (c *countingSignaler) SignalWithStartWorkflow(context.Context, string, string, any, client.StartWorkflowOptions, any, ...any) (client.WorkflowRun, error) {
	c.calls.Add(1)
	if c.down.Load() {
		return nil, errors.New("unavailable")
	}
	return nil, nil
}

func (c *countingSignaler) CheckHealth(context.Context, *client.CheckHealthRequest) (*client.CheckHealthResponse, error) {
	if c.down.Load() { // as the SDK wraps a refused connection
		return nil, fmt.Errorf("health check error: %w", status.Error(codes.Unavailable, "connection refused"))
	}
	return &client.CheckHealthResponse{}, nil
}

// healthSays answers health checks with the error it holds.
type healthSays struct{ err error }

func (h *healthSays) CheckHealth(context.Context, *client.CheckHealthRequest) (*client.CheckHealthResponse, error) {
	if h.err != nil {
		return nil, fmt.Errorf("health check error: %w", h.err)
	}
	return &client.CheckHealthResponse{}, nil
}

// TestReadinessIsNotFooledByOneSlowCheck: a refused connection is down at
// once; a slow check or a frontend not serving only on the second in a
// row; a server without the health service (a proxy) is not down.
func TestReadinessIsNotFooledByOneSlowCheck(t *testing.T) {
	for _, tc := range []struct {
		name         string
		err          error
		first, again bool // down after one check, after two
	}{
		{"refused", status.Error(codes.Unavailable, "connection refused"), true, true},
		{"slow", status.Error(codes.DeadlineExceeded, "deadline exceeded"), false, true},
		{"not serving", errors.New("health check returned unhealthy status: NOT_SERVING"), false, true},
		{"no health service", status.Error(codes.Unimplemented, "unknown service"), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &webhook.Readiness{Temporal: &healthSays{err: tc.err}, Every: time.Nanosecond}
			if got := !r.Ready(context.Background()); got != tc.first {
				t.Errorf("down after one check = %v; want %v", got, tc.first)
			}
			if got := !r.Ready(context.Background()); got != tc.again {
				t.Errorf("down after two = %v; want %v", got, tc.again)
			}
			r.Answered()
			if !r.Ready(context.Background()) && !tc.again {
				t.Error("down after a signal went through")
			}
		})
	}
}

// TestHandlerKnowsTemporalIsDown: once a failed signal has made the health
// check find Temporal down, deliveries are answered 503 without a Temporal
// call; once the check finds it back, they are signaled again.
func TestHandlerKnowsTemporalIsDown(t *testing.T) {
	temporal := &countingSignaler{}
	h, _ := newHandler(t, temporal)
	h.Ready = &webhook.Readiness{Temporal: temporal, Every: 20 * time.Millisecond}
	verified := fixture(t, "event_verification_session_verified.json")
	deliver := func() int {
		req := httptest.NewRequest(http.MethodPost, webhook.Route, bytes.NewReader(verified))
		req.Header.Set("Stripe-Signature", sign(verified, secret, now))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting for %s", what)
			}
		}
	}
	if code := deliver(); code != http.StatusOK || temporal.calls.Load() != 1 {
		t.Fatalf("up: %d after %d calls; want 200 after 1", code, temporal.calls.Load())
	}
	temporal.down.Store(true)
	if code := deliver(); code != http.StatusServiceUnavailable {
		t.Fatalf("first delivery while down: %d; want 503", code)
	}
	waitFor("the check to find Temporal down", func() bool { return !h.Ready.Ready(context.Background()) })
	calls := temporal.calls.Load()
	for range 5 {
		if code := deliver(); code != http.StatusServiceUnavailable {
			t.Fatalf("delivery while known down: %d; want 503", code)
		}
	}
	if n := temporal.calls.Load() - calls; n != 0 {
		t.Errorf("%d Temporal calls while it was known down; want 0", n)
	}
	temporal.down.Store(false)
	waitFor("Temporal back", func() bool { return deliver() == http.StatusOK })
}

// blockingSignaler holds every signal until its context ends, and says why
// it ended.
type blockingSignaler struct {
	countingSignaler
	started chan struct{}
	ended   chan error
}

func (b *blockingSignaler) SignalWithStartWorkflow(ctx context.Context, _, _ string, _ any, _ client.StartWorkflowOptions, _ any, _ ...any) (client.WorkflowRun, error) {
	b.started <- struct{}{}
	<-ctx.Done()
	b.ended <- ctx.Err()
	return nil, ctx.Err()
}

// TestADeliveryWaitingOnTemporalGivesUpWhenItIsFoundDown: a signal already
// waiting when the health check finds Temporal down is answered 503 then,
// not after the whole signal timeout (an hour here).
func TestADeliveryWaitingOnTemporalGivesUpWhenItIsFoundDown(t *testing.T) {
	temporal := &blockingSignaler{started: make(chan struct{}, 1), ended: make(chan error, 1)}
	h, _ := newHandler(t, temporal)
	h.SignalTimeout = time.Hour
	h.Ready = &webhook.Readiness{Temporal: temporal, Every: time.Hour}
	h.Ready.Ready(context.Background()) // up
	verified := fixture(t, "event_verification_session_verified.json")
	req := httptest.NewRequest(http.MethodPost, webhook.Route, bytes.NewReader(verified))
	req.Header.Set("Stripe-Signature", sign(verified, secret, now))
	w := httptest.NewRecorder()
	served := make(chan struct{})
	go func() { h.ServeHTTP(w, req); close(served) }()
	<-temporal.started
	temporal.down.Store(true)
	h.Ready.Suspect() // the check Run would make
	if err := <-temporal.ended; !errors.Is(err, context.Canceled) {
		t.Errorf("the waiting signal ended with %v; want canceled when Temporal was found down", err)
	}
	<-served
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("%d; want 503", w.Code)
	}
}
