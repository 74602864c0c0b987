package devstack

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// DexUser is a static user of the dev stack's OpenID Provider: a person with
// a password and the groups the ID token carries.
type DexUser struct {
	Email    string
	Password string
	Name     string
	// ID is the user's id at the provider; Dex makes the token's sub from it
	// and the connector ("local").
	ID     string
	Groups []string
}

// DevUsers are the people make dev signs in with: two reviewers (four eyes
// needs two) and an admin; "nobody" is in no group the desk allows.
var DevUsers = []DexUser{
	{Email: "ann@example.com", Password: "ann-password", Name: "Ann Reviewer", ID: "ann", Groups: []string{"reviewers"}},
	{Email: "bob@example.com", Password: "bob-password", Name: "Bob Reviewer", ID: "bob", Groups: []string{"reviewers"}},
	{Email: "ada@example.com", Password: "ada-password", Name: "Ada Admin", ID: "ada", Groups: []string{"reviewers", "admins"}},
	{Email: "nobody@example.com", Password: "nobody-password", Name: "No Group", ID: "nobody", Groups: []string{"contractors"}},
}

// Dex is a running Dex, the dev stack's OpenID Provider: its own login page
// with static users, discovery, JWKS, authorization code with PKCE.
type Dex struct {
	*Process
	Issuer       string // http://127.0.0.1:PORT/dex
	ClientID     string
	ClientSecret string
	Users        []DexUser
}

// DexClient is the one OAuth client Dex knows: the review desk.
type DexClient struct {
	ID, Secret   string
	RedirectURIs []string
}

// StartDex starts Dex on 127.0.0.1:port with its state in memory (users and
// the client are static: a restart forgets only sign-ins), its
// configuration and log in dir.
func StartDex(ctx context.Context, bin, dir string, port int, client DexClient, users []DexUser) (*Dex, error) {
	issuer := fmt.Sprintf("http://127.0.0.1:%d/dex", port)
	type password struct {
		Email    string   `json:"email"`
		Hash     string   `json:"hash"`
		Username string   `json:"username"`
		UserID   string   `json:"userID"`
		Groups   []string `json:"groups"`
	}
	var passwords []password
	for _, u := range users {
		// Dex refuses a bcrypt cost below 10.
		h, err := bcrypt.GenerateFromPassword([]byte(u.Password), bcrypt.DefaultCost)
		if err != nil {
			return nil, fmt.Errorf("devstack: dex user %s: %w", u.ID, err)
		}
		passwords = append(passwords, password{Email: u.Email, Hash: string(h), Username: u.Name, UserID: u.ID, Groups: u.Groups})
	}
	cfg := map[string]any{
		"issuer":  issuer,
		"storage": map[string]any{"type": "memory"},
		"web":     map[string]any{"http": fmt.Sprintf("127.0.0.1:%d", port)},
		"logger":  map[string]any{"level": "warn", "format": "json"},
		// Dex's own login page, with its local password database; no
		// consent screen (the desk is the company's own application).
		"enablePasswordDB": true,
		"oauth2":           map[string]any{"skipApprovalScreen": true},
		"staticClients": []map[string]any{{"id": client.ID, "secret": client.Secret, "name": "Review desk",
			"redirectURIs": client.RedirectURIs}},
		"staticPasswords": passwords,
	}
	b, _ := json.MarshalIndent(cfg, "", "  ") // YAML is a superset of JSON: Dex reads it
	cfgPath := filepath.Join(dir, fmt.Sprintf("dex-%d.yaml", port))
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "dex.log")
	p, err := start("dex", bin, logPath, "serve", cfgPath)
	if err != nil {
		return nil, err
	}
	d := &Dex{Process: p, Issuer: issuer, ClientID: client.ID, ClientSecret: client.Secret, Users: users}
	return d, waitFor(ctx, p, logPath, func(ctx context.Context) error {
		return HTTPOK(ctx, issuer+"/.well-known/openid-configuration")
	})
}

var dexForm = regexp.MustCompile(`<form method="post" action="([^"]+)"`)

// SignIn signs a person in to the review desk the way a browser does,
// through Dex's own login page: it opens startURL (the desk's
// /desk/login/start), follows the redirects to Dex's password form, posts
// the email and password there, and follows the redirects back to the
// desk's callback, whose answer it returns. c must keep cookies (a jar)
// and follow redirects.
func (d *Dex) SignIn(ctx context.Context, c *http.Client, startURL, email, password string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, startURL, nil)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := dexForm.FindSubmatch(body)
	if m == nil {
		return nil, fmt.Errorf("devstack: no Dex login form at %s (HTTP %d)", resp.Request.URL, resp.StatusCode)
	}
	action, err := resp.Request.URL.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		return nil, err
	}
	form := url.Values{"login": {email}, "password": {password}}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.Do(req)
}

// DexSubject is the sub claim Dex gives a static user: its user id and the
// connector ("local"), protobuf-encoded in base64url, as Dex makes it.
func DexSubject(userID string) string {
	b := []byte{0x0a, byte(len(userID))}
	b = append(b, userID...)
	b = append(b, 0x12, byte(len("local")))
	b = append(b, "local"...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// User returns the dev user with the email.
func (d *Dex) User(email string) DexUser {
	for _, u := range d.Users {
		if u.Email == email {
			return u
		}
	}
	return DexUser{}
}
