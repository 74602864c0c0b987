// Package retrylink makes and checks the retry links in emails and serves
// them. A link points at this service, not at Stripe: a Stripe session URL is
// single-use and must never be stored or emailed, so the service fetches a
// fresh one when the user clicks.
//
// A link stays in its lane: its token (an HMAC with RETRY_LINK_SECRET) binds
// the session, the attempt the email was sent for (the method, first or
// alternate, and how many attempts of it had failed) and an expiry
// (RETRY_LINK_TTL). Nobody can obtain a session's URL by guessing ids, and a
// forwarded or leaked email stops working when it expires or when the
// session moves on to another attempt.
package retrylink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Path is the route prefix the links use: Path + session id.
const Path = "/verify/retry/"

// DefaultTTL is how long a link works when RETRY_LINK_TTL is not set.
const DefaultTTL = 7 * 24 * time.Hour

// Link is what a valid token vouches for.
type Link struct {
	SessionID string
	// Alternate says the link was sent for the alternate method; Attempt is
	// how many attempts of that method had failed when it was sent.
	Alternate bool
	Attempt   int
	Expires   time.Time
}

// Errors Check returns.
var (
	ErrTampered = errors.New("retrylink: the link is not valid")
	ErrExpired  = errors.New("retrylink: the link has expired")
)

// Links signs and checks retry links.
type Links struct {
	base   string
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// New returns links under baseURL (e.g. https://verify.example.com) signed
// with secret, valid for DefaultTTL.
func New(baseURL, secret string) *Links {
	return &Links{base: strings.TrimRight(baseURL, "/"), secret: []byte(secret), ttl: DefaultTTL, now: time.Now}
}

// WithTTL sets how long new links work (ttl <= 0 keeps the current one) and
// returns l.
func (l *Links) WithTTL(ttl time.Duration) *Links {
	if ttl > 0 {
		l.ttl = ttl
	}
	return l
}

// WithClock sets the clock (tests) and returns l.
func (l *Links) WithClock(now func() time.Time) *Links {
	l.now = now
	return l
}

// URL is the retry link for a session's attempt: alternate says which
// method, attempt how many of its attempts had failed. It expires after the
// TTL.
func (l *Links) URL(sessionID string, alternate bool, attempt int) string {
	exp := l.now().Add(l.ttl).Unix()
	m := method(alternate)
	q := url.Values{"m": {m}, "n": {strconv.Itoa(attempt)}, "exp": {strconv.FormatInt(exp, 10)},
		"token": {l.token(sessionID, m, attempt, exp)}}
	return l.base + Path + url.PathEscape(sessionID) + "?" + q.Encode()
}

// Check reads a link's query for sessionID: ErrTampered when the token does
// not match what the link says, ErrExpired when it is past its expiry.
func (l *Links) Check(sessionID string, q url.Values) (Link, error) {
	m, token := q.Get("m"), q.Get("token")
	if m == "" && token != "" && hmac.Equal([]byte(l.legacyToken(sessionID)), []byte(token)) {
		return Link{SessionID: sessionID}, ErrExpired // from an email sent before links expired
	}
	n, err1 := strconv.Atoi(q.Get("n"))
	exp, err2 := strconv.ParseInt(q.Get("exp"), 10, 64)
	if err1 != nil || err2 != nil || n < 0 || (m != "p" && m != "a") || token == "" ||
		!hmac.Equal([]byte(l.token(sessionID, m, n, exp)), []byte(token)) {
		return Link{}, ErrTampered
	}
	link := Link{SessionID: sessionID, Alternate: m == "a", Attempt: n, Expires: time.Unix(exp, 0).UTC()}
	if !l.now().Before(link.Expires) {
		return link, ErrExpired
	}
	return link, nil
}

func method(alternate bool) string {
	if alternate {
		return "a"
	}
	return "p"
}

func (l *Links) token(sessionID, m string, attempt int, exp int64) string {
	h := hmac.New(sha256.New, l.secret)
	fmt.Fprintf(h, "retry-v2\x00%s\x00%s\x00%d\x00%d", sessionID, m, attempt, exp)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// legacyToken is the token of the links sent before they were bound to an
// attempt and an expiry: it is recognised only to answer that the link has
// expired, not that it was tampered with.
func (l *Links) legacyToken(sessionID string) string {
	m := hmac.New(sha256.New, l.secret)
	m.Write([]byte("retry:" + sessionID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}
