package replay

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"identityverification/workflows"
)

const corpus = "../workflows/testdata/histories"

func TestARecordedHistoryReplaysWithItsRunAndEvents(t *testing.T) {
	path := filepath.Join(corpus, "verified_match.json")
	h, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := File(New(), path)
	want := Result{WorkflowID: "verified_match", Events: len(h.Events),
		RunID: h.Events[0].GetWorkflowExecutionStartedEventAttributes().GetOriginalExecutionRunId()}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("File = %+v; want %+v", got, want)
	}
	if line := got.Line(); line != "verified_match "+want.RunID+" 23 events ok" {
		t.Errorf("line %q", line)
	}
}

// A change made without GetVersion fails with the SDK's nondeterminism
// code and the event where replay parted from the history.
func TestAChangeWithoutGetVersionFailsWithTMPRL1100AtAnEvent(t *testing.T) {
	sleepsFirst := func(ctx workflow.Context, in workflows.Input) error {
		if err := workflow.Sleep(ctx, time.Second); err != nil {
			return err
		}
		return workflows.Verification(ctx, in)
	}
	for _, name := range []string{"canceled", "verified_match"} {
		t.Run(name, func(t *testing.T) {
			res := File(newReplayer(sleepsFirst, worker.WorkflowReplayerOptions{}), filepath.Join(corpus, name+".json"))
			if res.Err == nil || res.Code != "TMPRL1100" || res.Event <= 0 {
				t.Fatalf("result %+v; want TMPRL1100 at an event", res)
			}
			if line := res.Line(); !strings.Contains(line, " FAIL TMPRL1100 at event ") {
				t.Errorf("line %q", line)
			}
		})
	}
}

// The error texts are the SDK's (go.temporal.io/sdk internal/); what the
// short error keeps never holds attributes, where payloads live.
func TestParseAndShortenTheSDKsErrors(t *testing.T) {
	for _, c := range []struct {
		name, text, code string
		event            int64
		short            string
	}{
		{"a missing command names its position",
			"[TMPRL1100] During replay, a matching Timer command was expected in history event position 10. However, the replayed code did not produce that. Possible causes are nondeterministic workflow definition code, or an incompatible change in the workflow definition.",
			"TMPRL1100", 10, "During replay, a matching Timer command was expected in history event position 10"},
		{"an activity lookup names the scheduled event",
			"[TMPRL1100] lookup failed for scheduledEventID to activityID: scheduleEventID: 11, activityID: 11",
			"TMPRL1100", 11, "lookup failed for scheduledEventID to activityID: scheduleEventID: 11, activityID: 11"},
		{"a mismatch keeps the types, not the attributes",
			`[TMPRL1100] nondeterministic workflow: history event is MarkerRecorded: (MarkerName:LocalActivity, Details:map[data:payloads:{data:"secret"}], WorkflowTaskCompletedEventId:5), replay command is StartTimer: (TimerId:5, StartToFireTimeout:(Seconds:1, Nanos:0))`,
			"TMPRL1100", 0, "nondeterministic workflow: history event is MarkerRecorded, replay command is StartTimer"},
		{"marker data is cut",
			`[TMPRL1100] code executed local activity RecordTransition, but history event found SendEmail, markerData: {"secret"}`,
			"TMPRL1100", 0, "code executed local activity RecordTransition, but history event found SendEmail"},
		{"an error without a code",
			"boom", "", 0, "boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, event := parseError(c.text)
			if code != c.code || event != c.event {
				t.Errorf("parseError = %q, %d; want %q, %d", code, event, c.code, c.event)
			}
			if got := shortError(c.text); got != c.short {
				t.Errorf("shortError = %q; want %q", got, c.short)
			}
		})
	}
}

// A mismatched marker (a local activity's, the first command of a
// one-step verification) is named by the task that recorded it.
func TestAMismatchedMarkerNamesItsTask(t *testing.T) {
	text := `[TMPRL1100] nondeterministic workflow: history event is MarkerRecorded: (MarkerName:LocalActivity, Details:map[data:payloads:{data:"secret"}], WorkflowTaskCompletedEventId:5), replay command is StartTimer: (TimerId:5, StartToFireTimeout:(Seconds:1, Nanos:0))`
	if got := mismatchedTask(text); got != 5 {
		t.Fatalf("mismatchedTask = %d; want 5", got)
	}
	// A local activity the new code no longer calls.
	if got := mismatchedTask(`[TMPRL1100] nondeterministic workflow: missing replay command for MarkerRecorded: (MarkerName:LocalActivity, Details:map[data:payloads:{data:"secret"}], WorkflowTaskCompletedEventId:9)`); got != 9 {
		t.Errorf("mismatchedTask of a missing marker = %d; want 9", got)
	}
	if got := mismatchedTask("[TMPRL1100] During replay, a matching Timer command was expected in history event position 10"); got != 0 {
		t.Errorf("mismatchedTask of a positioned error = %d; want 0", got)
	}
	r := Result{WorkflowID: "wf", RunID: "run", Events: 13, Err: errors.New(text), Code: "TMPRL1100", Task: 5}
	want := "wf run 13 events FAIL TMPRL1100 in the task completed at event 5: nondeterministic workflow: history event is MarkerRecorded, replay command is StartTimer"
	if r.Line() != want {
		t.Errorf("Line = %q; want %q", r.Line(), want)
	}
}

