package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"identityverification/activities"
	"identityverification/email"
	"identityverification/workflows"
)

const vs = "vs_test_1"

// t0 is the virtual clock's start; events are stamped relative to it.
var t0 = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)

// call is one activity execution as the workflow asked for it.
type call struct {
	Name  string
	Input any
	At    time.Time // on the virtual clock
}

func (c call) String() string { return fmt.Sprintf("%s %+v", c.Name, c.Input) }

// harness runs the workflow in the SDK's test environment on a virtual clock,
// with every activity replaced by a recording stand-in whose answers the test
// scripts.
type harness struct {
	t        *testing.T
	env      *testsuite.TestWorkflowEnvironment
	policy   workflows.Policy
	calls    []call
	snapshot activities.Snapshot
	compare  activities.Comparison
	// stripeStatus answers FetchSessionStatus.
	stripeStatus string
	switchErr    error
	states       map[string]workflows.State            // queried at named moments
	callsAt      map[string]int                        // len(calls) at those moments
	updates      map[string]error                      // update outcomes by name
	carried      *workflows.Input                      // continue-as-new input, when it happened
	emailResult  map[email.Kind]activities.EmailResult // default: sent
	ledger       map[string]activities.EmailResult     // emails sent, by idempotency key
	// smtpDown, when set, makes SendEmail fail (transiently) while it
	// returns true for the virtual time.
	smtpDown func(time.Time) bool
	// recordErr and decideErr are what RecordTransition and DecideReview return.
	recordErr, decideErr error
	// redactDown, when set, makes RedactSession fail (transiently) while it
	// returns true for the virtual time.
	redactDown func(time.Time) bool
	// stripeDown, when set, makes every Stripe activity fail (transiently)
	// while it returns true for the virtual time.
	stripeDown func(time.Time) bool
	// switchRefusedUnless, when set, makes SwitchSessionType refused unless
	// stripeStatus is this (Stripe switches only a session waiting for input).
	switchRefusedUnless string
	// stripeErr is what a Stripe activity fails with while stripeDown says
	// so (default errStripeDown, a 503); cancelErr what CancelSession
	// answers when Stripe is up.
	stripeErr, cancelErr error
	// compareFails is how many CompareVerifiedOutputs calls fail (a 503)
	// before one answers.
	compareFails int
	// legacy runs the workflow as a run started before workflow v3 does
	// (its GetVersion answers DefaultVersion), for the old path's tests.
	legacy bool
}

// beforeV3 makes this and later runs take the path of runs started before
// workflow v3: what they did, they keep doing (replay), and a test shows
// the defect v3 mends.
func (h *harness) beforeV3() {
	h.legacy = true
	h.env.OnGetVersion(workflows.ChangeWorkflowV3, workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
}

// transition is a recorded RecordTransition input with its state decoded.
type transition struct {
	activities.Transition
	St workflows.State
}

var (
	errSMTPDown   = errors.New("dial tcp 127.0.0.1:1025: connect: connection refused")
	errStripeDown = errors.New("stripe: 503 Service Unavailable")
)

// stripeFails reports whether the Stripe stand-in is down now.
func (h *harness) stripeFails() bool { return h.stripeDown != nil && h.stripeDown(h.env.Now()) }

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, policy: workflows.DefaultPolicy(), compare: activities.Comparison{Match: true},
		states: map[string]workflows.State{}, callsAt: map[string]int{}, updates: map[string]error{},
		ledger: map[string]activities.EmailResult{}}
	h.reset()
	return h
}

