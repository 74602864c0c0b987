package workflows_test

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/log"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"identityverification/workflows"
)

// The warning before expiry is a change made behind workflow.GetVersion
// (the README's "Changing the workflow safely" walks through it). A history
// recorded before it (reminder, then expiry) replays on the old branch;
// the same change made without GetVersion breaks that replay
// (nondeterminism, TMPRL1100); new runs take the new branch (the harness
// tests: TestReminderThenExpiry).
func TestTheExpiryWarningIsVersioned(t *testing.T) {
	before := filepath.Join(historiesDir, "reminder_then_expiry.json")
	replay := func() error {
		r := sdkworker.NewWorkflowReplayer()
		r.RegisterWorkflowWithOptions(workflows.Verification, workflow.RegisterOptions{Name: workflows.WorkflowName})
		return r.ReplayWorkflowHistoryFromJSONFile(log.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), before)
	}
	if err := replay(); err != nil {
		t.Fatalf("a history from before the change no longer replays: %v", err)
	}
	undo := workflows.SetExpiryWarningUnversioned()
	defer undo()
	err := replay()
	if err == nil || !strings.Contains(err.Error(), "TMPRL1100") {
		t.Fatalf("the change without GetVersion: replay err = %v; want a nondeterminism error (TMPRL1100)", err)
	}
	t.Logf("without GetVersion: %v", err)
}
