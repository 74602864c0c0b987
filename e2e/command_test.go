package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"identityverification/devstack"
	"identityverification/testevent"
)

// The service refuses to start without a webhook secret, saying why.
func TestServiceRefusesToStartWithoutAWebhookSecret(t *testing.T) {
	cmd := exec.Command(buildCommand(t, "../cmd/identity-verification"), "webhook")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v; want status 1", err)
	}
	if !strings.Contains(string(out), "STRIPE_WEBHOOK_SECRET is not set") {
		t.Errorf("output %q does not say the secret is missing", out)
	}
}

// A webhook-only process starts while Temporal is down: alive, not ready,
// and every delivery answered 503 so that Stripe retries it.
func TestWebhookStartsWhileTemporalIsDownAndAnswers503(t *testing.T) {
	dead, _ := devstack.FreePort()
	listen, _ := devstack.FreePort()
	opsPort, _ := devstack.FreePort()
	base := fmt.Sprintf("http://127.0.0.1:%d", listen)
	opsBase := fmt.Sprintf("http://127.0.0.1:%d", opsPort)
	cmd := exec.Command(buildCommand(t, "../cmd/identity-verification"), "webhook")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		fmt.Sprintf("TEMPORAL_ADDRESS=127.0.0.1:%d", dead), fmt.Sprintf("LISTEN_ADDR=127.0.0.1:%d", listen),
		fmt.Sprintf("OPS_ADDR=127.0.0.1:%d", opsPort),
		"STRIPE_WEBHOOK_SECRET=" + secret, "STRIPE_API_KEY=sk_test_x", "RETRY_LINK_SECRET=x", "TEMPORAL_SIGNAL_TIMEOUT=1s",
		"ENVIRONMENT=development"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	eventually(t, "the webhook to be alive", func() error { return devstack.HTTPOK(context.Background(), opsBase+"/livez") })
	if err := devstack.HTTPOK(context.Background(), opsBase+"/readyz"); err == nil {
		t.Error("/readyz is 200 while Temporal is down")
	}
	payload, _ := testevent.Build(testevent.Options{Type: "verified"})
	code, body, err := testevent.Send(context.Background(), http.DefaultClient, base+"/webhooks/stripe", secret, payload)
	if err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("delivery: %d %s %v; want 503", code, body, err)
	}
}

// The roles split the secrets: a webhook process serves no admin listener
// (so it need not hold ADMIN_TOKEN or the desk's client secret), and an
// admin process starts without the webhook's or the retry links' secrets,
// authenticating before anything else.
func TestTheWebhookAndAdminRolesRunApart(t *testing.T) {
	bin := buildCommand(t, "../cmd/identity-verification")
	dead, _ := devstack.FreePort()
	listen, _ := devstack.FreePort()
	adminPort, _ := devstack.FreePort()
	opsWebhook, _ := devstack.FreePort()
	opsAdmin, _ := devstack.FreePort()
	common := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), fmt.Sprintf("TEMPORAL_ADDRESS=127.0.0.1:%d", dead),
		fmt.Sprintf("ADMIN_ADDR=127.0.0.1:%d", adminPort), "ADMIN_TOKEN=e2e-roles-token", "STRIPE_API_KEY=sk_test_x",
		"DATABASE_URL=sqlite:" + t.TempDir() + "/roles.db", "ENVIRONMENT=development"}
	start := func(role string, env ...string) {
		cmd := exec.Command(bin, role)
		cmd.Env = append(append([]string{}, common...), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	}
	start("webhook", fmt.Sprintf("LISTEN_ADDR=127.0.0.1:%d", listen), fmt.Sprintf("OPS_ADDR=127.0.0.1:%d", opsWebhook),
		"STRIPE_WEBHOOK_SECRET="+secret, "RETRY_LINK_SECRET=x")
	eventually(t, "the webhook to be alive", func() error {
		return devstack.HTTPOK(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/livez", opsWebhook))
	})
	if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/admin/reviews", adminPort)); err == nil {
		t.Error("the webhook process serves the admin listener")
	}
	start("admin", fmt.Sprintf("OPS_ADDR=127.0.0.1:%d", opsAdmin))
	adminURL := fmt.Sprintf("http://127.0.0.1:%d/admin/reviews", adminPort)
	eventually(t, "the admin listener to serve", func() error {
		req, _ := http.NewRequest(http.MethodGet, adminURL, nil)
		req.Header.Set("Authorization", "Bearer e2e-roles-token")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", res.StatusCode)
		}
		return nil
	})
	res, err := http.Get(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("the admin listener without a credential: %d; want 401", res.StatusCode)
	}
}
