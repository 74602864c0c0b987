// Package reconcile recovers the Stripe Identity events the webhook never
// received: the endpoint was down, disabled or misconfigured for longer
// than Stripe's three days of retries. A Temporal Schedule runs the
// IdentityReconcile workflow every RECONCILE_EVERY; its one activity lists
// identity.verification_session.* events from Stripe's Events API since a
// checkpoint kept in the database and delivers each the webhook's way
// (webhook.Decode, webhook.Deliver). The session workflow applies an event
// id once, so an event delivered twice, by the webhook and by a run, takes
// effect once.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"identityverification/activities"
	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/webhook"
	"identityverification/workflows"
)

// EventLister is the Stripe Events API as a run reads it.
type EventLister interface {
	ListEvents(ctx context.Context, q stripeapi.EventQuery) (stripeapi.EventPage, error)
}

// Store is the database as a run uses it: its checkpoint, and the ledger
// of events that took effect.
type Store interface {
	Checkpoint(ctx context.Context, name string) (store.Checkpoint, error)
	SaveCheckpoint(ctx context.Context, c store.Checkpoint) error
	ProcessedEventIDs(ctx context.Context, sessionID string, limit int) ([]string, error)
}

// Activities holds a run's dependencies; its method is the activity.
type Activities struct {
	Events   EventLister
	Store    Store
	Temporal webhook.Signaler
	// Policy starts the workflow of a session the missed event is the first
	// of, as the webhook's does.
	Policy workflows.Policy
	// Overlap is how far before the checkpoint a run lists again: Stripe
	// may list an event after a newer one, and a run must not step over it.
	Overlap time.Duration
	// MaxPages bounds one run (0: DefaultMaxPages); a run that stops there
	// leaves the checkpoint where it stopped, and the next continues.
	MaxPages int
	Now      func() time.Time // nil: time.Now
}

const (
	// CheckpointName names this reconciliation's row in the checkpoints.
	CheckpointName = "stripe_identity_events"
	// EventTypes selects the events listed: every identity session event.
	EventTypes = workflows.EventTypePrefix + "*"
	// PageSize is Stripe's largest page.
	PageSize = 100
	// DefaultMaxPages bounds a run to 2,000 events.
	DefaultMaxPages = 20
	// MaxListPages bounds the listing of a window with no identity event
	// before it to start from (30,000 events): such a window is listed
	// whole before its oldest events are delivered. Past the bound its
	// oldest events are skipped, and the run says so.
	MaxListPages = 300
	// Retention is how long Stripe keeps events: a checkpoint older than it
	// leaves a gap, events that may have been lost.
	Retention = 30 * 24 * time.Hour
	// knownIDs bounds the ledger ids read per session to tell a known event:
	// the ids a workflow run carries (activities.ProcessedEventsCarried).
	knownIDs = 1000
	// signalTimeout bounds one delivery, as the webhook bounds its own.
	signalTimeout = 10 * time.Second
)

// Result is what a run found and did. It carries ids and counts only.
type Result struct {
	Found    int `json:"found"`             // identity events listed since the window's start
	Signaled int `json:"signaled"`          // delivered with SignalWithStart: the webhook had not applied them
	Known    int `json:"known"`             // already in the session's processed events: not delivered
	Skipped  int `json:"skipped,omitempty"` // not deliverable (no session id); logged by event id
	Pages    int `json:"pages"`             // pages of events read
	// Since is the window's start (Unix seconds): the checkpoint less the
	// overlap, or where the last run stopped.
	Since int64 `json:"since"`
	// Checkpoint is the created time of the newest event seen, as stored
	// after the run (0: none yet).
	Checkpoint int64 `json:"checkpoint"`
	// Complete is false when the run stopped at its page bound; the next
	// run continues where it stopped.
	Complete bool `json:"complete"`
	// Gap, when set, says which events may have been lost: the checkpoint
	// is older than Stripe's Retention, or a window too large to list
	// (MaxListPages) had its oldest events skipped. Times and counts only.
	Gap string `json:"gap,omitempty"`
}

// String is the one line the workflow's details and the worker's log show.
func (r Result) String() string {
	s := fmt.Sprintf("found %d, signaled %d, already known %d", r.Found, r.Signaled, r.Known)
	if r.Skipped > 0 {
		s += fmt.Sprintf(", skipped %d", r.Skipped)
	}
	pages := "pages"
	if r.Pages == 1 {
		pages = "page"
	}
	s += fmt.Sprintf(" (%d %s since %s)", r.Pages, pages, unixTime(r.Since))
	if !r.Complete {
		s += "; stopped at the page bound, the next run continues"
	}
	if r.Gap != "" {
		s += "; GAP: " + r.Gap
	}
	return s
}

