package config_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"identityverification/config"
)

// A secret of exactly config.MinSecretBytes.
const longSecret = "0123456789abcdef0123456789abcdef"

// Each bad value is refused with one message that names its variable, and
// a secret's value never appears in it.
func TestEachBadValueIsRefusedByName(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		secret      string // must not appear in the message
	}{
		{"ENVIRONMENT", "staging", ""},
		{"STRIPE_WEBHOOK_TOLERANCE", "0s", ""},
		{"STRIPE_WEBHOOK_TOLERANCE", "-5m", ""},
		{"STRIPE_WEBHOOK_TOLERANCE", "2h", ""},
		{"STRIPE_WEBHOOK_TOLERANCE", "5 minutes", ""},
		{"WEBHOOK_MAX_BODY_BYTES", "0", ""},
		{"WEBHOOK_MAX_BODY_BYTES", "-1", ""},
		{"TEMPORAL_SIGNAL_TIMEOUT", "0s", ""},
		{"TEMPORAL_SIGNAL_TIMEOUT", "-1s", ""},
		{"SHUTDOWN_GRACE", "-1s", ""},
		{"WORKER_WORKFLOW_POLLERS", "1", ""},
		{"WORKER_ACTIVITY_POLLERS", "0", ""},
		{"WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", "1", ""},
		{"WORKER_MAX_CONCURRENT_ACTIVITIES", "0", ""},
		{"WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES", "-1", ""},
		{"WORKER_STICKY_CACHE_SIZE", "0", ""},
		{"MAX_ATTEMPTS", "0", ""},
		{"MAX_ATTEMPTS", "three", ""},
		{"ALTERNATE_MAX_ATTEMPTS", "0", ""},
		{"ALTERNATE_SESSION_TYPE", "passport", ""},
		{"ESCALATION", "shrug", ""},
		{"ESCALATION_BY_CODE", "document_expired", ""},
		{"LATE_FRAUD_POLICY", "ignore", ""},
		{"REMINDER_AFTER", "-1h", ""},
		{"EXPIRE_AFTER", "0s", ""},
		{"REVIEW_DEADLINE", "-48h", ""},
		{"REVIEW_DEADLINE", "59m", ""}, // each deadline re-notifies ops
		{"REVIEW_APPROVALS_HIGH_RISK", "0", ""},
		{"REVIEW_APPROVALS_HIGH_RISK", "9", ""},
		{"EXPIRY_WARNING", "-1h", ""},
		{"EXPIRY_WARNING", "a day", ""},
		{"EXPIRY_WARNING", "144h", ""}, // the defaults' window: 7 days less the reminder's day
		{"LOG_LEVEL", "verbose", ""},
		{"RECONCILE_EVERY", "never", ""},
		{"RECONCILE_EVERY", "0s", ""},
		{"RECONCILE_EVERY", "500ms", ""},
		{"RECONCILE_EVERY", "200h", ""},
		{"RECONCILE_OVERLAP", "-1m", ""},
		{"RECONCILE_OVERLAP", "48h", ""},
		{"LISTEN_ADDR", "8080", ""},
		{"ADMIN_ADDR", "localhost", ""},
		{"OPS_ADDR", "127.0.0.1:metrics", ""},
		{"TEMPORAL_ADDRESS", "temporal", ""},
		{"TEMPORAL_ADDRESS", "temporal:port", ""},
		{"PUBLIC_BASE_URL", "verify.example.com", ""},
		{"PUBLIC_BASE_URL", "ftp://verify.example.com", ""},
		{"STRIPE_API_BASE", "127.0.0.1:12111", ""},
		{"SMTP_URL", "mail.example.com:25", ""},
		{"SMTP_URL", "https://user:hunter2hunter2@mail.example.com:25", "hunter2hunter2"},
		{"SMTP_URL", "smtp://mail.example.com", ""},
		{"SMTP_URL", "smtp://mail.example.com:25?tls=always", ""},
		{"DATABASE_URL", "mysql://app:hunter2hunter2@db/identity", "hunter2hunter2"},
		{"DATABASE_URL", "postgress://app:hunter2hunter2@db/identity", "hunter2hunter2"},
		{"DATABASE_URL", "mysql:identity", ""},
		{"DATABASE_URL", "sqlite:", ""},
		{"EMAIL_FROM", "identity", ""},
		{"OPS_EMAIL", "ops at example.com", ""},
		{"STRIPE_WEBHOOK_SECRET", "whsec_short", "whsec_short"},
		{"STRIPE_WEBHOOK_SECRET", longSecret + ",whsec_rotated_short", "whsec_rotated_short"},
		{"RETRY_LINK_SECRET", "e2e-link-secret", "e2e-link-secret"},
		{"ADMIN_TOKEN", "devstack-admin-token", "devstack-admin-token"},
	} {
		t.Run(tc.name+"="+tc.value+" is refused", func(t *testing.T) {
			_, err := config.Load(config.Map{tc.name: tc.value})
			if err == nil {
				t.Fatalf("%s=%q accepted", tc.name, tc.value)
			}
			msgs := strings.Split(err.Error(), "\n")
			if len(msgs) != 1 || !strings.HasPrefix(msgs[0], tc.name+": ") {
				t.Errorf("error %q: want one message that starts with %s:", err, tc.name)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q shows the secret", err)
			}
		})
	}
}

