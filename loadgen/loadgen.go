// Package loadgen drives the webhook with real-shaped, signed Stripe events
// and measures what the service adds to the cost of making an event durable
// in Temporal: the acknowledgement (throughput, latency, errors by status)
// and the end-to-end time until the session's status is in the database.
// A run is void unless every event sent was accepted or refused and every
// accepted session reached its final status by the end.
//
// Events are built and signed before the clock starts, so the tool's own CPU
// does not count against the webhook. With a rate, the load is an open model:
// each event has a scheduled send time and its latency is measured from it,
// so a slow server cannot slow the load down and hide its own latency
// (no coordinated omission). Without a rate, a fixed number of senders send
// back to back (a closed model).
package loadgen

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
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
	// Sessions is how many sessions the run sends events for.
	Sessions int
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
	Sessions, Sent, Accepted, Refused int
	Errors                            map[string]int // by HTTP status, or the transport error
	Elapsed                           time.Duration  // first send to last answer
	Ack                               Latencies      // per event, from its scheduled (or actual) send
	// Persisted counts the sessions whose row reached the final status;
	// EndToEnd is the time from a session's first send until then, and
	// Completed the time from the run's first send until the last one did.
	Persisted int
	EndToEnd  Latencies
	Completed time.Duration
	// Void says why the run does not count, when it does not.
	Void string
}

// AckPerSecond is accepted events per second.
func (r Result) AckPerSecond() float64 { return float64(r.Accepted) / r.Elapsed.Seconds() }

// SessionsPerSecond is sessions persisted per second, end to end.
func (r Result) SessionsPerSecond() float64 { return float64(r.Persisted) / r.Completed.Seconds() }

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

