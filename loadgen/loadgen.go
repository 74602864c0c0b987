// Package loadgen drives the webhook with real-shaped, signed Stripe events
// and measures what the service adds to the cost of making an event durable
// in Temporal: the acknowledgement (throughput, latency, errors by status)
// and the end-to-end time until the session's status is in the database.
// A run is void unless every event sent was accepted or refused (a 4xx),
// none failed (a 5xx or no answer), and every session holds its final status
// at the end.
//
// Events are built and signed before the clock starts, so the tool's own CPU
// does not count against the webhook. With a rate, the load is an open model:
// each event has a scheduled send time and its latency is measured from it,
// so a slow server cannot slow the load down and hide its own latency
// (no coordinated omission). Without a rate, a fixed number of senders each
// send whole sessions, their events in order, back to back (a closed model).
package loadgen

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"identityverification/testevent"
)

// Config is one load run.
type Config struct {
	WebhookURL string
	Secret     string // a STRIPE_WEBHOOK_SECRET of the webhook
	// Sessions is how many sessions the run sends events for, with ids
	// Prefix + 0, 1, ... (a random prefix when empty).
	Sessions int
	Prefix   string
	// Rate, when > 0, schedules events at this many per second (open model);
	// otherwise Concurrency senders send back to back (closed model).
	Rate        float64
	Concurrency int
	// Mix weighs the session kinds; nil means DefaultMix.
	Mix map[Kind]int
	// DB, when set, is the service's database: the run waits until every
	// accepted session's row holds its final status and reports the time.
	DB *sql.DB
	// Settle bounds that wait.
	Settle time.Duration
	// Client sends the requests; nil means a client sized for Concurrency.
	Client *http.Client

	// Copies, when > 1, delivers every event that many times, each copy
	// signed afresh (a Stripe retry carries a new signature).
	Copies int
	// Shuffle sends the deliveries in a random order, across sessions and
	// within them (a storm of retries arriving out of order).
	Shuffle bool
	// Register, when set, is called for each session before any of its
	// events is sent (to register the user's contact, so emails are owed).
	Register func(ctx context.Context, sessionID string) error
	// Redeliver, when > 0, sends a delivery answered 5xx or not at all again,
	// signed afresh, after a backoff (0.25 s doubling up to 5 s), as Stripe
	// does, until it is answered otherwise or this long after its first send.
	Redeliver time.Duration
}

// Kind is a session's sequence of events.
type Kind string

// The session kinds a mix draws from. Each ends verified.
const (
	// KindVerified: one verified event.
	KindVerified Kind = "verified"
	// KindFailedThenVerified: a failed attempt, then verified.
	KindFailedThenVerified Kind = "failed_then_verified"
	// KindDuplicated: verified, delivered twice with the same event id.
	KindDuplicated Kind = "duplicated"
	// KindReordered: verified first, then the older failure it followed.
	KindReordered Kind = "reordered"
	// KindOpen: one failed attempt; the session stays open, waiting for the
	// user (for measuring what open sessions cost the worker). It ends in
	// requires_input, not verified.
	KindOpen Kind = "open"
)

// Kinds lists every kind.
var Kinds = []Kind{KindVerified, KindFailedThenVerified, KindDuplicated, KindReordered, KindOpen}

// finalStatus is the status a kind's session ends in.
func (k Kind) finalStatus() string {
	if k == KindOpen {
		return "requires_input"
	}
	return "verified"
}

// DefaultMix is most sessions verified at once, with failures, duplicates
// and reordering as Stripe produces them.
var DefaultMix = map[Kind]int{KindVerified: 40, KindFailedThenVerified: 30, KindDuplicated: 15, KindReordered: 15}

// event is one signed delivery, ready to send.
type event struct {
	session int
	body    []byte
	sig     string
}

// Result is what a run measured.
type Result struct {
	Sessions, Sent, Accepted int
	Refused                  int            // 4xx: the webhook refused the event
	Failed                   int            // 5xx or no answer: the event may be lost
	Errors                   map[string]int // refusals and failures by HTTP status or transport error
	Elapsed                  time.Duration  // first send to last answer
	Ack                      Latencies      // per event, from its scheduled (or actual) send
	// Redelivered counts the sends after a 5xx or no answer (Redeliver);
	// Errors counts each of their answers, Failed only what still failed
	// at the end. Unavailable is the latency of the 5xx answers.
	Redelivered int
	Unavailable Latencies
	// Plan is every session of the run, its kind, the status it must end
	// in and its events' ids.
	Plan []Session
	// Persisted counts the sessions whose row holds the final status at the
	// end; EndToEnd is the time from a session's last event's send until its
	// row first showed it, and Completed the time from the run's first send
	// until the last row did.
	Persisted int
	EndToEnd  Latencies
	Completed time.Duration
	// Written is the same span measured on the service's clock: from the
	// send until the transition to the final status was recorded (its
	// recorded_at), without the tool's polling. EndToEnd minus Written is
	// what the tool's watching adds.
	Written Latencies
	// Void says why the run does not count, when it does not.
	Void string
}

