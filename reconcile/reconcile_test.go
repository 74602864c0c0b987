package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"identityverification/activities"
	"identityverification/devstack"
	"identityverification/reconcile"
	"identityverification/reconcile/reconciletest"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/stripeapi"
	"identityverification/testevent"
	"identityverification/webhook"
	"identityverification/workflows"
)

// now is the clock of every run; the recorded events are from the hour
// before it.
var now = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

// sessionWorkflows is Temporal and the session workflows as a run sees
// them: it records each SignalWithStart and, when apply is set, writes the
// event to the session's ledger as the workflow would.
type sessionWorkflows struct {
	mu    sync.Mutex
	store *store.Store
	apply bool
	err   error
	calls []signalCall
	// failAfter, when set, fails the delivery after that many, once.
	failAfter int
	seq       map[string]int64
}

type signalCall struct {
	WorkflowID, Signal string
	Event              workflows.Event
	Options            client.StartWorkflowOptions
	Workflow           any
	Input              workflows.Input
}

func (s *sessionWorkflows) SignalWithStartWorkflow(ctx context.Context, id, signal string, arg any,
	opts client.StartWorkflowOptions, wf any, args ...any) (client.WorkflowRun, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if s.failAfter > 0 && len(s.calls) == s.failAfter {
		s.failAfter = 0
		return nil, errors.New("temporal: unavailable (once)")
	}
	ev := arg.(workflows.Event)
	s.calls = append(s.calls, signalCall{id, signal, ev, opts, wf, args[0].(workflows.Input)})
	if s.apply {
		s.seq[ev.SessionID]++
		if _, err := s.store.RecordTransition(ctx, ledgerEntry(ev.SessionID, ev.ID, s.seq[ev.SessionID])); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// signaled returns the event ids signaled so far, in order, and forgets them.
func (s *sessionWorkflows) signaled() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, c := range s.calls {
		ids = append(ids, c.Event.ID)
	}
	s.calls = nil
	return ids
}

func ledgerEntry(sessionID, eventID string, seq int64) store.Transition {
	return store.Transition{SessionID: sessionID, Key: eventID, Seq: seq, EventID: eventID,
		EventType: workflows.EventRequiresInput, From: "new", To: "requires_input", Escalation: "none", State: "{}"}
}

// env is one database with a stand-in Events API and stand-in workflows.
type env struct {
	t         *testing.T
	store     *store.Store
	stripe    *reconciletest.EventsAPI
	workflows *sessionWorkflows
	acts      *reconcile.Activities
}

func forEachDatabase(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			st, err := store.Open(context.Background(), db.URL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			api := &reconciletest.EventsAPI{}
			srv := httptest.NewServer(api)
			t.Cleanup(srv.Close)
			wfs := &sessionWorkflows{store: st, apply: true, seq: map[string]int64{}}
			acts := &reconcile.Activities{Events: stripeapi.New("sk_test_reconcile", srv.URL), Store: st,
				Temporal: wfs, Policy: workflows.DefaultPolicy(), Overlap: time.Hour, Now: func() time.Time { return now }}
			fn(t, &env{t: t, store: st, stripe: api, workflows: wfs, acts: acts})
		})
	}
}

// run runs the activity once, as a worker would.
func (e *env) run() (reconcile.Result, error) {
	e.t.Helper()
	var s testsuite.WorkflowTestSuite
	s.SetLogger(devstack.QuietLogger)
	tenv := s.NewTestActivityEnvironment()
	tenv.RegisterActivity(e.acts)
	v, err := tenv.ExecuteActivity(e.acts.ReconcileEvents)
	if err != nil {
		return reconcile.Result{}, err
	}
	var res reconcile.Result
	return res, v.Get(&res)
}

// runWorkflow runs the workflow, the activity with its retry policy, on
// the test environment's clock.
func (e *env) runWorkflow() (reconcile.Result, error) {
	e.t.Helper()
	var s testsuite.WorkflowTestSuite
	s.SetLogger(devstack.QuietLogger)
	wenv := s.NewTestWorkflowEnvironment()
	reconcile.Register(wenv, e.acts)
	wenv.ExecuteWorkflow(reconcile.Workflow)
	if !wenv.IsWorkflowCompleted() {
		e.t.Fatal("the workflow did not complete")
	}
	var res reconcile.Result
	if err := wenv.GetWorkflowResult(&res); err != nil {
		return res, err
	}
	return res, nil
}

