package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"identityverification/config"
	"identityverification/devstack"
	"identityverification/loadgen"
	"identityverification/service"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/workflows"
)

// TestFaultStorm: every event of hundreds of sessions delivered three times,
// each copy signed afresh, in a shuffled order. One effect per event, and
// the final states of in-order delivery.
func TestFaultStorm(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, s *stack) {
		res := s.runLoad(loadgen.Config{Sessions: size(40, 300), Concurrency: 16, Copies: 3, Shuffle: true})()
		b := s.count("storm", components.mailpit, res, s.settle(res.Plan, 2*time.Minute))
		b.faults = res.Sent - b.events // deliveries beyond the first of each event
		// count checks what in-order delivery gives: one attempt per failure,
		// one verified email, and the final status.
		b.assertExact(t)
	})
}

// TestFaultWorkerKilled runs the worker as its own process and SIGKILLs it
// during a burst, more than once, while it has work on the wire: SMTP (and,
// on PostgreSQL, the database) go through proxies that slow each exchange
// down and count the requests sent and not yet answered at each kill.
// Nothing is lost; a duplicate email is possible only for a conversation cut
// at the kill (SendEmail's documented window), and counted.
func TestFaultWorkerKilled(t *testing.T) {
	bin := buildCommand(t, "../cmd/identity-verification")
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			smtp := newSlowProxy(t, components.mailpit.SMTPAddr, 40*time.Millisecond)
			s := startRoles(t, db, config.Map{"SMTP_URL": "smtp://" + smtp.addr}, false)
			workerEnv := maps.Clone(s.env)
			var dbProxy *slowProxy
			if u, err := neturl.Parse(db.URL); err == nil && db.Name == "postgres" {
				dbProxy = newSlowProxy(t, u.Host, 5*time.Millisecond)
				u.Host = dbProxy.addr
				workerEnv["DATABASE_URL"] = u.String()
			}
			logPath := filepath.Join(t.TempDir(), "worker.log")
			env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
			for k, v := range workerEnv {
				env = append(env, k+"="+v)
			}
			startWorker := func() *devstack.Process {
				p, err := devstack.StartProcess("worker", bin, logPath, env, "worker")
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			w := startWorker()
			t.Cleanup(func() { w.Stop() })

			kills := size(2, 4)
			prefix := "vs_kill_" + testevent.RandomID(8) + "_"
			wait := s.runLoad(loadgen.Config{Sessions: size(40, 300), Prefix: prefix, Concurrency: 8})
			// atRisk are the emails in Mailpit that the ledger did not hold
			// when a worker died: sent, not yet recorded. Only these may
			// arrive twice (SendEmail's window).
			atRisk := map[string]bool{}
			var emailsCut, queriesCut []int
			for range kills {
				// Kill while the worker has an email on the wire (and, on
				// PostgreSQL, a query).
				eventually(t, "an email in flight", func() error {
					if smtp.waiting.Load() == 0 || (dbProxy != nil && dbProxy.waiting.Load() == 0) {
						return errNotYet
					}
					return nil
				})
				emailsCut = append(emailsCut, int(smtp.waiting.Load()))
				if dbProxy != nil {
					queriesCut = append(queriesCut, int(dbProxy.waiting.Load()))
				}
				pid := w.Pid()
				w.Kill()
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Fatalf("worker %d still exists after SIGKILL: %v", pid, err)
				}
				time.Sleep(500 * time.Millisecond) // what was on the wire lands
				for id := range s.unrecordedEmails(prefix) {
					atRisk[id] = true
				}
				w = startWorker()
			}
			res := wait()
			b := s.count("worker SIGKILL", components.mailpit, res, s.settle(res.Plan, 3*time.Minute))
			b.faults = kills
			copies := 0
			for id, n := range b.emailCopies {
				copies += n
				if !atRisk[id] {
					t.Errorf("email %s arrived %d times, though the ledger held it at every kill", id, n+1)
				}
			}
			b.extra = fmt.Sprintf("SMTP exchanges cut %v, %d emails sent and not yet recorded at the kills, %d of them sent again",
				emailsCut, len(atRisk), len(b.emailCopies))
			if dbProxy != nil {
				b.extra += fmt.Sprintf("; database queries cut %v", queriesCut)
			}
			t.Log(b)
			if b.lost != 0 || b.stuck != 0 || b.recorded != b.events || b.delivered != b.emails || b.duplicates != copies {
				t.Errorf("the balance is not exact: %s", b)
			}
		})
	}
}

