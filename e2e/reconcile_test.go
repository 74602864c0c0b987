package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"identityverification/config"
	"identityverification/reconcile"
	"identityverification/reconcile/reconciletest"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/workflows"
)

// TestReconcileDeliversMissedEvents: a session's verified event never
// reached the webhook (the endpoint was down longer than Stripe retries).
// The worker's schedule finds it in the Events API (a stand-in serving
// recorded identity events, in front of stripe-mock for everything else)
// and the session reaches verified; an event the webhook did deliver is
// counted as known and not signaled again.
func TestReconcileDeliversMissedEvents(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			mock, err := url.Parse(components.stripe.URL)
			if err != nil {
				t.Fatal(err)
			}
			events := &reconciletest.EventsAPI{Next: httputil.NewSingleHostReverseProxy(mock)}
			srv := httptest.NewServer(events)
			t.Cleanup(srv.Close)
			// An identity event from before the window: the pages start
			// after it, and it is not delivered.
			old := recordedEvent(t, "event_verification_session_verified.json", "vs_e2e_"+testevent.RandomID(16), time.Now().Add(-3*time.Hour))
			if err := events.Add(old.raw); err != nil {
				t.Fatal(err)
			}
			s := startStack(t, db, config.Map{"STRIPE_API_BASE": srv.URL, "RECONCILE_EVERY": "2s"})
			ctx := context.Background()
			sched := s.temporal.ScheduleClient()
			t.Cleanup(func() { reconcile.EnsureSchedule(context.Background(), sched, 0) }) // no runs against a closed stand-in

			t.Run("the worker created the schedule", func(t *testing.T) {
				// Another test's worker may have left one of its own
				// interval: this worker updates it.
				var desc *client.ScheduleDescription
				eventually(t, "a schedule every 2s", func() (err error) {
					if desc, err = sched.GetHandle(ctx, reconcile.ScheduleID).Describe(ctx); err != nil {
						return err
					}
					if desc.Schedule.Spec == nil || !slices.Equal(desc.Schedule.Spec.Intervals, []client.ScheduleIntervalSpec{{Every: 2 * time.Second}}) {
						return fmt.Errorf("spec %+v", desc.Schedule.Spec)
					}
					return nil
				})
				action, _ := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
				if desc.Schedule.Spec == nil || !slices.Equal(desc.Schedule.Spec.Intervals, []client.ScheduleIntervalSpec{{Every: 2 * time.Second}}) ||
					desc.Schedule.Policy.Overlap != enumspb.SCHEDULE_OVERLAP_POLICY_SKIP ||
					action == nil || action.Workflow != reconcile.WorkflowName || action.TaskQueue != workflows.TaskQueue {
					t.Errorf("schedule = spec %+v, policy %+v, action %+v; want every 2s, overlap skip, %s on %s",
						desc.Schedule.Spec, desc.Schedule.Policy, desc.Schedule.Action, reconcile.WorkflowName, workflows.TaskQueue)
				}
			})

			// The webhook delivers one session's failure; the other
			// session's verified event never reaches it. Stripe lists both.
			delivered := recordedEvent(t, "event_verification_session_requires_input.json", "vs_e2e_"+testevent.RandomID(16), time.Now().Add(-2*time.Minute))
			if code, body := s.post(delivered.raw); code != http.StatusOK {
				t.Fatalf("webhook answered %d %s", code, body)
			}
			s.waitRow(delivered.sessionID, workflows.StatusRequiresInput)
			missedSession, to := s.newSession(store.Contact{})
			missed := recordedEvent(t, "event_verification_session_verified.json", missedSession, time.Now().Add(-time.Minute))
			if err := events.Add(delivered.raw, missed.raw); err != nil {
				t.Fatal(err)
			}

			t.Run("the missed event's session reaches verified", func(t *testing.T) {
				s.waitRow(missedSession, workflows.StatusVerified)
				if got := waitMails(t, to, 1); got[0].Subject != "Your identity is verified" {
					t.Errorf("email subject %q; want the verified email", got[0].Subject)
				}
				ids, err := s.store.ProcessedEventIDs(ctx, missedSession, 10)
				if err != nil || !slices.Equal(ids, []string{missed.id}) {
					t.Errorf("ledger = %v, %v; want [%s]", ids, err, missed.id)
				}
			})
			t.Run("the runs show their figures", func(t *testing.T) {
				first := reconcile.Result{Found: 2, Signaled: 1, Known: 1}
				later := reconcile.Result{Found: 2, Known: 2}
				runs := map[string]reconcile.Result{}
				eventually(t, "a run that signaled the missed event and one that found both known", func() error {
					if err := scheduledRuns(ctx, s.temporal, runs); err != nil {
						return err
					}
					var sawFirst, sawLater bool
					for _, r := range runs {
						sawFirst = sawFirst || figures(r) == first
						sawLater = sawLater || figures(r) == later
					}
					if !sawFirst || !sawLater {
						return fmt.Errorf("runs so far: %v", runs)
					}
					return nil
				})
				for _, id := range slices.Sorted(maps.Keys(runs)) {
					if r := runs[id]; figures(r) != (reconcile.Result{}) {
						t.Logf("%s: %s", id, r)
					}
					// Issue 19: no run can be read as a session's workflow.
					if !strings.HasPrefix(id, reconcile.RunIDPrefix) || strings.HasPrefix(id, workflows.WorkflowIDPrefix) {
						t.Errorf("run id %q: want it under %q, not %q", id, reconcile.RunIDPrefix, workflows.WorkflowIDPrefix)
					}
				}
				if n := signals(t, s, delivered.sessionID); n != 1 {
					t.Errorf("the delivered session's workflow got %d signals; want 1, the webhook's (the runs knew its event)", n)
				}
				var notFound *serviceerror.NotFound
				if _, err := s.temporal.DescribeWorkflowExecution(ctx, workflows.WorkflowID(old.sessionID), ""); !errors.As(err, &notFound) {
					t.Errorf("the session of the event before the window: %v; want no workflow", err)
				}
			})
			t.Run("the schedule follows the configuration the worker starts with", func(t *testing.T) {
				for _, step := range []struct {
					every time.Duration
					want  string
				}{
					{2 * time.Second, reconcile.ScheduleUnchanged},
					{time.Hour, reconcile.ScheduleUpdated},
					{time.Hour, reconcile.ScheduleUnchanged},
					{0, reconcile.ScheduleDeleted}, // RECONCILE_EVERY=off
					{0, reconcile.ScheduleAbsent},
				} {
					if did, err := reconcile.EnsureSchedule(ctx, sched, step.every); err != nil || did != step.want {
						t.Errorf("every %s: %q, %v; want %q", step.every, did, err, step.want)
					}
				}
			})
		})
	}
}

