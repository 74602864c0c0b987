// Package retrylink makes and checks the retry links in emails. A link points
// at this service, not at Stripe: a Stripe session URL is single-use and must
// never be stored or emailed, so the service fetches a fresh one when the
// user clicks. The link carries an HMAC of the session id, so nobody can
// obtain a session's URL by guessing ids.
package retrylink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
)

// Path is the route prefix the links use: Path + session id.
const Path = "/verify/retry/"

// Links signs and checks retry links.
type Links struct {
	base   string
	secret []byte
}

// New returns links under baseURL (e.g. https://verify.example.com) signed
// with secret.
func New(baseURL, secret string) *Links {
	return &Links{base: strings.TrimRight(baseURL, "/"), secret: []byte(secret)}
}

// URL is the retry link for a session.
func (l *Links) URL(sessionID string) string {
	return l.base + Path + url.PathEscape(sessionID) + "?token=" + l.token(sessionID)
}

// Valid reports whether token was made for sessionID.
func (l *Links) Valid(sessionID, token string) bool {
	return hmac.Equal([]byte(l.token(sessionID)), []byte(token))
}

func (l *Links) token(sessionID string) string {
	m := hmac.New(sha256.New, l.secret)
	m.Write([]byte("retry:" + sessionID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}
