package webhook

import (
	"context"
	"html/template"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/gorilla/mux"

	"identityverification/retrylink"
)

// SessionURLs fetches a fresh URL for the user to continue a session.
type SessionURLs interface {
	URL(ctx context.Context, sessionID string) (string, error)
}

// RetryHandler serves the retry links in emails (GET /verify/retry/{id}): it
// checks the link's signature, fetches a fresh single-use session URL from
// Stripe and redirects the user there. The URL is never logged or stored.
type RetryHandler struct {
	Links    *retrylink.Links
	Sessions SessionURLs
	Timeout  time.Duration
	Log      *slog.Logger
}

var sessionIDShape = regexp.MustCompile(`^vs_[A-Za-z0-9_]{1,100}$`)

func (h *RetryHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["session_id"]
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if !sessionIDShape.MatchString(id) || !h.Links.Valid(id, r.URL.Query().Get("token")) {
		page(w, http.StatusNotFound, "This link is not valid. Please use the latest email we sent you.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.Timeout)
	defer cancel()
	u, err := h.Sessions.URL(ctx, id)
	if err != nil {
		h.Log.Warn("retry link: could not fetch the session URL", "session_id", id, "error", err)
		page(w, http.StatusServiceUnavailable, "We could not open your verification just now. Please try again in a minute.")
		return
	}
	if u == "" { // Stripe gives a URL only while the session waits for the user
		page(w, http.StatusOK, "There is nothing to continue: this verification is complete or closed.")
		return
	}
	h.Log.Info("retry link followed", "session_id", id)
	http.Redirect(w, r, u, http.StatusSeeOther)
}

var pageTmpl = template.Must(template.New("").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Identity verification</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto"><p>{{.}}</p></body></html>
`))

func page(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	pageTmpl.Execute(w, msg)
}