// recorded is an identity event built from a recorded Stripe event.
type recorded struct {
	id, sessionID string
	raw           json.RawMessage
}

func recordedEvent(t *testing.T, fixture, sessionID string, created time.Time) recorded {
	t.Helper()
	id := "evt_" + testevent.RandomID(24)
	raw, err := reconciletest.FromFixture(filepath.Join("..", "testdata", "stripe", fixture), id, sessionID, created)
	if err != nil {
		t.Fatal(err)
	}
	return recorded{id: id, sessionID: sessionID, raw: raw}
}

// scheduledRuns adds the results of the schedule's recent runs that have
// completed to runs, by workflow id.
func scheduledRuns(ctx context.Context, c client.Client, runs map[string]reconcile.Result) error {
	desc, err := c.ScheduleClient().GetHandle(ctx, reconcile.ScheduleID).Describe(ctx)
	if err != nil {
		return err
	}
	for _, a := range desc.Info.RecentActions {
		w := a.StartWorkflowResult
		if w == nil {
			continue
		}
		if _, done := runs[w.WorkflowID]; done {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var res reconcile.Result
		err := c.GetWorkflow(rctx, w.WorkflowID, w.FirstExecutionRunID).Get(rctx, &res)
		cancel()
		if err == nil {
			runs[w.WorkflowID] = res
		}
	}
	return nil
}

// figures are a result's counts alone.
func figures(r reconcile.Result) reconcile.Result {
	return reconcile.Result{Found: r.Found, Signaled: r.Signaled, Known: r.Known, Skipped: r.Skipped}
}

// signals counts the signals in the history of a session's workflow run.
func signals(t *testing.T, s *stack, sessionID string) int {
	t.Helper()
	n := 0
	it := s.temporal.GetWorkflowHistory(context.Background(), workflows.WorkflowID(sessionID), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED {
			n++
		}
	}
	return n
}