func (e *env) checkpoint() store.Checkpoint {
	e.t.Helper()
	cp, err := e.store.Checkpoint(context.Background(), reconcile.CheckpointName)
	if errors.Is(err, store.ErrNotFound) {
		return store.Checkpoint{}
	}
	if err != nil {
		e.t.Fatal(err)
	}
	cp.UpdatedAt = time.Time{}
	return cp
}

// event makes an identity event from a recorded one.
func event(t *testing.T, fixture, eventID, sessionID string, created time.Time) json.RawMessage {
	t.Helper()
	raw, err := reconciletest.FromFixture(filepath.Join("..", "testdata", "stripe", fixture), eventID, sessionID, created)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

const (
	requiresInput = "event_verification_session_requires_input.json"
	verified      = "event_verification_session_verified.json"
)

// recorded is what Stripe holds: an identity event from long before the
// window, then 75 sessions each with a requires_input and a verified event
// in the hour before now (150 events: two pages of 100), and a charge
// event among them that the type filter leaves out. ids are the identity
// events of the window, oldest first.
func recorded(t *testing.T) (events []json.RawMessage, ids []string) {
	events = append(events, event(t, verified, "evt_before_window", "vs_old", now.Add(-3*time.Hour)))
	start := now.Add(-50 * time.Minute)
	for i := range 75 {
		vs := fmt.Sprintf("vs_rec%03d", i)
		ri, ver := fmt.Sprintf("evt_%03d_requires_input", i), fmt.Sprintf("evt_%03d_verified", i)
		events = append(events, event(t, requiresInput, ri, vs, start.Add(time.Duration(i*10)*time.Second)),
			event(t, verified, ver, vs, start.Add(time.Duration(i*10+5)*time.Second)))
		ids = append(ids, ri, ver)
		if i == 40 {
			charge := bytes.Replace(event(t, verified, "evt_charge", "vs_rec040", start.Add(time.Duration(i*10+6)*time.Second)),
				[]byte(`"identity.verification_session.verified"`), []byte(`"charge.succeeded"`), 1)
			events = append(events, charge)
		}
	}
	return events, ids
}

// newest is the created time of the newest recorded identity event.
var newest = now.Add(-50*time.Minute + 745*time.Second).Unix()

func TestRunsSignalMissedEventsOnceAndAdvanceTheCheckpoint(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		events, ids := recorded(t)
		if err := e.stripe.Add(events...); err != nil {
			t.Fatal(err)
		}
		// The webhook delivered the first ten sessions' requires_input
		// events, and their workflows applied them.
		var known []string
		for i := range 10 {
			id := fmt.Sprintf("evt_%03d_requires_input", i)
			if _, err := e.store.RecordTransition(ctx, ledgerEntry(fmt.Sprintf("vs_rec%03d", i), id, 100)); err != nil {
				t.Fatal(err)
			}
			known = append(known, id)
		}
		missed := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return slices.Contains(known, id) })

		t.Run("the first run signals every event the ledgers lack, oldest first", func(t *testing.T) {
			res, err := e.run()
			want := reconcile.Result{Found: 150, Signaled: 140, Known: 10, Pages: 2,
				Since: now.Add(-time.Hour).Unix(), Checkpoint: newest, Complete: true}
			if err != nil || res != want {
				t.Fatalf("result = %+v, %v; want %+v", res, err, want)
			}
			if got := e.workflows.signaled(); !slices.Equal(got, missed) {
				t.Errorf("signaled %d events %v...; want the %d missed ones oldest first", len(got), got[:min(3, len(got))], len(missed))
			}
			wantCP := store.Checkpoint{Name: reconcile.CheckpointName, Created: newest, EventID: "evt_074_verified"}
			if cp := e.checkpoint(); cp != wantCP {
				t.Errorf("checkpoint = %+v; want %+v", cp, wantCP)
			}
		})
		t.Run("the pages start at the newest identity event before the window and go forward", func(t *testing.T) {
			reqs := e.stripe.Requests()
			want := []url.Values{
				{"type": {reconcile.EventTypes}, "created[lt]": {fmt.Sprint(now.Add(-time.Hour).Unix())}, "limit": {"1"}},
				{"type": {reconcile.EventTypes}, "ending_before": {"evt_before_window"}, "limit": {"100"}},
				{"type": {reconcile.EventTypes}, "ending_before": {"evt_049_verified"}, "limit": {"100"}},
			}
			if got := queries(t, reqs); !reflect.DeepEqual(got, want) {
				t.Errorf("requests = %v; want %v", got, want)
			}
		})
		t.Run("the second run signals none: the workflows applied them", func(t *testing.T) {
			res, err := e.run()
			want := reconcile.Result{Found: 150, Known: 150, Pages: 2, Since: newest - 3600, Checkpoint: newest, Complete: true}
			if err != nil || res != want {
				t.Fatalf("result = %+v, %v; want %+v", res, err, want)
			}
			if got := e.workflows.signaled(); len(got) != 0 {
				t.Errorf("signaled %v; want none", got)
			}
		})
		t.Run("a later run signals only the new events", func(t *testing.T) {
			later := time.Unix(newest, 0).Add(2 * time.Minute)
			if err := e.stripe.Add(event(t, verified, "evt_new_verified", "vs_rec_new", later)); err != nil {
				t.Fatal(err)
			}
			res, err := e.run()
			want := reconcile.Result{Found: 151, Signaled: 1, Known: 150, Pages: 2, Since: newest - 3600,
				Checkpoint: later.Unix(), Complete: true}
			if err != nil || res != want {
				t.Fatalf("result = %+v, %v; want %+v", res, err, want)
			}
			if got := e.workflows.signaled(); !slices.Equal(got, []string{"evt_new_verified"}) {
				t.Errorf("signaled %v; want [evt_new_verified]", got)
			}
			if cp := e.checkpoint(); cp.Created != later.Unix() || cp.EventID != "evt_new_verified" {
				t.Errorf("checkpoint = %+v; want at evt_new_verified", cp)
			}
		})
	})
}

