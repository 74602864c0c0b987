package e2e

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/client"

	"identityverification/devstack"
	"identityverification/worker"
)

// A worker on a namespace without this service's search attributes would
// fail every workflow task forever; it refuses to start instead.
func TestWorkerRefusesANamespaceWithoutSearchAttributes(t *testing.T) {
	out, err := exec.Command(filepath.Join("..", ".bin", "temporal"), "operator", "namespace", "create",
		"--address", components.temporal.Address, "--namespace", "e2e-bare").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "already") {
		t.Fatalf("create namespace: %v\n%s", err, out)
	}
	c, err := client.Dial(client.Options{HostPort: components.temporal.Address, Namespace: "e2e-bare", Logger: devstack.QuietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = worker.CheckSearchAttributes(context.Background(), c, "e2e-bare")
	if !errors.Is(err, worker.ErrSearchAttributesMissing) || !strings.Contains(err.Error(), "VerificationStatus") {
		t.Errorf("err = %v; want ErrSearchAttributesMissing naming the attributes", err)
	}
	if err := worker.CheckSearchAttributes(context.Background(), c, namespaces["sqlite"]); err != nil {
		t.Errorf("registered namespace: %v", err)
	}
}
