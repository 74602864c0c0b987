package desk

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"identityverification/access"
	"identityverification/store"
	"identityverification/workflows"
)

// providerContext carries the desk's HTTP client to go-oidc and oauth2.
func (d *Desk) providerContext(ctx context.Context) context.Context {
	return oidc.ClientContext(context.WithValue(ctx, oauth2.HTTPClient, d.HTTPClient), d.HTTPClient)
}

// discover finds the provider (discovery document, keys) on first use and
// keeps it once it worked: the desk starts while the provider is down, and
// a sign-in then says so instead of the process failing.
func (d *Desk) discover() (*provider, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.provider != nil {
		return d.provider, nil
	}
	// The provider's key set refreshes in the background with this
	// context: not a request's.
	p, err := oidc.NewProvider(d.providerContext(context.Background()), d.OIDC.Issuer)
	if err != nil {
		return nil, fmt.Errorf("desk: discover the OpenID Provider: %w", err)
	}
	// Ask for the groups scope only where the provider offers it (Dex,
	// Okta); others put groups in the token by configuration and refuse a
	// scope they do not know.
	var disc struct {
		Scopes []string `json:"scopes_supported"`
	}
	p.Claims(&disc)
	scopes := []string{oidc.ScopeOpenID, "email", "profile"}
	if slices.Contains(disc.Scopes, "groups") {
		scopes = append(scopes, "groups")
	}
	d.provider = &provider{
		oauth: oauth2.Config{ClientID: d.OIDC.ClientID, ClientSecret: d.OIDC.ClientSecret,
			RedirectURL: d.OIDC.RedirectURL, Endpoint: p.Endpoint(), Scopes: scopes},
		verifier: p.Verifier(&oidc.Config{ClientID: d.OIDC.ClientID, Now: d.Now}),
	}
	return d.provider, nil
}

// loginPage offers the sign-in (the desk never asks for a password: the
// provider does).
func (d *Desk) loginPage(w http.ResponseWriter, r *http.Request) {
	if s, err := d.session(r); err == nil && s != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	d.render(w, http.StatusOK, "login.html", page{Title: "Sign in"})
}

func (d *Desk) sourceBucket(r *http.Request) string { return "desk:source:" + d.Proxies.Source(r) }
func accountBucket(subject string) string           { return "desk:account:" + subject }

// startLogin sends the browser to the provider: authorization code with
// PKCE (S256), a state bound to this browser by a cookie, and a nonce the
// ID token must carry. What the callback checks is kept in the database.
// Starting is not throttled: it checks no credential, and people behind
// one address must not be kept from signing in by someone else's failures.
func (d *Desk) startLogin(w http.ResponseWriter, r *http.Request) {
	p, err := d.discover()
	if err != nil {
		d.Log.Error("desk: sign-in", "error", err)
		d.render(w, http.StatusServiceUnavailable, "login.html", page{Title: "Sign in",
			Error: "The sign-in provider did not answer; try again in a moment."})
		return
	}
	id := randomString()
	l := store.DeskLogin{IDHash: hashID(id), State: randomString(), Nonce: randomString(),
		Verifier: oauth2.GenerateVerifier(), ExpiresAt: d.Now().Add(loginTTL)}
	if err := d.Store.CreateDeskLogin(r.Context(), l); err != nil {
		d.Log.Error("desk: store the sign-in", "error", err)
		d.render(w, http.StatusServiceUnavailable, "login.html", page{Title: "Sign in", Error: unavailable})
		return
	}
	// Lax, not Strict: the provider's redirect back is a navigation from
	// another site, which a Strict cookie would not come with.
	http.SetCookie(w, d.cookie(loginCookie, id, int(loginTTL/time.Second), http.SameSiteLaxMode))
	http.Redirect(w, r, p.oauth.AuthCodeURL(l.State, oidc.Nonce(l.Nonce), oauth2.S256ChallengeOption(l.Verifier)),
		http.StatusSeeOther)
}

// signInError is a failed callback: what the person is told, and what the
// audit log says (never the provider's raw answer).
type signInError struct {
	status  int
	subject string // when the provider vouched for someone (no allowed group)
	detail  string
	message string
}