// unrecordedEmails are the Message-IDs in Mailpit, to this run's users,
// whose email the ledger does not say was sent.
func (s *stack) unrecordedEmails(prefix string) map[string]bool {
	s.t.Helper()
	ctx := context.Background()
	rows, err := s.store.DB().QueryContext(ctx, `SELECT idempotency_key FROM emails WHERE session_id >= $1 AND session_id < $2 AND status = 'sent'`,
		prefix, prefix+"~")
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	recorded := map[string]bool{}
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			s.t.Fatal(err)
		}
		recorded[messageID(key)] = true
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	tally, err := components.mailpit.Tally(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]bool{}
	for id := range tally.ByMessageID {
		if !recorded[id] && strings.HasPrefix(tally.To[id], strings.ToLower(prefix)) {
			out[id] = true
		}
	}
	return out
}

// slowProxy forwards TCP to an upstream, holding each chunk the client
// sends for a delay, and counts the connections whose request is sent (or
// being sent) and not yet answered: work on the wire.
type slowProxy struct {
	addr    string
	waiting atomic.Int32
}

func newSlowProxy(t *testing.T, upstream string, delay time.Duration) *slowProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer u.Close()
				var mu sync.Mutex
				waiting := false
				set := func(v bool) {
					mu.Lock()
					defer mu.Unlock()
					if v != waiting {
						waiting = v
						if v {
							p.waiting.Add(1)
						} else {
							p.waiting.Add(-1)
						}
					}
				}
				defer set(false)
				go func() {
					buf := make([]byte, 32<<10)
					for {
						n, err := u.Read(buf)
						if n > 0 {
							set(false)
							if _, werr := c.Write(buf[:n]); werr != nil {
								break
							}
						}
						if err != nil {
							break
						}
					}
					c.Close()
				}()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						set(true)
						time.Sleep(delay)
						if _, werr := u.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// TestFaultSMTPDown kills the mail server for a while under load: every
