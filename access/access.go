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
	"net/netip"
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

// Proxies are the reverse proxies in front of a listener (TRUSTED_PROXIES):
// addresses and networks whose X-Forwarded-For is believed. Empty, the
// connection's peer is the caller.
type Proxies []netip.Prefix

// ParseProxies reads a comma-separated list of IP addresses and CIDR
// networks (10.0.0.5, 10.0.0.0/24, fd00::/8); empty is none.
func ParseProxies(s string) (Proxies, error) {
	var out Proxies
	for _, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address or a CIDR network (such as 10.0.0.5 or 10.0.0.0/24)", v)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func (p Proxies) trusts(a netip.Addr) bool {
	return slices.ContainsFunc(p, func(n netip.Prefix) bool { return n.Contains(a) })
}

// Source is the caller's address, what the audit log records and the
// throttle counts by. It is the connection's peer, unless the peer is a
// trusted proxy: then the right-most X-Forwarded-For address that is not
// a trusted proxy (each proxy appends the peer it saw, so the entries
// right of it were written by proxies the service trusts, and anything
// left of it by the caller, who may write anything). An entry that is no
// address ends the walk at the proxy that passed it on.
func (p Proxies) Source(r *http.Request) string {
	peer, ok := hopAddr(r.RemoteAddr)
	if !ok {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			return r.RemoteAddr
		}
		return host
	}
	source := peer
	if p.trusts(source) {
		var hops []string
		for _, h := range r.Header.Values("X-Forwarded-For") {
			hops = append(hops, strings.Split(h, ",")...)
		}
		for i := len(hops) - 1; i >= 0; i-- {
			a, ok := hopAddr(hops[i])
			if !ok {
				break
			}
			source = a
			if !p.trusts(a) {
				break
			}
		}
	}
	return source.String()
}

// hopAddr reads an address as a peer or a proxy writes it: 10.0.0.7,
// 10.0.0.7:4711, 2001:db8::1, [2001:db8::1]:4711.
func hopAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.WithZone("").Unmap(), true
}

// Counter counts events in fixed windows (the store).
type Counter interface {
	Hit(ctx context.Context, bucket string, window time.Duration, at time.Time) (int, error)
}

// Throttle defaults: 10 failures in 15 minutes, then 429 for every further
// failure until the window ends.
const (
	DefaultFailureLimit  = 10
	DefaultFailureWindow = 15 * time.Minute
)

// Throttle counts failed authentications per bucket (a source address, an
// account) in fixed windows: the count starts again when the window ends,
// which Retry-After announces. It decides only how a failure is answered
// (429 instead of 401 once a bucket is over its limit): a valid credential
// is never refused, so a crowd behind one address (a proxy, a NAT) cannot
// lock out the callers that hold one.
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

// Verdict is how a counted failure is answered.
type Verdict struct {
	// Over: a bucket has more failures than the limit in its window:
	// answer 429, with Retry-After Wait.
	Over bool
	Wait time.Duration
	// Started: this failure took a bucket over its limit, the one failure
	// of the window worth an audit row saying so (the ones after it are
	// counted, not recorded one by one).
	Started bool
}

// Fail counts a failure in each bucket and says how to answer it.
func (t *Throttle) Fail(ctx context.Context, buckets ...string) (Verdict, error) {
	limit, window, now := t.params()
	var v Verdict
	for _, b := range buckets {
		n, err := t.Counter.Hit(ctx, b, window, now)
		if err != nil {
			return Verdict{}, err
		}
		if n > limit {
			v.Over, v.Wait = true, retryAfter(now, window)
			v.Started = v.Started || n == limit+1
		}
	}
	return v, nil
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
