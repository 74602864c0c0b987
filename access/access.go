// Package access says who may do what: the scopes of the admin API's keys,
// the review desk's roles, the API keys themselves (made, parsed and
// checked; stored hashed), and the throttle on failed authentications,
// counted in the database so that every replica sees the same counts.
package access

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Scopes of the admin API's keys, one per kind of call.
const (
	ScopeSessionsCreate   = "sessions:create"   // POST /admin/sessions
	ScopeSessionsRegister = "sessions:register" // PUT /admin/sessions/{id}
	ScopeSessionsRead     = "sessions:read"     // GET /admin/sessions/{id}, GET /admin/reviews
	ScopeReviewsDecide    = "reviews:decide"    // POST /admin/sessions/{id}/review
	ScopeAuditRead        = "audit:read"        // GET /admin/audit
)

// Scopes lists every scope; ADMIN_TOKEN has them all.
var Scopes = []string{ScopeSessionsCreate, ScopeSessionsRegister, ScopeSessionsRead, ScopeReviewsDecide, ScopeAuditRead}

// ParseScopes reads a comma-separated list of scopes: each known, none
// twice, at least one.
func ParseScopes(s string) ([]string, error) {
	var out []string
	for _, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if !slices.Contains(Scopes, v) {
			return nil, fmt.Errorf("unknown scope %q: want %s", v, strings.Join(Scopes, ", "))
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("at least one scope is needed: %s", strings.Join(Scopes, ", "))
	}
	return out, nil
}

// Principal is who a request comes from, once authenticated.
type Principal struct {
	// Subject is what decisions and the audit log record: "oidc:<sub>"
	// (a person at the desk), "key:<id>" (an API key), "token:admin".
	Subject string
	// Name is the person's verified email, or the key's name.
	Name   string
	Scopes []string
}

// Can reports whether the principal holds scope.
func (p Principal) Can(scope string) bool { return slices.Contains(p.Scopes, scope) }

// Roles of people at the review desk.
const (
	RoleReviewer = "reviewer" // the queue and review pages; decides
	RoleAdmin    = "admin"    // also the desk's admin pages (API keys, audit log)
)

// RolesFor maps the groups the provider put in the ID token to roles: a
// member of an admin group is an admin and a reviewer; a member of a
// reviewer group a reviewer; anyone else has none (and cannot sign in).
func RolesFor(groups, reviewerGroups, adminGroups []string) []string {
	in := func(allowed []string) bool {
		return slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(allowed, g) })
	}
	switch {
	case in(adminGroups):
		return []string{RoleReviewer, RoleAdmin}
	case in(reviewerGroups):
		return []string{RoleReviewer}
	}
	return nil
}

// KeyPrefix starts every API key, so a leaked one is recognisable (and
// secret scanners can be taught it).
const KeyPrefix = "ivk_"

// Key is a new API key: the secret is shown once and never stored; the
// database keeps the id and the hash.
type Key struct {
	ID     string // also in the secret, so the key is found without a scan
	Secret string // ivk_<id>_<43 characters of base64url: 256 random bits>
	Hash   string // hex SHA-256 of Secret
}

// NewKey makes a key from 256 random bits. A SHA-256 of such a secret
// cannot be reversed by guessing, so no slow hash is needed.
func NewKey() (Key, error) {
	id, secret := make([]byte, 6), make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return Key{}, fmt.Errorf("access: random: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return Key{}, fmt.Errorf("access: random: %w", err)
	}
	k := Key{ID: hex.EncodeToString(id)}
	k.Secret = KeyPrefix + k.ID + "_" + base64.RawURLEncoding.EncodeToString(secret)
	k.Hash = HashKey(k.Secret)
	return k, nil
}

// KeyID is the id part of a presented key; false when it is not shaped
// like one.
func KeyID(secret string) (string, bool) {
	rest, ok := strings.CutPrefix(secret, KeyPrefix)
	if !ok {
		return "", false
	}
	id, tail, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 12 || len(tail) != 43 {
		return "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", false
	}
	return id, true
}

// HashKey is what the database keeps of a key.
func HashKey(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// MatchKey compares a presented key with a stored hash in constant time.
func MatchKey(secret, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(HashKey(secret)), []byte(hash)) == 1
}

// Bearer returns the token of an "Authorization: Bearer ..." header, the
// scheme matched without regard to case (RFC 9110); false without one.
func Bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return "", false
	}
	return token, true
}

// SameSecret compares in constant time; an empty value never matches.
func SameSecret(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// Source is the caller's address, as the connection shows it (the admin
// listener is not behind a proxy that would hide it).
func Source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Counter counts events in fixed windows (the store).
type Counter interface {
	Hit(ctx context.Context, bucket string, window time.Duration, at time.Time) (int, error)
	Hits(ctx context.Context, bucket string, window time.Duration, at time.Time) (int, error)
}

// Throttle defaults: 10 failures in 15 minutes, then no more tries until
// the window ends.
const (
	DefaultFailureLimit  = 10
	DefaultFailureWindow = 15 * time.Minute
)

// Throttle refuses more tries once a bucket (a source address, an account)
// has Limit failures in the current window. Windows are fixed: the count
// starts again when the window ends, which Retry-After announces.
type Throttle struct {
	Counter Counter
	Limit   int           // 0: DefaultFailureLimit
	Window  time.Duration // 0: DefaultFailureWindow
	Now     func() time.Time
}

func (t *Throttle) params() (int, time.Duration, time.Time) {
	limit, window, now := t.Limit, t.Window, time.Now()
	if limit <= 0 {
		limit = DefaultFailureLimit
	}
	if window <= 0 {
		window = DefaultFailureWindow
	}
	if t.Now != nil {
		now = t.Now()
	}
	return limit, window, now
}

// Blocked reports whether any bucket is at its limit, and how long until
// its window ends.
func (t *Throttle) Blocked(ctx context.Context, buckets ...string) (time.Duration, bool, error) {
	limit, window, now := t.params()
	for _, b := range buckets {
		n, err := t.Counter.Hits(ctx, b, window, now)
		if err != nil {
			return 0, false, err
		}
		if n >= limit {
			return retryAfter(now, window), true, nil
		}
	}
	return 0, false, nil
}

// Fail counts a failure in each bucket.
func (t *Throttle) Fail(ctx context.Context, buckets ...string) error {
	_, window, now := t.params()
	for _, b := range buckets {
		if _, err := t.Counter.Hit(ctx, b, window, now); err != nil {
			return err
		}
	}
	return nil
}

// RetryAfterSeconds formats a wait for the Retry-After header: whole
// seconds, at least 1.
func RetryAfterSeconds(d time.Duration) string {
	return fmt.Sprint(max(1, int((d+time.Second-1)/time.Second)))
}

func retryAfter(now time.Time, window time.Duration) time.Duration {
	start := now.UTC().Truncate(window)
	return start.Add(window).Sub(now)
}
