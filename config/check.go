package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"identityverification/workflows"
)

// MinSecretBytes is the shortest secret production accepts: 256 bits, the
// length of Stripe's own whsec_ secrets.
const MinSecretBytes = 32

// OpsOff is the OPS_ADDR that turns the ops listener off: no health
// probes and no metrics for that process.
const OpsOff = "off"

// MaxWebhookTolerance bounds STRIPE_WEBHOOK_TOLERANCE: a captured delivery
// can be replayed for as long as its signature is accepted.
const MaxWebhookTolerance = time.Hour

// AlternateSessionTypes are the Stripe Identity VerificationSession types
// ALTERNATE_SESSION_TYPE may name.
var AlternateSessionTypes = []string{"document", "id_number"}

// production reads ENVIRONMENT. Production is the default so that a
// deployment that says nothing gets the strict rules.
func (p *parser) production() bool {
	switch v := p.str("ENVIRONMENT", "production"); v {
	case "production":
		return true
	case "development":
		return false
	default:
		p.fail("ENVIRONMENT", fmt.Sprintf("%q: want production or development", v))
		return true
	}
}

// checkPolicy reports each bad policy value on its own.
func (p *parser) checkPolicy(pol workflows.Policy) {
	if pol.MaxAttempts < 1 {
		p.fail("MAX_ATTEMPTS", "must be at least 1")
	}
	if pol.AlternateMaxAttempts < 1 {
		p.fail("ALTERNATE_MAX_ATTEMPTS", "must be at least 1")
	}
	if !slices.Contains(AlternateSessionTypes, pol.AlternateType) {
		p.fail("ALTERNATE_SESSION_TYPE", fmt.Sprintf("%q is not a Stripe Identity session type: want %s",
			pol.AlternateType, strings.Join(AlternateSessionTypes, " or ")))
	}
	if !pol.Escalation.Valid() {
		p.fail("ESCALATION", "want review, alternate or alternate_then_review")
	}
	if !pol.LateFraud.Valid() {
		p.fail("LATE_FRAUD_POLICY", "want review or record")
	}
	if pol.ReminderAfter < 0 {
		p.fail("REMINDER_AFTER", "must be 0 (no reminder) or positive")
	}
	if pol.ExpireAfter <= 0 {
		p.fail("EXPIRE_AFTER", "must be positive")
	}
	if pol.ReviewDeadline < MinReviewDeadline {
		// Each deadline re-notifies ops: a shorter one floods them.
		p.fail("REVIEW_DEADLINE", "must be at least 1h")
	}
	if pol.ReviewApprovalsHighRisk < 1 || pol.ReviewApprovalsHighRisk > MaxReviewApprovals {
		p.fail("REVIEW_APPROVALS_HIGH_RISK", fmt.Sprintf("must be from 1 to %d", MaxReviewApprovals))
	}
	def := workflows.DefaultPolicy()
	p.rec.setDefault("NON_RETRYABLE_CODES", strings.Join(def.NonRetryableCodes, ","))
	var pairs []string
	for code, e := range def.EscalationByCode {
		pairs = append(pairs, code+":"+string(e))
	}
	slices.Sort(pairs)
	p.rec.setDefault("ESCALATION_BY_CODE", strings.Join(pairs, ","))
}

// Bounds of the review settings.
const (
	MinReviewDeadline  = time.Hour
	MaxReviewApprovals = 5
)

// Bounds of the reconciliation settings. Stripe keeps events 30 days: a run
// at least weekly reads each well within them.
const (
	ReconcileOff        = "off"
	MinReconcileEvery   = time.Second
	MaxReconcileEvery   = 7 * 24 * time.Hour
	MaxReconcileOverlap = 24 * time.Hour
)

