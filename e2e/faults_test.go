package e2e

// The fault suite: each TestFault* scenario starts the real stack, drives it
// with the load tool's library, injects its fault, proves the fault happened
// (the process is gone, the port is closed), and ends with an exact balance
// read from the database, Temporal and Mailpit. `make test` (and CI) runs a
// short version of each; `make faults` (FAULTS=full) a long one.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"identityverification/devstack"
	"identityverification/email"
	"identityverification/loadgen"
	"identityverification/store"
	"identityverification/workflows"
)

// faultsFull says whether the long version runs (make faults).
var faultsFull = os.Getenv("FAULTS") == "full"

// size is the short figure in CI, the long one under make faults.
func size[T any](short, full T) T {
	if faultsFull {
		return full
	}
	return short
}

// balance is a scenario's count, read back from the stores.
type balance struct {
	scenario, db string
	faults       int // faults injected
	sessions     int
	events       int // distinct events the webhook accepted
	recorded     int // of those, recorded in processed_events
	emails       int // emails the workflows decided to send (ledger "sent")
	delivered    int // distinct of those in Mailpit
	lost         int // events not recorded + emails not delivered
	duplicates   int // attempts counted twice, emails beyond one per cause, copies in Mailpit
	stuck        int // sessions not in their final status, or still owing or raising issues
	extra        string
	emailCopies  map[string]int // Message-ID: copies beyond the first in Mailpit
}

func (b balance) String() string {
	line := fmt.Sprintf("fault %s on %s: faults %d, sessions %d, events %d (recorded %d), emails %d (in Mailpit %d), lost %d, duplicates %d, stuck %d",
		b.scenario, b.db, b.faults, b.sessions, b.events, b.recorded, b.emails, b.delivered, b.lost, b.duplicates, b.stuck)
	if b.extra != "" {
		line += "; " + b.extra
	}
	return line
}

// contactFor registers a session's user, so every email is owed to an
// address of its own.
func (s *stack) contactFor(ctx context.Context, sessionID string) error {
	return s.store.UpsertContact(ctx, store.Contact{SessionID: sessionID, Email: strings.ToLower(sessionID) + "@example.com"})
}

// messageID is the Message-ID the service gives an email's idempotency key.
func messageID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16]) + "@identity-verification"
}

// settle waits until every session of the plan is in its final status with
// nothing owed and no issue raised, or the deadline passes; it returns the
// sessions that are not (stuck).
func (s *stack) settle(plan []loadgen.Session, within time.Duration) []string {
	s.t.Helper()
	deadline := time.Now().Add(within)
	pending := plan
	for {
		var still []loadgen.Session
		for _, ses := range pending {
			if !s.settled(ses) {
				still = append(still, ses)
			}
		}
		if len(still) == 0 || time.Now().After(deadline) {
			var ids []string
			for _, ses := range still {
				ids = append(ids, ses.ID)
			}
			return ids
		}
		pending = still
		time.Sleep(250 * time.Millisecond)
	}
}

// settled: the row holds the final status, and the workflow owes nothing
// and raises no issue.
func (s *stack) settled(ses loadgen.Session) bool {
	row, err := s.store.Session(context.Background(), ses.ID)
	if err != nil || row.Status != ses.Final {
		return false
	}
	st, err := s.state(ses.ID)
	return err == nil && string(st.Status) == ses.Final && len(st.Owed) == 0 && len(st.Issues) == 0 && st.Comparing == nil
}

