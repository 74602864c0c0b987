package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