// reconcileEvery reads RECONCILE_EVERY: a duration, or off (0).
func (p *parser) reconcileEvery() time.Duration {
	v := p.str("RECONCILE_EVERY", "15m")
	if v == ReconcileOff {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < MinReconcileEvery || d > MaxReconcileEvery {
		p.fail("RECONCILE_EVERY", "want off, or a duration from 1s to 168h such as 15m")
		return 15 * time.Minute
	}
	return d
}

// defaultExpiryWarning is the longest default warning before expiry.
const defaultExpiryWarning = 24 * time.Hour

// expiryWarning reads EXPIRY_WARNING into the value the workflow input
// carries. Unset: a day, or half the window from the reminder to the
// expiry when that is shorter. 0: no warning, stored as -1 (the workflow
// takes 0 for its own default, for inputs recorded before config resolved
// it). A set value must be shorter than that window, or the workflow would
// never send it (the warning only follows the reminder). Call it after
// REMINDER_AFTER and EXPIRE_AFTER are read.
func (p *parser) expiryWarning(pol workflows.Policy) time.Duration {
	window := pol.ExpireAfter // no reminder is sent at or after the expiry
	if pol.ReminderAfter > 0 && pol.ReminderAfter < pol.ExpireAfter {
		window -= pol.ReminderAfter
	}
	def := min(defaultExpiryWarning, window/2)
	if def <= 0 {
		def = -1
	}
	p.rec.setDefault("EXPIRY_WARNING", max(def, 0).String())
	if strings.TrimSpace(p.getenv("EXPIRY_WARNING")) == "" {
		return def
	}
	n := len(p.errs)
	d := p.duration("EXPIRY_WARNING", def)
	switch {
	case len(p.errs) > n: // not a duration, reported
	case d == 0:
		return -1
	case d < 0:
		p.fail("EXPIRY_WARNING", "must be 0 (no warning) or positive")
	case pol.ExpireAfter > 0 && pol.ReminderAfter >= 0 && d >= window:
		p.fail("EXPIRY_WARNING", fmt.Sprintf("must be shorter than EXPIRE_AFTER - REMINDER_AFTER (%s), or the warning never goes out", window))
	default:
		return d
	}
	return def
}

// check validates what parsing alone does not: bounds, enums, addresses,
// URLs and, in production, the length of secrets. Messages name the
// variable and the rule and never hold a secret or a URL (it may carry a
// password).
func (p *parser) check(c Config) {
	if c.WebhookTolerance <= 0 || c.WebhookTolerance > MaxWebhookTolerance {
		p.fail("STRIPE_WEBHOOK_TOLERANCE", fmt.Sprintf("must be more than 0 and at most %s (Stripe's default is 300s)", MaxWebhookTolerance))
	}
	if c.WebhookMaxBody <= 0 {
		p.fail("WEBHOOK_MAX_BODY_BYTES", "must be at least 1")
	}
	if c.SignalTimeout <= 0 {
		p.fail("TEMPORAL_SIGNAL_TIMEOUT", "must be positive")
	}
	if c.ShutdownGrace < 0 {
		p.fail("SHUTDOWN_GRACE", "must be 0 or positive")
	}
	if c.Reconcile.Overlap < 0 || c.Reconcile.Overlap > MaxReconcileOverlap {
		p.fail("RECONCILE_OVERLAP", "must be from 0 to 24h")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		p.fail("LOG_LEVEL", fmt.Sprintf("%q: want debug, info, warn or error", c.LogLevel))
	}

	p.hostPort("LISTEN_ADDR", c.ListenAddr, false)
	p.hostPort("ADMIN_ADDR", c.AdminAddr, false)
	if c.OpsAddr != OpsOff {
		p.hostPort("OPS_ADDR", c.OpsAddr, false)
	}
	p.hostPort("TEMPORAL_ADDRESS", c.Temporal.HostPort, true)

	p.url("PUBLIC_BASE_URL", c.PublicBaseURL, "http", "https")
	if p.getenv("RETURN_URL") != "" { // else derived from PUBLIC_BASE_URL, checked above
		p.url("RETURN_URL", c.ReturnURL, "http", "https")
	}
	p.rec.setDefault("STRIPE_API_BASE", "https://api.stripe.com")
	if c.StripeAPIBase != "" {
		p.url("STRIPE_API_BASE", c.StripeAPIBase, "http", "https")
	}
	if u := p.url("SMTP_URL", c.SMTPURL, "smtp", "smtps"); u != nil {
		if u.Port() == "" {
			p.fail("SMTP_URL", "needs a port (smtp://host:587, smtps://host:465)")
		}
		if tls := u.Query().Get("tls"); tls != "" && tls != "none" && tls != "required" {
			p.fail("SMTP_URL", fmt.Sprintf("tls=%q: want none or required", tls))
		}
	}
	p.databaseURL(c.DatabaseURL)

	p.checkOIDC(c.OIDC, c.Production)

	p.email("EMAIL_FROM", c.EmailFrom)
	if c.OpsEmail != "" {
		p.email("OPS_EMAIL", c.OpsEmail)
	}

	if c.Production {
		for i, s := range c.WebhookSecrets {
			if len(s) < MinSecretBytes {
				p.fail("STRIPE_WEBHOOK_SECRET", fmt.Sprintf("secret %d of %d %s", i+1, len(c.WebhookSecrets), tooShort(s)))
			}
		}
		p.secret("RETRY_LINK_SECRET", c.RetryLinkSecret)
		p.secret("ADMIN_TOKEN", c.AdminToken)
		p.secret("OIDC_CLIENT_SECRET", c.OIDC.ClientSecret)
		p.refusePlaceholders(c)
	}
}

// checkOIDC checks the desk's sign-in settings: all four or none (the desk
// is off), URLs with a host, the redirect to the desk's callback, and
// groups that let someone in. In production both URLs are https (the
// discovery document, the provider's keys and the code exchange travel
// over the first; the code and the desk's cookies over the second), but
// for a provider or desk on the machine itself (127.0.0.1, ::1, localhost).
func (p *parser) checkOIDC(o OIDC, production bool) {
	set := map[string]string{"OIDC_ISSUER": o.Issuer, "OIDC_CLIENT_ID": o.ClientID,
		"OIDC_CLIENT_SECRET": o.ClientSecret, "OIDC_REDIRECT_URL": o.RedirectURL}
	anySet := false
	for _, v := range set {
		anySet = anySet || v != ""
	}
	if !anySet {
		if len(o.ReviewerGroups) > 0 || len(o.AdminGroups) > 0 {
			p.fail("OIDC_ISSUER", "REVIEWER_GROUPS or ADMIN_GROUPS is set, but the desk's sign-in is not: set OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET and OIDC_REDIRECT_URL")
		}
		return
	}
	for _, name := range []string{"OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "OIDC_REDIRECT_URL"} {
		if set[name] == "" {
			p.fail(name, "is not set: the review desk's sign-in needs OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET and OIDC_REDIRECT_URL together")
		}
	}
	if o.Issuer != "" {
		if u := p.url("OIDC_ISSUER", o.Issuer, "https", "http"); u != nil && production && !secureOrLoopback(u) {
			p.fail("OIDC_ISSUER", "must be https:// in production (discovery, the provider's keys and the code exchange would travel in the clear); http:// is for a provider on 127.0.0.1, ::1 or localhost, or ENVIRONMENT=development")
		}
	}
	if o.RedirectURL != "" {
		u := p.url("OIDC_REDIRECT_URL", o.RedirectURL, "https", "http")
		switch {
		case u == nil:
		case u.Path != DeskCallbackPath:
			p.fail("OIDC_REDIRECT_URL", "must end in "+DeskCallbackPath+" (the desk's callback, as registered at the provider)")
		case production && !secureOrLoopback(u):
			p.fail("OIDC_REDIRECT_URL", "must be https:// in production (the sign-in's code and the desk's session cookie would travel in the clear); http:// is for a desk on 127.0.0.1, ::1 or localhost, or ENVIRONMENT=development")
		}
	}
	if o.GroupsClaim == "" || strings.ContainsFunc(o.GroupsClaim, func(r rune) bool { return r <= ' ' }) {
		p.fail("OIDC_GROUPS_CLAIM", "must name a claim of the ID token, such as groups")
	}
	if len(o.ReviewerGroups) == 0 && len(o.AdminGroups) == 0 {
		p.fail("REVIEWER_GROUPS", "is not set: with neither REVIEWER_GROUPS nor ADMIN_GROUPS nobody can sign in to the desk")
	}
}

// secureOrLoopback reports whether u is https, or http to this machine.
func secureOrLoopback(u *url.URL) bool {
	if u.Scheme == "https" {
		return true
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(u.Hostname())
	return err == nil && ip.IsLoopback()
}

// secret reports a set secret shorter than MinSecretBytes; an unset one is
// for CheckWebhook and CheckWorker.
func (p *parser) secret(name, v string) {
	if v != "" && len(v) < MinSecretBytes {
		p.fail(name, tooShort(v))
	}
}

// Placeholder marks the values .env.example ships for secrets and
// passwords: long enough for every other check, and public.
const Placeholder = "REPLACE_ME"

// refusePlaceholders reports every variable that still holds a placeholder
// as one problem, so that a production stack started from .env.example as
// it is stops with one line naming them all. A webhook that accepted a
// placeholder would take events forged by anyone.
func (p *parser) refusePlaceholders(c Config) {
	var names []string
	check := func(name string, values ...string) {
		for _, v := range values {
			if strings.Contains(v, Placeholder) {
				names = append(names, name)
				return
			}
		}
	}
	check("STRIPE_WEBHOOK_SECRET", c.WebhookSecrets...)
	check("STRIPE_API_KEY", c.StripeAPIKey)
	check("RETRY_LINK_SECRET", c.RetryLinkSecret)
	check("ADMIN_TOKEN", c.AdminToken)
	check("CODEC_TOKEN", c.CodecToken)
	check("OIDC_CLIENT_SECRET", c.OIDC.ClientSecret)
	if u, err := url.Parse(c.DatabaseURL); err == nil && u.User != nil {
		pass, _ := u.User.Password()
		check("DATABASE_URL", pass) // its password
	}
	if len(names) > 0 {
		p.fail(strings.Join(names, ", "), "placeholders from .env.example, which ENVIRONMENT=production refuses: "+
			"put real values in .env (`openssl rand -hex 32` makes a secret), or set ENVIRONMENT=development for a local stack")
	}
}

func tooShort(v string) string {
	return fmt.Sprintf("must be at least %d bytes in production, not %d (ENVIRONMENT=development accepts shorter ones)", MinSecretBytes, len(v))
}

// hostPort checks a host:port address. A listener may leave the host out
// (all interfaces); a client needs one. A gRPC scheme (dns:///) is allowed.
func (p *parser) hostPort(name, v string, needHost bool) {
	addr := v
	if _, rest, ok := strings.Cut(v, ":///"); ok {
		addr = rest
	}
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || n < 0 || n > 65535 || (needHost && (host == "" || n == 0)) {
		p.fail(name, fmt.Sprintf("%q is not a host:port address (e.g. 127.0.0.1:8080)", v))
	}
}

// url checks an absolute URL with one of schemes and a host, and returns it
// when it is one.
func (p *parser) url(name, v string, schemes ...string) *url.URL {
	want := strings.Join(schemes, " or ")
	u, err := url.Parse(v)
	switch {
	case err != nil || u.Scheme == "" || u.Host == "":
		p.fail(name, fmt.Sprintf("must be a URL with a scheme (%s) and a host", want))
	case !slices.Contains(schemes, u.Scheme):
		p.fail(name, fmt.Sprintf("scheme %q: want %s", u.Scheme, want))
	default:
		return u
	}
	return nil
}

// databaseURL checks the forms store.Open reads: postgres:// (or
// postgresql://), sqlite:PATH (or file:PATH), and a bare file PATH
// (/var/lib/iv/identity.db), which is SQLite too. Anything else that starts
// with a scheme (mysql://, postgress://) is a mistake, not a file name.
func (p *parser) databaseURL(v string) {
	if strings.HasPrefix(v, "postgres://") || strings.HasPrefix(v, "postgresql://") {
		if _, err := url.Parse(v); err != nil {
			p.fail("DATABASE_URL", "is not a valid postgres:// URL")
		}
		return
	}
	path := v
	for _, prefix := range []string{"sqlite://", "sqlite:", "file:"} {
		if rest, ok := strings.CutPrefix(v, prefix); ok {
			path = rest
			break
		}
	}
	if path == v && hasScheme(v) {
		p.fail("DATABASE_URL", "want postgres://user:pass@host/db, sqlite:PATH or a file path")
		return
	}
	if path, _, _ = strings.Cut(path, "?"); strings.TrimSpace(path) == "" {
		p.fail("DATABASE_URL", "sqlite: needs a file path (sqlite:identity-verification.db)")
	}
}

// hasScheme says whether v starts with a URL scheme and a colon (RFC 3986:
// a letter, then letters, digits, '+', '-' or '.').
func hasScheme(v string) bool {
	scheme, _, ok := strings.Cut(v, ":")
	if !ok || scheme == "" || !isLetter(scheme[0]) {
		return false
	}
	for i := 1; i < len(scheme); i++ {
		if c := scheme[i]; !isLetter(c) && !('0' <= c && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func (p *parser) email(name, v string) {
	if _, err := mail.ParseAddress(v); err != nil {
		p.fail(name, "must be an email address (identity@example.com or \"Name <identity@example.com>\")")
	}
}
