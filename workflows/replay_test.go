package workflows_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	sdkworker "go.temporal.io/sdk/worker"

	"identityverification/activities"
	"identityverification/devstack"
	"identityverification/email"
	"identityverification/replay"
	"identityverification/retrylink"
	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/worker"
	"identityverification/workflows"
)

// historiesDir holds recorded histories of closed workflow runs, one per
// path through the workflow. Every change to workflow code must keep them
// replaying; an incompatible change goes behind workflow.GetVersion.
const historiesDir = "testdata/histories"

// The paths recorded; the replay test requires a history for each.
var recordedPaths = []string{
	"verified_match", "verified_mismatch_review_approved", "failures_then_verified",
	"limit_alternate_then_verified", "alternate_exhausted_review_rejected",
	"non_retryable_review_overdue_approved", "reminder_then_expiry", "redacted_while_waiting",
	"duplicates_and_stale_events", "canceled", "continue_as_new_run1", "continue_as_new_run2",
	"late_redaction_new_run", "late_failure_counted", "late_fraud_reopens_review", "smtp_outage_then_verified",
	"terminated_mid_review_decided", "reminder_warning_then_expiry",
	// Workflow v3 (the marker "workflow-v3"): the paths whose commands it changed.
	"v3_verified_mismatch_four_eyes", "v3_late_fraud_record_superseded", "v3_stale_email_dropped",
	"v3_reminder_warning_then_expiry", "v3_alternate_exhausted_review_rejected", "v3_same_type_no_switch_review_rejected",
	"v3_reordered_failure_then_verified", "v3_verified_match",
}

func TestReplayRecordedHistories(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(historiesDir, "*.json"))
	var have []string
	for _, f := range files {
		have = append(have, strings.TrimSuffix(filepath.Base(f), ".json"))
	}
	for _, p := range recordedPaths {
		if !slices.Contains(have, p) {
			t.Errorf("no recorded history for path %q: run RECORD_HISTORIES=1 go test -run TestRecordHistories ./workflows/", p)
		}
	}
	// The replayer `identity-verification replay` runs on the cluster's
	// histories.
	r := replay.New()
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if res := replay.File(r, f); !res.OK() {
				t.Errorf("%s no longer replays: %s\n%v", f, res.Line(), res.Err)
			}
		})
	}
}