// reset makes a fresh environment (also used for the run after continue-as-new).
func (h *harness) reset() {
	var s testsuite.WorkflowTestSuite
	s.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(testLogOut(), nil))))
	h.env = s.NewTestWorkflowEnvironment()
	// The SDK's deadlock detector fails a workflow task whose code has not
	// yielded for a second of wall time. make test runs these tests beside
	// the end-to-end suites on two cores, where a goroutine can wait that
	// long for a core; the code blocks on nothing (workflowcheck checks),
	// so the detector gets the headroom a loaded machine needs.
	h.env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: 15 * time.Second})
	h.env.SetStartTime(t0)
	h.env.RegisterWorkflowWithOptions(workflows.Verification, workflow.RegisterOptions{Name: workflows.WorkflowName})
	if h.legacy {
		h.env.OnGetVersion(workflows.ChangeWorkflowV3, workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	}
	a := &activities.Activities{}
	h.env.RegisterActivity(a)
	rec := func(name string, in any) { h.calls = append(h.calls, call{name, in, h.env.Now().UTC()}) }
	stripeErr := func() error {
		if h.stripeErr != nil {
			return h.stripeErr
		}
		return errStripeDown
	}
	h.env.OnActivity(a.LoadSession, mock.Anything, mock.Anything).Return(
		func(_ context.Context, id string) (activities.Snapshot, error) {
			rec("LoadSession", id)
			return h.snapshot, nil
		})
	h.env.OnActivity(a.RecordTransition, mock.Anything, mock.Anything).Return(
		func(_ context.Context, tr activities.Transition) error {
			var st workflows.State
			if err := json.Unmarshal(tr.State, &st); err != nil {
				h.t.Errorf("transition %s: state: %v", tr.Key, err)
			}
			rec("RecordTransition", transition{tr, st})
			return h.recordErr
		})
	h.env.OnActivity(a.SendEmail, mock.Anything, mock.Anything).Return(
		func(_ context.Context, r activities.EmailRequest) (activities.EmailResult, error) {
			if h.smtpDown != nil && h.smtpDown(h.env.Now()) {
				return activities.EmailResult{}, errSMTPDown
			}
			if res, ok := h.ledger[r.Key()]; ok { // as the real activity's ledger does
				return res, nil
			}
			rec("SendEmail", r)
			res, ok := h.emailResult[r.Kind]
			if !ok {
				res = activities.EmailResult{Status: "sent"}
			}
			h.ledger[r.Key()] = res
			return res, nil
		})
	h.env.OnActivity(a.CompareVerifiedOutputs, mock.Anything, mock.Anything).Return(
		func(_ context.Context, id string) (activities.Comparison, error) {
			if h.stripeFails() {
				return activities.Comparison{}, stripeErr()
			}
			if h.compareFails > 0 {
				h.compareFails--
				return activities.Comparison{}, errStripeDown
			}
			rec("CompareVerifiedOutputs", id)
			return h.compare, nil
		})
	h.env.OnActivity(a.CancelSession, mock.Anything, mock.Anything).Return(
		func(_ context.Context, id string) error {
			if h.stripeFails() {
				return stripeErr()
			}
			rec("CancelSession", id)
			return h.cancelErr
		})
	h.env.OnActivity(a.SwitchSessionType, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.SwitchInput) error {
			if h.stripeFails() {
				return stripeErr()
			}
			rec("SwitchSessionType", in)
			if h.switchRefusedUnless != "" && h.stripeStatus != h.switchRefusedUnless {
				return errNonRetryable
			}
			return h.switchErr
		})
	h.env.OnActivity(a.FetchSessionStatus, mock.Anything, mock.Anything).Return(
		func(_ context.Context, id string) (string, error) {
			if h.stripeFails() {
				return "", stripeErr()
			}
			rec("FetchSessionStatus", id)
			return h.stripeStatus, nil
		})
	h.env.OnActivity(a.CheckDecision, mock.Anything, mock.Anything).Return(
		func(_ context.Context, c activities.DecisionCheck) (bool, error) {
			rec("CheckDecision", c)
			return c.Voucher == vouchFor(c.Subject, c.Decision), nil
		})
	h.env.OnActivity(a.RecordEventID, mock.Anything, mock.Anything).Return(
		func(_ context.Context, r activities.EventRecord) error { rec("RecordEventID", r); return nil })
	h.env.OnActivity(a.OpenReview, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.ReviewInput) error { rec("OpenReview", in); return nil })
	h.env.OnActivity(a.DecideReview, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.ReviewInput) error { rec("DecideReview", in); return h.decideErr })
	h.env.OnActivity(a.RedactSession, mock.Anything, mock.Anything).Return(
		func(_ context.Context, id string) error {
			if h.redactDown != nil && h.redactDown(h.env.Now()) {
				return errSMTPDown
			}
			rec("RedactSession", id)
			return nil
		})
}

// stored makes LoadSession answer with st as the session's stored state and
// ids as its event ledger, as the database keeps them.
func (h *harness) stored(st workflows.State, ids ...string) {
	st.SessionID = vs
	b, err := json.Marshal(st)
	if err != nil {
		h.t.Fatal(err)
	}
	h.snapshot = activities.Snapshot{Known: true, State: b, ProcessedEventIDs: ids}
}