// AckPerSecond is accepted events per second.
func (r Result) AckPerSecond() float64 { return perSecond(r.Accepted, r.Elapsed) }

// SessionsPerSecond is sessions persisted per second, end to end.
func (r Result) SessionsPerSecond() float64 { return perSecond(r.Persisted, r.Completed) }

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// EventsPerSession is how many events a session of the mix sends on average.
func EventsPerSession(mix map[Kind]int) float64 {
	events, total := 0, 0
	for k, w := range mix {
		n := 2
		if k == KindVerified || k == KindOpen {
			n = 1
		}
		events, total = events+n*w, total+w
	}
	if total == 0 {
		return 1
	}
	return float64(events) / float64(total)
}

// Latencies summarises a set of durations.
type Latencies struct{ P50, P95, P99, Max time.Duration }

// Summarize is the nearest-rank percentiles of d (which it sorts).
func Summarize(d []time.Duration) Latencies {
	if len(d) == 0 {
		return Latencies{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { // nearest rank
		return d[min(len(d)-1, int(math.Ceil(q*float64(len(d))))-1)]
	}
	return Latencies{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: d[len(d)-1]}
}

func (l Latencies) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	return fmt.Sprintf("p50 %s ms, p95 %s ms, p99 %s ms", ms(l.P50), ms(l.P95), ms(l.P99))
}

// Run sends the load and, with a database, waits until it is persisted.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Sessions <= 0 || (cfg.Rate <= 0 && cfg.Concurrency <= 0) {
		return Result{}, errors.New("loadgen: want sessions > 0 and a rate or a concurrency")
	}
	mix := cfg.Mix
	if mix == nil {
		mix = DefaultMix
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "vs_load_" + testevent.RandomID(8) + "_"
	}
	built := time.Now()
	events, sessions, err := build(prefix, cfg.Sessions, mix, cfg.Secret, max(cfg.Copies, 1))
	if err != nil {
		return Result{}, err
	}
	if cfg.Register != nil {
		for _, s := range sessions {
			if err := cfg.Register(ctx, s.ID); err != nil {
				return Result{}, fmt.Errorf("loadgen: register %s: %w", s.ID, err)
			}
		}
	}
	client := cfg.Client
	if client == nil {
		conns := max(cfg.Concurrency, 64)
		client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	}
	res := Result{Sessions: cfg.Sessions, Sent: len(events), Errors: map[string]int{}, Plan: sessions}
	if cfg.Rate > 0 && float64(len(events))/cfg.Rate > signedFor.Seconds() {
		return res, fmt.Errorf("loadgen: %d events at %.0f/s take longer than the %s a signature stays valid: fewer sessions or a higher rate",
			len(events), cfg.Rate, signedFor)
	}
	lastSend := make([]time.Time, cfg.Sessions)
	var mu sync.Mutex
	var acks, unavailable []time.Duration
	// post sends one delivery and reports whether it must be sent again (a
	// 5xx or no answer).
	post := func(ev event, sig string, scheduled time.Time) (again bool) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cfg.WebhookURL, bytes.NewReader(ev.body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("Stripe-Signature", sig)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body) // read to the end, so the connection is reused
			resp.Body.Close()
		}
		took := time.Since(scheduled)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			res.Errors[transportError(err)]++
			return true
		case resp.StatusCode/100 == 2:
			res.Accepted++
			acks = append(acks, took)
		case resp.StatusCode/100 == 4:
			res.Refused++
			res.Errors[fmt.Sprint(resp.StatusCode)]++
		default:
			res.Errors[fmt.Sprint(resp.StatusCode)]++
			unavailable = append(unavailable, took)
			return true
		}
		return false
	}
	send := func(i int, scheduled time.Time) {
		ev := events[i]
		mu.Lock()
		if scheduled.After(lastSend[ev.session]) {
			lastSend[ev.session] = scheduled
		}
		mu.Unlock()
		sig := ev.sig
		if time.Since(built) > signedFor { // a closed run held up past its signatures: sign as Stripe would now
			sig = testevent.Sign(ev.body, cfg.Secret, time.Now())
		}
		again := post(ev, sig, scheduled)
		for backoff, until := 250*time.Millisecond, scheduled.Add(cfg.Redeliver); again && time.Now().Before(until); backoff = min(2*backoff, 5*time.Second) {
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			if ctx.Err() != nil {
				break
			}
			now := time.Now()
			mu.Lock()
			res.Redelivered++
			lastSend[ev.session] = now
			mu.Unlock()
			again = post(ev, testevent.Sign(ev.body, cfg.Secret, now), now)
		}
		if again {
			mu.Lock()
			res.Failed++
			mu.Unlock()
		}
	}
	// The database is watched from the first send, so a session's time is
	// when its row changed, not when the last event went out.
	type persisted struct {
		done     int
		e2e, wrt []time.Duration
		last     time.Time
		err      error
	}
	sent := make(chan struct{})
	watched := make(chan persisted, 1)
	start := time.Now()
	if cfg.DB != nil {
		go func() {
			var p persisted
			p.done, p.e2e, p.wrt, p.last, p.err = waitPersisted(ctx, cfg.DB, prefix, sessions, lastSend, &mu, sent, cfg.Settle)
			watched <- p
		}()
	}
	order := bySession(events)
	if cfg.Shuffle {
		var all []int
		for _, evs := range order {
			all = append(all, evs...)
		}
		rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		order = nil
		for _, i := range all {
			order = append(order, []int{i})
		}
	}
	if cfg.Rate > 0 {
		var flat []int
		for _, evs := range order {
			flat = append(flat, evs...)
		}
		openModel(ctx, flat, cfg.Rate, start, send)
	} else {
		closedModel(ctx, order, cfg.Concurrency, send)
	}
	res.Elapsed = time.Since(start)
	close(sent)
	res.Ack, res.Unavailable = Summarize(acks), Summarize(unavailable)
	switch {
	case res.Failed > 0:
		res.Void = fmt.Sprintf("%d of %d events failed (5xx or no answer)", res.Failed, res.Sent)
	case res.Accepted+res.Refused != res.Sent:
		res.Void = fmt.Sprintf("%d sent, %d answered", res.Sent, res.Accepted+res.Refused)
	}
	if cfg.DB != nil {
		p := <-watched
		if p.err != nil {
			return res, p.err
		}
		res.Persisted, res.EndToEnd, res.Written = p.done, Summarize(p.e2e), Summarize(p.wrt)
		if !p.last.IsZero() {
			res.Completed = p.last.Sub(start)
		}
		if p.done != len(sessions) && res.Void == "" {
			res.Void = fmt.Sprintf("%d of %d sessions persisted by the end", p.done, len(sessions))
		}
	}
	return res, nil
}