// The edges of each rule are accepted: zero where zero means "none", a
// listener on every interface, a gRPC target, a socket PostgreSQL URL, and
// secrets of exactly the minimum length in production.
func TestGoodValuesAtTheEdgesAreAccepted(t *testing.T) {
	for name, env := range map[string]config.Map{
		"the defaults": {},
		"edges": {"SHUTDOWN_GRACE": "0s", "REMINDER_AFTER": "0s", "STRIPE_WEBHOOK_TOLERANCE": "1h",
			"WEBHOOK_MAX_BODY_BYTES": "1", "LISTEN_ADDR": ":8080", "ADMIN_ADDR": "[::1]:0",
			"TEMPORAL_ADDRESS": "dns:///temporal.internal:7233", "ALTERNATE_SESSION_TYPE": "document",
			"PUBLIC_BASE_URL": "https://verify.example.com/", "STRIPE_API_BASE": "http://127.0.0.1:12111",
			"SMTP_URL": "smtps://user:pass@mail.example.com:465", "DATABASE_URL": "postgres:///identity?host=/run/postgresql",
			"EMAIL_FROM": "Identity <identity@example.com>", "OPS_EMAIL": "ops@example.com", "LOG_LEVEL": "debug",
			"EXPIRY_WARNING": "143h", "OPS_ADDR": "off"},
		"no expiry warning":         {"EXPIRY_WARNING": "0s"},
		"no reconciliation":         {"RECONCILE_EVERY": "off", "RECONCILE_OVERLAP": "0s"},
		"reconciliation bounds":     {"RECONCILE_EVERY": "1s", "RECONCILE_OVERLAP": "24h"},
		"a weekly reconciliation":   {"RECONCILE_EVERY": "168h"},
		"a SQLite file by its path": {"DATABASE_URL": "/var/lib/iv/identity.db"},
		"a relative SQLite path":    {"DATABASE_URL": "data/identity.db?_pragma=foreign_keys(1)"},
		"production secrets of the minimum length": {"ENVIRONMENT": "production",
			"STRIPE_WEBHOOK_SECRET": longSecret + "," + longSecret, "RETRY_LINK_SECRET": longSecret, "ADMIN_TOKEN": longSecret},
		"short secrets in development": {"ENVIRONMENT": "development",
			"STRIPE_WEBHOOK_SECRET": "whsec_a", "RETRY_LINK_SECRET": "x", "ADMIN_TOKEN": "y"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := config.Load(env); err != nil {
				t.Error(err)
			}
		})
	}
}

