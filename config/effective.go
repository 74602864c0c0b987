package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Setting is one variable as Load read it, for `identity-verification
// check-config`: its value, or its default when unset, with secrets masked.
type Setting struct {
	Name    string
	Value   string // masked when the variable holds a secret or a URL's password
	Default bool   // unset: Value is the default ("" when there is none)
}

// Effective loads the configuration like Load and also returns every
// variable Load read, in the order it read them, secrets masked.
func Effective(env Env) (Config, []Setting, error) {
	c, rec, err := load(env)
	return c, rec.settings(), err
}

// recorder is an Env that notes every variable looked up, so the listing
// check-config prints cannot miss a variable Load reads.
type recorder struct {
	env   Env
	names []string
	vars  map[string]recorded
}

type recorded struct {
	value, def string
	set        bool
}

func (r *recorder) LookupEnv(k string) (string, bool) {
	v, ok := r.env.LookupEnv(k)
	e := r.entry(k)
	e.value, e.set = v, strings.TrimSpace(v) != ""
	r.vars[k] = e
	return v, ok
}

func (r *recorder) Environ() []string { return r.env.Environ() }

func (r *recorder) setDefault(k, def string) {
	e := r.entry(k)
	if e.def == "" {
		e.def = def
	}
	r.vars[k] = e
}

func (r *recorder) entry(k string) recorded {
	if r.vars == nil {
		r.vars = map[string]recorded{}
	}
	e, ok := r.vars[k]
	if !ok {
		r.names = append(r.names, k)
	}
	return e
}

func (r *recorder) settings() []Setting {
	out := make([]Setting, 0, len(r.names))
	for _, k := range r.names {
		e := r.vars[k]
		if e.set {
			out = append(out, Setting{Name: k, Value: Mask(k, strings.TrimSpace(e.value))})
		} else {
			out = append(out, Setting{Name: k, Value: Mask(k, e.def), Default: true})
		}
	}
	return out
}

// Mask returns what check-config may print of variable name's value v. A
// secret (a name with a word SECRET, TOKEN, KEY, KEYS, PASSWORD, AUTH or
// CREDENTIALS, not a _PATH or _FILE, and gRPC metadata, which often carries
// credentials) keeps only a known Stripe prefix and its length, per
// comma-separated entry: "whsec_…(38 bytes)", "***(40 bytes)". A URL keeps
// everything but its password; one that does not parse, or has an '@' past
// its authority, keeps only its scheme and what follows its last '@' (only
// its scheme when it has no '@' but a password parameter).
func Mask(name, v string) string {
	if v == "" {
		return ""
	}
	if isSecret(name) {
		entries := strings.Split(v, ",")
		for i, e := range entries {
			entries[i] = maskSecret(strings.TrimSpace(e))
		}
		return strings.Join(entries, ",")
	}
	if scheme, rest, ok := strings.Cut(v, "://"); ok {
		// Credentials end at the last '@' of the authority, which ends at
		// the first '/', '?' or '#'. A URL that does not parse (a '#' or a
		// bad %-escape in the password), or with an '@' past where Go's
		// parser ended the authority (a '/', '?' or '#' in the password),
		// may show credentials: everything up to its last '@' is masked.
		authority := len(rest)
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			authority = i
		}
		at := strings.LastIndex(rest, "@")
		_, err := url.Parse(v)
		switch {
		case at > authority || (err != nil && at >= 0):
			return scheme + "://xxxxx" + rest[at:]
		case err != nil && strings.Contains(strings.ToLower(rest), "password"):
			return scheme + "://xxxxx"
		}
	}
	if u, err := url.Parse(v); err == nil && u.Scheme != "" {
		// Masked pair by pair, as written: a value with a bad %-escape
		// is one url.Query would drop, not mask.
		pairs := strings.Split(u.RawQuery, "&")
		for i, kv := range pairs {
			if k, _, ok := strings.Cut(kv, "="); ok && strings.EqualFold(k, "password") {
				pairs[i] = k + "=xxxxx"
			}
		}
		u.RawQuery = strings.Join(pairs, "&")
		return u.Redacted()
	}
	return v
}

func isSecret(name string) bool {
	if strings.HasPrefix(name, "TEMPORAL_GRPC_META_") {
		return true
	}
	if strings.HasSuffix(name, "_PATH") || strings.HasSuffix(name, "_FILE") {
		return false
	}
	for _, w := range strings.Split(name, "_") {
		switch w {
		case "SECRET", "SECRETS", "TOKEN", "KEY", "KEYS", "PASSWORD", "AUTH", "CREDENTIALS":
			return true
		}
	}
	return false
}

// stripePrefixes name a Stripe secret's kind without revealing any of it.
var stripePrefixes = []string{"whsec_", "sk_test_", "sk_live_", "rk_test_", "rk_live_"}

func maskSecret(s string) string {
	shown := "***"
	for _, p := range stripePrefixes {
		if strings.HasPrefix(s, p) {
			shown = p + "…"
			break
		}
	}
	return fmt.Sprintf("%s(%d bytes)", shown, len(s))
}