// signedFor is how long the run's signatures stay valid at the webhook
// (Stripe's tolerance, 300 s, less a margin): a run must send within it.
const signedFor = 4 * time.Minute

// build makes every session's events, each copy signed now (a second apart,
// so every copy's signature differs).
func build(prefix string, n int, mix map[Kind]int, secret string, copies int) ([]event, []Session, error) {
	kinds, total := []Kind{}, 0
	for k, w := range mix {
		if w > 0 {
			kinds = append(kinds, k)
			total += w
		}
	}
	if total == 0 {
		return nil, nil, errors.New("loadgen: empty mix")
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i] < kinds[j] })
	now := time.Now()
	var events []event
	sessions := make([]Session, n)
	for s := range n {
		id := fmt.Sprint(prefix, s)
		pick, kind := rand.IntN(total), kinds[0]
		for _, k := range kinds {
			if pick -= mix[k]; pick < 0 {
				kind = k
				break
			}
		}
		var opts []testevent.Options
		sessions[s] = Session{ID: id, Kind: kind, Final: kind.finalStatus()}
		verified := testevent.Options{Type: "verified", SessionID: id, Created: now}
		failed := testevent.Options{Type: "requires_input", SessionID: id, ErrorCode: "document_expired",
			Created: now.Add(-time.Minute)}
		switch kind {
		case KindOpen:
			opts = []testevent.Options{failed}
		case KindVerified:
			opts = []testevent.Options{verified}
		case KindFailedThenVerified:
			opts = []testevent.Options{failed, verified}
		case KindDuplicated:
			verified.EventID = "evt_" + testevent.RandomID(24)
			opts = []testevent.Options{verified, verified}
		case KindReordered:
			opts = []testevent.Options{verified, failed}
		default:
			return nil, nil, fmt.Errorf("loadgen: unknown session kind %q", kind)
		}
		built := map[string][]byte{} // a duplicate is the same body again
		signed := map[string]int{}   // each delivery of it a second apart
		for _, o := range opts {
			if o.EventID == "" {
				o.EventID = "evt_" + testevent.RandomID(24)
			}
			body, ok := built[o.EventID]
			if !ok {
				sessions[s].EventIDs = append(sessions[s].EventIDs, o.EventID)
				var err error
				if body, err = testevent.Build(o); err != nil {
					return nil, nil, err
				}
				built[o.EventID] = body
			}
			for range copies {
				signed[o.EventID]++
				events = append(events, event{session: s, body: body,
					sig: testevent.Sign(body, secret, now.Add(-time.Duration(signed[o.EventID])*time.Second))})
			}
		}
	}
	return events, sessions, nil
}