// ev builds an event of a short type, created at t0+at.
func ev(id, typ string, at time.Duration) workflows.Event {
	status := map[string]string{"created": "requires_input", "processing": "processing", "requires_input": "requires_input",
		"verified": "verified", "canceled": "canceled", "redacted": "verified"}[typ]
	return workflows.Event{ID: id, Type: workflows.EventTypePrefix + typ, Created: t0.Add(at).Unix(), SessionID: vs, Status: status}
}

// failed is a requires_input event with a last_error code ("" = null code).
func failed(id, code string, at time.Duration) workflows.Event {
	e := ev(id, "requires_input", at)
	e.HasLastError, e.LastErrorCode, e.LastErrorReason = true, code, "reason for "+code
	return e
}

// deliver signals an event at virtual time t0+at.
func (h *harness) deliver(at time.Duration, e workflows.Event) {
	h.env.RegisterDelayedCallback(func() { h.env.SignalWorkflow(workflows.SignalEvent, e) }, at)
}

// deliverAll signals several events at once, so they wait in the channel
// together and the workflow drains them in one go.
func (h *harness) deliverAll(at time.Duration, events ...workflows.Event) {
	h.env.RegisterDelayedCallback(func() {
		for _, e := range events {
			h.env.SignalWorkflow(workflows.SignalEvent, e)
		}
	}, at)
}

// snapshotAt records the state query's answer at t0+at under a name.
func (h *harness) snapshotAt(at time.Duration, name string) {
	h.env.RegisterDelayedCallback(func() {
		v, err := h.env.QueryWorkflow(workflows.QueryState)
		if err != nil {
			h.t.Errorf("query at %s: %v", name, err)
			return
		}
		var st workflows.State
		if err := v.Get(&st); err != nil {
			h.t.Error(err)
		}
		h.states[name] = st
		h.callsAt[name] = len(h.calls)
	}, at)
}

// vouchFor is the voucher the stand-in of the database knows for a
// principal's decision, as the admin API or the desk would have written it.
func vouchFor(subject, decision string) string { return "voucher:" + subject + ":" + decision }

// decide sends a review decision update at t0+at, vouched for as the admin
// API and the desk do (a subject of the reviewer's name when it has none);
// its outcome is kept by name.
func (h *harness) decide(at time.Duration, name string, d workflows.ReviewDecision) {
	if d.Subject == "" && d.Reviewer != "" {
		d.Subject = "oidc:" + d.Reviewer
	}
	if d.Voucher == "" && d.Subject != "" {
		d.Voucher = vouchFor(d.Subject, d.Decision)
	}
	h.sendDecision(at, name, d)
}

// sendDecision sends a decision as it is, vouched for or not (the Temporal
// UI or CLI).
func (h *harness) sendDecision(at time.Duration, name string, d workflows.ReviewDecision) {
	h.env.RegisterDelayedCallback(func() {
		h.env.UpdateWorkflow(workflows.UpdateReviewDecision, name, &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { h.updates[name] = err },
			OnAccept:   func() {},
			OnComplete: func(_ any, err error) { h.updates[name] = err },
		}, d)
	}, at)
}

// run executes the workflow to its end and returns the final state.
func (h *harness) run(in workflows.Input) workflows.State {
	h.t.Helper()
	if in.SessionID == "" {
		in.SessionID = vs
	}
	if in.Policy.MaxAttempts == 0 {
		in.Policy = h.policy
	}
	h.env.ExecuteWorkflow(workflows.WorkflowName, in)
	if !h.env.IsWorkflowCompleted() {
		h.t.Fatal("workflow did not complete")
	}
	var st workflows.State
	v, err := h.env.QueryWorkflow(workflows.QueryState)
	if err != nil {
		h.t.Fatal(err)
	}
	v.Get(&st)
	if err := h.env.GetWorkflowError(); err != nil {
		var can *workflow.ContinueAsNewError
		if !errors.As(err, &can) {
			h.t.Fatalf("workflow failed: %v", err)
		}
		var next workflows.Input
		if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &next); err != nil {
			h.t.Fatal(err)
		}
		h.carried = &next
	}
	return st
}

