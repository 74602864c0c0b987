package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"identityverification/email"
	"identityverification/store"
)

// EmailRequest asks for one email. It names the kind and what the template
// needs that the workflow knows (codes, counts); the address and name are
// read from the database here.
type EmailRequest struct {
	SessionID string     `json:"session_id"`
	Kind      email.Kind `json:"kind"`
	// Ref tells repeats of a kind apart ("document-2", "id_number-1", the
	// n-th overdue notice); with the session and kind it makes the
	// idempotency key.
	Ref string `json:"ref,omitempty"`
	// Attempt and MaxAttempts are what the email says: "attempt 1 of 2"
	// counts the attempts of the method the user is on.
	Attempt     int       `json:"attempt,omitempty"`
	MaxAttempts int       `json:"max_attempts,omitempty"`
	Reason      string    `json:"reason,omitempty"` // Stripe's last_error.reason or a review reason
	Fields      []string  `json:"fields,omitempty"` // mismatched field names
	Deadline    time.Time `json:"deadline,omitzero"`
	// Link is the lane the email's retry link opens; nil (requests from
	// before): the lane is read from Ref or the session's stored state.
	Link *LinkLane `json:"link,omitempty"`
}

// LinkLane is the attempt a retry link opens: the method (first or
// alternate) and how many of its attempts had failed.
type LinkLane struct {
	Alternate bool `json:"alternate,omitempty"`
	Attempt   int  `json:"attempt"`
}

// Key is the email's idempotency key.
func (r EmailRequest) Key() string {
	return fmt.Sprintf("%s:%s:%s", r.SessionID, r.Kind, r.Ref)
}

// EmailResult says what became of a request: sent, skipped (and why) or
// refused; a repeat returns the first outcome.
type EmailResult struct {
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// SendEmail renders and sends an email once per idempotency key.
//
// The ledger is read before sending and written after the SMTP server
// accepted the message. The window of doubt is between the two: if the worker
// dies after the server accepted but before the ledger write commits, the
// retried activity sends again. SMTP has no way to ask whether a message
// arrived, so the choice is between at-least-once (this) and at-most-once
// (write first, possibly never send); for a user who must act on the email,
// a rare duplicate is the lesser harm. The Message-ID is derived from the key,
// so the two copies are recognisably the same message.
func (a *Activities) SendEmail(ctx context.Context, req EmailRequest) (res EmailResult, err error) {
	repeat := false
	defer func() { countEmail(ctx, res, err, repeat) }()
	key := req.Key()
	if rec, err := a.Store.Email(ctx, key); err == nil {
		repeat = true
		return EmailResult{Status: rec.Status, Detail: rec.Detail}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return EmailResult{}, storeError(err)
	}
	ledger := store.EmailRecord{Key: key, SessionID: req.SessionID, Kind: string(req.Kind)}
	// recorded is the outcome the ledger holds once ledger is written: its
	// own, or that of another attempt at the same email that raced past
	// the read above and recorded first.
	recorded := func(ctx context.Context) (EmailResult, error) {
		rec, err := a.Store.RecordEmail(ctx, ledger)
		if err != nil {
			return EmailResult{}, storeError(err)
		}
		return EmailResult{Status: rec.Status, Detail: rec.Detail}, nil
	}
	skip := func(detail string) (EmailResult, error) {
		ledger.Status, ledger.Detail = store.EmailSkipped, detail
		return recorded(ctx)
	}

	// A warning that the session closes, sent after it closed (the email
	// waited out an SMTP outage, or a worker's), would mislead: skip it.
	if req.Kind == email.KindExpiryWarning && !req.Deadline.IsZero() && !time.Now().Before(req.Deadline) {
		return skip("the session expired before its warning could go out")
	}
	data := email.Data{SessionID: req.SessionID, Reason: req.Reason, Attempt: req.Attempt,
		MaxAttempts: req.MaxAttempts, Fields: req.Fields}
	if withRetryLink[req.Kind] {
		alternate, attempt, err := a.retryLane(ctx, req)
		if err != nil {
			return EmailResult{}, err
		}
		data.RetryURL = a.Links.URL(req.SessionID, alternate, attempt)
	}
	if !req.Deadline.IsZero() {
		data.Deadline = req.Deadline.UTC().Format(time.RFC1123)
	}
	var to string
	if req.Kind.ForOps() {
		if a.OpsEmail == "" {
			return skip("no ops address configured (OPS_EMAIL)")
		}
		to = a.OpsEmail
	} else {
		c, err := a.Store.Contact(ctx, req.SessionID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && c.Email == "") {
			return skip("no contact registered for the session")
		}
		if err != nil {
			return EmailResult{}, storeError(err)
		}
		to, data.FirstName = c.Email, c.FirstName
	}

	r, err := email.Render(req.Kind, data)
	if err != nil {
		return EmailResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeEmailTemplate, err)
	}
	sum := sha256.Sum256([]byte(key))
	err = a.Mailer.Send(ctx, email.Message{To: to, Rendered: r,
		MessageID: hex.EncodeToString(sum[:16]) + "@identity-verification"})
	if errors.Is(err, email.ErrPermanent) {
		ledger.Status, ledger.Detail = store.EmailRefused, err.Error()
		got, lerr := recorded(ctx)
		if lerr != nil || got.Status != store.EmailRefused {
			return got, lerr // another attempt's outcome stands
		}
		return EmailResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeEmailRefused, nil)
	}
	if err != nil {
		return EmailResult{}, err // transient: the retry policy tries again
	}
	// The server accepted the message: its ledger row is written even when
	// the caller gave up meanwhile (a local activity's timeout, a workflow
	// task that failed under it). Without the row, a run that no longer owes
	// this email (a stale failure email dropped) leaves a message nobody
	// recorded, and a retry of the same key sends it again.
	ledger.Status = store.EmailSent
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordAfterSendTimeout)
	defer cancel()
	return recorded(rctx)
}

