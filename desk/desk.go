// Package desk is the review desk: a small server-rendered site on the admin
// listener, under /desk/, for reviewers who do not use Temporal. People sign
// in with the company's OpenID Provider (authorization code with PKCE);
// their groups give them roles: a reviewer sees the open reviews oldest
// first, opens one (with what is needed to decide it: Stripe's report, a
// Dashboard link, for a mismatch the expected beside the verified values)
// and approves or rejects it through the same workflow Update the admin API
// uses; an admin also sees the admin pages (API keys, the audit log).
//
// Every decision carries the provider's verified subject and email, never a
// typed name. Sessions live in the database (the SHA-256 of a random id in
// an HttpOnly, SameSite=Strict cookie; Secure and __Host- when
// OIDC_REDIRECT_URL is https), so any replica serves any request, signing
// out ends the session everywhere and a session unused for an hour ends on
// every replica; every form carries a CSRF token. Sign-in failures are
// throttled per source and per account. Every sign-in, view of a
// reviewer's details, decision and admin page is an audit row.
// html/template escapes everything; no JavaScript is served.
package desk

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.temporal.io/sdk/converter"
	"golang.org/x/oauth2"

	"identityverification/access"
	"identityverification/admin"
	"identityverification/config"
	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/workflows"
)

// Prefix is where the desk is mounted.
const Prefix = "/desk/"

// Cookie names (prefixed __Host- when the desk is served over https).
const (
	sessionCookie = "desk_session"
	loginCookie   = "desk_login" // the sign-in under way, before a session exists
)

// Defaults.
const (
	DefaultSessionTTL  = 8 * time.Hour
	DefaultIdleTimeout = time.Hour
	// touchEvery: a session's last use is written at most this often (not
	// on every page), so the idle timeout is this precise.
	touchEvery     = time.Minute
	loginTTL       = 10 * time.Minute
	queueLimit     = 200
	auditPageLimit = 200
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
	"whenSec": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"join":    func(s []string) string { return strings.Join(s, ", ") },
}).ParseFS(assets, "templates/*.html"))

// Store is what the desk keeps and reads in the database.
type Store interface {
	DeskOpenCases(ctx context.Context, limit int) ([]store.DeskCase, error)
	DeskCase(ctx context.Context, sessionID string) (store.DeskCase, error)
	Contact(ctx context.Context, sessionID string) (store.Contact, error)

	CreateDeskLogin(ctx context.Context, l store.DeskLogin) error
	TakeDeskLogin(ctx context.Context, idHash string) (store.DeskLogin, error)
	CreateDeskSession(ctx context.Context, s store.DeskSession, replaced string) error
	DeskSessionByHash(ctx context.Context, idHash string) (store.DeskSession, error)
	TouchDeskSession(ctx context.Context, idHash string, at time.Time) error
	DeleteDeskSession(ctx context.Context, idHash string) error
	SetDeskFlash(ctx context.Context, idHash, flash string) error
	TakeDeskFlash(ctx context.Context, idHash string) (string, error)

	AppendAudit(ctx context.Context, r store.AuditRecord) error
	AuditLog(ctx context.Context, f store.AuditFilter) ([]store.AuditRecord, error)
	APIKeys(ctx context.Context) ([]store.APIKey, error)
	VouchDecision(ctx context.Context, v store.DecisionVoucher) error
	Review(ctx context.Context, sessionID string) (store.ReviewCase, error)
}

// Temporal is the part of the client the desk uses: decisions, and the
// state query for a review's approvals.
type Temporal interface {
	admin.Decider
	QueryWorkflow(ctx context.Context, workflowID, runID, queryType string, args ...any) (converter.EncodedValue, error)
}

// Stripe reads what a reviewer sees of a session at Stripe.
type Stripe interface {
	ReviewView(ctx context.Context, sessionID string) (stripeapi.ReviewView, error)
}

