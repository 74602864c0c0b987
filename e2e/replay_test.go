package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"identityverification/replay"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/workflows"
)

// Before a deploy, `identity-verification replay` replays the namespace's
// runs against the workflow code in the binary. Sessions on three paths
// (one verified and closed, one waiting for the user, one in review) all
// replay against this build, and the histories it saves replay through
// package replay; a build whose workflow changed without GetVersion
// (-tags replaybreak) fails them with TMPRL1100 and exits non-zero. Replay
// does not touch the database, so SQLite alone runs it.
func TestReplayCommandCatchesAChangeWithoutGetVersion(t *testing.T) {
	s := startStack(t, storetest.Databases(t)[0], nil)
	verified, _ := s.newSession(store.Contact{})
	waiting, _ := s.newSession(store.Contact{})
	review, _ := s.newSession(store.Contact{})
	s.send(testevent.Options{Type: "verified", SessionID: verified})
	s.send(testevent.Options{Type: "requires_input", SessionID: waiting, ErrorCode: "document_expired"})
	s.send(testevent.Options{Type: "requires_input", SessionID: review, ErrorCode: "selfie_manipulated"})
	s.waitRow(verified, workflows.StatusVerified)
	s.waitRow(waiting, workflows.StatusRequiresInput)
	s.waitRow(review, workflows.StatusInReview)

	ids := map[string]enumspb.WorkflowExecutionStatus{
		workflows.WorkflowID(verified): enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED,
		workflows.WorkflowID(waiting):  enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING,
		workflows.WorkflowID(review):   enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING,
	}
	var quoted []string
	for id := range ids {
		quoted = append(quoted, "'"+id+"'")
	}
	slices.Sort(quoted)
	// Only this test's runs: other tests share the namespace.
	query := "WorkflowId IN (" + strings.Join(quoted, ", ") + ")"
	eventually(t, "visibility lists the three runs, the verified one closed", func() error {
		resp, err := s.temporal.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{Query: query})
		if err != nil {
			return err
		}
		seen := map[string]enumspb.WorkflowExecutionStatus{}
		for _, e := range resp.Executions {
			seen[e.GetExecution().GetWorkflowId()] = e.GetStatus()
		}
		if !maps.Equal(seen, ids) {
			return fmt.Errorf("listed %v", seen)
		}
		return nil
	})

	t.Run("this build replays every run and saves histories that replay", func(t *testing.T) {
		dir := t.TempDir()
		lines, exit, stderr := s.replayCommand(t, buildCommand(t, "../cmd/identity-verification"), "-query", query, "-save", dir)
		if exit != 0 {
			t.Errorf("exit %d; want 0\n%s", exit, stderr)
		}
		runs := checkLines(t, lines, ids, " ok")
		if want := fmt.Sprintf("3 ok, 0 failed in namespace %s", s.namespace); lines[len(lines)-1] != want {
			t.Errorf("summary %q; want %q", lines[len(lines)-1], want)
		}
		for id, run := range runs {
			res := replay.File(replay.New(), filepath.Join(dir, id+"_"+run+".json"))
			if !res.OK() || res.WorkflowID != id || res.RunID != run || res.Events < 3 {
				t.Errorf("saved history of %s: %s (%v)", id, res.Line(), res.Err)
			}
		}
	})

	t.Run("a build changed without GetVersion fails them with TMPRL1100", func(t *testing.T) {
		lines, exit, stderr := s.replayCommand(t, buildCommand(t, "../cmd/identity-verification", "-tags", "replaybreak"), "-query", query)
		if exit != 1 || !strings.Contains(stderr, "3 of 3 runs do not replay against this build") {
			t.Errorf("exit %d; want 1 saying 3 of 3 runs do not replay\n%s", exit, stderr)
		}
		// Each names where: the event, or for a local activity's marker
		// (the verified run's first command) the task that recorded it.
		checkLines(t, lines, ids, " FAIL TMPRL1100 at event ", " FAIL TMPRL1100 in the task completed at event ")
		if want := fmt.Sprintf("0 ok, 3 failed in namespace %s", s.namespace); lines[len(lines)-1] != want {
			t.Errorf("summary %q; want %q", lines[len(lines)-1], want)
		}
	})
}

// replayCommand runs `bin replay args...` with the stack's TEMPORAL_*
// variables and nothing else; it returns the lines of its output, its exit
// code and its standard error.
func (s *stack) replayCommand(t *testing.T, bin string, args ...string) ([]string, int, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"replay"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"TEMPORAL_ADDRESS=" + s.env["TEMPORAL_ADDRESS"], "TEMPORAL_NAMESPACE=" + s.env["TEMPORAL_NAMESPACE"]}
	if keys := s.env["PAYLOAD_ENCRYPTION_KEYS"]; keys != "" { // the stack encrypts: replay as its workers read
		cmd.Env = append(cmd.Env, "PAYLOAD_ENCRYPTION_KEYS="+keys)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	t.Logf("identity-verification replay %s\n%s", strings.Join(args, " "), stdout.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines, cmd.ProcessState.ExitCode(), stderr.String()
}

// checkLines checks there is one line per workflow, `<id> <run> <n> events`
// followed by want, and a summary; it returns the run of each workflow.
func checkLines(t *testing.T, lines []string, ids map[string]enumspb.WorkflowExecutionStatus, want ...string) map[string]string {
	t.Helper()
	runs := map[string]string{}
	if len(lines) != len(ids)+1 {
		t.Fatalf("%d lines; want one per run and a summary", len(lines))
	}
	for _, line := range lines[:len(ids)] {
		var id, run string
		var events int
		if _, err := fmt.Sscanf(line, "%s %s %d events", &id, &run, &events); err != nil || events < 3 {
			t.Errorf("line %q: %v", line, err)
			continue
		}
		if _, ok := ids[id]; !ok {
			t.Errorf("line %q: not one of this test's runs", line)
		}
		if !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(line, fmt.Sprintf(" %d events%s", events, w)) }) {
			t.Errorf("line %q; want one of %q after the events", line, want)
		}
		runs[id] = run
	}
	if len(runs) != len(ids) {
		t.Errorf("runs %v; want one for each of %v", runs, ids)
	}
	return runs
}
