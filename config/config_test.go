package config_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"identityverification/config"
	"identityverification/workflows"
)

func TestDefaultsAndTheContract(t *testing.T) {
	c, err := config.Load(config.Map{"ENVIRONMENT": "development",
		"STRIPE_WEBHOOK_SECRET": " whsec_a , whsec_b ", "TEMPORAL_ADDRESS": "temporal:7233"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.WebhookSecrets, "|") != "whsec_a|whsec_b" {
		t.Errorf("secrets = %q", c.WebhookSecrets)
	}
	if c.Temporal.HostPort != "temporal:7233" || c.Temporal.Namespace != "default" {
		t.Errorf("temporal = %s/%s", c.Temporal.HostPort, c.Temporal.Namespace)
	}
	if c.WebhookTolerance != 300*time.Second || c.WebhookMaxBody != 1<<20 || c.Policy.MaxAttempts != 3 ||
		c.Policy.LateFraud != workflows.LateFraudReview ||
		c.DatabaseURL != "sqlite:identity-verification.db" {
		t.Errorf("defaults = %+v", c)
	}
}

func TestProcessesRefuseToStartWithoutTheirSecrets(t *testing.T) {
	c, err := config.Load(config.Map{})
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckWebhook()
	if !errors.Is(err, config.ErrNoWebhookSecret) || !strings.Contains(err.Error(), "STRIPE_WEBHOOK_SECRET is not set") {
		t.Errorf("webhook without a secret: %v", err)
	}
	if err := c.CheckWorker(); !errors.Is(err, config.ErrNoStripeKey) || !errors.Is(err, config.ErrNoRetryLinkSecret) {
		t.Errorf("worker without secrets: %v", err)
	}
}

func TestPolicyFromTheEnvironment(t *testing.T) {
	c, err := config.Load(config.Map{"MAX_ATTEMPTS": "5", "ESCALATION": "review", "REMINDER_AFTER": "2h",
		"ESCALATION_BY_CODE": "document_expired:alternate", "NON_RETRYABLE_CODES": "consent_declined",
		"LATE_FRAUD_POLICY": "record"})
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policy
	if p.MaxAttempts != 5 || p.Escalation != workflows.PolicyReview || p.ReminderAfter != 2*time.Hour ||
		p.EscalationFor("document_expired") != workflows.PolicyAlternate || p.Retryable("consent_declined") ||
		!p.Retryable("under_supported_age") || p.LateFraud != workflows.LateFraudRecord {
		t.Errorf("policy = %+v", p)
	}
}

func TestWorkerTuningFromTheEnvironment(t *testing.T) {
	c, err := config.Load(config.Map{"WORKER_WORKFLOW_POLLERS": "8", "WORKER_STICKY_CACHE_SIZE": "500"})
	if err != nil {
		t.Fatal(err)
	}
	want := config.WorkerTuning{WorkflowPollers: 8, ActivityPollers: 8, WorkflowTasks: 1000, Activities: 100,
		LocalActivities: 1000, StickyCacheSize: 500}
	if c.Worker != want {
		t.Errorf("worker = %+v; want %+v", c.Worker, want)
	}
	_, err = config.Load(config.Map{"WORKER_ACTIVITY_POLLERS": "0", "WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES": "-1",
		"WORKER_WORKFLOW_POLLERS": "1", "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "1"})
	for _, name := range []string{"WORKER_ACTIVITY_POLLERS", "WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES",
		"WORKER_WORKFLOW_POLLERS", "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error %v does not name %s", err, name)
		}
	}
}

func TestInvalidValuesAreReportedTogether(t *testing.T) {
	_, err := config.Load(config.Map{"MAX_ATTEMPTS": "three", "STRIPE_WEBHOOK_TOLERANCE": "5 minutes", "ESCALATION": "shrug",
		"LATE_FRAUD_POLICY": "ignore"})
	for _, want := range []string{"MAX_ATTEMPTS", "STRIPE_WEBHOOK_TOLERANCE", "ESCALATION", "LATE_FRAUD_POLICY"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestReconcileSettingsFromTheEnvironment(t *testing.T) {
	for _, tc := range []struct {
		env  config.Map
		want config.Reconcile
	}{
		{config.Map{}, config.Reconcile{Every: 15 * time.Minute, Overlap: time.Hour}},
		{config.Map{"RECONCILE_EVERY": "5m", "RECONCILE_OVERLAP": "2h"}, config.Reconcile{Every: 5 * time.Minute, Overlap: 2 * time.Hour}},
		{config.Map{"RECONCILE_EVERY": "off"}, config.Reconcile{Overlap: time.Hour}},
	} {
		c, err := config.Load(tc.env)
		if err != nil || c.Reconcile != tc.want {
			t.Errorf("%v: reconcile = %+v, %v; want %+v", tc.env, c.Reconcile, err, tc.want)
		}
	}
}

// Issue 19, item 9: a session made through the admin API sends the user
// back to the webhook's thank-you page unless RETURN_URL says otherwise.
func TestTheReturnURLDefaultsToTheThankYouPage(t *testing.T) {
	c, err := config.Load(config.Map{"PUBLIC_BASE_URL": "https://verify.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ReturnURL != "https://verify.example.com/verify/done" {
		t.Errorf("RETURN_URL = %q; want the thank-you page", c.ReturnURL)
	}
	c, _ = config.Load(config.Map{"RETURN_URL": "https://shop.example.com/thanks"})
	if c.ReturnURL != "https://shop.example.com/thanks" {
		t.Errorf("RETURN_URL = %q; want the one set", c.ReturnURL)
	}
}

func TestTrustedProxiesAreAddressesAndNetworks(t *testing.T) {
	c, err := config.Load(config.Map{"TRUSTED_PROXIES": "10.0.0.5, 10.0.1.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.TrustedProxies); got != "[10.0.0.5/32 10.0.1.0/24]" {
		t.Errorf("TrustedProxies = %s", got)
	}
	if c, _ := config.Load(config.Map{}); len(c.TrustedProxies) != 0 {
		t.Errorf("TrustedProxies by default = %v; want none", c.TrustedProxies)
	}
	_, err = config.Load(config.Map{"TRUSTED_PROXIES": "10.0.0.5,haproxy"})
	if err == nil || !strings.HasPrefix(err.Error(), "TRUSTED_PROXIES: ") || !strings.Contains(err.Error(), `"haproxy"`) {
		t.Errorf("a host name: %v; want a message naming TRUSTED_PROXIES and the entry", err)
	}
}