// count reads the balance of a run from the database, Temporal and
// Mailpit. For each session:
//   - every accepted event is in processed_events (else lost);
//   - the row counts one attempt per failure the session had (more is an
//     event applied twice);
//   - the ledger holds no skipped email (every session has a contact), one
//     verified email for a verified session and at most one failure email
//     per failure (more are duplicates: an effect twice, under a new key);
//   - every email the ledger says was sent is in Mailpit, once (a copy more
//     is a duplicate), and Mailpit holds no message to the user that the
//     ledger does not know of (a duplicate);
//   - the session is settled (stuck, from settle).
func (s *stack) count(scenario string, mp *devstack.Mailpit, res loadgen.Result, stuck []string) balance {
	s.t.Helper()
	ctx := context.Background()
	b := balance{scenario: scenario, db: s.db, sessions: len(res.Plan), stuck: len(stuck), emailCopies: map[string]int{}}
	mail, err := mp.Tally(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, ses := range res.Plan {
		ids, err := s.store.ProcessedEventIDs(ctx, ses.ID, 1000)
		if err != nil {
			s.t.Fatal(err)
		}
		b.events += len(ses.EventIDs)
		for _, id := range ses.EventIDs {
			if slices.Contains(ids, id) {
				b.recorded++
			} else {
				b.lost++
				s.t.Errorf("%s: event %s accepted, not recorded", ses.ID, id)
			}
		}
		failures, known := kindFailures[ses.Kind]
		if row, err := s.store.Session(ctx, ses.ID); err == nil && known && row.Attempts != failures {
			b.duplicates += max(row.Attempts-failures, 0)
			s.t.Errorf("%s (%s): %d attempts counted; want %d", ses.ID, ses.Kind, row.Attempts, failures)
		}
		emails, err := s.store.Emails(ctx, ses.ID)
		if err != nil {
			s.t.Fatal(err)
		}
		kinds := map[string]int{}
		for _, e := range emails {
			if e.Status == store.EmailSkipped {
				b.lost++
				s.t.Errorf("%s: %s email skipped: %s", ses.ID, e.Kind, e.Detail)
			}
			if e.Status != store.EmailSent {
				continue
			}
			kinds[e.Kind]++
			b.emails++
			switch n := mail.ByMessageID[messageID(e.Key)]; {
			case n == 0:
				b.lost++
				s.t.Errorf("%s: %s email in the ledger, not in Mailpit", ses.ID, e.Key)
			default:
				b.delivered++
				if n > 1 {
					b.duplicates += n - 1
					b.emailCopies[messageID(e.Key)] = n - 1
				}
			}
		}
		if known {
			want := map[string]int{"failed": failures}
			if ses.Final == string(workflows.StatusVerified) {
				want["verified"] = 1
				if kinds["verified"] < 1 {
					b.lost++
					s.t.Errorf("%s: no verified email", ses.ID)
				}
			}
			for kind, n := range kinds {
				if n > want[kind] {
					b.duplicates += n - want[kind]
					s.t.Errorf("%s (%s): %d %s emails; want at most %d", ses.ID, ses.Kind, n, kind, want[kind])
				}
			}
		}
		if c, err := s.store.Contact(ctx, ses.ID); err == nil {
			copies := 0 // of the emails to the user, not to ops
			for _, e := range emails {
				if !email.Kind(e.Kind).ForOps() {
					copies += mail.ByMessageID[messageID(e.Key)]
				}
			}
			if got := mail.ByRecipient[strings.ToLower(c.Email)]; got != copies {
				b.duplicates += max(got-copies, 0)
				s.t.Errorf("%s: %d messages in Mailpit to its user, %d from the ledger's emails", ses.ID, got, copies)
			}
		}
	}
	if len(stuck) > 0 {
		s.t.Errorf("%s: %d sessions stuck, e.g. %s", scenario, len(stuck), stuck[0])
		if st, err := s.state(stuck[0]); err == nil {
			s.t.Logf("its state: %+v", st)
		}
	}
	return b
}

// kindFailures is how many failed attempts a session of each load kind
// has, so how many its row counts once all its events are applied.
var kindFailures = map[loadgen.Kind]int{loadgen.KindVerified: 0, loadgen.KindDuplicated: 0,
	loadgen.KindFailedThenVerified: 1, loadgen.KindReordered: 1, loadgen.KindOpen: 1}

// assertExact fails unless the balance is exact: nothing lost, nothing
// duplicated, nothing stuck, every event recorded, every email delivered.
func (b balance) assertExact(t *testing.T) {
	t.Helper()
	t.Log(b)
	if b.lost != 0 || b.duplicates != 0 || b.stuck != 0 || b.recorded != b.events || b.delivered != b.emails {
		t.Errorf("the balance is not exact: %s", b)
	}
}

// portClosed proves a fault happened: nothing answers on addr.
func portClosed(t *testing.T, addr string) {
	t.Helper()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still answers after the fault", addr)
	}
}

// runLoad runs the load tool's library against the stack in the background,
// every session with a contact; wait returns its result.
func (s *stack) runLoad(cfg loadgen.Config) (wait func() loadgen.Result) {
	cfg.WebhookURL, cfg.Secret = s.webhookURL, secret
	if cfg.Register == nil {
		cfg.Register = s.contactFor
	}
	done := make(chan loadgen.Result, 1)
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // a stack that stopped answers nothing more: stop the load
		select {
		case <-s.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	go func() {
		defer cancel()
		res, err := loadgen.Run(ctx, cfg)
		errc <- err
		done <- res
	}()
	return func() loadgen.Result {
		s.t.Helper()
		if err := <-errc; err != nil {
			s.t.Fatal(err)
		}
		res := <-done
		if res.Void != "" || res.Failed != 0 || res.Accepted != res.Sent {
			s.t.Errorf("the load did not balance at the webhook: sent %d, accepted %d, refused %d, failed %d %v: %s",
				res.Sent, res.Accepted, res.Refused, res.Failed, res.Errors, res.Void)
		}
		return res
	}
}
