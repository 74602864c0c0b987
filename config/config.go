// Package config reads the service's configuration from the environment
// (the design's external contract) and fails fast on anything invalid.
// Secrets have no defaults.
package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"

	"identityverification/access"
	"identityverification/codec"
	"identityverification/retrylink"
	"identityverification/store"
	"identityverification/workflows"
)

// Config is everything either process needs; each checks its own part.
type Config struct {
	// Temporal connection from TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
	// TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE (the SDK's envconfig).
	Temporal client.Options

	// Production (ENVIRONMENT=production, the default) demands secrets of
	// at least MinSecretBytes and refuses .env.example's placeholders;
	// ENVIRONMENT=development (the dev stack, the tests, the compose file
	// started from .env.example as it is) accepts both.
	Production bool

	ListenAddr       string        // LISTEN_ADDR: webhook, retry links, /livez and /readyz (no metrics)
	WebhookSecrets   []string      // STRIPE_WEBHOOK_SECRET, comma-separated
	WebhookTolerance time.Duration // STRIPE_WEBHOOK_TOLERANCE
	WebhookMaxBody   int64         // WEBHOOK_MAX_BODY_BYTES
	SignalTimeout    time.Duration // TEMPORAL_SIGNAL_TIMEOUT: bound on the request path
	StripeAPIKey     string        // STRIPE_API_KEY
	StripeAPIBase    string        // STRIPE_API_BASE
	DatabaseURL      string        // DATABASE_URL
	SMTPURL          string        // SMTP_URL
	EmailFrom        string        // EMAIL_FROM
	OpsEmail         string        // OPS_EMAIL
	PublicBaseURL    string        // PUBLIC_BASE_URL: where retry links point
	RetryLinkSecret  string        // RETRY_LINK_SECRET: signs retry links
	ReturnURL        string        // RETURN_URL: where Stripe sends the user after a session the admin API created (default: the webhook's thank-you page, PUBLIC_BASE_URL/verify/done)
	RetryLinkTTL     time.Duration // RETRY_LINK_TTL: how long a retry link works
	AdminAddr        string        // ADMIN_ADDR: the admin API's own listener
	OpsAddr          string        // OPS_ADDR: health and metrics, every process; "off": none
	AdminToken       string        // ADMIN_TOKEN: a machine's full-scope bearer token; scoped API keys beside it
	// TrustedProxies are the reverse proxies in front of the admin
	// listener (TRUSTED_PROXIES) whose X-Forwarded-For names the caller
	// for the audit log and the throttle; none by default.
	TrustedProxies access.Proxies
	OIDC           OIDC // the review desk's single sign-on
	Policy         workflows.Policy
	ShutdownGrace  time.Duration // SHUTDOWN_GRACE
	LogLevel       string        // LOG_LEVEL
	Worker         WorkerTuning
	Reconcile      Reconcile

	// Codec encrypts every payload the processes write to Temporal
	// (PAYLOAD_ENCRYPTION_KEYS); nil when no key is configured.
	Codec        *codec.Codec
	CodecToken   string   // CODEC_TOKEN: the codec server's token; empty disables it
	CodecOrigins []string // CODEC_CORS_ORIGINS: browser origins allowed to call it (the Temporal UI's)
}

// OIDC is how the review desk signs people in: OpenID Connect,
// authorization code with PKCE, against the company's provider. The desk
// is off while Issuer is empty.
type OIDC struct {
	Issuer       string // OIDC_ISSUER: the provider's issuer URL (discovery at Issuer/.well-known/openid-configuration)
	ClientID     string // OIDC_CLIENT_ID
	ClientSecret string // OIDC_CLIENT_SECRET
	RedirectURL  string // OIDC_REDIRECT_URL: https://<admin host>/desk/callback, registered at the provider
	GroupsClaim  string // OIDC_GROUPS_CLAIM: the ID token claim that lists the person's groups
	// ReviewerGroups may review (REVIEWER_GROUPS); AdminGroups may also
	// open the desk's admin pages (ADMIN_GROUPS). Anyone in neither
	// cannot sign in.
	ReviewerGroups []string
	AdminGroups    []string
}

// Enabled reports whether the desk signs people in (OIDC_ISSUER is set).
func (o OIDC) Enabled() bool { return o.Issuer != "" }

// DeskCallbackPath is the path OIDC_REDIRECT_URL must have: where the desk
// takes the provider's answer.
const DeskCallbackPath = "/desk/callback"