// TestRecordHistories drives every path on a real Temporal dev server, with
// the real store (SQLite) and stand-ins for SMTP and Stripe, and writes each
// closed run's history to testdata/histories. It runs only when asked, and
// writes only the paths RECORD_ONLY names when it is set (a new path: the
// old recordings must stay as the old code made them):
//
//	RECORD_HISTORIES=1 RECORD_ONLY=new_path go test -run TestRecordHistories ./workflows/
func TestRecordHistories(t *testing.T) {
	if os.Getenv("RECORD_HISTORIES") == "" {
		t.Skip("set RECORD_HISTORIES=1 to record workflow histories")
	}
	ctx := context.Background()
	dir := t.TempDir()
	wd, _ := os.Getwd()
	root, err := devstack.Root(wd)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := devstack.Tool(ctx, root, "temporal", os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := devstack.FreePort()
	p2, _ := devstack.FreePort()
	srv, err := devstack.StartTemporal(ctx, bin, dir, p1, p2)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := client.Dial(client.Options{HostPort: srv.Address, Logger: log.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "record.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stripe := &scriptedStripe{outputs: map[string]stripeapi.Outputs{}}
	w := sdkworker.New(c, workflows.TaskQueue, sdkworker.Options{})
	mailer := &flakyMailer{downUntil: map[string]time.Time{}}
	worker.Register(w, &activities.Activities{Store: st, Mailer: mailer, Stripe: stripe,
		Links: retrylink.New("http://127.0.0.1", "recorder"), OpsEmail: "ops@example.com"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	policy := workflows.DefaultPolicy()
	policy.ReminderAfter, policy.ExpireAfter, policy.ReviewDeadline = 2*time.Second, 4*time.Second, 2*time.Second
	r := &recorder{t: t, c: c, st: st, policy: policy, stripe: stripe, mailer: mailer}
	os.MkdirAll(historiesDir, 0o755)

	var wg sync.WaitGroup
	for _, fn := range []func(){
		func() { r.path("verified_match", store.Contact{}, ev("e1", "verified", 0)) },
		func() {
			vs, run := r.start("verified_mismatch_review_approved", store.Contact{FirstName: "Ada"}, ev("e1", "verified", 0))
			r.decideAs(vs, "approve", "oidc:recorder-1")
			r.decideAs(vs, "approve", "oidc:recorder-2") // four eyes since workflow v3
			r.save("verified_mismatch_review_approved", vs, run)
		},
		func() {
			r.path("failures_then_verified", store.Contact{}, failed("e1", "document_expired", 0),
				failed("e2", "document_unverified_other", time.Second), ev("e3", "verified", 2*time.Second))
		},
		func() {
			r.path("limit_alternate_then_verified", store.Contact{}, failed("e1", "document_expired", 0),
				failed("e2", "document_expired", time.Second), failed("e3", "document_expired", 2*time.Second),
				ev("e4", "verified", 3*time.Second))
		},
		func() {
			vs, run := r.start("alternate_exhausted_review_rejected", store.Contact{}, failed("e1", "document_expired", 0),
				failed("e2", "", time.Second), failed("e3", "document_expired", 2*time.Second),
				alternate(failed("e4", "id_number_mismatch", 3*time.Second)), alternate(failed("e5", "id_number_mismatch", 4*time.Second)))
			r.decide(vs, "reject")
			r.save("alternate_exhausted_review_rejected", vs, run)
		},
		func() {
			vs, run := r.start("non_retryable_review_overdue_approved", store.Contact{}, failed("e1", "under_supported_age", 0))
			time.Sleep(5 * time.Second) // two review deadlines pass
			r.decide(vs, "approve")
			r.save("non_retryable_review_overdue_approved", vs, run)
		},
		func() { r.path("reminder_then_expiry", store.Contact{}, failed("e1", "document_expired", 0)) },
		func() { r.path("reminder_warning_then_expiry", store.Contact{}, failed("e1", "document_expired", 0)) },
		func() {
			r.path("redacted_while_waiting", store.Contact{}, failed("e1", "document_expired", 0), ev("e2", "redacted", time.Second))
		},
		func() {
			c1, f1 := ev("e1", "created", 0), failed("e2", "document_expired", 2*time.Second)
			r.path("duplicates_and_stale_events", store.Contact{}, c1, c1, f1, f1, ev("e3", "processing", 3*time.Second),
				failed("e_old", "document_expired", time.Second), ev("e4", "verified", 4*time.Second), ev("e3", "processing", 3*time.Second))
		},
		func() { r.path("canceled", store.Contact{}, ev("e1", "created", 0), ev("e2", "canceled", time.Second)) },
		func() { r.continueAsNew() },
		func() { r.lateRedaction() },
		func() {
			r.path("late_failure_counted", store.Contact{}, failed("e1", "document_expired", 0),
				ev("e2", "processing", 3*time.Second), failed("e_late", "document_unverified_other", 2*time.Second),
				ev("e3", "verified", 4*time.Second))
		},
		func() { r.lateFraud() },
		func() {
			r.mailer.down("smtp_outage_then_verified@example.com", 12*time.Second)
			r.path("smtp_outage_then_verified", store.Contact{}, failed("e1", "document_expired", 0),
				ev("e2", "verified", time.Second))
		},
		func() { r.terminatedMidReview() },
		func() { r.path("v3_verified_match", store.Contact{FirstName: "Bob"}, ev("e1", "verified", 0)) },
		func() {
			vs, run := r.start("v3_verified_mismatch_four_eyes", store.Contact{FirstName: "Ada"}, ev("e1", "verified", 0))
			r.decideAs(vs, "approve", "oidc:recorder-1")
			r.decideAs(vs, "approve", "oidc:recorder-2")
			r.save("v3_verified_mismatch_four_eyes", vs, run)
		},
		func() {
			p := r.policy
			p.LateFraud = workflows.LateFraudRecord
			vs := "vs_v3_late_fraud_record_superseded"
			r.st.UpsertContact(context.Background(), store.Contact{SessionID: vs, Email: "v3lf@example.com"})
			run := r.deliver(vs, p, failed("e1", "selfie_manipulated", time.Second), ev("e2", "verified", 2*time.Second))
			r.save("v3_late_fraud_record_superseded", vs, run)
		},
		func() {
			r.mailer.down("v3_stale_email_dropped@example.com", 6*time.Second)
			r.path("v3_stale_email_dropped", store.Contact{}, failed("e1", "document_expired", 0), ev("e2", "verified", time.Second))
		},
		func() {
			r.path("v3_reminder_warning_then_expiry", store.Contact{}, failed("e1", "document_expired", 0))
		},
		func() {
			vs, run := r.start("v3_alternate_exhausted_review_rejected", store.Contact{}, failed("e1", "document_expired", 0),
				failed("e2", "", time.Second), failed("e3", "document_expired", 2*time.Second),
				alternate(failed("e4", "id_number_mismatch", 3*time.Second)), alternate(failed("e5", "id_number_mismatch", 4*time.Second)))
			r.decide(vs, "reject")
			r.save("v3_alternate_exhausted_review_rejected", vs, run)
		},
		func() {
			vs, run := r.start("v3_same_type_no_switch_review_rejected", store.Contact{},
				alternate(failed("e1", "id_number_mismatch", 0)), alternate(failed("e2", "id_number_mismatch", time.Second)),
				alternate(failed("e3", "id_number_mismatch", 2*time.Second)))
			r.decide(vs, "reject")
			r.save("v3_same_type_no_switch_review_rejected", vs, run)
		},
		func() {
			r.path("v3_reordered_failure_then_verified", store.Contact{}, failed("e2", "document_expired", 2*time.Second),
				failed("e1", "document_unverified_other", time.Second), ev("e3", "verified", 3*time.Second))
		},
	} {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	wg.Wait()
}

type recorder struct {
	t      *testing.T
	c      client.Client
	st     *store.Store
	policy workflows.Policy
	stripe *scriptedStripe
	mailer *flakyMailer
}

// start registers a session's contact and delivers its events; it returns the
// session id and the first run's id.
func (r *recorder) start(name string, contact store.Contact, events ...workflows.Event) (string, string) {
	vs := "vs_" + name
	contact.SessionID, contact.Email = vs, name+"@example.com"
	if err := r.st.UpsertContact(context.Background(), contact); err != nil {
		r.t.Error(err)
	}
	r.stripe.set(vs, stripeapi.Outputs{FirstName: "Bob"})
	return vs, r.deliver(vs, r.policy, events...)
}

// path runs a session that ends by itself and records it under name.
func (r *recorder) path(name string, contact store.Contact, events ...workflows.Event) {
	vs, runID := r.start(name, contact, events...)
	r.save(name, vs, runID)
}

// deliver signals each event (SignalWithStart, as the webhook does) and
// returns the first run's id.
func (r *recorder) deliver(vs string, policy workflows.Policy, events ...workflows.Event) string {
	var first string
	for _, e := range events {
		e.SessionID = vs
		e.ID = vs + "_" + e.ID
		run, err := r.c.SignalWithStartWorkflow(context.Background(), workflows.WorkflowID(vs), workflows.SignalEvent, e,
			client.StartWorkflowOptions{ID: workflows.WorkflowID(vs), TaskQueue: workflows.TaskQueue},
			workflows.WorkflowName, workflows.Input{SessionID: vs, Policy: policy})
		if err != nil {
			r.t.Errorf("%s: signal: %v", vs, err)
			return ""
		}
		if first == "" {
			first = run.GetRunID()
		}
		time.Sleep(150 * time.Millisecond) // keep deliveries in separate workflow tasks
	}
	return first
}

// waitReview waits for the session's review to open.
func (r *recorder) waitReview(vs string) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		v, err := r.c.QueryWorkflow(context.Background(), workflows.WorkflowID(vs), "", workflows.QueryState)
		var st workflows.State
		if err == nil && v.Get(&st) == nil && st.Review.Open() {
			return
		}
	}
	r.t.Errorf("%s: no review opened", vs)
}

// decide waits for the session's review to open, then decides it.
func (r *recorder) decide(vs, decision string) { r.decideAs(vs, decision, "") }

// decideAs decides as a principal (four eyes counts them), vouched for in
// the database as the admin API and the desk do.
func (r *recorder) decideAs(vs, decision, subject string) {
	r.waitReview(vs)
	if subject == "" {
		subject = "oidc:ops-recorder"
	}
	voucher := fmt.Sprintf("voucher-%s-%d", vs, time.Now().UnixNano())
	if err := r.st.VouchDecision(context.Background(), store.DecisionVoucher{ID: voucher, SessionID: vs, Subject: subject, Decision: decision}); err != nil {
		r.t.Error(err)
	}
	h, err := r.c.UpdateWorkflow(context.Background(), client.UpdateWorkflowOptions{
		WorkflowID: workflows.WorkflowID(vs), UpdateName: workflows.UpdateReviewDecision,
		Args:         []any{workflows.ReviewDecision{Decision: decision, Reviewer: "ops-recorder", Subject: subject, Voucher: voucher}},
		WaitForStage: client.WorkflowUpdateStageCompleted})
	if err == nil {
		err = h.Get(context.Background(), nil)
	}
	if err != nil {
		r.t.Errorf("%s: decide: %v", vs, err)
	}
}

// saveCurrent saves the session's current run (the last one started).
func (r *recorder) saveCurrent(name, vs string) {
	d, err := r.c.DescribeWorkflowExecution(context.Background(), workflows.WorkflowID(vs), "")
	if err != nil {
		r.t.Error(err)
		return
	}
	r.save(name, vs, d.WorkflowExecutionInfo.Execution.RunId)
}

// save waits for a run to close and writes its history.
func (r *recorder) save(name, vs, runID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Waits for the run (and any continuation) to close; the last event
	// below says how this run closed.
	r.c.GetWorkflow(ctx, workflows.WorkflowID(vs), runID).Get(ctx, nil)
	hist := &historypb.History{}
	it := r.c.GetWorkflowHistory(ctx, workflows.WorkflowID(vs), runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			r.t.Errorf("%s: history: %v", name, err)
			return
		}
		hist.Events = append(hist.Events, e)
	}
	last := hist.Events[len(hist.Events)-1].GetEventType()
	if last != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED && last != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW {
		r.t.Errorf("%s: run ended with %s", name, last)
		return
	}
	b, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(hist)
	if err != nil {
		r.t.Error(err)
		return
	}
	if only := os.Getenv("RECORD_ONLY"); only != "" && !slices.Contains(strings.Split(only, ","), name) {
		return // recording a new path: the others stay as they were recorded
	}
	if err := os.WriteFile(filepath.Join(historiesDir, name+".json"), b, 0o644); err != nil {
		r.t.Error(err)
	}
}

func (r *recorder) continueAsNew() {
	vs := "vs_continue_as_new"
	r.st.UpsertContact(context.Background(), store.Contact{SessionID: vs, Email: "can@example.com"})
	p := r.policy
	p.EventsPerRun = 2
	first := r.deliver(vs, p, failed("e1", "document_expired", 0), failed("e2", "document_expired", time.Second))
	time.Sleep(time.Second)
	r.deliver(vs, p, failed("e2", "document_expired", time.Second), ev("e3", "verified", 2*time.Second))
	r.save("continue_as_new_run1", vs, first)
	r.saveCurrent("continue_as_new_run2", vs)
}

func (r *recorder) lateRedaction() {
	vs := "vs_late_redaction"
	r.st.UpsertContact(context.Background(), store.Contact{SessionID: vs, Email: "late@example.com"})
	first := r.deliver(vs, r.policy, ev("e1", "verified", 0))
	ctx := context.Background()
	r.c.GetWorkflow(ctx, workflows.WorkflowID(vs), first).Get(ctx, nil)
	r.deliver(vs, r.policy, ev("e2", "redacted", time.Second))
	r.saveCurrent("late_redaction_new_run", vs)
}

// lateFraud: a verified session closes; a fraud code created before it
// arrives late and starts a new run that reopens it as a review.
func (r *recorder) lateFraud() {
	ctx := context.Background()
	vs, first := r.start("late_fraud", store.Contact{}, ev("e2", "verified", 2*time.Second))
	r.c.GetWorkflow(ctx, workflows.WorkflowID(vs), first).Get(ctx, nil)
	r.deliver(vs, r.policy, failed("e1", "selfie_manipulated", time.Second))
	r.decide(vs, "reject")
	r.saveCurrent("late_fraud_reopens_review", vs)
}

// terminatedMidReview: an operator terminates a run while its review is
// open; the decision then starts a new run (update-with-start, as the admin
// API does) that restores the review from the database and applies it.
func (r *recorder) terminatedMidReview() {
	ctx := context.Background()
	vs, first := r.start("terminated_mid_review", store.Contact{}, failed("e1", "under_supported_age", 0))
	r.waitReview(vs)
	if err := r.c.TerminateWorkflow(ctx, workflows.WorkflowID(vs), first, "recorder: operator terminated"); err != nil {
		r.t.Error(err)
		return
	}
	update := client.UpdateWorkflowOptions{WorkflowID: workflows.WorkflowID(vs), UpdateName: workflows.UpdateReviewDecision,
		Args: []any{workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-recorder", Subject: "oidc:ops-recorder",
			Voucher: "voucher-" + vs}}, WaitForStage: client.WorkflowUpdateStageCompleted}
	if err := r.st.VouchDecision(ctx, store.DecisionVoucher{ID: "voucher-" + vs, SessionID: vs, Subject: "oidc:ops-recorder", Decision: "approve"}); err != nil {
		r.t.Error(err)
	}
	start := r.c.NewWithStartWorkflowOperation(client.StartWorkflowOptions{ID: workflows.WorkflowID(vs), TaskQueue: workflows.TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING}, workflows.WorkflowName,
		workflows.Input{SessionID: vs, Policy: r.policy})
	h, err := r.c.UpdateWithStartWorkflow(ctx, client.UpdateWithStartWorkflowOptions{StartWorkflowOperation: start, UpdateOptions: update})
	if err == nil {
		err = h.Get(ctx, nil)
	}
	if err != nil {
		r.t.Errorf("%s: decide after terminate: %v", vs, err)
		return
	}
	r.saveCurrent("terminated_mid_review_decided", vs)
}

// alternate marks a failure as one of the alternate method, as Stripe's
// data.object.type does after the switch (the recorder's clock is not
// Stripe's, so `created` cannot tell).
func alternate(e workflows.Event) workflows.Event {
	e.SessionType = workflows.StripeSessionTypeIDNumber
	return e
}

// flakyMailer accepts every message, except to a recipient whose SMTP
// outage has not ended yet.
type flakyMailer struct {
	mu        sync.Mutex
	downUntil map[string]time.Time
}

func (m *flakyMailer) down(to string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.downUntil[to] = time.Now().Add(d)
}

func (m *flakyMailer) Send(_ context.Context, msg email.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Now().Before(m.downUntil[msg.To]) {
		return errors.New("dial tcp 127.0.0.1:1025: connect: connection refused")
	}
	return nil
}

type scriptedStripe struct {
	mu      sync.Mutex
	outputs map[string]stripeapi.Outputs
}

func (s *scriptedStripe) set(vs string, o stripeapi.Outputs) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outputs[vs] = o
}

func (s *scriptedStripe) VerifiedOutputs(_ context.Context, vs string) (stripeapi.Outputs, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.outputs[vs]
	o.Status = stripeapi.StatusVerified
	return o, nil
}
func (s *scriptedStripe) Status(context.Context, string) (string, error) {
	return "requires_input", nil
}
func (s *scriptedStripe) Cancel(context.Context, string) error          { return nil }
func (s *scriptedStripe) SetType(context.Context, string, string) error { return nil }
