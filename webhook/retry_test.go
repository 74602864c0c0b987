package webhook_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"identityverification/retrylink"
	"identityverification/webhook"
	"identityverification/workflows"
)

type sessionURLs struct{ url string }

func (s sessionURLs) URL(context.Context, string) (string, error) { return s.url, nil }

type openStates struct{}

func (openStates) State(context.Context, string) (retrylink.State, error) {
	return retrylink.State{Status: workflows.StatusRequiresInput, Escalation: workflows.EscalationNone, Attempts: 1}, nil
}

// The public router serves retry links with retrylink's handler (its checks
// are tested there) on GET only.
func TestRouterServesRetryLinks(t *testing.T) {
	links := retrylink.New("https://verify.example.com", "link-secret")
	good := strings.TrimPrefix(links.URL("vs_123", false, 1), "https://verify.example.com")
	retry := &retrylink.Handler{Links: links, States: openStates{}, Sessions: sessionURLs{url: "https://verify.stripe.com/start/abc"},
		Timeout: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h, _ := newHandler(t, &recorder{})
	router := webhook.NewRouter(h, retry, nil)
	for _, tc := range []struct {
		method, path string
		wantCode     int
	}{
		{http.MethodGet, good, 303},
		{http.MethodGet, strings.Replace(good, "token=", "token=A", 1), 403},
		{http.MethodPost, good, 405},
	} {
		w := httptest.NewRecorder()
		router.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.wantCode {
			t.Errorf("%s %s: %d; want %d", tc.method, tc.path, w.Code, tc.wantCode)
		}
	}
	w := httptest.NewRecorder()
	webhook.NewRouter(h, nil, nil).ServeHTTP(w, httptest.NewRequest(http.MethodGet, good, nil))
	if w.Code != 404 {
		t.Errorf("without retry links: %d; want 404", w.Code)
	}
}