// WorkerTuning is the worker's capacity. The defaults come from load runs
// on a 2-core machine (docs/performance.md).
type WorkerTuning struct {
	WorkflowPollers int // WORKER_WORKFLOW_POLLERS: workflow-task pollers
	ActivityPollers int // WORKER_ACTIVITY_POLLERS: activity-task pollers
	WorkflowTasks   int // WORKER_MAX_CONCURRENT_WORKFLOW_TASKS
	Activities      int // WORKER_MAX_CONCURRENT_ACTIVITIES
	LocalActivities int // WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES: the database work
	// StickyCacheSize bounds the workflows a worker keeps in memory
	// between tasks (WORKER_STICKY_CACHE_SIZE); the worker's memory for
	// open sessions grows up to it.
	StickyCacheSize int
}

// Reconcile is how the worker looks for Stripe events the webhook missed
// (package reconcile).
type Reconcile struct {
	// Every is the schedule's interval (RECONCILE_EVERY); 0 is off: no
	// schedule, and a worker deletes one left from before.
	Every time.Duration
	// Overlap is how far before the checkpoint each run lists again
	// (RECONCILE_OVERLAP): Stripe may list an event after a newer one.
	Overlap time.Duration
}

// Env is where settings come from: the process environment (OS) or a Map.
type Env = envconfig.EnvLookup

// OS is the process environment.
var OS Env = envconfig.EnvLookupOS

// Map is an environment given as a map, for tests and the dev stack.
type Map map[string]string

// LookupEnv implements Env.
func (m Map) LookupEnv(k string) (string, bool) { v, ok := m[k]; return v, ok }