// progress is a run so far. Heartbeats carry it after each page, so a
// retried attempt resumes after the last page delivered, with its figures.
type progress struct {
	Result
	// Cursor is the newest event delivered; a page newer than it comes
	// next. Empty until the first page is delivered.
	Cursor        string `json:"cursor,omitempty"`
	CursorCreated int64  `json:"cursor_created,omitempty"`
	// PageSignaled are the events of the page under way signaled so far: a
	// retried attempt does the page again, and counts each of them once
	// (as signaled, in its figures and in the metric) without a second
	// signal.
	PageSignaled []string `json:"page_signaled,omitempty"`
}

// ReconcileEvents lists the identity events since the checkpoint, oldest
// first, delivers each that the session's ledger does not hold, and then
// advances the checkpoint. The checkpoint moves only when the run
// succeeds; a failed attempt is retried from its last heartbeat.
func (a *Activities) ReconcileEvents(ctx context.Context) (Result, error) {
	cp, err := a.Store.Checkpoint(ctx, CheckpointName)
	if errors.Is(err, store.ErrNotFound) {
		cp = store.Checkpoint{Name: CheckpointName}
	} else if err != nil {
		return Result{}, storeError(err)
	}
	retained := a.now().Add(-Retention).Unix() // Stripe holds no older event
	gap := ""
	if cp.Created > 0 && cp.Created < retained {
		gap = fmt.Sprintf("the checkpoint (%s) is older than Stripe's %d days of events: events from then to %s may have been lost",
			unixTime(cp.Created), int(Retention/(24*time.Hour)), unixTime(retained))
		activity.GetLogger(ctx).Error("reconcile: the checkpoint is older than Stripe keeps events; events in the gap may have been lost",
			"checkpoint", unixTime(cp.Created), "retained_since", unixTime(retained))
		cp.ResumeAfter = "" // that event is gone too: start from the checkpoint's time
	}
	start := func() *run {
		r := &run{Activities: a, known: map[string][]string{}}
		r.p.Since = a.now().Add(-a.Overlap).Unix()
		if cp.Created > 0 {
			r.p.Since = cp.Created - int64(a.Overlap/time.Second)
		}
		if cp.ResumeAfter != "" { // the last run stopped at its bound: carry on after it
			r.p.Since, r.p.Cursor, r.p.CursorCreated = cp.Created, cp.ResumeAfter, cp.Created
		}
		r.p.Gap = gap
		return r
	}
	r := start()
	if activity.HasHeartbeatDetails(ctx) {
		var p progress
		if err := activity.GetHeartbeatDetails(ctx, &p); err == nil && (p.Cursor != "" || len(p.PageSignaled) > 0) {
			r.p = p // a retried attempt: resume after its last page
		}
	}
	err = r.read(ctx)
	if err != nil && cp.ResumeAfter != "" && r.p.Cursor == cp.ResumeAfter && r.p.Pages == 0 && cursorMissing(err) {
		// Stripe no longer holds the event the last run stopped after:
		// start again from the checkpoint's time, as without it.
		activity.GetLogger(ctx).Warn("reconcile: the event to resume after is gone; reading from the checkpoint's time",
			"event_id", cp.ResumeAfter, "checkpoint", unixTime(cp.Created))
		cp.ResumeAfter = ""
		r = start()
		err = r.read(ctx)
	}
	if err != nil {
		return Result{}, err
	}
	r.p.Checkpoint = cp.Created
	if r.p.Cursor != "" && (r.p.Cursor != cp.EventID || r.p.Complete != (cp.ResumeAfter == "")) {
		next := store.Checkpoint{Name: CheckpointName, Created: max(r.p.CursorCreated, cp.Created), EventID: r.p.Cursor}
		if !r.p.Complete {
			next.ResumeAfter = r.p.Cursor
		}
		if err := a.Store.SaveCheckpoint(ctx, next); err != nil {
			return Result{}, storeError(err)
		}
		r.p.Checkpoint = next.Created
	} else if r.p.Cursor == "" && r.p.Complete && gap != "" {
		// Nothing listed since the gap: move the checkpoint to the oldest
		// time Stripe holds, so the gap is reported once, not every run.
		next := store.Checkpoint{Name: CheckpointName, Created: retained, EventID: cp.EventID}
		if err := a.Store.SaveCheckpoint(ctx, next); err != nil {
			return Result{}, storeError(err)
		}
		r.p.Checkpoint = next.Created
	}
	a.log(ctx, r.p.Result)
	return r.p.Result, nil
}