// outcome is applied at once (the database rows), the emails wait and go
// out once each after it is back. A recipient the server refuses for good
// is recorded as refused and shown to ops (an issue on the session and its
// search attribute), and never retried.
func TestFaultSMTPDown(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			smtpPort, _ := devstack.FreePort()
			apiPort, _ := devstack.FreePort()
			// example.com recipients are accepted; refused.example is not.
			allow := []string{"--smtp-allowed-recipients", `@example\.com$`, "--max", "0"}
			mp, err := devstack.StartMailpit(ctx, components.bins["mailpit"], dir, smtpPort, apiPort, allow...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mp.Stop() })
			s := startStack(t, db, config.Map{"SMTP_URL": "smtp://" + mp.SMTPAddr})

			mp.Kill()
			portClosed(t, mp.SMTPAddr)
			down := time.Now()
			res := s.runLoad(loadgen.Config{Sessions: size(30, 200), Concurrency: 8})()
			// Outcomes applied while SMTP is down.
			applied := 0
			eventually(t, "every outcome in the database while SMTP is down", func() error {
				applied = 0
				for _, ses := range res.Plan {
					if row, err := s.store.Session(ctx, ses.ID); err == nil && row.Status == ses.Final {
						applied++
					}
				}
				if applied < len(res.Plan) {
					return fmt.Errorf("%d of %d", applied, len(res.Plan))
				}
				return nil
			})
			s.waitVisible(res.Plan[0].ID, "VerificationIssues = 'email_delayed'")
			if _, err := mp.Tally(ctx); err == nil {
				t.Fatal("Mailpit answers while killed")
			}
			time.Sleep(time.Until(down.Add(size(5*time.Second, time.Minute))))

			mp, err = devstack.StartMailpit(ctx, components.bins["mailpit"], dir, smtpPort, apiPort, allow...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mp.Stop() })
			b := s.count("SMTP down", mp, res, s.settle(res.Plan, 3*time.Minute))
			b.faults = 1

			// A recipient refused for good.
			vs := "vs_refused_" + testevent.RandomID(12)
			if err := s.store.UpsertContact(ctx, store.Contact{SessionID: vs, Email: "user@refused.example"}); err != nil {
				t.Fatal(err)
			}
			s.send(testevent.Options{Type: "verified", SessionID: vs})
			st := s.waitState(vs, "the refusal shown to ops", func(st workflows.State) bool {
				return slices.ContainsFunc(st.Issues, func(is workflows.Issue) bool { return is.Code == workflows.IssueEmailRefused })
			})
			if st.Status != workflows.StatusVerified || len(st.Owed) != 0 {
				t.Errorf("refused recipient: state %+v; want verified, nothing owed", st)
			}
			s.waitVisible(vs, "VerificationIssues = 'email_refused'")
			emails, _ := s.store.Emails(ctx, vs)
			if len(emails) != 1 || emails[0].Status != store.EmailRefused {
				t.Errorf("ledger for the refused recipient: %+v; want one refused", emails)
			}
			b.faults++
			b.extra = fmt.Sprintf("outcomes applied while down %d of %d; refused recipient recorded and shown", applied, len(res.Plan))
			b.assertExact(t)
		})
	}
}

// TestFaultTemporalDown kills the Temporal server (a dev server of its own,
// its data in a file) under load: the webhook answers 503 at once, and the
// same deliveries, resent as Stripe resends them, all take effect once
// Temporal is back.
func TestFaultTemporalDown(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			port, _ := devstack.FreePort()
			uiPort, _ := devstack.FreePort()
			ns := namespaces[db.Name]
			temporal, err := devstack.StartTemporal(ctx, components.bins["temporal"], dir, port, uiPort, ns)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { temporal.Stop() })
			s := startStack(t, db, config.Map{"TEMPORAL_ADDRESS": temporal.Address})

			// Some sessions land before the fault.
			before := s.runLoad(loadgen.Config{Sessions: 5, Concurrency: 4})()
			temporal.Kill()
			portClosed(t, temporal.Address)
			outage := size(5*time.Second, 30*time.Second)
			wait := s.runLoad(loadgen.Config{Sessions: size(30, 200), Concurrency: 8, Redeliver: outage + 2*time.Minute})
			// A process (webhook and worker) started while Temporal is down
			// runs: live, not ready, and ready once Temporal is back.
			late := startLate(t, s.env)
			late.answers(t, late.opsURL+"/readyz", http.StatusServiceUnavailable)
			time.Sleep(outage)
			late.running(t)
			if temporal, err = devstack.StartTemporal(ctx, components.bins["temporal"], dir, port, uiPort, ns); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { temporal.Stop() })
			late.answers(t, late.opsURL+"/readyz", http.StatusOK)
			late.polls(t)
			res := wait()
			res.Plan = append(res.Plan, before.Plan...)
			b := s.count("Temporal down", components.mailpit, res, s.settle(res.Plan, 3*time.Minute))
			b.faults = 1
			b.extra = fmt.Sprintf("503s %d (%s), redelivered %d", res.Errors["503"], res.Unavailable, res.Redelivered)
			if res.Errors["503"] == 0 {
				t.Error("no delivery was answered 503 while Temporal was down")
			}
			// Known from readiness: no delivery waited out the whole signal
			// timeout (TEMPORAL_SIGNAL_TIMEOUT, 5 s) to learn Temporal was down.
			if res.Unavailable.Max >= 5*time.Second {
				t.Errorf("a 503 took %v: a delivery waited the whole signal timeout", res.Unavailable.Max)
			}
			b.assertExact(t)
		})
	}
}