// Environ implements Env, sorted for stable output.
func (m Map) Environ() []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// FromEnviron builds a Map from KEY=VALUE pairs such as os.Environ().
func FromEnviron(kvs []string) Map {
	m := Map{}
	for _, kv := range kvs {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// ErrNoWebhookSecret: the webhook must not run without a way to verify Stripe.
var ErrNoWebhookSecret = errors.New("STRIPE_WEBHOOK_SECRET is not set: the webhook cannot verify Stripe signatures without it (set the endpoint's whsec_... secret; several may be given, comma-separated, during rotation)")

// Load reads and validates the environment, returning every bad value at
// once, one message each naming its variable (the rules are in check.go).
// Whether a process has the secrets it needs is left to CheckWebhook and
// CheckWorker.
func Load(env Env) (Config, error) {
	c, _, err := load(env)
	return c, err
}

// load is Load, also returning every variable it read (for Effective).
func load(env Env) (Config, *recorder, error) {
	rec := &recorder{env: env}
	env = rec
	getenv := func(k string) string { v, _ := env.LookupEnv(k); return v }
	p := parser{getenv: getenv, rec: rec}
	publicBase := strings.TrimRight(p.str("PUBLIC_BASE_URL", "http://127.0.0.1:8080"), "/")
	c := Config{
		Production:       p.production(),
		ListenAddr:       p.str("LISTEN_ADDR", "127.0.0.1:8080"),
		WebhookSecrets:   p.list("STRIPE_WEBHOOK_SECRET"),
		WebhookTolerance: p.duration("STRIPE_WEBHOOK_TOLERANCE", 300*time.Second),
		WebhookMaxBody:   int64(p.integer("WEBHOOK_MAX_BODY_BYTES", 1<<20)),
		SignalTimeout:    p.duration("TEMPORAL_SIGNAL_TIMEOUT", 5*time.Second),
		StripeAPIKey:     getenv("STRIPE_API_KEY"),
		StripeAPIBase:    getenv("STRIPE_API_BASE"),
		DatabaseURL:      p.str("DATABASE_URL", store.DefaultURL),
		SMTPURL:          p.str("SMTP_URL", "smtp://127.0.0.1:1025"),
		EmailFrom:        p.str("EMAIL_FROM", "identity@localhost"),
		OpsEmail:         getenv("OPS_EMAIL"),
		PublicBaseURL:    publicBase,
		RetryLinkSecret:  getenv("RETRY_LINK_SECRET"),
		ReturnURL:        p.str("RETURN_URL", publicBase+retrylink.DonePath),
		RetryLinkTTL:     p.duration("RETRY_LINK_TTL", 7*24*time.Hour),
		AdminAddr:        p.str("ADMIN_ADDR", "127.0.0.1:8081"),
		OpsAddr:          p.str("OPS_ADDR", "127.0.0.1:9090"),
		AdminToken:       getenv("ADMIN_TOKEN"),
		TrustedProxies:   p.proxies("TRUSTED_PROXIES"),
		OIDC: OIDC{
			Issuer:         p.str("OIDC_ISSUER", ""),
			ClientID:       p.str("OIDC_CLIENT_ID", ""),
			ClientSecret:   getenv("OIDC_CLIENT_SECRET"),
			RedirectURL:    p.str("OIDC_REDIRECT_URL", ""),
			GroupsClaim:    p.str("OIDC_GROUPS_CLAIM", "groups"),
			ReviewerGroups: p.list("REVIEWER_GROUPS"),
			AdminGroups:    p.list("ADMIN_GROUPS"),
		},
		Codec:         p.keyRing("PAYLOAD_ENCRYPTION_KEYS"),
		CodecToken:    getenv("CODEC_TOKEN"),
		CodecOrigins:  p.list("CODEC_CORS_ORIGINS"),
		ShutdownGrace: p.duration("SHUTDOWN_GRACE", 20*time.Second),
		LogLevel:      p.str("LOG_LEVEL", "info"),
		Worker: WorkerTuning{
			// On 2 cores, more workflow pollers or task slots did not move
			// the service's end-to-end rate (they did the trivial
			// worker's), so the SDK's defaults stay for those. Activity
			// pollers are 8, not the SDK's 2: with 2, a verified session's
			// comparison (and the emails beside it) waited up to 0.5 s for
			// a poller, which made the event-to-database p99 0.3-1 s at
			// half capacity; with 8, 180 ms (docs/performance.md).
			WorkflowPollers: p.integer("WORKER_WORKFLOW_POLLERS", 2),
			ActivityPollers: p.integer("WORKER_ACTIVITY_POLLERS", 8),
			WorkflowTasks:   p.integer("WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", 1000),
			Activities:      p.integer("WORKER_MAX_CONCURRENT_ACTIVITIES", 100),
			LocalActivities: p.integer("WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES", 1000),
			StickyCacheSize: p.integer("WORKER_STICKY_CACHE_SIZE", 10000),
		},
	}
	// The SDK refuses a single workflow poller or workflow task slot (the
	// sticky queue needs a second): at least 2 for those.
	for _, v := range []struct {
		name   string
		n, min int
	}{{"WORKER_WORKFLOW_POLLERS", c.Worker.WorkflowPollers, 2}, {"WORKER_ACTIVITY_POLLERS", c.Worker.ActivityPollers, 1},
		{"WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", c.Worker.WorkflowTasks, 2}, {"WORKER_MAX_CONCURRENT_ACTIVITIES", c.Worker.Activities, 1},
		{"WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES", c.Worker.LocalActivities, 1}, {"WORKER_STICKY_CACHE_SIZE", c.Worker.StickyCacheSize, 1}} {
		if v.n < v.min {
			p.fail(v.name, fmt.Sprintf("must be at least %d", v.min))
		}
	}
	c.Reconcile = Reconcile{Every: p.reconcileEvery(), Overlap: p.duration("RECONCILE_OVERLAP", time.Hour)}
	pol := workflows.DefaultPolicy()
	pol.MaxAttempts = p.integer("MAX_ATTEMPTS", pol.MaxAttempts)
	pol.AlternateMaxAttempts = p.integer("ALTERNATE_MAX_ATTEMPTS", pol.AlternateMaxAttempts)
	pol.AlternateType = p.str("ALTERNATE_SESSION_TYPE", pol.AlternateType)
	pol.ReminderAfter = p.duration("REMINDER_AFTER", pol.ReminderAfter)
	pol.ExpireAfter = p.duration("EXPIRE_AFTER", pol.ExpireAfter)
	pol.ExpiryWarning = p.expiryWarning(pol)
	pol.ReviewDeadline = p.duration("REVIEW_DEADLINE", pol.ReviewDeadline)
	pol.ReviewApprovalsHighRisk = p.integer("REVIEW_APPROVALS_HIGH_RISK", workflows.DefaultHighRiskApprovals)
	pol.Escalation = workflows.EscalationPolicy(p.str("ESCALATION", string(pol.Escalation)))
	pol.LateFraud = workflows.LateFraudPolicy(p.str("LATE_FRAUD_POLICY", string(pol.LateFraud)))
	if v := getenv("NON_RETRYABLE_CODES"); v != "" {
		pol.NonRetryableCodes = p.list("NON_RETRYABLE_CODES")
	}
	if v := getenv("ESCALATION_BY_CODE"); v != "" {
		pol.EscalationByCode = map[string]workflows.EscalationPolicy{}
		for _, pair := range p.list("ESCALATION_BY_CODE") {
			code, e, ok := strings.Cut(pair, ":")
			if !ok || !workflows.EscalationPolicy(e).Valid() {
				p.fail("ESCALATION_BY_CODE", "want code:review|alternate|alternate_then_review,...")
				break
			}
			pol.EscalationByCode[code] = workflows.EscalationPolicy(e)
		}
	}
	p.checkPolicy(pol)
	c.Policy = pol

	topts, err := envconfig.LoadClientOptions(envconfig.LoadClientOptionsRequest{EnvLookup: env})
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("temporal settings: %w", err))
	}
	if topts.HostPort == "" {
		topts.HostPort = client.DefaultHostPort
	}
	if topts.Namespace == "" {
		topts.Namespace = client.DefaultNamespace
	}
	c.Temporal = topts
	rec.setDefault("TEMPORAL_ADDRESS", topts.HostPort)
	rec.setDefault("TEMPORAL_NAMESPACE", topts.Namespace)
	for _, kv := range env.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "TEMPORAL_GRPC_META_") {
			env.LookupEnv(k) // recorded, so check-config lists it (masked)
		}
	}
	p.check(c)
	p.checkCodecServer(c)
	return c, rec, errors.Join(p.errs...)
}