// deliverAcrossRuns delivers events one minute apart, the first as the one
// that starts the run. When the run finishes before all are delivered, the
// rest start a new run, restored from what the last one stored, as
// SignalWithStart does in production after a run closed. A review still open
// after the last event is decided at decideAt. It returns the state after the
// last event (name "end") and at the end.
func (h *harness) deliverAcrossRuns(events []workflows.Event, decideAt time.Duration) (end, final workflows.State) {
	for rest := events; len(rest) > 0; {
		delivered := 0
		for i, e := range rest {
			h.env.RegisterDelayedCallback(func() {
				delivered = i + 1
				h.env.SignalWorkflow(workflows.SignalEvent, e)
			}, time.Duration(i)*time.Minute)
		}
		h.snapshotAt(time.Duration(len(rest))*time.Minute, "end")
		h.decide(decideAt, "close", workflows.ReviewDecision{Decision: workflows.DecisionApprove, Reviewer: "ops"})
		// A second person, for a review that needs four eyes.
		h.decide(decideAt+time.Minute, "close 2", workflows.ReviewDecision{Decision: workflows.DecisionApprove, Reviewer: "ops-2"})
		final = h.run(workflows.Input{})
		if rest = rest[delivered:]; len(rest) > 0 {
			h.restoreFromTransitions()
			delete(h.states, "end")
		}
	}
	end, ok := h.states["end"]
	if !ok {
		end, h.callsAt["end"] = final, len(h.calls)
	}
	return end, final
}

// restoreFromTransitions starts a new run whose LoadSession answers what the
// recorded transitions stored: the last state and the ledger of event ids.
func (h *harness) restoreFromTransitions() {
	trs := h.transitions()
	var ids []string
	for _, tr := range trs {
		if tr.EventID != "" {
			ids = append(ids, tr.EventID)
		}
	}
	h.reset()
	h.stored(trs[len(trs)-1].St, ids...)
}

// names lists the activities that ran, in order, as "Name" or "Name:detail".
func (h *harness) names() []string {
	var out []string
	for _, c := range h.calls {
		n := c.Name
		switch in := c.Input.(type) {
		case transition:
			n += ":" + string(in.St.Status)
		case activities.EmailRequest:
			n += ":" + string(in.Kind)
		}
		out = append(out, n)
	}
	return out
}

// lanes splits names into what the main loop and the email lane did, in
// order, and the Stripe lane's cancels, whose place among the others is not
// fixed: each must come after the transition (named owedBy) that owed it.
func (h *harness) lanes(owedBy ...string) []string {
	h.t.Helper()
	var out []string
	cancels := 0
	for _, n := range h.names() {
		if n != "CancelSession" {
			out = append(out, n)
			continue
		}
		if cancels >= len(owedBy) {
			h.t.Errorf("cancel #%d: not owed (%v)", cancels+1, h.names())
		} else if !slices.Contains(out, owedBy[cancels]) {
			h.t.Errorf("cancel #%d before %s, which owes it: %v", cancels+1, owedBy[cancels], h.names())
		}
		cancels++
	}
	if cancels != len(owedBy) {
		h.t.Errorf("%d cancels; want %d (owed by %v)", cancels, len(owedBy), owedBy)
	}
	return out
}

// sequential is names without the comparison with Stripe, which runs beside
// the main loop (its place among the other calls is not fixed).
func (h *harness) sequential() []string {
	var out []string
	for _, n := range h.names() {
		if n != "CompareVerifiedOutputs" {
			out = append(out, n)
		}
	}
	return out
}

// inputsOf lists, in order, the activity inputs of type T.
func inputsOf[T any](h *harness) []T {
	var out []T
	for _, c := range h.calls {
		if in, ok := c.Input.(T); ok {
			out = append(out, in)
		}
	}
	return out
}

func (h *harness) transitions() []transition { return inputsOf[transition](h) }

func (h *harness) emails() []activities.EmailRequest { return inputsOf[activities.EmailRequest](h) }

// owedKinds lists the kinds of the emails a state still owes.
func owedKinds(st workflows.State) string {
	var k []string
	for _, e := range st.Owed {
		if e.Email != nil {
			k = append(k, string(e.Email.Kind))
		}
	}
	return strings.Join(k, ",")
}

func (h *harness) emailKinds() string {
	var k []string
	for _, r := range h.emails() {
		k = append(k, string(r.Kind))
	}
	return strings.Join(k, ",")
}

// inputs lists the inputs of the activities named name.
func (h *harness) inputs(name string) []any {
	var out []any
	for _, c := range h.calls {
		if c.Name == name {
			out = append(out, c.Input)
		}
	}
	return out
}

// count counts the activities named name (with an optional ":detail").
func (h *harness) count(name string) int {
	n := 0
	for _, c := range h.names() {
		if c == name {
			n++
		}
	}
	return n
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %#v\nwant %#v", what, got, want)
	}
}

var errNonRetryable = temporal.NewNonRetryableApplicationError("refused", activities.ErrTypeStripeRefused, nil)

func testLogOut() io.Writer {
	if os.Getenv("WORKFLOW_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}