// Session is one session of the run: its kind, the status it must reach,
// and its events' ids (a duplicate's once).
type Session struct {
	ID       string
	Kind     Kind
	Final    string
	EventIDs []string
}

// openModel sends the n-th of order at start + n/rate, each on its own
// goroutine, so a slow answer never delays the next send.
func openModel(ctx context.Context, order []int, rate float64, start time.Time, send func(int, time.Time)) {
	var wg sync.WaitGroup
	for n, i := range order {
		at := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-time.After(time.Until(at)):
		}
		wg.Add(1)
		go func() { defer wg.Done(); send(i, at) }()
	}
	wg.Wait()
}

// bySession groups the events' indexes by session, in order.
func bySession(events []event) [][]int {
	var out [][]int
	for i, ev := range events {
		if i == 0 || ev.session != events[i-1].session {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], i)
	}
	return out
}

// closedModel keeps concurrency senders busy until every session is sent;
// each sender sends a session's events one after the other, in their order.
func closedModel(ctx context.Context, sessions [][]int, concurrency int, send func(int, time.Time)) {
	next := make(chan []int)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for evs := range next {
				for _, i := range evs {
					send(i, time.Now())
				}
			}
		}()
	}
	for _, evs := range sessions {
		if ctx.Err() != nil {
			break
		}
		next <- evs
	}
	close(next)
	wg.Wait()
}

// waitPersisted polls the sessions table until every session has its final
// status or the settle time after the last send is over, then reads them
// all once more: a session counts only if it still holds its final status.
// It returns how many do, each one's time from its last event's send until
// its row first showed the status, and when the last one did. Each poll
// reads only the sessions in flight (an event sent, the final status not
// yet seen), so that the tool's own watching, on the cores it measures,
// costs in proportion to the work under way, not to the sessions done: read
// in full every 10 ms, the rows of a 300-session run were a load the floor,
// which waits on Temporal, did not carry.
func waitPersisted(ctx context.Context, db *sql.DB, prefix string, sessions []Session, lastSend []time.Time,
	mu *sync.Mutex, sent <-chan struct{}, settle time.Duration) (int, []time.Duration, []time.Duration, time.Time, error) {
	if settle <= 0 {
		settle = 2 * time.Minute
	}
	index := make(map[string]int, len(sessions))
	for i, s := range sessions {
		index[s.ID] = i
	}
	type row struct{ id, status string }
	scan := func(query string, args ...any) ([]row, error) {
		rows, err := db.QueryContext(ctx, query, args...)
		if err != nil {
			return nil, fmt.Errorf("loadgen: read sessions: %w", err)
		}
		defer rows.Close()
		var out []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.status); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, rows.Err()
	}
	read := func() ([]row, error) {
		// A key range, not LIKE: it uses the primary key on both engines.
		return scan(`SELECT session_id, status FROM sessions WHERE session_id >= $1 AND session_id < $2`, prefix, prefix+"~")
	}
	// readIDs reads the rows of ids, by primary key, a chunk at a time.
	// Every chunk has the same size (padded with an id no session has), so
	// the query's text never changes and a driver that prepares each new
	// text (pgx) prepares it once, not on every poll.
	const chunkSize = 100
	marks := make([]string, chunkSize)
	for i := range marks {
		marks[i] = fmt.Sprintf("$%d", i+1)
	}
	byIDs := `SELECT session_id, status FROM sessions WHERE session_id IN (` + strings.Join(marks, ",") + `)`
	readIDs := func(ids []any) ([]row, error) {
		var out []row
		for len(ids) > 0 {
			chunk := make([]any, chunkSize)
			n := copy(chunk, ids)
			ids = ids[n:]
			for i := n; i < chunkSize; i++ {
				chunk[i] = ""
			}
			rows, err := scan(byIDs, chunk...)
			if err != nil {
				return nil, err
			}
			out = append(out, rows...)
		}
		return out, nil
	}
	seen := make([]bool, len(sessions))
	sentAt := make([]time.Time, len(sessions)) // the send its e2e counts from
	var e2e []time.Duration
	var last time.Time
	deadline := time.Now().Add(24 * time.Hour)
	for len(e2e) < len(sessions) && time.Now().Before(deadline) {
		select {
		case <-sent:
			sent, deadline = nil, time.Now().Add(settle)
		default:
		}
		var inFlight []any
		mu.Lock()
		for i, s := range sessions {
			if !seen[i] && !lastSend[i].IsZero() {
				inFlight = append(inFlight, s.ID)
			}
		}
		mu.Unlock()
		rows, err := readIDs(inFlight)
		if err != nil {
			return 0, nil, nil, last, err
		}
		now := time.Now()
		mu.Lock()
		for _, r := range rows {
			if i, ok := index[r.id]; ok && !seen[i] && r.status == sessions[i].Final {
				seen[i], last, sentAt[i] = true, now, lastSend[i]
				e2e = append(e2e, now.Sub(lastSend[i]))
			}
		}
		mu.Unlock()
		if len(e2e) < len(sessions) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if sent != nil { // every session showed its status before the last send
		<-sent
	}
	rows, err := read()
	if err != nil {
		return 0, nil, nil, last, err
	}
	holding := 0
	for _, r := range rows {
		if i, ok := index[r.id]; ok && seen[i] && r.status == sessions[i].Final {
			holding++
		}
	}
	// The service's own clock: when the transition to the final status was
	// recorded (the first such, for a session that came back to it).
	trs, err := db.QueryContext(ctx, `SELECT session_id, to_status, recorded_at FROM status_transitions
WHERE session_id >= $1 AND session_id < $2`, prefix, prefix+"~")
	if err != nil {
		return 0, nil, nil, last, fmt.Errorf("loadgen: read transitions: %w", err)
	}
	defer trs.Close()
	first := make([]time.Time, len(sessions))
	for trs.Next() {
		var id, to string
		var at time.Time
		if err := trs.Scan(&id, &to, &at); err != nil {
			return 0, nil, nil, last, fmt.Errorf("loadgen: read transitions: %w", err)
		}
		if i, ok := index[id]; ok && seen[i] && to == sessions[i].Final && (first[i].IsZero() || at.Before(first[i])) {
			first[i] = at
		}
	}
	if err := trs.Err(); err != nil {
		return 0, nil, nil, last, fmt.Errorf("loadgen: read transitions: %w", err)
	}
	var written []time.Duration
	for i, at := range first {
		if !at.IsZero() {
			written = append(written, max(at.Sub(sentAt[i]), 0))
		}
	}
	return holding, e2e, written, last, nil
}