// TestFaultDatabaseDown stops the service's PostgreSQL (a server of its
// own, so nothing else on the machine loses its database) under load, then
// starts it again: every transition lands after, in order, once.
func TestFaultDatabaseDown(t *testing.T) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "identity-faults-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // the server runs as the postgres user
	port, _ := devstack.FreePort()
	pg, err := devstack.StartPostgres(ctx, dir, port)
	if errors.Is(err, devstack.ErrNoPostgres) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	url, err := pg.CreateDatabase(ctx, "faults")
	if err != nil {
		t.Fatal(err)
	}
	s := startStack(t, storetest.Database{Name: "postgres", URL: url}, nil)

	before := s.runLoad(loadgen.Config{Sessions: 5, Concurrency: 4})()
	if stuck := s.settle(before.Plan, time.Minute); len(stuck) > 0 {
		t.Fatalf("%d sessions not persisted before the fault", len(stuck))
	}
	// The users registered before the outage (registration needs the
	// database; the webhook does not).
	n, prefix := size(40, 300), "vs_dbdown_"+testevent.RandomID(8)+"_"
	for i := range n {
		if err := s.contactFor(ctx, fmt.Sprint(prefix, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	portClosed(t, fmt.Sprintf("127.0.0.1:%d", port))
	down := time.Now()
	// The webhook needs no database: the whole load is accepted while it is
	// down, and the workflows show ops why their rows wait.
	res := s.runLoad(loadgen.Config{Sessions: n, Prefix: prefix, Concurrency: 8,
		Register: func(context.Context, string) error { return nil }})()
	s.waitState(res.Plan[len(res.Plan)-1].ID, "the outage shown to ops", func(st workflows.State) bool {
		return slices.ContainsFunc(st.Issues, func(is workflows.Issue) bool { return is.Code == workflows.IssueDatabaseUnavailable })
	})
	// A second process (webhook, worker, admin) started while the database
	// is down runs: its webhook is ready, its admin API authenticates first
	// (401 without a credential) and answers ADMIN_TOKEN 503 until the
	// database is back, then serves (its worker starts polling once it can
	// open the database).
	late := startLate(t, s.env)
	late.answers(t, late.opsURL+"/readyz", http.StatusOK)
	if code, body := late.get(t, late.adminURL+"/admin/reviews"); code != http.StatusUnauthorized || strings.Contains(body, "database") {
		t.Errorf("admin API with its database down, no credential: %d %q; want 401, not a word of the database", code, body)
	}
	if code, body := late.get(t, late.adminURL+"/admin/reviews", adminToken); code != http.StatusServiceUnavailable ||
		strings.Contains(body, "127.0.0.1") || strings.Contains(body, "database") {
		t.Errorf("admin API with its database down, ADMIN_TOKEN: %d %q; want a plain 503", code, body)
	}
	time.Sleep(time.Until(down.Add(size(5*time.Second, time.Minute))))
	late.running(t)
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	late.answers(t, late.adminURL+"/admin/reviews", http.StatusOK, adminToken) // served
	late.polls(t)
	res.Plan = append(res.Plan, before.Plan...)
	b := s.count("database down", components.mailpit, res, s.settle(res.Plan, 3*time.Minute))
	b.faults = 1
	outOfOrder := 0
	for _, ses := range res.Plan {
		audit, err := s.store.Audit(ctx, ses.ID)
		if err != nil {
			t.Fatal(err)
		}
		from := "new"
		for i, e := range audit {
			if e.From != from || (i > 0 && e.Seq <= audit[i-1].Seq) {
				outOfOrder++
				t.Errorf("%s: transition %d %+v does not follow %q", ses.ID, i, e, from)
			}
			from = e.To
		}
	}
	b.extra = fmt.Sprintf("%d sessions accepted while the database was down, their transitions written after; out of order %d", n, outOfOrder)
	b.assertExact(t)
}

// failingStripe stands in front of stripe-mock: while failing, it answers
// every API call 429 or 503 in turn, as Stripe does under load or in an
// incident, and counts them.
type failingStripe struct {
	url     string
	failing atomic.Bool
	refused atomic.Int64
}

func newFailingStripe(t *testing.T, upstream string) *failingStripe {
	f := &failingStripe{}
	target, _ := neturl.Parse(upstream)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.failing.Load() {
			code := http.StatusTooManyRequests
			if f.refused.Add(1)%2 == 0 {
				code = http.StatusServiceUnavailable
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":{"type":"api_error","message":"stand-in outage (%d)"}}`, code)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// TestFaultStripeFailing makes the Stripe API answer 429 and 503 for a
// while: the comparison of a verified session's outputs, the confirmation
// that Stripe verified a session (asked of every verified event) and the
// cancellation of an escalated session retry until it answers again, shown
// to ops, while the sessions that need nothing from Stripe (failed
// attempts) go on (persisted, emailed) during the outage.
func TestFaultStripeFailing(t *testing.T) {
	forEachDatabaseWithStripe(t, func(t *testing.T, s *stack, stripe *failingStripe) {
		stripe.failing.Store(true)
		n := size(3, 10)
		var needStripe []loadgen.Session
		for range n {
			// stripe-mock's verified outputs are empty: the expected name
			// differs, so once compared the session goes to review.
			vs, _ := s.newSession(store.Contact{FirstName: "Ada", LastName: "Lovelace"})
			ev := testevent.Options{Type: "verified", SessionID: vs, EventID: "evt_" + testevent.RandomID(24)}
			s.send(ev)
			needStripe = append(needStripe, loadgen.Session{ID: vs, Kind: "compare", Final: string(workflows.StatusInReview), EventIDs: []string{ev.EventID}})
			// A code no retry fixes: review, and the Stripe session canceled.
			vs, _ = s.newSession(store.Contact{})
			ev = testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "selfie_manipulated", EventID: "evt_" + testevent.RandomID(24)}
			s.send(ev)
			needStripe = append(needStripe, loadgen.Session{ID: vs, Kind: "cancel", Final: string(workflows.StatusInReview), EventIDs: []string{ev.EventID}})
		}
		// Half the sessions fail an attempt (they need nothing from
		// Stripe), half end verified as the default mix does.
		mix := maps.Clone(loadgen.DefaultMix)
		mix[loadgen.KindOpen] = 100
		res := s.runLoad(loadgen.Config{Sessions: size(20, 150), Concurrency: 8, Mix: mix})()
		// Nothing else waits: the failed attempts settle during the
		// outage; a verified event waits for Stripe to confirm it.
		var plain []loadgen.Session
		for _, ses := range res.Plan {
			if ses.Final == string(workflows.StatusVerified) {
				needStripe = append(needStripe, ses)
			} else {
				plain = append(plain, ses)
			}
		}
		if len(plain) == 0 {
			t.Fatal("the load sent no session that needs nothing from Stripe")
		}
		if stuck := s.settle(plain, 2*time.Minute); len(stuck) > 0 {
			t.Errorf("%d sessions that need nothing from Stripe waited for it, e.g. %s", len(stuck), stuck[0])
		}
		for _, ses := range needStripe {
			s.waitState(ses.ID, "the Stripe outage shown to ops", func(st workflows.State) bool {
				return slices.ContainsFunc(st.Issues, func(is workflows.Issue) bool { return is.Code == workflows.IssueStripeUnavailable })
			})
		}
		refused := stripe.refused.Load()
		if refused == 0 {
			t.Fatal("the stand-in refused no Stripe call")
		}
		for _, ses := range needStripe {
			row, err := s.store.Session(context.Background(), ses.ID)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s (%s): %v", ses.ID, ses.Kind, err)
			} else if err == nil && row.Status == string(workflows.StatusVerified) {
				t.Errorf("%s (%s) verified while Stripe could not confirm it", ses.ID, ses.Kind)
			}
		}
		stripe.failing.Store(false)
		res.Plan = append(plain, needStripe...)
		b := s.count("Stripe failing", components.mailpit, res, s.settle(res.Plan, 3*time.Minute))
		b.faults = int(refused)
		for _, ses := range needStripe {
			if ses.Kind != "compare" && ses.Kind != "cancel" {
				continue // verified: settle checked it
			}
			st, err := s.state(ses.ID)
			if err != nil || !st.Review.Open() || (ses.Kind == "compare" && st.Review.Reason != "mismatch") {
				t.Errorf("%s (%s) after the outage: %+v, %v; want a review open", ses.ID, ses.Kind, st, err)
			}
		}
		b.extra = fmt.Sprintf("Stripe calls refused %d; %d sessions needing Stripe retried and finished, %d others finished during the outage",
			refused, len(needStripe), len(plain))
		b.assertExact(t)
	})
}

// forEachDatabaseWithStripe is forEachDatabase with the Stripe API behind
// a stand-in that can fail.
func forEachDatabaseWithStripe(t *testing.T, fn func(t *testing.T, s *stack, stripe *failingStripe)) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			stripe := newFailingStripe(t, components.stripe.URL)
			fn(t, startStack(t, db, config.Map{"STRIPE_API_BASE": stripe.url}), stripe)
		})
	}
}