func summarize(d []time.Duration) Latencies {
	if len(d) == 0 {
		return Latencies{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
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
	prefix := "vs_load_" + testevent.RandomID(8) + "_"
	events, sessions, err := build(prefix, cfg.Sessions, mix, cfg.Secret)
	if err != nil {
		return Result{}, err
	}
	client := cfg.Client
	if client == nil {
		conns := max(cfg.Concurrency, 64)
		client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	}
	res := Result{Sessions: cfg.Sessions, Sent: len(events), Errors: map[string]int{}}
	firstSend := make([]time.Time, cfg.Sessions)
	var mu sync.Mutex
	var acks []time.Duration
	send := func(i int, scheduled time.Time) {
		ev := events[i]
		mu.Lock()
		if firstSend[ev.session].IsZero() || scheduled.Before(firstSend[ev.session]) {
			firstSend[ev.session] = scheduled
		}
		mu.Unlock()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cfg.WebhookURL, bytes.NewReader(ev.body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("Stripe-Signature", ev.sig)
		resp, err := client.Do(req)
		took := time.Since(scheduled)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			res.Errors[transportError(err)]++
		case resp.StatusCode/100 == 2:
			res.Accepted++
			acks = append(acks, took)
		default:
			res.Refused++
			res.Errors[fmt.Sprint(resp.StatusCode)]++
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	// The database is watched from the first send, so a session's time is
	// when its row changed, not when the last event went out.
	type persisted struct {
		done int
		e2e  []time.Duration
		last time.Time
		err  error
	}
	sent := make(chan struct{})
	watched := make(chan persisted, 1)
	start := time.Now()
	if cfg.DB != nil {
		go func() {
			var p persisted
			p.done, p.e2e, p.last, p.err = waitPersisted(ctx, cfg.DB, prefix, sessions, firstSend, &mu, sent, cfg.Settle)
			watched <- p
		}()
	}
	if cfg.Rate > 0 {
		openModel(ctx, len(events), cfg.Rate, start, send)
	} else {
		closedModel(ctx, len(events), cfg.Concurrency, send)
	}
	res.Elapsed = time.Since(start)
	close(sent)
	res.Ack = summarize(acks)
	if n := res.Accepted + res.Refused; n != res.Sent {
		res.Void = fmt.Sprintf("%d sent, %d answered", res.Sent, n)
	}
	if cfg.DB != nil {
		p := <-watched
		if p.err != nil {
			return res, p.err
		}
		res.Persisted, res.EndToEnd, res.Completed = p.done, summarize(p.e2e), p.last.Sub(start)
		if p.done != len(sessions) && res.Void == "" {
			res.Void = fmt.Sprintf("%d of %d sessions persisted by the end", p.done, len(sessions))
		}
	}
	return res, nil
}

// build makes every session's events, signed now (Stripe's tolerance is
// five minutes: a run must start within it).
func build(prefix string, n int, mix map[Kind]int, secret string) ([]event, []session, error) {
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
	sessions := make([]session, n)
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
		sessions[s] = session{id: id, final: kind.finalStatus()}
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
		for _, o := range opts {
			body, err := testevent.Build(o)
			if err != nil {
				return nil, nil, err
			}
			events = append(events, event{session: s, body: body, sig: testevent.Sign(body, secret, now)})
		}
	}
	return events, sessions, nil
}

// session is one session of the run and the status it must reach.
type session struct{ id, final string }

// openModel sends event i at start + i/rate, each on its own goroutine, so a
// slow answer never delays the next send.
func openModel(ctx context.Context, n int, rate float64, start time.Time, send func(int, time.Time)) {
	var wg sync.WaitGroup
	for i := range n {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
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

// closedModel keeps concurrency senders busy until every event is sent.
func closedModel(ctx context.Context, n, concurrency int, send func(int, time.Time)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				send(i, time.Now())
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
}

// waitPersisted polls the sessions table until every session has its final
// status or the settle time after the last send is over; it returns how many
// did, each one's time from its first send, and when the last was seen.
func waitPersisted(ctx context.Context, db *sql.DB, prefix string, sessions []session, firstSend []time.Time,
	mu *sync.Mutex, sent <-chan struct{}, settle time.Duration) (int, []time.Duration, time.Time, error) {
	if settle <= 0 {
		settle = 2 * time.Minute
	}
	deadline := time.Now().Add(24 * time.Hour)
	index := make(map[string]int, len(sessions))
	for i, s := range sessions {
		index[s.id] = i
	}
	seen := make([]bool, len(sessions))
	var e2e []time.Duration
	var last time.Time
	for len(e2e) < len(sessions) && time.Now().Before(deadline) {
		select {
		case <-sent:
			sent, deadline = nil, time.Now().Add(settle)
		default:
		}
		rows, err := db.QueryContext(ctx, `SELECT session_id, status FROM sessions WHERE session_id LIKE $1 ESCAPE '\'`,
			strings.ReplaceAll(prefix, "_", `\_`)+"%")
		if err != nil {
			return 0, nil, last, fmt.Errorf("loadgen: read sessions: %w", err)
		}
		now := time.Now()
		mu.Lock()
		for rows.Next() {
			var id, status string
			if err := rows.Scan(&id, &status); err != nil {
				mu.Unlock()
				rows.Close()
				return 0, nil, last, err
			}
			if i, ok := index[id]; ok && !seen[i] && status == sessions[i].final {
				seen[i], last = true, now
				e2e = append(e2e, now.Sub(firstSend[i]))
			}
		}
		mu.Unlock()
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, nil, last, err
		}
		if len(e2e) < len(sessions) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return len(e2e), e2e, last, nil
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
	fmt.Fprintf(w, "service ack:        %d sent, %d accepted, %d refused %v; %.1f/s; %s\n",
		res.Sent, res.Accepted, res.Refused, res.Errors, res.AckPerSecond(), res.Ack)
	if res.Completed > 0 {
		fmt.Fprintf(w, "service end to end: %d of %d sessions persisted; %.1f sessions/s; from first send %s\n",
			res.Persisted, res.Sessions, res.SessionsPerSecond(), res.EndToEnd)
	}
	if ack == nil || e2e == nil {
		return
	}
	fmt.Fprintf(w, "bare ack:           %d SignalWithStart; %.1f/s; %s\n", ack.Accepted, ack.AckPerSecond(), ack.Ack)
	fmt.Fprintf(w, "bare end to end:    %d sessions with a trivial worker; %.1f sessions/s\n", e2e.Accepted, e2e.SessionsPerSecond())
	fmt.Fprintf(w, "ratio:              ack %.0f %% of bare (p50 %+.1f ms); end to end %.0f %% of bare\n",
		100*res.AckPerSecond()/ack.AckPerSecond(), float64((res.Ack.P50-ack.Ack.P50).Microseconds())/1000,
		100*res.SessionsPerSecond()/e2e.SessionsPerSecond())
	if res.Void != "" {
		fmt.Fprintf(w, "VOID:               %s\n", res.Void)
	}
}