// A run bounded by its pages leaves the checkpoint where it stopped; the
// next one continues from there, not from the overlap.
func TestARunStoppedAtItsPageBoundIsContinuedByTheNext(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		events, ids := recorded(t)
		if err := e.stripe.Add(events...); err != nil {
			t.Fatal(err)
		}
		e.acts.MaxPages = 1
		res, err := e.run()
		if err != nil || res.Found != 100 || res.Signaled != 100 || res.Complete {
			t.Fatalf("first run = %+v, %v; want 100 signaled, incomplete", res, err)
		}
		cp := e.checkpoint()
		if cp.EventID != ids[99] || cp.ResumeAfter != ids[99] {
			t.Errorf("checkpoint = %+v; want to resume after %s", cp, ids[99])
		}
		if got := e.workflows.signaled(); !slices.Equal(got, ids[:100]) {
			t.Errorf("first run signaled %d; want the oldest 100", len(got))
		}
		res, err = e.run()
		if err != nil || res.Found != 50 || res.Signaled != 50 || !res.Complete {
			t.Fatalf("second run = %+v, %v; want the other 50, complete", res, err)
		}
		if got := e.workflows.signaled(); !slices.Equal(got, ids[100:]) {
			t.Errorf("second run signaled %d; want the newest 50", len(got))
		}
		if cp := e.checkpoint(); cp.EventID != "evt_074_verified" || cp.ResumeAfter != "" {
			t.Errorf("checkpoint = %+v; want at the newest event, nothing to resume", cp)
		}
	})
}

// With no identity event before the window (a new account), the window is
// read newest first and delivered oldest first.
func TestAWindowWithNothingBeforeItIsDeliveredOldestFirst(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		events, ids := recorded(t)
		if err := e.stripe.Add(events[1:]...); err != nil { // without evt_before_window
			t.Fatal(err)
		}
		res, err := e.run()
		want := reconcile.Result{Found: 150, Signaled: 150, Pages: 2, Since: now.Add(-time.Hour).Unix(),
			Checkpoint: newest, Complete: true}
		if err != nil || res != want {
			t.Fatalf("result = %+v, %v; want %+v", res, err, want)
		}
		if got := e.workflows.signaled(); !slices.Equal(got, ids) {
			t.Errorf("signaled %d events; want all %d oldest first", len(got), len(ids))
		}
	})
}

