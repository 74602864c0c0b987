package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"identityverification/config"
)

const testSecret = "whsec_0123456789abcdefghijklmnopqrstuvwxyz"

func TestCheckConfigPrintsTheEffectiveConfigurationMasked(t *testing.T) {
	env := config.Map{"STRIPE_WEBHOOK_SECRET": testSecret, "STRIPE_API_KEY": "sk_test_" + testSecret,
		"RETRY_LINK_SECRET": "retry-" + testSecret, "LISTEN_ADDR": "0.0.0.0:8080"}
	var out bytes.Buffer
	if err := checkConfig(env, nil, &out); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`STRIPE_WEBHOOK_SECRET +set +whsec_…\(42 bytes\)`,
		`RETRY_LINK_SECRET +set +\*\*\*\(48 bytes\)`,
		`LISTEN_ADDR +set +0\.0\.0\.0:8080`,
		`ENVIRONMENT +default +production`,
		`ADMIN_TOKEN +unset`,
		`configuration for all: ok`,
	} {
		if !regexp.MustCompile(`(?m)^` + line + `$`).MatchString(out.String()) {
			t.Errorf("no line %s in:\n%s", line, out.String())
		}
	}
	if strings.Contains(out.String(), testSecret) {
		t.Errorf("a secret is printed:\n%s", out.String())
	}
}

func TestCheckConfigFailsWithEveryProblem(t *testing.T) {
	env := config.Map{"STRIPE_WEBHOOK_SECRET": "whsec_short", "WEBHOOK_MAX_BODY_BYTES": "0", "LOG_LEVEL": "loud"}
	var out bytes.Buffer
	err := checkConfig(env, []string{"webhook"}, &out)
	if err == nil {
		t.Fatal("bad configuration passed")
	}
	for _, want := range []string{"STRIPE_WEBHOOK_SECRET: secret 1 of 1 must be at least 32 bytes",
		"WEBHOOK_MAX_BODY_BYTES:", "LOG_LEVEL:", "STRIPE_API_KEY is not set", "RETRY_LINK_SECRET is not set",
		"5 problem(s)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error()+out.String(), "whsec_short") {
		t.Error("the secret is shown")
	}
	if !strings.Contains(out.String(), "WEBHOOK_MAX_BODY_BYTES") {
		t.Errorf("the configuration is not printed with the problems:\n%s", out.String())
	}
}

func TestCheckConfigRefusesAnUnknownRole(t *testing.T) {
	if err := checkConfig(config.Map{}, []string{"scheduler"}, &bytes.Buffer{}); err == nil {
		t.Error("unknown role accepted")
	}
}

// The compose file's gate job runs `check-config -q all`: its log is the
// verdict alone, one line, so a refused production stack says why at once.
func TestCheckConfigQuietPrintsTheVerdictOnly(t *testing.T) {
	env := config.Map{"STRIPE_WEBHOOK_SECRET": testSecret, "STRIPE_API_KEY": "sk_test_" + testSecret,
		"RETRY_LINK_SECRET": "retry-" + testSecret}
	var out bytes.Buffer
	if err := checkConfig(env, []string{"-q", "all"}, &out); err != nil || out.String() != "configuration for all: ok\n" {
		t.Errorf("quiet, good configuration: %q, %v; want the verdict line alone", out.String(), err)
	}

	env["RETRY_LINK_SECRET"] = config.Placeholder + "_retry_link_secret_0123456789abcdef0123456789"
	out.Reset()
	err := checkConfig(env, []string{"-q", "all"}, &out)
	if err == nil || out.Len() != 0 || strings.Contains(err.Error(), "\n") ||
		!strings.HasPrefix(err.Error(), "configuration for all: RETRY_LINK_SECRET: placeholders from .env.example") {
		t.Errorf("quiet, a placeholder in production: printed %q, error %v; want nothing printed and one line naming it", out.String(), err)
	}
}
