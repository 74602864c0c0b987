package webhook_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"identityverification/webhook"
)

// Shutdown lets a request already in flight finish before Serve returns.
func TestServeDrainsInFlightRequestsOnShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		w.WriteHeader(http.StatusOK)
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- webhook.Serve(ctx, ln, slow, 10*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()

	answer := make(chan int, 1)
	go func() {
		resp, err := http.Post("http://"+ln.Addr().String()+"/webhooks/stripe", "application/json", nil)
		if err != nil {
			answer <- 0
			return
		}
		resp.Body.Close()
		answer <- resp.StatusCode
	}()
	<-started
	cancel() // SIGTERM arrives while the request is in flight
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) before the in-flight request finished", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if code := <-answer; code != http.StatusOK {
		t.Errorf("in-flight request got %d; want 200", code)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
