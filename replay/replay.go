// Package replay replays workflow histories against the workflow code built
// into this binary. It is the project's one replayer: the corpus test
// (workflows/testdata/histories) and `identity-verification replay`, which
// checks the cluster's own histories before a deploy, both go through it.
//
// A history that no longer replays means the code changed the commands an
// existing run already recorded: put the change behind workflow.GetVersion
// (docs/changing-the-workflow.md).
package replay

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"identityverification/workflows"
)

// New returns a replayer with the service's workflow registered under
// workflows.WorkflowName, as the worker registers it.
func New() worker.WorkflowReplayer {
	return newReplayer(workflowCode, worker.WorkflowReplayerOptions{})
}

// NewWith is New with the converters the workers run with: those of the
// payload codec (codec.Codec) when keys are configured, so encrypted
// histories replay. Unencrypted histories replay with them too. A nil
// converter is the SDK's default.
func NewWith(dc converter.DataConverter, fc converter.FailureConverter) worker.WorkflowReplayer {
	return newReplayer(workflowCode, worker.WorkflowReplayerOptions{DataConverter: dc, FailureConverter: fc})
}

func newReplayer(fn any, opts worker.WorkflowReplayerOptions) worker.WorkflowReplayer {
	r, err := worker.NewWorkflowReplayerWithOptions(opts)
	if err != nil {
		panic(err) // only plugins and external storage, which it is never given, can fail it
	}
	r.RegisterWorkflowWithOptions(fn, workflow.RegisterOptions{Name: workflows.WorkflowName})
	return r
}

// Result is one history's replay.
type Result struct {
	WorkflowID, RunID string
	Events            int   // events in the history
	Err               error // nil when the history replays
	// Code is the SDK's error code, such as TMPRL1100 (nondeterminism),
	// when Err carries one.
	Code string
	// Event is the id of the history event at which the SDK found the
	// code no longer matches, when Err names it; 0 otherwise.
	Event int64
	// Task is, when Event is unknown, the WorkflowTaskCompleted event of
	// the workflow task whose commands no longer match, when Err names it
	// (a mismatched marker is described by its task, not its position).
	Task int64
}

// OK says whether the history replayed.
func (r Result) OK() bool { return r.Err == nil }

// Line is the result on one line: `<workflow id> <run id> <n> events ok`
// or `... FAIL <code> at event <n>: <short error>` (`in the task completed
// at event <n>` when the SDK names only the workflow task whose commands no
// longer match, as for a local activity's marker). The error is shortened
// to what names the mismatch; event attributes (which may hold payloads)
// are left out.
func (r Result) Line() string {
	head := fmt.Sprintf("%s %s %d events", r.WorkflowID, r.RunID, r.Events)
	if r.Err == nil {
		return head + " ok"
	}
	fail := head + " FAIL"
	if r.Code != "" {
		fail += " " + r.Code
	}
	if r.Event > 0 {
		fail += fmt.Sprintf(" at event %d", r.Event)
	} else if r.Task > 0 {
		fail += fmt.Sprintf(" in the task completed at event %d", r.Task)
	}
	return fail + ": " + shortError(r.Err.Error())
}

// History replays one run's history against the registered workflow.
func History(r worker.WorkflowReplayer, workflowID, runID string, h *historypb.History) Result {
	res := Result{WorkflowID: workflowID, RunID: runID, Events: len(h.GetEvents())}
	// A run whose first workflow task has not completed has no commands
	// to compare yet (and the SDK refuses fewer than 3 events).
	if res.Events < 3 {
		return res
	}
	err := r.ReplayWorkflowHistoryWithOptions(quiet, h, worker.ReplayWorkflowHistoryOptions{
		OriginalExecution: workflow.Execution{ID: workflowID, RunID: runID}})
	if err != nil {
		res.Err = err
		res.Code, res.Event = parseError(err.Error())
		if res.Event == 0 {
			res.Event = mismatchedEvent(err.Error(), h)
		}
		if res.Event == 0 {
			res.Task = mismatchedTask(err.Error())
		}
	}
	return res
}