// A window with nothing before it and more events than a run delivers is
// listed whole and delivered oldest first over runs: each run takes up its
// bound of the oldest, the next pages forward from the last delivered.
func TestAWindowWithNothingBeforeItLargerThanARunIsDeliveredOverRuns(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		events, ids := recorded(t)
		if err := e.stripe.Add(events[1:]...); err != nil { // without evt_before_window
			t.Fatal(err)
		}
		e.acts.MaxPages = 1
		res, err := e.run()
		want := reconcile.Result{Found: 100, Signaled: 100, Pages: 2, Since: now.Add(-time.Hour).Unix(),
			Checkpoint: now.Add(-50*time.Minute + 495*time.Second).Unix()} // evt_049_verified
		if err != nil || res != want {
			t.Fatalf("first run = %+v, %v; want %+v", res, err, want)
		}
		got := e.workflows.signaled()
		if !slices.Equal(got, ids[:100]) {
			t.Errorf("first run signaled %d events; want the oldest 100, oldest first", len(got))
		}
		if cp := e.checkpoint(); cp.EventID != ids[99] || cp.ResumeAfter != ids[99] {
			t.Errorf("checkpoint = %+v; want to resume after %s", cp, ids[99])
		}
		reqs := len(e.stripe.Requests())
		res, err = e.run()
		if err != nil || res.Found != 50 || res.Signaled != 50 || !res.Complete || res.Gap != "" {
			t.Fatalf("second run = %+v, %v; want the newest 50, complete", res, err)
		}
		second := e.workflows.signaled()
		if !slices.Equal(second, ids[100:]) {
			t.Errorf("second run signaled %d events; want the newest 50, oldest first", len(second))
		}
		if q := queries(t, e.stripe.Requests()[reqs:]); len(q) != 1 || q[0].Get("ending_before") != ids[99] {
			t.Errorf("second run requests = %v; want one page forward from %s", q, ids[99])
		}
		if all := append(got, second...); !slices.Equal(all, ids) {
			t.Errorf("signaled %d events over the runs; want each of the %d once, oldest first", len(all), len(ids))
		}
		if cp := e.checkpoint(); cp.EventID != "evt_074_verified" || cp.ResumeAfter != "" {
			t.Errorf("checkpoint = %+v; want at the newest event, nothing to resume", cp)
		}
		res, err = e.run() // its overlap: listed again, all known
		if err != nil || res.Signaled != 0 || res.Known != 100 {
			t.Fatalf("third run = %+v, %v; want nothing signaled", res, err)
		}
	})
}

// A checkpoint older than Stripe keeps events leaves a gap: the run says
// so, and reads from the checkpoint's time, not after its expired event.
func TestACheckpointOlderThanStripeKeepsEventsIsReported(t *testing.T) {
	old := store.Checkpoint{Name: reconcile.CheckpointName, Created: now.Add(-40 * 24 * time.Hour).Unix(),
		EventID: "evt_expired", ResumeAfter: "evt_expired"}
	t.Run("with events since", func(t *testing.T) {
		forEachDatabase(t, func(t *testing.T, e *env) {
			events, _ := recorded(t)
			if err := e.stripe.Add(events...); err != nil {
				t.Fatal(err)
			}
			if err := e.store.SaveCheckpoint(context.Background(), old); err != nil {
				t.Fatal(err)
			}
			res, err := e.run()
			if err != nil || res.Found != 151 || res.Signaled != 151 || !res.Complete || res.Gap == "" ||
				res.Since != old.Created-3600 || res.Checkpoint != newest {
				t.Fatalf("result = %+v, %v; want all 151 signaled, complete, with a gap", res, err)
			}
			if s := res.String(); !strings.Contains(s, "GAP: the checkpoint (") {
				t.Errorf("String() = %q; want the gap named", s)
			}
			for _, q := range queries(t, e.stripe.Requests()) {
				if q.Get("ending_before") == "evt_expired" {
					t.Errorf("asked for the events after the expired one: %v", q)
				}
			}
			if cp := e.checkpoint(); cp.EventID != "evt_074_verified" || cp.ResumeAfter != "" {
				t.Errorf("checkpoint = %+v; want at the newest event", cp)
			}
			if res, err := e.run(); err != nil || res.Gap != "" {
				t.Errorf("next run = %+v, %v; want no gap", res, err)
			}
		})
	})
	t.Run("with none since: reported once", func(t *testing.T) {
		forEachDatabase(t, func(t *testing.T, e *env) {
			if err := e.store.SaveCheckpoint(context.Background(), old); err != nil {
				t.Fatal(err)
			}
			res, err := e.run()
			retained := now.Add(-reconcile.Retention).Unix()
			if err != nil || res.Gap == "" || !res.Complete || res.Checkpoint != retained {
				t.Fatalf("result = %+v, %v; want a gap, the checkpoint at %d", res, err, retained)
			}
			if res, err := e.run(); err != nil || res.Gap != "" || !res.Complete {
				t.Errorf("next run = %+v, %v; want no gap", res, err)
			}
		})
	})
}

