package replay

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/worker"

	"identityverification/workflows"
)

// Options choose the runs Live replays.
type Options struct {
	// Query is a visibility query; empty means DefaultQuery.
	Query string
	// Days is how far back the default query takes closed runs (default 7).
	Days int
	// Limit bounds the runs replayed (default 1000).
	Limit int
	// Save, when set, is a folder each fetched history is written to as
	// <workflow id>_<run id>.json, in the corpus's format: a path seen
	// in the cluster can become a recorded test.
	Save string
	// DataConverter and FailureConverter are the workers' (the payload
	// codec's when keys are configured: encrypted histories do not replay
	// without them); nil means the SDK's defaults.
	DataConverter    converter.DataConverter
	FailureConverter converter.FailureConverter
}

// Defaults of Options.
const (
	DefaultDays  = 7
	DefaultLimit = 1000
)

// Summary counts what Live replayed.
type Summary struct {
	OK, Failed int
	// More says the limit stopped the listing while more runs matched.
	More bool
}

// DefaultQuery matches this service's runs that a new worker would pick up
// or could be asked about: every open one, and those closed in the last
// days (their queries and resets replay too).
func DefaultQuery(now time.Time, days int) string {
	since := now.Add(-time.Duration(days) * 24 * time.Hour).UTC().Format(time.RFC3339)
	return fmt.Sprintf("WorkflowType = '%s' AND (ExecutionStatus = 'Running' OR CloseTime > '%s')",
		workflows.WorkflowName, since)
}

// Live replays the runs a visibility query finds in namespace (the one c
// is connected to) against the workflow code in this binary. It writes one
// line per run and a summary to out; a run that does not replay (or whose
// history cannot be fetched) counts as failed. The error is for what
// stops the whole check: the listing, or saving a history.
func Live(ctx context.Context, c client.Client, namespace string, opts Options, out io.Writer) (Summary, error) {
	if opts.Days <= 0 {
		opts.Days = DefaultDays
	}
	if opts.Limit <= 0 {
		opts.Limit = DefaultLimit
	}
	if opts.Query == "" {
		opts.Query = DefaultQuery(time.Now(), opts.Days)
	}
	if opts.Save != "" {
		if err := os.MkdirAll(opts.Save, 0o755); err != nil {
			return Summary{}, fmt.Errorf("replay: save: %w", err)
		}
	}
	r := NewWith(opts.DataConverter, opts.FailureConverter)
	var sum Summary
	var token []byte
	for n := 0; ; {
		// One more than the limit leaves, to tell whether more runs match.
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: namespace, Query: opts.Query, PageSize: int32(min(opts.Limit-n+1, 1000)), NextPageToken: token})
		if err != nil {
			return sum, fmt.Errorf("replay: list workflows in %s: %w", namespace, err)
		}
		for _, info := range resp.GetExecutions() {
			if n == opts.Limit {
				sum.More = true
				break
			}
			n++
			res, err := replayRun(ctx, c, r, info.GetExecution().GetWorkflowId(), info.GetExecution().GetRunId(), opts.Save)
			if err != nil {
				return sum, err
			}
			if res.OK() {
				sum.OK++
			} else {
				sum.Failed++
			}
			fmt.Fprintln(out, res.Line())
		}
		if token = resp.GetNextPageToken(); sum.More || len(token) == 0 {
			break
		}
	}
	fmt.Fprintf(out, "%d ok, %d failed in namespace %s", sum.OK, sum.Failed, namespace)
	if sum.More {
		fmt.Fprintf(out, "; stopped at the limit of %d, more runs match", opts.Limit)
	}
	fmt.Fprintln(out)
	return sum, nil
}

// replayRun fetches one run's history, saves it when asked, and replays
// it. The error is a failure to save; a failure to fetch is the result's.
func replayRun(ctx context.Context, c client.Client, r worker.WorkflowReplayer, workflowID, runID, save string) (Result, error) {
	h := &historypb.History{}
	it := c.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return Result{WorkflowID: workflowID, RunID: runID, Events: len(h.Events),
				Err: fmt.Errorf("fetch history: %w", err)}, nil
		}
		h.Events = append(h.Events, e)
	}
	if save != "" {
		if err := saveHistory(save, workflowID, runID, h); err != nil {
			return Result{}, err
		}
	}
	return History(r, workflowID, runID, h), nil
}

// saveHistory writes a history as workflows/testdata/histories holds them.
func saveHistory(dir, workflowID, runID string, h *historypb.History) error {
	b, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(h)
	if err != nil {
		return fmt.Errorf("replay: save %s: %w", workflowID, err)
	}
	name := strings.NewReplacer("/", "_", `\`, "_").Replace(workflowID + "_" + runID + ".json")
	// 0600: a history holds search attributes and, without a codec, failure
	// texts; it is for the operator to look at before it joins a corpus.
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		return fmt.Errorf("replay: save: %w", err)
	}
	return nil
}