// Desk serves the review desk. Set the exported fields, then call Handler.
type Desk struct {
	Store    Store
	Temporal Temporal
	// Policy starts a new run when a decision comes for a session whose run
	// has closed, as the admin API does.
	Policy workflows.Policy
	// OIDC is the provider the desk signs people in with.
	OIDC config.OIDC
	// Stripe and StripeKey serve the reviewer's view (the key's mode picks
	// the Dashboard's test or live pages); a nil Stripe shows none.
	Stripe    Stripe
	StripeKey string
	// Throttle counts sign-in failures per source and per account (nil:
	// none counted); Proxies are the trusted proxies in front of the
	// listener (TRUSTED_PROXIES), whose X-Forwarded-For names the source.
	Throttle *access.Throttle
	Proxies  access.Proxies
	// HTTPClient calls the provider (nil: http.DefaultClient).
	HTTPClient *http.Client
	Log        *slog.Logger
	SessionTTL time.Duration // 0: DefaultSessionTTL
	// IdleTimeout ends a session unused for this long (0:
	// DefaultIdleTimeout).
	IdleTimeout time.Duration
	Now         func() time.Time // nil: time.Now

	once     sync.Once
	secure   bool // OIDC_REDIRECT_URL is https: Secure, __Host- cookies
	mu       sync.Mutex
	provider *provider // discovered on first use, kept once it worked
}

var sessionID = regexp.MustCompile(`^vs_[A-Za-z0-9_]{1,100}$`)

func (d *Desk) init() {
	d.once.Do(func() {
		if d.SessionTTL <= 0 {
			d.SessionTTL = DefaultSessionTTL
		}
		if d.IdleTimeout <= 0 {
			d.IdleTimeout = DefaultIdleTimeout
		}
		// Whether the browser reaches the desk over https is what the
		// provider sends it back to, not what a request's headers claim
		// (X-Forwarded-Proto is the client's to write where no proxy
		// overwrites it).
		if u, err := url.Parse(d.OIDC.RedirectURL); err == nil && u.Scheme == "https" {
			d.secure = true
		}
		if d.Now == nil {
			d.Now = time.Now
		}
		if d.Log == nil {
			d.Log = slog.Default()
		}
		if d.HTTPClient == nil {
			d.HTTPClient = &http.Client{Timeout: 15 * time.Second}
		}
	})
}

// Handler returns the desk's routes, all under Prefix.
func (d *Desk) Handler() http.Handler {
	d.init()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /desk/{$}", d.signedIn(access.RoleReviewer, d.queue))
	mux.HandleFunc("GET /desk/login", d.loginPage)
	mux.HandleFunc("GET /desk/login/start", d.startLogin)
	mux.HandleFunc("GET "+config.DeskCallbackPath, d.callback)
	mux.HandleFunc("POST /desk/logout", d.signedIn("", d.logout))
	mux.HandleFunc("GET /desk/reviews/{id}", d.signedIn(access.RoleReviewer, d.review))
	mux.HandleFunc("POST /desk/reviews/{id}", d.signedIn(access.RoleReviewer, d.decide))
	mux.HandleFunc("GET /desk/admin/keys", d.signedIn(access.RoleAdmin, d.keysPage))
	mux.HandleFunc("GET /desk/admin/audit", d.signedIn(access.RoleAdmin, d.auditPage))
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

// session is a signed-in person, as the request's cookie names them.
type session struct {
	store.DeskSession
}

func (s *session) has(role string) bool { return role == "" || slices.Contains(s.Roles, role) }

type handler func(w http.ResponseWriter, r *http.Request, s *session)

// signedIn passes the request on with its session when the person holds
// role. Without a session, a GET goes to the sign-in page and a POST is
// refused; without the role, 403 (an audit row). Every POST must carry the
// session's CSRF token: a form without it is refused with 403.
func (d *Desk) signedIn(role string, next handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := d.session(r)
		if err != nil {
			// Nobody is known yet: say nothing of what failed.
			d.Log.Error("desk: read session", "error", err)
			d.render(w, http.StatusServiceUnavailable, "error.html", page{Title: "Unavailable", Error: unavailable})
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
			if s == nil || !access.SameSecret(r.PostFormValue("csrf"), s.CSRF) {
				d.render(w, http.StatusForbidden, "error.html", page{Title: "Refused",
					Error: "This form has expired or did not come from the desk. Reload the page and try again."})
				return
			}
		} else if s == nil {
			http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
			return
		}
		if !s.has(role) {
			d.audit(r, s, store.AuditDeskAdmin, "", store.AuditDenied, r.URL.Path)
			d.render(w, http.StatusForbidden, "error.html", page{Title: "Not allowed", Person: s.Email, CSRF: s.CSRF,
				Admin: s.has(access.RoleAdmin), Error: "This page is for the desk's admins."})
			return
		}
		next(w, r, s)
	}
}