// EXPIRY_WARNING is resolved for the workflow input: unset, a day or half
// the window from the reminder to the expiry; 0, none (-1: the workflow
// reads 0 as its own default).
func TestExpiryWarningIsResolved(t *testing.T) {
	for _, tc := range []struct {
		env  config.Map
		want time.Duration
	}{
		{config.Map{}, 24 * time.Hour},
		{config.Map{"EXPIRE_AFTER": "48h", "REMINDER_AFTER": "24h"}, 12 * time.Hour},
		{config.Map{"EXPIRE_AFTER": "48h", "REMINDER_AFTER": "0s"}, 24 * time.Hour},
		{config.Map{"EXPIRE_AFTER": "10m", "REMINDER_AFTER": "2m"}, 4 * time.Minute},
		{config.Map{"EXPIRY_WARNING": "0s"}, -1},
		{config.Map{"EXPIRY_WARNING": "0"}, -1},
		{config.Map{"EXPIRY_WARNING": "36h"}, 36 * time.Hour},
		{config.Map{"EXPIRE_AFTER": "48h", "REMINDER_AFTER": "24h", "EXPIRY_WARNING": "23h"}, 23 * time.Hour},
	} {
		c, err := config.Load(tc.env)
		if err != nil || c.Policy.ExpiryWarning != tc.want {
			t.Errorf("%v: expiry warning %s, %v; want %s", tc.env, c.Policy.ExpiryWarning, err, tc.want)
		}
	}
	_, err := config.Load(config.Map{"EXPIRE_AFTER": "48h", "REMINDER_AFTER": "24h", "EXPIRY_WARNING": "24h"})
	if err == nil || !strings.HasPrefix(err.Error(), "EXPIRY_WARNING: must be shorter than EXPIRE_AFTER - REMINDER_AFTER (24h0m0s)") {
		t.Errorf("a warning as long as the window: %v", err)
	}
}

func TestProductionIsTheDefault(t *testing.T) {
	for env, want := range map[string]bool{"": true, "production": true, "development": false} {
		c, err := config.Load(config.Map{"ENVIRONMENT": env})
		if err != nil || c.Production != want {
			t.Errorf("ENVIRONMENT=%q: production %v, %v; want %v", env, c.Production, err, want)
		}
	}
}

// .env.example's placeholders pass every other check (they are long
// enough): production refuses them all in one line naming each variable,
// and development, the compose file's dev stack, takes them as they are.
func TestPlaceholdersAreOneProblemInProductionAndFineInDevelopment(t *testing.T) {
	placeholder := func(prefix string) string { return prefix + config.Placeholder + "_0123456789abcdef0123456789" }
	env := config.Map{
		"STRIPE_WEBHOOK_SECRET": longSecret + "," + placeholder("whsec_"), "STRIPE_API_KEY": placeholder("sk_test_"),
		"RETRY_LINK_SECRET": placeholder(""), "ADMIN_TOKEN": longSecret, "CODEC_TOKEN": placeholder(""),
		"PAYLOAD_ENCRYPTION_KEYS": "k1:" + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"DATABASE_URL":            "postgres://identity_verification:" + placeholder("") + "@postgresql:5432/identity_verification",
	}
	_, err := config.Load(env)
	want := "STRIPE_WEBHOOK_SECRET, STRIPE_API_KEY, RETRY_LINK_SECRET, CODEC_TOKEN, DATABASE_URL: placeholders from .env.example"
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("production with placeholders: %v; want one line starting %q", err, want)
	}
	if strings.Contains(err.Error(), "0123456789abcdef") {
		t.Error("the refusal shows a value")
	}
	env["ENVIRONMENT"] = "development"
	if _, err := config.Load(env); err != nil {
		t.Errorf("development with placeholders: %v; want them accepted", err)
	}
}

// Every bad value is reported in one error, one message each, so that one
// start-up shows everything to fix.
func TestAllProblemsAreReportedTogether(t *testing.T) {
	env := config.Map{
		"STRIPE_WEBHOOK_TOLERANCE": "-1s", "WEBHOOK_MAX_BODY_BYTES": "0", "TEMPORAL_SIGNAL_TIMEOUT": "0s",
		"SHUTDOWN_GRACE": "-1s", "WORKER_ACTIVITY_POLLERS": "0", "MAX_ATTEMPTS": "0", "ALTERNATE_MAX_ATTEMPTS": "0",
		"ALTERNATE_SESSION_TYPE": "selfie", "ESCALATION": "shrug", "LATE_FRAUD_POLICY": "ignore",
		"EXPIRE_AFTER": "0s", "REVIEW_DEADLINE": "0s", "LOG_LEVEL": "loud", "LISTEN_ADDR": "8080",
		"PUBLIC_BASE_URL": "example.com", "SMTP_URL": "mail:25", "DATABASE_URL": "mysql://db", "EMAIL_FROM": "me",
		"RETRY_LINK_SECRET": "x", "ADMIN_TOKEN": "y",
	}
	_, err := config.Load(env)
	if err == nil {
		t.Fatal("accepted")
	}
	msgs := strings.Split(err.Error(), "\n")
	for name := range env {
		n := 0
		for _, m := range msgs {
			if strings.HasPrefix(m, name+": ") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d messages for %s; want 1 in:\n%v", n, name, err)
		}
	}
	if len(msgs) != len(env) {
		t.Errorf("%d messages for %d bad values:\n%v", len(msgs), len(env), err)
	}
}

