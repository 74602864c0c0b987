//go:build replaybreak

package replay

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"identityverification/workflows"
)

// workflowCode, in the replaybreak build, is the workflow changed
// incompatibly without workflow.GetVersion: it sleeps before doing what it
// did. Every run that already recorded its first command no longer
// replays (TMPRL1100). The end-to-end test builds the command with
// -tags replaybreak to show that `identity-verification replay` catches it.
var workflowCode = changedWithoutVersion

func changedWithoutVersion(ctx workflow.Context, in workflows.Input) error {
	if err := workflow.Sleep(ctx, time.Second); err != nil {
		return err
	}
	return workflows.Verification(ctx, in)
}