// transportError names a failed request without its addresses.
func transportError(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	case strings.Contains(err.Error(), "connection reset"):
		return "connection reset"
	}
	return "transport error"
}

// Report writes a run's figures and, when the floor was measured, the ratios.
func Report(w io.Writer, res Result, ack, e2e *BareResult) {
	fmt.Fprintf(w, "service ack:        %d sent, %d accepted, %d refused, %d failed %v; %.1f/s; %s\n",
		res.Sent, res.Accepted, res.Refused, res.Failed, res.Errors, res.AckPerSecond(), res.Ack)
	if res.Completed > 0 {
		fmt.Fprintf(w, "service end to end: %d of %d sessions persisted; %.1f sessions/s; from the last event's send %s\n",
			res.Persisted, res.Sessions, res.SessionsPerSecond(), res.EndToEnd)
		fmt.Fprintf(w, "  on its own clock: until the final transition's recorded_at %s\n", res.Written)
	}
	if ack != nil && e2e != nil && ack.AckPerSecond() > 0 && e2e.SessionsPerSecond() > 0 {
		fmt.Fprintf(w, "bare ack:           %d SignalWithStart, no worker; %.1f/s; %s\n", ack.Accepted, ack.AckPerSecond(), ack.Ack)
		fmt.Fprintf(w, "bare end to end:    %d sessions with a trivial worker; %.1f sessions/s (its ack: %.1f/s, %s)\n",
			e2e.Accepted, e2e.SessionsPerSecond(), e2e.AckPerSecond(), e2e.Ack)
		fmt.Fprintf(w, "ratio:              ack %.0f %% of bare (p50 %+.1f ms); end to end %.0f %% of bare\n",
			100*res.AckPerSecond()/ack.AckPerSecond(), float64((res.Ack.P50-ack.Ack.P50).Microseconds())/1000,
			100*res.SessionsPerSecond()/e2e.SessionsPerSecond())
	}
	if res.Void != "" {
		fmt.Fprintf(w, "VOID:               %s\n", res.Void)
	}
}