// A stored event to resume after that Stripe no longer holds
// (resource_missing) does not fail every run: the run reads from the
// checkpoint's time.
func TestAResumeEventStripeNoLongerHoldsFallsBackToTheCheckpoint(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		events, ids := recorded(t)
		if err := e.stripe.Add(events...); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("ending_before") == "evt_gone" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such event: 'evt_gone'"}}`)
				return
			}
			e.stripe.ServeHTTP(w, r)
		}))
		defer srv.Close()
		e.acts.Events = stripeapi.New("sk_test_reconcile", srv.URL)
		cp := store.Checkpoint{Name: reconcile.CheckpointName, Created: now.Add(-90 * time.Minute).Unix(),
			EventID: "evt_gone", ResumeAfter: "evt_gone"}
		if err := e.store.SaveCheckpoint(context.Background(), cp); err != nil {
			t.Fatal(err)
		}
		res, err := e.run()
		if err != nil || res.Found != 150 || res.Signaled != 150 || !res.Complete {
			t.Fatalf("result = %+v, %v; want all 150 signaled, complete", res, err)
		}
		if got := e.workflows.signaled(); !slices.Equal(got, ids) {
			t.Errorf("signaled %d events; want each of the %d once, oldest first", len(got), len(ids))
		}
		if cp := e.checkpoint(); cp.EventID != "evt_074_verified" || cp.ResumeAfter != "" {
			t.Errorf("checkpoint = %+v; want at the newest event", cp)
		}
	})
}

// A Stripe 5xx fails the attempt; the retry resumes after the last page
// delivered, so every event is signaled once and the figures are exact.
func TestAStripeOutageIsRetriedFromTheLastPage(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		events, ids := recorded(t)
		if err := e.stripe.Add(events...); err != nil {
			t.Fatal(err)
		}
		e.stripe.FailRequest(3, http.StatusServiceUnavailable) // the second page
		res, err := e.runWorkflow()
		want := reconcile.Result{Found: 150, Signaled: 150, Pages: 2, Since: now.Add(-time.Hour).Unix(),
			Checkpoint: newest, Complete: true}
		if err != nil || res != want {
			t.Fatalf("result = %+v, %v; want %+v", res, err, want)
		}
		if got := e.workflows.signaled(); !slices.Equal(got, ids) {
			t.Errorf("signaled %d events; want each of the %d once, oldest first", len(got), len(ids))
		}
		reqs := queries(t, e.stripe.Requests())
		if len(reqs) != 4 || !reflect.DeepEqual(reqs[2], reqs[3]) || reqs[3].Get("ending_before") != "evt_049_verified" {
			t.Errorf("requests = %v; want the second page asked again after the 503", reqs)
		}
	})
}

// Issue 19: an attempt that fails in the middle of a page (Temporal blinks
// on one delivery) is retried; the events it had signaled are counted once,
// as signaled, and not signaled again.
func TestAnEventSignaledBeforeARetryIsCountedOnce(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		events, ids := recorded(t)
		if err := e.stripe.Add(events...); err != nil {
			t.Fatal(err)
		}
		e.workflows.failAfter = 120 // 20 events into the second page
		res, err := e.runWorkflow()
		want := reconcile.Result{Found: 150, Signaled: 150, Pages: 2, Since: now.Add(-time.Hour).Unix(),
			Checkpoint: newest, Complete: true}
		if err != nil || res != want {
			t.Fatalf("result = %+v, %v; want %+v", res, err, want)
		}
		if got := e.workflows.signaled(); !slices.Equal(got, ids) {
			t.Errorf("signaled %d events; want each of the %d once, oldest first", len(got), len(ids))
		}
	})
}

