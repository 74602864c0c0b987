package retrylink

import (
	"context"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"identityverification/workflows"
)

// SessionURLs fetches a fresh URL for the user to continue a session.
type SessionURLs interface {
	URL(ctx context.Context, sessionID string) (string, error)
}

// State is the part of the workflow's state (workflows.State, same JSON
// names) that decides whether a retry is open.
type State struct {
	Status            workflows.Status     `json:"status"`
	Escalation        workflows.Escalation `json:"escalation"`
	Attempts          int                  `json:"attempts"`
	AlternateAttempts int                  `json:"alternate_attempts,omitempty"`
	// RetryLink is the lane of the newest email sent with a link (nil
	// before workflow v3).
	RetryLink *workflows.RetryLane `json:"retry_link,omitempty"`
}

// ErrNoSession: no workflow owns the session (any more).
var ErrNoSession = errors.New("retrylink: no workflow for the session")

// States asks the workflow where a session stands.
type States interface {
	State(ctx context.Context, sessionID string) (State, error)
}

// TemporalStates answers States with the workflow's `state` query.
type TemporalStates struct{ Client client.Client }

// State queries the session's workflow.
func (t TemporalStates) State(ctx context.Context, sessionID string) (State, error) {
	v, err := t.Client.QueryWorkflow(ctx, workflows.WorkflowID(sessionID), "", workflows.QueryState)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return State{}, ErrNoSession
	}
	if err != nil {
		return State{}, err
	}
	var st State
	return st, v.Get(&st)
}

// Handler serves the retry links in emails (GET /verify/retry/{id}). It
// checks the link's token (403 tampered, 410 expired), limits clicks per
// session (429), asks the workflow whether a retry is open now for the
// attempt the link was sent for (410 for an old or used-up attempt or a
// closed session, 409 while nothing can be retried: processing, in review,
// escalated to another method), and only then fetches a fresh single-use
// session URL from Stripe and redirects the user there (303). The URL is
// never logged or stored.
type Handler struct {
	Links    *Links
	States   States
	Sessions SessionURLs
	Limiter  *Limiter // nil: no limit
	Timeout  time.Duration
	Log      *slog.Logger
	// SessionID reads the session id from the request; nil takes what
	// follows Path.
	SessionID func(*http.Request) string
}

var sessionIDShape = regexp.MustCompile(`^vs_[A-Za-z0-9_]{1,100}$`)

// Pages' messages.
const (
	msgTampered = "This link is not valid. Please use the latest email we sent you."
	msgExpired  = "This link has expired. Please use the latest email we sent you."
	msgOld      = "This link is for an earlier attempt. Please use the latest email we sent you."
	msgClosed   = "There is nothing to continue: this verification is complete or closed."
	msgNotOpen  = "Your verification cannot be continued right now: we are working on it. We will email you if we need anything from you."
	msgLimited  = "This link was opened too often. Please wait a few minutes and try again."
	msgBusy     = "We could not open your verification just now. Please try again in a minute."
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	var id string
	if h.SessionID != nil {
		id = h.SessionID(r)
	} else {
		id = strings.TrimPrefix(r.URL.Path, Path)
	}
	if !sessionIDShape.MatchString(id) {
		page(w, http.StatusForbidden, msgTampered)
		return
	}
	link, err := h.Links.Check(id, r.URL.Query())
	switch {
	case errors.Is(err, ErrTampered):
		h.Log.Warn("retry link refused: not valid", "session_id", id)
		page(w, http.StatusForbidden, msgTampered)
		return
	case errors.Is(err, ErrExpired):
		h.Log.Info("retry link refused: expired", "session_id", id, "expired", link.Expires)
		page(w, http.StatusGone, msgExpired)
		return
	}
	if h.Limiter != nil && !h.Limiter.Allow(r.Context(), id) {
		h.Log.Warn("retry link refused: rate limited", "session_id", id)
		w.Header().Set("Retry-After", "120")
		page(w, http.StatusTooManyRequests, msgLimited)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.Timeout)
	defer cancel()
	st, err := h.States.State(ctx, id)
	if errors.Is(err, ErrNoSession) {
		page(w, http.StatusGone, msgClosed)
		return
	}
	if err != nil {
		h.Log.Warn("retry link: could not ask the workflow", "session_id", id, "error", err)
		page(w, http.StatusServiceUnavailable, msgBusy)
		return
	}
	if code, msg, why := refuse(link, st); code != 0 {
		h.Log.Info("retry link refused", "session_id", id, "reason", why, "status", st.Status,
			"escalation", st.Escalation, "link_attempt", link.Attempt, "link_alternate", link.Alternate)
		page(w, code, msg)
		return
	}
	u, err := h.Sessions.URL(ctx, id)
	if err != nil {
		h.Log.Warn("retry link: could not fetch the session URL", "session_id", id, "error", err)
		page(w, http.StatusServiceUnavailable, msgBusy)
		return
	}
	if u == "" { // Stripe gives a URL only while the session waits for the user
		page(w, http.StatusConflict, msgClosed)
		return
	}
	h.Log.Info("retry link followed", "session_id", id, "link_attempt", link.Attempt)
	http.Redirect(w, r, u, http.StatusSeeOther)
}