// mismatchedEvent finds the event a mismatch error describes by the
// activity or timer id it names; 0 when it names none.
func mismatchedEvent(text string, h *historypb.History) int64 {
	m := mismatchRe.FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	for _, e := range h.GetEvents() {
		if id := e.GetActivityTaskScheduledEventAttributes().GetActivityId(); m[1] == "ActivityTaskScheduled" && id == m[2] {
			return e.GetEventId()
		}
		if id := e.GetTimerStartedEventAttributes().GetTimerId(); m[1] == "TimerStarted" && id == m[2] {
			return e.GetEventId()
		}
	}
	return 0
}

// mismatchedTask is the WorkflowTaskCompleted event a mismatch error's
// history event names (a marker's WorkflowTaskCompletedEventId); 0 when it
// names none.
func mismatchedTask(text string) int64 {
	m := taskRe.FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// File replays a history saved as JSON (the format of
// workflows/testdata/histories and of Live's Options.Save). The run id is
// the history's own; the workflow id is the file's name, less the
// `_<run id>` suffix that Live gives it.
func File(r worker.WorkflowReplayer, path string) Result {
	name := strings.TrimSuffix(filepath.Base(path), ".json")
	h, err := ReadFile(path)
	if err != nil {
		return Result{WorkflowID: name, Err: err}
	}
	runID := h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetOriginalExecutionRunId()
	return History(r, strings.TrimSuffix(name, "_"+runID), runID, h)
}

// ReadFile reads a history saved as JSON.
func ReadFile(path string) (*historypb.History, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	h, err := client.HistoryFromJSON(bytes.NewReader(b), client.HistoryJSONOptions{})
	if err != nil {
		return nil, fmt.Errorf("replay: %s: %w", path, err)
	}
	if len(h.GetEvents()) == 0 {
		return nil, fmt.Errorf("replay: %s: no events", path)
	}
	return h, nil
}

// quiet drops the SDK's replay logs: a failed replay logs the workflow
// task's failure, whose details may hold payloads.
var quiet = log.NewStructuredLogger(slog.New(slog.DiscardHandler))

var (
	codeRe = regexp.MustCompile(`\[(TMPRL\d{4})\]`)
	// How the SDK's nondeterminism errors (internal/internal_command_state_machine.go)
	// name the history event where replay parted from the history.
	eventRes = []*regexp.Regexp{
		regexp.MustCompile(`history event position (\d+)`),
		regexp.MustCompile(`scheduleEventID: (\d+)`),
		regexp.MustCompile(`scheduledEventID: (\d+)`),
		regexp.MustCompile(`for event ID: (\d+)`),
	}
	// A mismatch describes the event (`history event is TimerStarted:
	// (TimerId:10, ...)`) without its id; its activity or timer id leads
	// to it in the history.
	mismatchRe = regexp.MustCompile(`history event is (ActivityTaskScheduled|TimerStarted): \((?:ActivityId|TimerId):([^,)]+)`)
	// A mismatched or missing marker names the task that recorded it.
	taskRe = regexp.MustCompile(`(?:history event is|missing replay command for) \w+: \(.*?WorkflowTaskCompletedEventId:(\d+)`)
	// Event and command descriptions (`TimerStarted: (attributes)`) are
	// cut to their type.
	attrsRe = regexp.MustCompile(`(?s)(\w+): \(.*?\)(, replay command is|$)`)
)

// parseError finds the SDK's error code and the mismatching event in an
// error's text.
func parseError(text string) (code string, event int64) {
	if m := codeRe.FindStringSubmatch(text); m != nil {
		code = m[1]
	}
	for _, re := range eventRes {
		if m := re.FindStringSubmatch(text); m != nil {
			event, _ = strconv.ParseInt(m[1], 10, 64)
			break
		}
	}
	return code, event
}

// shortError is the first sentence of the error's message, past the SDK's
// code, cut before anything that prints a value: attributes, structs,
// maps, marker data (payloads live there).
func shortError(text string) string {
	if i := codeRe.FindStringIndex(text); i != nil {
		text = text[i[1]:]
	}
	text = attrsRe.ReplaceAllString(strings.TrimSpace(text), "$1$2")
	if i := strings.Index(text, ". "); i >= 0 {
		text = text[:i]
	}
	for _, values := range []string{"\n", "(", "{", "map[", "markerData"} {
		if i := strings.Index(text, values); i >= 0 {
			text = text[:i]
		}
	}
	text = strings.TrimRight(text, " ,:.")
	const max = 200
	if len(text) > max {
		text = text[:max] + "..."
	}
	return text
}