// Sentinel errors for missing secrets.
var (
	ErrNoStripeKey       = errors.New("STRIPE_API_KEY is not set: the service reads and cancels sessions through the Stripe API (use sk_test_... with a local stripe-mock)")
	ErrNoRetryLinkSecret = errors.New("RETRY_LINK_SECRET is not set: retry links in emails are signed with it (the worker) and checked with it (the webhook); use the same long random value for both")
)

// CheckWebhook validates what the webhook process needs: the signing
// secrets, and for the retry links the Stripe key and the link secret.
func (c Config) CheckWebhook() error {
	return errors.Join(check(len(c.WebhookSecrets) > 0, ErrNoWebhookSecret),
		check(c.StripeAPIKey != "", ErrNoStripeKey), check(c.RetryLinkSecret != "", ErrNoRetryLinkSecret))
}

// CheckAdmin validates what the admin process needs (the admin API, the
// review desk, the codec server): the Stripe key, with which the API
// creates sessions and the desk shows reviewers Stripe's report.
func (c Config) CheckAdmin() error {
	return check(c.StripeAPIKey != "", ErrNoStripeKey)
}

// CheckWorker validates what the worker process needs.
func (c Config) CheckWorker() error {
	return errors.Join(check(c.StripeAPIKey != "", ErrNoStripeKey), check(c.RetryLinkSecret != "", ErrNoRetryLinkSecret))
}

func check(ok bool, err error) error {
	if ok {
		return nil
	}
	return err
}

type parser struct {
	getenv func(string) string
	rec    *recorder // notes each variable's default for check-config
	errs   []error
}

func (p *parser) fail(name, why string) { p.errs = append(p.errs, fmt.Errorf("%s: %s", name, why)) }

func (p *parser) str(name, def string) string {
	p.rec.setDefault(name, def)
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return def
}

func (p *parser) list(name string) []string {
	var out []string
	for _, v := range strings.Split(p.getenv(name), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// proxies reads a comma-separated list of IP addresses and CIDR networks.
func (p *parser) proxies(name string) access.Proxies {
	p.rec.setDefault(name, "")
	ps, err := access.ParseProxies(p.getenv(name))
	if err != nil {
		p.fail(name, err.Error())
	}
	return ps
}

func (p *parser) integer(name string, def int) int {
	p.rec.setDefault(name, strconv.Itoa(def))
	v := p.getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.fail(name, "not an integer")
		return def
	}
	return n
}

func (p *parser) duration(name string, def time.Duration) time.Duration {
	p.rec.setDefault(name, def.String())
	v := p.getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		p.fail(name, "not a duration such as 300s, 24h")
		return def
	}
	return d
}