// refuse says why a link may not open the session now (code 0: it may).
func refuse(link Link, st State) (code int, msg, why string) {
	switch st.Status {
	case workflows.StatusRequiresInput:
	case workflows.StatusVerified, workflows.StatusCanceled, workflows.StatusRejected,
		workflows.StatusExpired, workflows.StatusRedacted:
		return http.StatusGone, msgClosed, "closed"
	default: // new, created, processing, in_review
		return http.StatusConflict, msgNotOpen, "not_open"
	}
	var alternate bool
	var attempts int
	switch st.Escalation {
	case workflows.EscalationNone, "":
		attempts = st.Attempts
	case workflows.EscalationAlternate:
		alternate, attempts = true, st.AlternateAttempts
	default: // manual review
		return http.StatusConflict, msgNotOpen, "escalated"
	}
	if link.Alternate != alternate {
		return http.StatusConflict, msgNotOpen, "escalated"
	}
	// A link works until a newer email with a link went out: a failure
	// that Stripe delivered late and the workflow counted silently (no
	// email) does not take the user's only link away. Before workflow v3
	// the state does not say, and the link's attempt must be the count.
	if l := st.RetryLink; l != nil && l.Alternate == alternate {
		if link.Attempt < l.Attempt {
			return http.StatusGone, msgOld, "old_attempt"
		}
		return 0, "", ""
	}
	if link.Attempt != attempts {
		return http.StatusGone, msgOld, "old_attempt"
	}
	return 0, "", ""
}

// DonePath is the page Stripe sends a user back to when they finish a
// session (the default RETURN_URL): served by the webhook process, it says
// what happens next and shows nothing of the session.
const DonePath = "/verify/done"

const msgDone = "Thank you. We are checking your documents and will email you as soon as there is news, usually within minutes. You can close this page."

// Done serves DonePath.
func Done(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	page(w, http.StatusOK, msgDone)
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

// Limiter limits clicks per session: Burst clicks per Per.
//
// With a Counter (the store, shared by every replica on the database) it
// counts clicks in fixed windows of Per, a bucket per session: Burst clicks
// per window across all replicas (a burst that straddles two windows may
// get up to twice Burst, the price of a fixed window). Without one, or
// while the Counter fails, it is a token bucket in this process's memory:
// Burst clicks at once, refilled at Burst per Per; behind several replicas
// each then allows its own budget.
type Limiter struct {
	Burst   int
	Per     time.Duration
	Now     func() time.Time
	Counter Counter // nil: in memory only
	Log     *slog.Logger

	mu      sync.Mutex
	buckets map[string]*bucket
	failing bool // the Counter's last call failed (logged once per outage)
}

// Counter counts events in fixed windows shared by every replica
// (store.Store's Hit).
type Counter interface {
	Hit(ctx context.Context, bucket string, window time.Duration, at time.Time) (int, error)
}

// ErrCounterNotReady is what a Counter returns before its database is open
// (a process starting): the click is limited in memory, and no outage is
// logged.
var ErrCounterNotReady = errors.New("retrylink: the counter's database is not open yet")

// counterTimeout bounds counting a click in the database.
const counterTimeout = time.Second

// CounterBucket is the Counter's bucket for a session's clicks.
func CounterBucket(sessionID string) string { return "retrylink:" + sessionID }

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLimiter allows burst clicks per session, refilled at burst per per.
func NewLimiter(burst int, per time.Duration) *Limiter {
	return &Limiter{Burst: burst, Per: per, Now: time.Now}
}

// Allow counts a click of the session's and says whether it is within the
// budget.
func (l *Limiter) Allow(ctx context.Context, sessionID string) bool {
	if l.Counter != nil {
		// A database that hangs must not hang the user's click: past
		// counterTimeout the click is limited in this process's memory.
		hctx, cancel := context.WithTimeout(ctx, counterTimeout)
		n, err := l.Counter.Hit(hctx, CounterBucket(sessionID), l.Per, l.Now())
		cancel()
		if err != nil && ctx.Err() != nil {
			return false // the user went away: nothing to answer, no outage to log
		}
		if errors.Is(err, ErrCounterNotReady) {
			return l.allowHere(sessionID) // starting: nothing has failed
		}
		l.mu.Lock()
		was := l.failing
		l.failing = err != nil
		l.mu.Unlock()
		if err == nil {
			if was && l.Log != nil {
				l.Log.Info("retry-link limit shared through the database again")
			}
			return n <= l.Burst
		}
		if !was && l.Log != nil {
			l.Log.Warn("retry-link limit: the database does not count; each replica limits on its own until it does (logged once per outage)",
				"error", err)
		}
	}
	return l.allowHere(sessionID)
}

// allowHere takes a token from the session's bucket in memory.
func (l *Limiter) allowHere(sessionID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.Now()
	rate := float64(l.Burst) / l.Per.Seconds() // tokens per second
	if l.buckets == nil {
		l.buckets = map[string]*bucket{}
	}
	if len(l.buckets) > 100_000 { // forget full buckets
		for k, b := range l.buckets {
			if b.tokens+now.Sub(b.at).Seconds()*rate >= float64(l.Burst) {
				delete(l.buckets, k)
			}
		}
	}
	b, ok := l.buckets[sessionID]
	if !ok {
		b = &bucket{tokens: float64(l.Burst), at: now}
		l.buckets[sessionID] = b
	}
	b.tokens = min(float64(l.Burst), b.tokens+now.Sub(b.at).Seconds()*rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