// callback takes the provider's answer: checks the state against this
// browser's sign-in, exchanges the code with the PKCE verifier, verifies
// the ID token (signature, issuer, audience, expiry, nonce), maps the
// groups to roles, and starts a session under a new id.
//
// A callback without this desk's sign-in cookie is no sign-in this desk
// started (a stray link, a probe): refused, neither counted nor recorded.
// Any other failure is counted against the source (and the account, once
// the provider named one) and answered as a failure with an audit row; past
// the throttle's limit it is answered 429 with Retry-After, and only the
// first of those is recorded. A sign-in that succeeds is never refused by
// the throttle.
func (d *Desk) callback(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(d.cookieName(loginCookie))
	if err != nil || c.Value == "" {
		d.Log.Debug("desk: a callback without a sign-in under way")
		d.render(w, http.StatusUnauthorized, "login.html", page{Title: "Sign in", Error: failed("").message})
		return
	}
	// The sign-in under way is used once, whatever happens next.
	http.SetCookie(w, d.cookie(loginCookie, "", -1, http.SameSiteLaxMode))
	claims, serr := d.exchange(r, c.Value)
	if serr == nil {
		if serr = d.startSession(w, r, claims); serr == nil {
			return
		}
	}
	rec := store.AuditRecord{Actor: serr.subject, Action: store.AuditSignIn, Source: d.Proxies.Source(r),
		Result: store.AuditDenied, Detail: serr.detail}
	if serr.status == http.StatusServiceUnavailable {
		// The desk's own dependency failed, not the person: not counted.
		rec.Result = store.AuditFailed
		d.appendAudit(r.Context(), rec)
		d.render(w, serr.status, "login.html", page{Title: "Sign in", Error: serr.message})
		return
	}
	var v access.Verdict
	if d.Throttle != nil {
		buckets := []string{d.sourceBucket(r)}
		if serr.subject != "" {
			buckets = append(buckets, accountBucket(serr.subject))
		}
		if v, err = d.Throttle.Fail(r.Context(), buckets...); err != nil {
			d.Log.Error("desk: count a sign-in failure", "error", err)
		}
	}
	switch {
	case !v.Over:
		d.appendAudit(r.Context(), rec)
		d.Log.Warn("desk: sign-in refused", "reason", serr.detail)
		d.render(w, serr.status, "login.html", page{Title: "Sign in", Error: serr.message})
		return
	case v.Started:
		rec.Result, rec.Detail = store.AuditThrottled,
			serr.detail+"; too many failed sign-ins: answered 429, and not recorded, until the window ends"
		d.appendAudit(r.Context(), rec)
		d.Log.Warn("desk: sign-ins throttled", "reason", serr.detail)
	}
	w.Header().Set("Retry-After", access.RetryAfterSeconds(v.Wait))
	d.render(w, http.StatusTooManyRequests, "login.html", page{Title: "Sign in",
		Error: "Too many failed sign-ins; try again in " + age(v.Wait.Round(time.Minute)) + "."})
}

// identity is what the ID token says of the person.
type identity struct {
	subject string // oidc:<sub>
	email   string
	roles   []string
}

func failed(detail string) *signInError {
	return &signInError{status: http.StatusUnauthorized, detail: detail,
		message: "The sign-in did not succeed. Start again from this page."}
}