// check-config's listing holds every variable, set or defaulted, and no
// secret: a Stripe secret keeps its prefix and length, another secret its
// length, a URL everything but its password.
func TestEffectiveConfigurationMasksSecrets(t *testing.T) {
	env := config.Map{
		"STRIPE_WEBHOOK_SECRET": "whsec_" + longSecret + ", whsec_short",
		"STRIPE_API_KEY":        "sk_test_" + longSecret,
		"RETRY_LINK_SECRET":     "retry-" + longSecret,
		"TEMPORAL_API_KEY":      "temporal-" + longSecret,
		"SMTP_URL":              "smtp://mailer:smtp-password-1@mail.example.com:587",
		"DATABASE_URL":          "postgres://app:db-password-1@db.example.com/identity?sslmode=require",
		"LISTEN_ADDR":           "0.0.0.0:8080",
	}
	_, settings, _ := config.Effective(env)
	got := map[string]config.Setting{}
	for _, s := range settings {
		got[s.Name] = s
	}
	want := map[string]config.Setting{
		"STRIPE_WEBHOOK_SECRET":  {Name: "STRIPE_WEBHOOK_SECRET", Value: "whsec_…(38 bytes),whsec_…(11 bytes)"},
		"STRIPE_API_KEY":         {Name: "STRIPE_API_KEY", Value: "sk_test_…(40 bytes)"},
		"RETRY_LINK_SECRET":      {Name: "RETRY_LINK_SECRET", Value: "***(38 bytes)"},
		"TEMPORAL_API_KEY":       {Name: "TEMPORAL_API_KEY", Value: "***(41 bytes)"},
		"SMTP_URL":               {Name: "SMTP_URL", Value: "smtp://mailer:xxxxx@mail.example.com:587"},
		"DATABASE_URL":           {Name: "DATABASE_URL", Value: "postgres://app:xxxxx@db.example.com/identity?sslmode=require"},
		"LISTEN_ADDR":            {Name: "LISTEN_ADDR", Value: "0.0.0.0:8080"},
		"ADMIN_TOKEN":            {Name: "ADMIN_TOKEN", Value: "", Default: true},
		"ENVIRONMENT":            {Name: "ENVIRONMENT", Value: "production", Default: true},
		"ADMIN_ADDR":             {Name: "ADMIN_ADDR", Value: "127.0.0.1:8081", Default: true},
		"WEBHOOK_MAX_BODY_BYTES": {Name: "WEBHOOK_MAX_BODY_BYTES", Value: "1048576", Default: true},
		"TEMPORAL_ADDRESS":       {Name: "TEMPORAL_ADDRESS", Value: "localhost:7233", Default: true},
		"TEMPORAL_TLS":           {Name: "TEMPORAL_TLS", Value: "", Default: true},
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %+v; want %+v", name, got[name], w)
		}
	}
	for _, s := range settings {
		for _, secret := range []string{longSecret, "whsec_short", "smtp-password-1", "db-password-1"} {
			if strings.Contains(s.Value, secret) {
				t.Errorf("%s shows a secret: %s", s.Name, s.Value)
			}
		}
	}
	if len(settings) < 40 {
		t.Errorf("%d settings; want every variable Load reads", len(settings))
	}

	// A URL Go cannot parse, or one whose password holds a character that
	// ends the authority, keeps only its scheme and what follows the last
	// '@'; a password parameter is masked even with a bad %-escape.
	for v, want := range map[string]string{
		"postgres://u:pa#ss@db.example.com/app":         "postgres://xxxxx@db.example.com/app",
		"postgres://u:p%zz@db/app":                      "postgres://xxxxx@db/app",
		"postgres://u:12/ss@db/app":                     "postgres://xxxxx@db/app",
		"smtp://u:p?ss@mail.example.com:587":            "smtp://xxxxx@mail.example.com:587",
		"postgres://db/app?password=p%zz":               "postgres://db/app?password=xxxxx",
		"postgres://db:x/app?password=p%zz":             "postgres://xxxxx",
		"http://127.0.0.1:8233, https://ui.example.com": "http://127.0.0.1:8233, https://ui.example.com",
	} {
		if got := config.Mask("DATABASE_URL", v); got != want {
			t.Errorf("Mask(%q) = %q; want %q", v, got, want)
		}
	}
}