// Live lists, fetches, replays, prints a line per run and a summary, stops
// at the limit and saves what it fetched; the saved files replay.
func TestLiveReplaysPrintsAndSaves(t *testing.T) {
	c := &fakeClient{histories: map[string]*historypb.History{}}
	for _, name := range []string{"verified_match", "canceled", "failures_then_verified"} {
		h, err := ReadFile(filepath.Join(corpus, name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		c.add("wf-"+name, h)
	}
	// A history whose activity the code does not schedule: it fails.
	h, _ := ReadFile(filepath.Join(corpus, "verified_match.json"))
	for _, e := range h.Events {
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil {
			a.ActivityType.Name = "SomethingElse"
			break
		}
	}
	c.add("wf-changed", h)

	t.Run("all of them, two a page", func(t *testing.T) {
		dir := t.TempDir()
		var out bytes.Buffer
		sum, err := Live(context.Background(), c, "ns", Options{Query: "q", Save: dir}, &out)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Summary{OK: 3, Failed: 1}); sum != want {
			t.Errorf("summary %+v; want %+v", sum, want)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 5 {
			t.Fatalf("output:\n%s", out.String())
		}
		for i, id := range c.order[:3] {
			if want := id + " " + c.run(id) + " "; !strings.HasPrefix(lines[i], want) || !strings.HasSuffix(lines[i], " events ok") {
				t.Errorf("line %d: %q; want %q... ok", i, lines[i], want)
			}
		}
		if want := "wf-changed " + c.run("wf-changed") + " 23 events FAIL TMPRL1100 at event 8: nondeterministic workflow: history event is ActivityTaskScheduled, replay command is ScheduleActivityTask"; lines[3] != want {
			t.Errorf("line 3: %q", lines[3])
		}
		if lines[4] != "3 ok, 1 failed in namespace ns" {
			t.Errorf("summary line %q", lines[4])
		}
		if c.query != "q" || c.namespace != "ns" {
			t.Errorf("listed %q in %q", c.query, c.namespace)
		}
		for _, id := range c.order {
			res := File(New(), filepath.Join(dir, id+"_"+c.run(id)+".json"))
			if res.WorkflowID != id || res.RunID != c.run(id) || res.Events != len(c.histories[id].Events) {
				t.Errorf("saved %s: %+v", id, res)
			}
			if res.OK() != (id != "wf-changed") {
				t.Errorf("saved %s replays: %v", id, res.Err)
			}
		}
	})
	t.Run("up to the limit", func(t *testing.T) {
		var out bytes.Buffer
		sum, err := Live(context.Background(), c, "ns", Options{Limit: 2}, &out)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Summary{OK: 2, More: true}); sum != want {
			t.Errorf("summary %+v; want %+v", sum, want)
		}
		if !strings.HasSuffix(out.String(), "2 ok, 0 failed in namespace ns; stopped at the limit of 2, more runs match\n") {
			t.Errorf("output:\n%s", out.String())
		}
		if !strings.HasPrefix(c.query, "WorkflowType = 'IdentityVerification' AND (ExecutionStatus = 'Running' OR CloseTime > '") {
			t.Errorf("default query %q", c.query)
		}
	})
}

func TestDefaultQuery(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	want := "WorkflowType = 'IdentityVerification' AND (ExecutionStatus = 'Running' OR CloseTime > '2026-03-03T12:00:00Z')"
	if got := DefaultQuery(now, 7); got != want {
		t.Errorf("DefaultQuery = %q; want %q", got, want)
	}
}

// fakeClient serves histories by workflow id, listed two a page.
type fakeClient struct {
	client.Client
	histories        map[string]*historypb.History
	order            []string
	query, namespace string
}

func (c *fakeClient) add(id string, h *historypb.History) {
	c.histories[id] = h
	c.order = append(c.order, id)
}

func (c *fakeClient) run(id string) string {
	return c.histories[id].Events[0].GetWorkflowExecutionStartedEventAttributes().GetOriginalExecutionRunId()
}

func (c *fakeClient) ListWorkflow(_ context.Context, req *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error) {
	c.query, c.namespace = req.Query, req.Namespace
	from := 0
	if len(req.NextPageToken) > 0 {
		from = int(req.NextPageToken[0])
	}
	to := min(from+2, from+int(req.PageSize), len(c.order))
	resp := &workflowservice.ListWorkflowExecutionsResponse{}
	for _, id := range c.order[from:to] {
		resp.Executions = append(resp.Executions, &workflowpb.WorkflowExecutionInfo{
			Execution: &commonpb.WorkflowExecution{WorkflowId: id, RunId: c.run(id)},
			Status:    enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED})
	}
	if to < len(c.order) {
		resp.NextPageToken = []byte{byte(to)}
	}
	return resp, nil
}

func (c *fakeClient) GetWorkflowHistory(_ context.Context, id, run string, _ bool, _ enumspb.HistoryEventFilterType) client.HistoryEventIterator {
	if c.run(id) != run {
		panic("wrong run " + run)
	}
	return &events{list: c.histories[id].Events}
}

type events struct{ list []*historypb.HistoryEvent }

func (e *events) HasNext() bool { return len(e.list) > 0 }
func (e *events) Next() (*historypb.HistoryEvent, error) {
	ev := e.list[0]
	e.list = e.list[1:]
	return ev, nil
}