// exchange checks the callback of the sign-in whose cookie is loginID and
// returns the verified identity.
func (d *Desk) exchange(r *http.Request, loginID string) (identity, *signInError) {
	q := r.URL.Query()
	l, err := d.Store.TakeDeskLogin(r.Context(), hashID(loginID))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return identity{}, failed("unknown or used sign-in")
	case err != nil:
		d.Log.Error("desk: read the sign-in", "error", err)
		return identity{}, &signInError{status: http.StatusServiceUnavailable, detail: "database unavailable",
			message: unavailable}
	case !d.Now().Before(l.ExpiresAt):
		return identity{}, failed("sign-in expired")
	case !access.SameSecret(q.Get("state"), l.State):
		return identity{}, failed("state mismatch")
	case q.Get("error") != "":
		return identity{}, failed("provider error " + clip(q.Get("error"), 64))
	case q.Get("code") == "":
		return identity{}, failed("no code")
	}
	p, err := d.discover()
	if err != nil {
		d.Log.Error("desk: sign-in", "error", err)
		return identity{}, &signInError{status: http.StatusServiceUnavailable, detail: "provider unavailable",
			message: "The sign-in provider did not answer; try again in a moment."}
	}
	ctx, cancel := context.WithTimeout(d.providerContext(r.Context()), 15*time.Second)
	defer cancel()
	tok, err := p.oauth.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(l.Verifier))
	if err != nil {
		d.Log.Warn("desk: code exchange failed", "error", err)
		return identity{}, failed("code exchange refused")
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return identity{}, failed("no ID token")
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		d.Log.Warn("desk: ID token refused", "error", err)
		return identity{}, failed("ID token refused")
	}
	if !access.SameSecret(idt.Nonce, l.Nonce) {
		return identity{}, failed("nonce mismatch")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return identity{}, failed("unreadable claims")
	}
	id := identity{subject: "oidc:" + idt.Subject}
	if len(id.subject) > workflows.MaxSubjectLen || strings.ContainsFunc(id.subject, workflows.Unprintable) {
		return identity{}, failed("subject too long")
	}
	email, _ := claims["email"].(string)
	if verified, ok := claims["email_verified"].(bool); ok && !verified {
		return identity{}, &signInError{status: http.StatusForbidden, subject: id.subject, detail: "email not verified",
			message: "Your provider has not verified your email address, which the desk records with your decisions."}
	}
	if !workflows.ValidReviewer(email) || !strings.Contains(email, "@") {
		return identity{}, &signInError{status: http.StatusForbidden, subject: id.subject, detail: "no email",
			message: "Your provider did not send your email address, which the desk records with your decisions."}
	}
	id.email = email
	id.roles = access.RolesFor(groups(claims[d.OIDC.GroupsClaim]), d.OIDC.ReviewerGroups, d.OIDC.AdminGroups)
	if len(id.roles) == 0 {
		return identity{}, &signInError{status: http.StatusForbidden, subject: id.subject, detail: "in no allowed group",
			message: "You are signed in at your provider, but not in a group that may use the review desk."}
	}
	return id, nil
}

// groups reads a groups claim: a list of strings, or one string.
func groups(v any) []string {
	switch g := v.(type) {
	case string:
		return []string{g}
	case []any:
		var out []string
		for _, x := range g {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// startSession signs the person in under a new session id (an id from
// before the sign-in is never kept), ending the browser's previous session.
func (d *Desk) startSession(w http.ResponseWriter, r *http.Request, id identity) *signInError {
	sid := randomString()
	ds := store.DeskSession{IDHash: hashID(sid), Subject: id.subject, Email: id.email, Roles: id.roles,
		CSRF: randomString(), CreatedAt: d.Now(), ExpiresAt: d.Now().Add(d.SessionTTL)}
	var replaced string
	if old, err := r.Cookie(d.cookieName(sessionCookie)); err == nil && old.Value != "" {
		replaced = hashID(old.Value)
	}
	if err := d.Store.CreateDeskSession(r.Context(), ds, replaced); err != nil {
		d.Log.Error("desk: store the session", "error", err)
		return &signInError{status: http.StatusServiceUnavailable, subject: id.subject, detail: "database unavailable",
			message: unavailable}
	}
	d.appendAudit(r.Context(), store.AuditRecord{Actor: id.subject, ActorName: id.email, Action: store.AuditSignIn,
		Source: d.Proxies.Source(r), Result: store.AuditOK, Detail: strings.Join(id.roles, ",")})
	http.SetCookie(w, d.cookie(sessionCookie, sid, int(d.SessionTTL/time.Second), http.SameSiteStrictMode))
	// A page of the desk's own moves on to the queue: a redirect chain that
	// began at the provider's site would leave the Strict cookie behind.
	d.render(w, http.StatusOK, "signed_in.html", page{Title: "Signed in", Person: id.email})
	return nil
}

func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if workflows.Unprintable(r) {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		return s[:n]
	}
	return s
}
