package loadgen_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"identityverification/loadgen"
)

// webhook is a stand-in that answers every delivery with a JSON body, as
// the real one does, and counts the connections the load opened.
func webhook(t *testing.T, answer func(n int64) int) (*httptest.Server, *atomic.Int64) {
	var conns, requests atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("Stripe-Signature") == "" {
			t.Error("a delivery without a signature")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(answer(requests.Add(1)))
		w.Write([]byte(`{"status":"accepted"}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func TestARunBalancesAndReusesItsConnections(t *testing.T) {
	srv, conns := webhook(t, func(int64) int { return http.StatusOK })
	res, err := loadgen.Run(context.Background(), loadgen.Config{WebhookURL: srv.URL, Secret: "whsec_x", Sessions: 200, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Void != "" || res.Accepted != res.Sent || res.Sent < 200 {
		t.Errorf("result %+v; want every event accepted", res)
	}
	if n := conns.Load(); n > 8 {
		t.Errorf("%d connections for %d requests from 4 senders; want them reused", n, res.Sent)
	}
}

func TestARunWithAFailedDeliveryIsVoid(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
		void bool
	}{
		{"a 503 voids the run", http.StatusServiceUnavailable, true},
		{"a 400 is a refusal, counted", http.StatusBadRequest, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := webhook(t, func(n int64) int {
				if n == 7 {
					return tc.code
				}
				return http.StatusOK
			})
			res, err := loadgen.Run(context.Background(), loadgen.Config{WebhookURL: srv.URL, Secret: "whsec_x", Sessions: 20, Rate: 500})
			if err != nil {
				t.Fatal(err)
			}
			if (res.Void != "") != tc.void || res.Accepted+res.Refused+res.Failed != res.Sent {
				t.Errorf("result %+v; want void %v", res, tc.void)
			}
			var report strings.Builder
			loadgen.Report(&report, res, nil, nil)
			if tc.void && !strings.Contains(report.String(), "VOID") {
				t.Errorf("report does not say the run is void:\n%s", report.String())
			}
		})
	}
}

func TestARunLongerThanItsSignaturesIsRefused(t *testing.T) {
	_, err := loadgen.Run(context.Background(), loadgen.Config{WebhookURL: "http://127.0.0.1:1", Secret: "whsec_x",
		Sessions: 1000, Rate: 1})
	if err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("err = %v; want the run refused", err)
	}
}

// A storm: every event three times, each copy signed afresh, in a random
// order; every session registered before its first event.
func TestAStormSendsEveryEventThriceSignedAfresh(t *testing.T) {
	var mu sync.Mutex
	sigs := map[string]int{}
	bodies := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		sigs[r.Header.Get("Stripe-Signature")]++
		bodies[string(b)]++
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	var registered atomic.Int64
	res, err := loadgen.Run(context.Background(), loadgen.Config{WebhookURL: srv.URL, Secret: "whsec_x", Sessions: 30,
		Concurrency: 4, Copies: 3, Shuffle: true,
		Register: func(context.Context, string) error { registered.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for _, s := range res.Plan {
		events += len(s.EventIDs)
	}
	if res.Void != "" || res.Accepted != res.Sent || registered.Load() != 30 || len(res.Plan) != 30 {
		t.Fatalf("result %+v, %d registered", res, registered.Load())
	}
	if len(sigs) != res.Sent {
		t.Errorf("%d distinct signatures for %d deliveries; want each signed afresh", len(sigs), res.Sent)
	}
	for b, n := range bodies {
		if n%3 != 0 {
			t.Errorf("a body delivered %d times; want a multiple of 3: %.80s", n, b)
		}
	}
	if distinct := len(bodies); distinct != events {
		t.Errorf("%d deliveries of %d bodies for %d event ids", res.Sent, distinct, events)
	}
}

// With Redeliver, a delivery answered 503 is sent again until accepted, as
// Stripe retries; the run balances and says how many were resent.
func TestRedeliveryResendsUntilAccepted(t *testing.T) {
	srv, _ := webhook(t, func(n int64) int {
		if n <= 10 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	res, err := loadgen.Run(context.Background(), loadgen.Config{WebhookURL: srv.URL, Secret: "whsec_x", Sessions: 10,
		Concurrency: 4, Redeliver: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Void != "" || res.Accepted != res.Sent || res.Failed != 0 || res.Redelivered != 10 || res.Errors["503"] != 10 {
		t.Errorf("result %+v; want 10 redelivered, all accepted", res)
	}
}
