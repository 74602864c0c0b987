// Package desk is the review desk: a small server-rendered page on the admin
// listener, under /desk/, for reviewers who do not use Temporal. A reviewer
// signs in once with the admin token and a name of their own, sees the open
// reviews oldest first, opens one and approves or rejects it through the
// same workflow Update the admin API uses.
//
// Sessions live in memory (a random id in an HttpOnly, SameSite=Strict
// cookie, Secure over https) and expire; every form carries a CSRF token,
// checked on every POST. Pages show what a reviewer needs to decide (reason,
// field names or failure code, attempts, age, deadline) and no personal data.
// html/template escapes everything; no JavaScript is served.
package desk

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/temporal"

	"identityverification/admin"
	"identityverification/store"
	"identityverification/workflows"
)

// Prefix is where the desk is mounted.
const Prefix = "/desk/"

// Cookie names.
const (
	sessionCookie = "desk_session"
	loginCookie   = "desk_login" // the sign-in form's CSRF token, before a session exists
)

// Defaults.
const (
	DefaultSessionTTL = 8 * time.Hour
	loginFormTTL      = 30 * time.Minute
	maxSessions       = 1000
	queueLimit        = 200
)

//go:embed templates/*.html static/desk.css
var assets embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
}).ParseFS(assets, "templates/*.html"))

// Cases is where the desk reads review cases (the store).
type Cases interface {
	DeskOpenCases(ctx context.Context, limit int) ([]store.DeskCase, error)
	DeskCase(ctx context.Context, sessionID string) (store.DeskCase, error)
}

// Temporal is the part of the client the desk uses.
type Temporal = admin.Decider

// Desk serves the review desk. Set the exported fields, then call Handler.
type Desk struct {
	Token    string // the admin token, required
	Cases    Cases
	Temporal Temporal
	// Policy starts a new run when a decision comes for a session whose run
	// has closed, as the admin API does.
	Policy     workflows.Policy
	Log        *slog.Logger
	SessionTTL time.Duration    // 0: DefaultSessionTTL
	Now        func() time.Time // nil: time.Now

	once     sync.Once
	key      []byte // signs the sign-in form's CSRF token
	mu       sync.Mutex
	sessions map[string]*session
}

// session is one signed-in reviewer.
type session struct {
	reviewer string
	csrf     string
	expires  time.Time
	flash    string // shown once on the next page
}

var sessionID = regexp.MustCompile(`^vs_[A-Za-z0-9_]{1,100}$`)

func (d *Desk) init() {
	d.once.Do(func() {
		d.key = randomBytes(32)
		d.sessions = map[string]*session{}
		if d.SessionTTL <= 0 {
			d.SessionTTL = DefaultSessionTTL
		}
		if d.Now == nil {
			d.Now = time.Now
		}
		if d.Log == nil {
			d.Log = slog.Default()
		}
	})
}

// Handler returns the desk's routes, all under Prefix.
func (d *Desk) Handler() http.Handler {
	d.init()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /desk/{$}", d.signedIn(d.queue))
	mux.HandleFunc("GET /desk/login", d.loginForm)
	mux.HandleFunc("POST /desk/login", d.login)
	mux.HandleFunc("POST /desk/logout", d.signedIn(d.logout))
	mux.HandleFunc("GET /desk/reviews/{id}", d.signedIn(d.review))
	mux.HandleFunc("POST /desk/reviews/{id}", d.signedIn(d.decide))
	mux.HandleFunc("GET /desk/desk.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		b, _ := assets.ReadFile("static/desk.css")
		w.Write(b)
	})
	return headers(mux)
}

// headers sets what every desk answer carries: no caching, no framing, no
// scripts, forms only to the desk itself.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

type handler func(w http.ResponseWriter, r *http.Request, s *session)

// signedIn passes the request on with its session; without one, a GET goes
// to the sign-in page and a POST is refused. Every POST must carry the
// session's CSRF token: a form without it is refused with 403.
func (d *Desk) signedIn(next handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, s := d.session(r)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
			if s == nil || !sameToken(r.PostFormValue("csrf"), s.csrf) {
				d.render(w, http.StatusForbidden, "error.html", page{Title: "Refused",
					Error: "This form has expired or did not come from the desk. Reload the page and try again."})
				return
			}
		} else if s == nil {
			http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
			return
		}
		next(w, r, s)
	}
}