// lateProcess is a service process (webhook, worker and admin API) started
// during an outage: it must run through it, not stop.
type lateProcess struct {
	adminURL, opsURL string
	done             chan error
}

// startLate starts the service with env, beside the stack's own process.
func startLate(t *testing.T, env config.Map) *lateProcess {
	t.Helper()
	cfg := config.Map{}
	for k, v := range env {
		cfg[k] = v
	}
	cfg["OPS_ADDR"] = "127.0.0.1:0"
	loaded, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lns [3]net.Listener
	for i := range lns {
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &lateProcess{adminURL: "http://" + lns[1].Addr().String(), opsURL: "http://" + lns[2].Addr().String(),
		done: make(chan error, 1)}
	go func() {
		p.done <- service.Run(ctx, loaded, service.Roles{Webhook: true, Worker: true, Admin: true, Listener: lns[0], AdminListener: lns[1],
			OpsListener: lns[2]}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-p.done; err != nil {
			t.Errorf("the process started during the outage stopped with: %v", err)
		}
	})
	eventually(t, "the late process is live", func() error {
		return devstack.HTTPOK(context.Background(), p.opsURL+"/livez")
	})
	return p
}

// running fails the test if the process has stopped.
func (p *lateProcess) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- nil // reported here: the cleanup has nothing to add
		t.Fatalf("the process started during the outage stopped: %v", err)
	default:
	}
}

// get answers a GET's status and body, sent with a bearer token when one
// is given.
func (p *lateProcess) get(t *testing.T, url string, token ...string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for _, tok := range token {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// answers waits until url answers want.
func (p *lateProcess) answers(t *testing.T, url string, want int, token ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s to answer %d", url, want), func() error {
		p.running(t)
		if code, _ := p.get(t, url, token...); code != want {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
}

// polls waits until the process's worker has started: the SDK counts a
// worker start in its metrics, on the process's own ops listener.
func (p *lateProcess) polls(t *testing.T) {
	t.Helper()
	eventually(t, "the late process's worker to start", func() error {
		p.running(t)
		if _, m := p.get(t, p.opsURL+"/metrics"); !strings.Contains(m, "temporal_worker_start") {
			return errors.New("no temporal_worker_start yet")
		}
		return nil
	})
}
