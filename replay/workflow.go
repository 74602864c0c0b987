//go:build !replaybreak

package replay

import "identityverification/workflows"

// workflowCode is the workflow this binary replays: the service's own.
// (The replaybreak build swaps in a change made without GetVersion.)
var workflowCode = workflows.Verification