// session returns the request's live session, if any.
func (d *Desk) session(r *http.Request) (string, *session) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sessions[c.Value]
	if s == nil {
		return "", nil
	}
	if !d.Now().Before(s.expires) {
		delete(d.sessions, c.Value)
		return "", nil
	}
	return c.Value, s
}

// page is what every template gets.
type page struct {
	Title    string
	Reviewer string // signed in as; empty on the sign-in page
	CSRF     string
	Error    string
	Flash    string
	Cases    []caseView
	Case     *caseView
	Name     string // the reviewer name typed at sign-in, kept on a refusal
}

// caseView is a case as a template shows it.
type caseView struct {
	store.DeskCase
	Age     string
	Overdue bool
	Open    bool
}

func (d *Desk) view(c store.DeskCase) caseView {
	now := d.Now()
	return caseView{DeskCase: c, Age: age(now.Sub(c.OpenedAt)), Open: c.Status == store.ReviewOpen,
		Overdue: c.Status == store.ReviewOpen && !c.DeadlineAt.IsZero() && now.After(c.DeadlineAt)}
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "under a minute"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int(d/time.Hour), "hour")
	default:
		return plural(int(d/(24*time.Hour)), "day")
	}
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

func (d *Desk) render(w http.ResponseWriter, code int, name string, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := pages.ExecuteTemplate(w, name, p); err != nil {
		d.Log.Error("desk: render", "page", name, "error", err)
	}
}

// The sign-in form's CSRF token is not tied to a session (there is none
// yet): it is a signed, expiring random value, set as a cookie and put in the
// form; the POST must bring both, equal, with a valid signature.
func (d *Desk) loginToken() string {
	b := make([]byte, 8+16, 8+16+sha256.Size)
	binary.BigEndian.PutUint64(b, uint64(d.Now().Add(loginFormTTL).Unix()))
	copy(b[8:], randomBytes(16))
	m := hmac.New(sha256.New, d.key)
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(m.Sum(b))
}

func (d *Desk) validLoginToken(tok string) bool {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != 8+16+sha256.Size {
		return false
	}
	m := hmac.New(sha256.New, d.key)
	m.Write(b[:24])
	if !hmac.Equal(m.Sum(nil), b[24:]) {
		return false
	}
	return d.Now().Unix() < int64(binary.BigEndian.Uint64(b))
}

func (d *Desk) loginForm(w http.ResponseWriter, r *http.Request) {
	if _, s := d.session(r); s != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	d.showLogin(w, r, http.StatusOK, "", "")
}

func (d *Desk) showLogin(w http.ResponseWriter, r *http.Request, code int, name, problem string) {
	tok := d.loginToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: Prefix, MaxAge: int(loginFormTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: https(r)})
	d.render(w, code, "login.html", page{Title: "Sign in", CSRF: tok, Error: problem, Name: name})
}

func (d *Desk) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	form := r.PostFormValue("csrf")
	c, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(form, c.Value) || !d.validLoginToken(form) {
		d.render(w, http.StatusForbidden, "error.html", page{Title: "Refused",
			Error: "This sign-in form has expired or did not come from the desk. Reload the page and try again."})
		return
	}
	name := strings.TrimSpace(r.PostFormValue("reviewer"))
	if !sameToken(r.PostFormValue("token"), d.Token) {
		d.Log.Warn("desk: sign-in refused: wrong token")
		d.showLogin(w, r, http.StatusUnauthorized, keepable(name), "The admin token is not right.")
		return
	}
	if !workflows.ValidReviewer(name) {
		d.showLogin(w, r, http.StatusBadRequest, keepable(name),
			"Your name is required: "+workflows.ErrBadReviewer.Error()+".")
		return
	}
	id := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	s := &session{reviewer: name, csrf: base64.RawURLEncoding.EncodeToString(randomBytes(32)),
		expires: d.Now().Add(d.SessionTTL)}
	d.mu.Lock()
	if old, err := r.Cookie(sessionCookie); err == nil {
		delete(d.sessions, old.Value) // signing in again ends the previous session
	}
	now := d.Now()
	for k, v := range d.sessions {
		if !now.Before(v.expires) {
			delete(d.sessions, k)
		}
	}
	full := len(d.sessions) >= maxSessions
	if !full {
		d.sessions[id] = s
	}
	d.mu.Unlock()
	if full {
		d.render(w, http.StatusServiceUnavailable, "error.html", page{Title: "Busy", Error: "Too many reviewers are signed in; try again later."})
		return
	}
	d.Log.Info("desk: reviewer signed in", "reviewer", name)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: https(r)})
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: Prefix, MaxAge: int(d.SessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: https(r)})
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// keepable is the typed name when it may be shown again in the form.
func keepable(name string) string {
	if utf8.ValidString(name) && len(name) <= 4*workflows.MaxReviewerLen {
		return name
	}
	return ""
}