// run is one attempt: its progress and the ledger ids read so far.
type run struct {
	*Activities
	p     progress
	known map[string][]string // session id -> processed event ids
}

// read delivers the window's events oldest first. Stripe lists newest
// first, and pages towards newer events from an event id (ending_before):
// the newest identity event before the window is where the first page
// starts. When there is none (Stripe holds no older identity event), the
// window is listed newest first, whole, and delivered oldest first.
func (r *run) read(ctx context.Context) error {
	maxPages := r.MaxPages
	if maxPages <= 0 {
		maxPages = DefaultMaxPages
	}
	cursor := r.p.Cursor
	if cursor == "" {
		page, err := r.list(ctx, stripeapi.EventQuery{Type: EventTypes, CreatedLT: r.p.Since, Limit: 1})
		if err != nil {
			return err
		}
		if len(page.Events) == 0 {
			return r.readWhole(ctx, maxPages)
		}
		cursor = page.Events[0].ID // before the window: a start, not delivered
	}
	for r.p.Pages < maxPages {
		page, err := r.list(ctx, stripeapi.EventQuery{Type: EventTypes, EndingBefore: cursor, Limit: PageSize})
		if err != nil {
			return err
		}
		events := slices.Clone(page.Events)
		slices.Reverse(events) // oldest first
		if err := r.deliverPage(ctx, events, 1); err != nil {
			return err // the heartbeats hold the figures before this page: a retry reads it again
		}
		if len(events) > 0 {
			cursor = r.p.Cursor
		}
		if !page.HasMore || len(events) == 0 {
			r.p.Complete = true
			return nil
		}
	}
	return nil
}

// readWhole lists the window newest first, whole (up to MaxListPages),
// and delivers it oldest first, up to the run's bound of maxPages pages of
// events. A run that stops at the bound leaves its cursor at the last
// event delivered; the next run pages forward from it (ending_before). It
// is the start of a window with no identity event before it only: a new
// or quiet account, or a checkpoint older than Stripe keeps events.
func (r *run) readWhole(ctx context.Context, maxPages int) error {
	var events []stripeapi.ListedEvent
	q := stripeapi.EventQuery{Type: EventTypes, CreatedGTE: r.p.Since, Limit: PageSize}
	listed := false
	r.p.Pages = 0 // a retry that resumes here lists the window again
	for range MaxListPages {
		page, err := r.list(ctx, q)
		if err != nil {
			return err
		}
		r.p.Pages++
		events = append(events, page.Events...)
		if !page.HasMore || len(page.Events) == 0 {
			listed = true
			break
		}
		q.StartingAfter = page.Events[len(page.Events)-1].ID
		activity.RecordHeartbeat(ctx, progress{Result: Result{Pages: r.p.Pages}})
	}
	if !listed && len(events) > 0 {
		oldest := events[len(events)-1]
		gap := fmt.Sprintf("the window since %s holds more than %d events; those before %s were skipped",
			unixTime(r.p.Since), MaxListPages*PageSize, unixTime(oldest.Created))
		r.p.Gap = strings.TrimPrefix(r.p.Gap+"; "+gap, "; ")
		activity.GetLogger(ctx).Error("reconcile: the window holds more identity events than a run lists; the oldest were skipped",
			"since", unixTime(r.p.Since), "oldest_read", oldest.ID, "pages", r.p.Pages)
	}
	slices.Reverse(events) // oldest first
	bound := maxPages * PageSize
	for delivered := 0; len(events) > 0; {
		n := min(PageSize, len(events), bound-delivered)
		if n <= 0 {
			return nil // at the bound: the next run continues after the cursor
		}
		if err := r.deliverPage(ctx, events[:n], 0); err != nil {
			return err
		}
		events, delivered = events[n:], delivered+n
	}
	r.p.Complete = true
	return nil
}

// list reads a page. A refusal (a bad key, a bad parameter) is final, of
// the activities' error type for it.
func (r *run) list(ctx context.Context, q stripeapi.EventQuery) (stripeapi.EventPage, error) {
	page, err := r.Events.ListEvents(ctx, q)
	if errors.Is(err, stripeapi.ErrPermanent) {
		return page, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeStripeRefused, nil)
	}
	return page, err
}

