package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"identityverification/access"
	"identityverification/store"
	"identityverification/workflows"
)

// Keys is where API keys are looked up (the store).
type Keys interface {
	APIKey(ctx context.Context, id string) (store.APIKey, error)
}

// Audit is the audit log (the store): appended to, and read by GET
// /admin/audit.
type Audit interface {
	AppendAudit(ctx context.Context, r store.AuditRecord) error
	AuditLog(ctx context.Context, f store.AuditFilter) ([]store.AuditRecord, error)
}

// AdminTokenName is the name the audit log gives ADMIN_TOKEN's principal.
const AdminTokenName = "ADMIN_TOKEN"

type principalKey struct{}

// principal is the authenticated caller of the request.
func principal(ctx context.Context) access.Principal {
	p, _ := ctx.Value(principalKey{}).(access.Principal)
	return p
}

// authenticate comes before routing: without a valid credential every path
// and method gets the same 401, so the answer tells nothing about which
// routes exist. A credential is ADMIN_TOKEN (every scope) or an API key
// (its scopes). The credential is checked first, and a valid one always
// passes: the throttle decides only how a failure is answered, so callers
// that share an address (behind a proxy, a NAT) cannot lock out the one
// that holds a key.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, why, err := a.identify(r)
		if err != nil {
			a.Log.Error("admin: look up an API key", "error", err)
			w.Header().Set("Retry-After", "5")
			reply(w, http.StatusServiceUnavailable, map[string]string{"error": "authentication is unavailable just now; try again shortly"})
			return
		}
		if p.Subject == "" {
			a.refuse(w, r, why)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// refuse answers a failed authentication. Each failure is counted against
// the source; up to the throttle's limit in its window it gets 401 and an
// audit row, past it 429 with Retry-After until the window ends, and only
// the first of those an audit row (the rest are counted in rate_limits, not
// recorded one by one: a flood does not flood the log).
func (a *API) refuse(w http.ResponseWriter, r *http.Request, why refusal) {
	var v access.Verdict
	if a.Throttle != nil {
		var err error
		if v, err = a.Throttle.Fail(r.Context(), "admin:source:"+a.Proxies.Source(r)); err != nil {
			// The counters are in the database: while it fails, a failure
			// is answered 401 and not counted.
			a.Log.Error("admin: count a failed authentication", "error", err)
		}
	}
	ar := r.WithContext(context.WithValue(r.Context(), principalKey{}, access.Principal{Subject: why.actor}))
	switch {
	case !v.Over:
		a.audit(ar, store.AuditAPIAuth, "", store.AuditDenied, why.detail)
	case v.Started:
		a.audit(ar, store.AuditAPIAuth, "", store.AuditThrottled,
			why.detail+"; too many failures from this source: answered 429, and not recorded, until the window ends")
	}
	if v.Over {
		w.Header().Set("Retry-After", access.RetryAfterSeconds(v.Wait))
		reply(w, http.StatusTooManyRequests, map[string]string{"error": "too many failed authentications from this address; retry later"})
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="admin"`)
	reply(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
}

// refusal says why a credential was not accepted, for the audit log.
type refusal struct{ actor, detail string }

// identify finds the request's principal; an empty Subject when there is
// none (with why), an error when a key could not be looked up.
func (a *API) identify(r *http.Request) (access.Principal, refusal, error) {
	token, ok := access.Bearer(r)
	if !ok {
		return access.Principal{}, refusal{detail: "no bearer credential"}, nil
	}
	if access.SameSecret(token, a.Token) {
		return access.Principal{Subject: workflows.SubjectAdminToken, Name: AdminTokenName, Scopes: access.Scopes}, refusal{}, nil
	}
	id, ok := access.KeyID(token)
	if !ok || a.Keys == nil {
		return access.Principal{}, refusal{detail: "unknown credential"}, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	k, err := a.Keys.APIKey(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return access.Principal{}, refusal{detail: "unknown credential"}, nil
	case err != nil:
		return access.Principal{}, refusal{}, err
	case !access.MatchKey(token, k.SecretHash):
		return access.Principal{}, refusal{actor: "key:" + id, detail: "wrong secret"}, nil
	case k.Revoked():
		return access.Principal{}, refusal{actor: "key:" + id, detail: "revoked key"}, nil
	}
	return access.Principal{Subject: "key:" + k.ID, Name: k.Name, Scopes: k.Scopes}, refusal{}, nil
}

// need passes the request on when its principal holds scope, and refuses
// it with 403 (an audit row) when not. The row names no session: the id
// in a refused request's path is the caller's choice, and a session's
// trail shows what was done to it, not what anyone asked (the path is in
// the detail).
func (a *API) need(scope, action string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !principal(r.Context()).Can(scope) {
			a.audit(r, action, "", store.AuditDenied, "lacks scope "+scope+": "+r.Method+" "+clip(r.URL.Path, 120))
			reply(w, http.StatusForbidden, map[string]string{"error": "this credential lacks the scope " + scope})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// audit appends a row for the request's principal. A row that cannot be
// written is logged: the change it records has happened.
func (a *API) audit(r *http.Request, action, sessionID, result, detail string) {
	if a.Audit == nil {
		return
	}
	p := principal(r.Context())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := a.Audit.AppendAudit(ctx, store.AuditRecord{Actor: p.Subject, ActorName: p.Name, Action: action,
		SessionID: sessionID, Source: a.Proxies.Source(r), Result: result, Detail: detail}); err != nil {
		a.Log.Error("admin: append to the audit log", "action", action, "session_id", sessionID, "error", err)
	}
}

// auditRecord is the row a change writes in its own transaction.
func (a *API) auditRecord(r *http.Request, action string) *store.AuditRecord {
	if a.Audit == nil {
		return nil
	}
	p := principal(r.Context())
	return &store.AuditRecord{Actor: p.Subject, ActorName: p.Name, Action: action, Source: a.Proxies.Source(r), Result: store.AuditOK}
}

// clip is s without unprintable characters, cut to at most n bytes (on a
// character boundary).
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if workflows.Unprintable(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}