func (d *Desk) logout(w http.ResponseWriter, r *http.Request, _ *session) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		d.mu.Lock()
		delete(d.sessions, c.Value)
		d.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: https(r)})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// takeFlash returns and clears the session's one-time message.
func (d *Desk) takeFlash(s *session) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := s.flash
	s.flash = ""
	return f
}

func (d *Desk) queue(w http.ResponseWriter, r *http.Request, s *session) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p := page{Title: "Open reviews", Reviewer: s.reviewer, CSRF: s.csrf, Flash: d.takeFlash(s)}
	cases, err := d.Cases.DeskOpenCases(ctx, queueLimit)
	if err != nil {
		d.Log.Error("desk: list open reviews", "error", err)
		p.Error = "The database did not answer; reload in a moment."
		d.render(w, http.StatusServiceUnavailable, "queue.html", p)
		return
	}
	for _, c := range cases {
		p.Cases = append(p.Cases, d.view(c))
	}
	d.render(w, http.StatusOK, "queue.html", p)
}

func (d *Desk) review(w http.ResponseWriter, r *http.Request, s *session) {
	d.showReview(w, r, s, http.StatusOK, d.takeFlash(s), "")
}

func (d *Desk) showReview(w http.ResponseWriter, r *http.Request, s *session, code int, flash, problem string) {
	p := page{Title: "Review", Reviewer: s.reviewer, CSRF: s.csrf, Flash: flash, Error: problem}
	id := r.PathValue("id")
	if !sessionID.MatchString(id) {
		p.Error = "There is no such review."
		d.render(w, http.StatusNotFound, "review.html", p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	c, err := d.Cases.DeskCase(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		p.Error = "There is no such review."
		code = http.StatusNotFound
	case err != nil:
		d.Log.Error("desk: read review", "session_id", id, "error", err)
		p.Error = "The database did not answer; reload in a moment."
		code = http.StatusServiceUnavailable
	default:
		v := d.view(c)
		p.Case = &v
		p.Title = "Review of " + c.SessionID
	}
	d.render(w, code, "review.html", p)
}

func (d *Desk) decide(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !sessionID.MatchString(id) {
		d.showReview(w, r, s, http.StatusNotFound, "", "")
		return
	}
	// Every desk session signs in with the one admin token: one principal,
	// whatever name it types (four eyes needs two).
	dec := workflows.ReviewDecision{Decision: r.PostFormValue("decision"), Reviewer: s.reviewer, Subject: workflows.SubjectAdminToken}
	if !utf8.ValidString(dec.Decision) || len(dec.Decision) > 32 || strings.ContainsFunc(dec.Decision, workflows.Unprintable) {
		d.showReview(w, r, s, http.StatusBadRequest, "", workflows.ErrUnknownDecision.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	st, err := admin.Decide(ctx, d.Temporal, d.Policy, id, "", dec)
	var appErr *temporal.ApplicationError
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &appErr) && appErr.Type() == workflows.ErrTypeReviewRefused:
		d.showReview(w, r, s, http.StatusConflict, "", "The decision was refused: "+appErr.Message()+".")
		return
	case errors.As(err, &notFound):
		d.showReview(w, r, s, http.StatusNotFound, "", "No workflow runs for this session.")
		return
	case err != nil:
		d.Log.Error("desk: decide", "session_id", id, "error", err)
		d.showReview(w, r, s, http.StatusServiceUnavailable, "", "Temporal did not answer; try again in a moment.")
		return
	}
	d.Log.Info("desk: review decided", "session_id", id, "decision", dec.Decision, "reviewer", dec.Reviewer)
	d.mu.Lock()
	s.flash = "Decided: " + dec.Decision + ". The session is now " + string(st.Status) + "."
	d.mu.Unlock()
	http.Redirect(w, r, Prefix+"reviews/"+url.PathEscape(id), http.StatusSeeOther)
}

// sameToken compares in constant time; an empty value never matches.
func sameToken(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func https(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("desk: no randomness: " + err.Error())
	}
	return b
}