// cursorMissing says whether Stripe refused a page because the event it
// starts from is gone (resource_missing): older than Stripe keeps events.
func cursorMissing(err error) bool {
	var refused *temporal.ApplicationError
	return errors.As(err, &refused) && refused.Type() == activities.ErrTypeStripeRefused &&
		strings.Contains(refused.Error(), "resource_missing")
}

// deliverPage delivers events in order, then records the page (counting
// pages more pages read) in a heartbeat: a retry does the page again, not
// the pages before it. The heartbeats within a page carry the progress
// before it, and the events it signaled.
func (r *run) deliverPage(ctx context.Context, events []stripeapi.ListedEvent, pages int) error {
	p := r.p
	p.PageSignaled = nil
	p.Pages += pages
	for _, e := range events {
		if err := r.deliver(ctx, e, &p.Result); err != nil {
			return err
		}
		activity.RecordHeartbeat(ctx, r.p)
		if e.Created >= p.CursorCreated {
			p.CursorCreated = e.Created
		}
		p.Cursor = e.ID
	}
	r.p = p
	r.p.PageSignaled = nil
	activity.RecordHeartbeat(ctx, r.p)
	return nil
}

// deliver hands one listed event to its session's workflow unless its
// ledger already holds it.
func (r *run) deliver(ctx context.Context, e stripeapi.ListedEvent, res *Result) error {
	log := activity.GetLogger(ctx)
	ev, identity, err := webhook.Decode(e.Raw)
	switch {
	case err != nil:
		res.Skipped++
		count(ctx, "skipped")
		log.Warn("reconcile: event not deliverable", "event_id", e.ID, "reason", err.Error())
		return nil
	case !identity: // not of the types asked for: not this service's
		return nil
	}
	res.Found++
	if slices.Contains(r.p.PageSignaled, ev.ID) { // an earlier attempt signaled it
		res.Signaled++
		return nil
	}
	known, err := r.isKnown(ctx, ev.SessionID, ev.ID)
	if err != nil {
		return storeError(err)
	}
	if known {
		res.Known++
		count(ctx, "known")
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, signalTimeout)
	defer cancel()
	if err := webhook.Deliver(sctx, r.Temporal, ev, r.Policy); err != nil {
		return fmt.Errorf("reconcile: deliver %s: %w", ev.ID, err)
	}
	res.Signaled++
	r.p.PageSignaled = append(r.p.PageSignaled, ev.ID) // heartbeaten with the page's progress
	count(ctx, "signaled")
	log.Info("reconcile: missed event delivered", "event_id", ev.ID, "type", ev.Type, "session_id", ev.SessionID)
	return nil
}

// isKnown says whether the session's ledger holds the event, reading each
// session's ledger once per attempt.
func (r *run) isKnown(ctx context.Context, sessionID, eventID string) (bool, error) {
	ids, ok := r.known[sessionID]
	if !ok {
		var err error
		if ids, err = r.Store.ProcessedEventIDs(ctx, sessionID, knownIDs); err != nil {
			return false, err
		}
		r.known[sessionID] = ids
	}
	return slices.Contains(ids, eventID), nil
}

func (a *Activities) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// log writes the run's figures to the worker's log: ids and counts only.
func (a *Activities) log(ctx context.Context, res Result) {
	activity.GetLogger(ctx).Info("reconcile: run done", "found", res.Found, "signaled", res.Signaled,
		"known", res.Known, "skipped", res.Skipped, "pages", res.Pages, "since", unixTime(res.Since),
		"checkpoint", unixTime(res.Checkpoint), "complete", res.Complete)
}

// unixTime shows Unix seconds in the logs and details; 0 is none.
func unixTime(sec int64) string {
	if sec <= 0 {
		return "none"
	}
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}

// metricEvents counts the events runs found, by outcome (signaled, known,
// skipped), next to the SDK's metrics: a signaled event is one the webhook
// missed.
const metricEvents = "identity_reconcile_events_total"

func count(ctx context.Context, outcome string) {
	activity.GetMetricsHandler(ctx).WithTags(map[string]string{"outcome": outcome}).Counter(metricEvents).Inc(1)
}

// storeError makes a database refusal final, of the activities' error type
// for it; an outage stays retryable.
func storeError(err error) error {
	if errors.Is(err, store.ErrRejected) {
		return temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeStoreRejected, nil)
	}
	return err
}