// unavailable is what a person not signed in is told when the desk cannot
// serve them: nothing of what failed.
const unavailable = "Sign-in is unavailable just now; try again shortly."

// session returns the request's live session, or nil. A session past its
// expiry, or unused for IdleTimeout, ends (on every replica: its last use
// is in the database).
func (d *Desk) session(r *http.Request) (*session, error) {
	c, err := r.Cookie(d.cookieName(sessionCookie))
	if err != nil || c.Value == "" {
		return nil, nil
	}
	ds, err := d.Store.DeskSessionByHash(r.Context(), hashID(c.Value))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := d.Now()
	if !now.Before(ds.ExpiresAt) || now.Sub(ds.LastUsedAt) >= d.IdleTimeout {
		if err := d.Store.DeleteDeskSession(r.Context(), ds.IDHash); err != nil {
			d.Log.Error("desk: delete an ended session", "error", err)
		}
		return nil, nil
	}
	if now.Sub(ds.LastUsedAt) >= touchEvery {
		if err := d.Store.TouchDeskSession(r.Context(), ds.IDHash, now); err != nil {
			return nil, err
		}
	}
	return &session{ds}, nil
}

// page is what every template gets.
type page struct {
	Title  string
	Person string // signed in as (the verified email); empty on the sign-in page
	Admin  bool   // the person may open the admin pages
	CSRF   string
	Error  string
	Flash  string
	Cases  []caseView
	Case   *caseView
	// The review page: approvals so far, what the reviewer sees of the
	// session at Stripe, and its audit trail.
	Approvals string
	Reviewer  *reviewerView
	Trail     []store.AuditRecord // newest first
	TrailCut  bool                // the trail has older rows than shown
	// The admin pages: the API keys, and a page of the audit log (newest
	// first; OlderBefore, when set, is the id the next page starts
	// before).
	Keys        []store.APIKey
	Audit       []store.AuditRecord
	OlderBefore string
}

func (d *Desk) page(s *session, title string) page {
	return page{Title: title, Person: s.Email, Admin: s.has(access.RoleAdmin), CSRF: s.CSRF}
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

// audit appends a row for the person (nil: nobody signed in). A row that
// cannot be written is logged.
func (d *Desk) audit(r *http.Request, s *session, action, sessionID, result, detail string) {
	rec := store.AuditRecord{Action: action, SessionID: sessionID, Source: d.Proxies.Source(r), Result: result, Detail: detail}
	if s != nil {
		rec.Actor, rec.ActorName = s.Subject, s.Email
	}
	d.appendAudit(r.Context(), rec)
}

func (d *Desk) appendAudit(ctx context.Context, rec store.AuditRecord) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := d.Store.AppendAudit(ctx, rec); err != nil {
		d.Log.Error("desk: append to the audit log", "action", rec.Action, "session_id", rec.SessionID, "error", err)
	}
}

func (d *Desk) logout(w http.ResponseWriter, r *http.Request, s *session) {
	if err := d.Store.DeleteDeskSession(r.Context(), s.IDHash); err != nil {
		d.Log.Error("desk: sign out", "error", err)
		d.render(w, http.StatusServiceUnavailable, "error.html", page{Title: "Unavailable",
			Error: "The database did not answer, so you are still signed in; try again in a moment."})
		return
	}
	d.audit(r, s, store.AuditSignOut, "", store.AuditOK, "")
	http.SetCookie(w, d.cookie(sessionCookie, "", -1, http.SameSiteStrictMode))
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// hashID is what the database keeps of a cookie's random id.
func hashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// cookie is one of the desk's cookies. Served over https (an https
// OIDC_REDIRECT_URL) it is Secure and named __Host-<name> with Path=/: the
// browser then keeps it only from https, for this host alone, so no
// sibling domain or plain-http page can set or read it. Over http (a desk
// on 127.0.0.1 in development) it is <name> on the desk's path.
func (d *Desk) cookie(name, value string, maxAge int, sameSite http.SameSite) *http.Cookie {
	c := &http.Cookie{Name: d.cookieName(name), Value: value, Path: Prefix, MaxAge: maxAge, HttpOnly: true, SameSite: sameSite}
	if d.secure {
		c.Path, c.Secure = "/", true
	}
	return c
}

func (d *Desk) cookieName(name string) string {
	if d.secure {
		return "__Host-" + name
	}
	return name
}

func randomString() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("desk: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// provider is the discovered OpenID Provider.
type provider struct {
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
}