// recordAfterSendTimeout bounds the ledger write after the SMTP server
// accepted a message, once its caller may have given up.
const recordAfterSendTimeout = 30 * time.Second

// withRetryLink are the kinds whose email carries a retry link.
var withRetryLink = map[email.Kind]bool{email.KindFailed: true, email.KindAlternateOffered: true,
	email.KindReminder: true, email.KindExpiryWarning: true}

// retryLane is the attempt a retry link in req is for: which method and how
// many of its attempts had failed. The workflow names it (Link); in requests
// from before it did, a failure email says so itself (its Ref is
// "<method>-<n>", the first method being "document"); the offer of the
// alternate method opens its first attempt; any other email (a reminder) is
// for the attempt the session's newest recorded transition is on.
func (a *Activities) retryLane(ctx context.Context, req EmailRequest) (alternate bool, attempt int, err error) {
	if req.Link != nil {
		return req.Link.Alternate, req.Link.Attempt, nil
	}
	switch req.Kind {
	case email.KindFailed:
		if req.Attempt > 0 && req.Ref != "" {
			return !strings.HasPrefix(req.Ref, "document-"), req.Attempt, nil
		}
	case email.KindAlternateOffered:
		return true, 0, nil
	}
	s, err := a.Store.Session(ctx, req.SessionID)
	if errors.Is(err, store.ErrNotFound) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, storeError(err)
	}
	var st struct {
		Escalation        string `json:"escalation"`
		Attempts          int    `json:"attempts"`
		AlternateAttempts int    `json:"alternate_attempts"`
	}
	if s.State != "" {
		if err := json.Unmarshal([]byte(s.State), &st); err != nil {
			return false, 0, fmt.Errorf("retry link: session state: %w", err)
		}
	} else {
		st.Escalation, st.Attempts = s.Escalation, s.Attempts
	}
	if st.Escalation == "alternate_method" {
		return true, st.AlternateAttempts, nil
	}
	return false, st.Attempts, nil
}