// A run that fails leaves the checkpoint where it was: the next run reads
// the same window again.
func TestAFailedRunDoesNotAdvanceTheCheckpoint(t *testing.T) {
	// A checkpoint from an earlier run: the window starts an hour before
	// it, after evt_before_window.
	before := store.Checkpoint{Name: reconcile.CheckpointName, Created: now.Add(-90 * time.Minute).Unix(), EventID: "evt_earlier"}
	for _, tc := range []struct {
		name     string
		fail     func(e *env)
		requests int    // list requests made, over every attempt
		errType  string // of a failure not retried; "" for a retried one
	}{
		{"Stripe answering 503 is retried, then the run fails", func(e *env) {
			e.stripe.FailNext(slices.Repeat([]int{http.StatusServiceUnavailable}, 10)...)
		}, 5, ""},
		// A refused key is the deployment's to mend, not a verdict: retried.
		{"Stripe refusing the key is retried, then the run fails", func(e *env) {
			e.stripe.FailNext(slices.Repeat([]int{http.StatusUnauthorized}, 10)...)
		}, 5, ""},
		{"Stripe refusing a parameter fails at once", func(e *env) { e.stripe.FailNext(http.StatusBadRequest) },
			1, activities.ErrTypeStripeRefused},
		{"Temporal down is retried, then the run fails", func(e *env) {
			e.workflows.err = errors.New("temporal: unavailable")
		}, 5 * 2, ""}, // each attempt: the probe for the start, the first page
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachDatabase(t, func(t *testing.T, e *env) {
				events, _ := recorded(t)
				if err := e.stripe.Add(events...); err != nil {
					t.Fatal(err)
				}
				if err := e.store.SaveCheckpoint(context.Background(), before); err != nil {
					t.Fatal(err)
				}
				tc.fail(e)
				_, err := e.runWorkflow()
				var appErr *temporal.ApplicationError
				if err == nil || tc.errType != "" && (!errors.As(err, &appErr) || appErr.Type() != tc.errType) {
					t.Errorf("run: %v; want a failure of type %q", err, tc.errType)
				}
				if n := len(e.stripe.Requests()); n != tc.requests {
					t.Errorf("%d list requests; want %d", n, tc.requests)
				}
				if cp := e.checkpoint(); cp != before {
					t.Errorf("checkpoint = %+v; want it unchanged, %+v", cp, before)
				}
			})
		})
	}
}

// A missed event reaches its workflow exactly as the webhook would have
// delivered it: same workflow id, signal, payload, start options and input.
func TestAMissedEventIsDeliveredAsTheWebhookDeliversIt(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		for _, fixture := range []string{requiresInput, verified} {
			t.Run(fixture, func(t *testing.T) {
				raw := event(t, fixture, "evt_same_"+fixture[:20], "vs_same", time.Now())
				fromWebhook := &sessionWorkflows{}
				h := &webhook.Handler{Temporal: fromWebhook, Secrets: []string{"whsec_reconcile"}, Tolerance: time.Minute,
					MaxBody: 1 << 20, SignalTimeout: time.Second, Policy: e.acts.Policy,
					Metrics: webhook.NewMetrics(prometheus.NewRegistry()), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
					Now: time.Now}
				req := httptest.NewRequest(http.MethodPost, webhook.Route, bytes.NewReader(raw))
				req.Header.Set("Stripe-Signature", testevent.Sign(raw, "whsec_reconcile", time.Now()))
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || len(fromWebhook.calls) != 1 {
					t.Fatalf("webhook: %d %s, %d calls", rec.Code, rec.Body, len(fromWebhook.calls))
				}

				e.stripe = &reconciletest.EventsAPI{}
				srv := httptest.NewServer(e.stripe)
				defer srv.Close()
				e.acts.Events = stripeapi.New("sk_test_reconcile", srv.URL)
				e.acts.Now = time.Now
				if err := e.stripe.Add(raw); err != nil {
					t.Fatal(err)
				}
				e.workflows.apply = false
				if _, err := e.run(); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(e.workflows.calls, fromWebhook.calls) {
					t.Errorf("reconcile delivered %+v;\nthe webhook %+v", e.workflows.calls, fromWebhook.calls)
				}
				e.workflows.calls = nil
			})
		}
	})
}

func queries(t *testing.T, raw []string) []url.Values {
	t.Helper()
	out := make([]url.Values, len(raw))
	for i, r := range raw {
		q, err := url.ParseQuery(r)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = q
	}
	return out
}
