package workflows_test

import (
	"path/filepath"
	"strings"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"

	"identityverification/replay"
	"identityverification/workflows"
)

// The warning before expiry is a change made behind workflow.GetVersion
// (docs/changing-the-workflow.md walks through it). A history
// recorded before it (reminder, then expiry) replays on the old branch, one
// recorded after it (reminder, warning, expiry, with the version marker) on
// the new one; the same change made without GetVersion breaks the old one
// (TMPRL1100), through the replayer 'identity-verification replay' uses.
// New runs take the new branch (TestReminderThenExpiry).
func TestTheExpiryWarningIsVersioned(t *testing.T) {
	before := filepath.Join(historiesDir, "reminder_then_expiry.json")
	after := filepath.Join(historiesDir, "reminder_warning_then_expiry.json")
	markers := func(path string) int {
		h, err := replay.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range h.Events {
			if e.GetEventType() == enumspb.EVENT_TYPE_MARKER_RECORDED && e.GetMarkerRecordedEventAttributes().GetMarkerName() == "Version" {
				n++
			}
		}
		return n
	}
	if markers(before) != 0 || markers(after) != 1 {
		t.Fatalf("%s must be the recording from before the change (no version marker) and %s from after (one): do not re-record them",
			before, after)
	}
	for _, f := range []string{before, after} {
		if res := replay.File(replay.New(), f); !res.OK() {
			t.Errorf("%s no longer replays: %s", f, res.Line())
		}
	}
	undo := workflows.SetExpiryWarningUnversioned()
	defer undo()
	res := replay.File(replay.New(), before)
	if res.OK() || res.Code != "TMPRL1100" {
		t.Fatalf("the change without GetVersion: %s; want a nondeterminism failure (TMPRL1100)", res.Line())
	}
	t.Logf("without GetVersion: %s", res.Line())
}

// Workflow v3 is one GetVersion asked when a run starts: the histories
// recorded before it replay on the old branches, those recorded after it on
// the new ones, and v3 taken without the version breaks the old ones.
func TestWorkflowV3IsVersioned(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(historiesDir, "*.json"))
	undo := workflows.SetWorkflowV3Unversioned()
	defer undo()
	broken := 0
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "v3_") {
			continue
		}
		if res := replay.File(replay.New(), f); !res.OK() {
			if res.Code != "TMPRL1100" {
				t.Errorf("%s: %s; want a nondeterminism failure", f, res.Line())
			}
			broken++
		}
	}
	if broken == 0 {
		t.Fatal("v3 without GetVersion replays every old history: the test shows nothing")
	}
	t.Logf("without GetVersion, %d of the old histories no longer replay", broken)
}
