package webhook_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"identityverification/retrylink"
	"identityverification/webhook"
)

type sessionURLs struct {
	url string
	err error
}

func (s sessionURLs) URL(context.Context, string) (string, error) { return s.url, s.err }

func TestRetryLinks(t *testing.T) {
	links := retrylink.New("https://verify.example.com", "link-secret")
	good := strings.TrimPrefix(links.URL("vs_123"), "https://verify.example.com")
	cases := []struct {
		name     string
		path     string
		sessions sessionURLs
		wantCode int
		wantLoc  string
	}{
		{"a signed link redirects to a fresh Stripe URL", good, sessionURLs{url: "https://verify.stripe.com/start/abc"}, 303, "https://verify.stripe.com/start/abc"},
		{"a session with nothing to continue says so", good, sessionURLs{}, 200, ""},
		{"Stripe unavailable asks to try again", good, sessionURLs{err: errors.New("HTTP 503")}, 503, ""},
		{"a tampered token is refused", strings.Replace(good, "token=", "token=A", 1), sessionURLs{url: "https://x"}, 404, ""},
		{"another session's token is refused", strings.Replace(good, "vs_123", "vs_124", 1), sessionURLs{url: "https://x"}, 404, ""},
		{"a link without a token is refused", "/verify/retry/vs_123", sessionURLs{url: "https://x"}, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			retry := &webhook.RetryHandler{Links: links, Sessions: tc.sessions, Timeout: time.Second,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			h, _ := newHandler(t, &recorder{})
			w := httptest.NewRecorder()
			webhook.NewRouter(h, retry, nil).ServeHTTP(w, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if w.Code != tc.wantCode || w.Header().Get("Location") != tc.wantLoc {
				t.Errorf("%d to %q; want %d to %q", w.Code, w.Header().Get("Location"), tc.wantCode, tc.wantLoc)
			}
			if w.Header().Get("Cache-Control") != "no-store" {
				t.Error("the answer may be cached")
			}
			if strings.Contains(w.Body.String(), "HTTP 503") {
				t.Error("the page echoes an internal error")
			}
		})
	}
}
