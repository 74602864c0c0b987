package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
)

// Contact is what the business registers for a session before the user starts
// verifying: how to reach the user and what the verified outputs should say.
// All of it is personal data.
type Contact struct {
	SessionID         string
	ClientReferenceID string
	Email             string
	FirstName         string
	LastName          string
	DOB               string // YYYY-MM-DD; empty when not to be compared
}

// Session is a session's row as ops would read it.
type Session struct {
	SessionID       string
	Status          string
	StripeStatus    string
	SessionType     string
	Attempts        int
	LastErrorCode   string
	LastErrorReason string
	Escalation      string
	Seq             int64
	// State is the workflow's complete state as the newest transition kept it
	// (Transition.State): a JSON document, empty before any transition.
	State      string
	HasContact bool
	Redacted   bool
}

// Transition is one change of a session's status, as the workflow decided it.
type Transition struct {
	SessionID string
	// Key makes the write idempotent: the Stripe event id, or a name for a
	// workflow-made change such as "expiry" or "review:approve".
	Key string
	// Seq increases with every transition of the session; a write with a
	// lower Seq than the row's never overwrites it (a late retry).
	Seq             int64
	EventID         string // set when a Stripe event caused it
	EventType       string
	From, To        string
	StripeStatus    string
	SessionType     string
	Attempts        int
	LastErrorCode   string
	LastErrorReason string
	Escalation      string
	Note            string // short, no personal data
	// Comparing: the workflow compares the verified outputs with the
	// expected values (its state's comparing is set); it freezes them.
	Comparing bool
	// State is the workflow's complete state after this transition, as JSON
	// (no personal data), kept on the session row so the workflow can be
	// restored exactly. It moves with the row under the Seq rule: the newest
	// transition's State replaces the row's, even when empty, so the row
	// never pairs a status with an older state.
	State string
	// RunID is the workflow run that made the transition. The row follows
	// the run that wrote first latest (a reset run numbers its transitions
	// from the reset point, lower than the run it replaced), and within a
	// run the highest Seq. Empty: only the Seq rule (rows from before).
	RunID string
}

// UpsertContact registers or replaces the contact and expected values for a
// session; the session's status is left alone. A session already redacted
// gives ErrRedacted and nothing is stored: redaction is final, and a late
// registration must not bring personal data back. Once the session's
// expected values are frozen (the user started verifying, or a comparison
// runs), a registration that changes the email or an expected value gives
// a *FrozenError (errors.Is ErrFrozen) and nothing is stored; the same
// registration again is fine.
func (s *Store) UpsertContact(ctx context.Context, c Contact) error {
	_, err := s.RegisterContact(ctx, c, nil)
	return err
}

// RegisterContact is UpsertContact that also says which fields changed
// (RegistrationFields names, empty when none did) and, when audit is not
// nil, appends it to the audit log in the same transaction, its Detail
// naming the fields that changed: every change of a registration is in the
// audit log, or did not happen.
func (s *Store) RegisterContact(ctx context.Context, c Contact, audit *AuditRecord) (changed []string, err error) {
	return s.registerContact(ctx, c, audit, false)
}

// RegisterNewContact is RegisterContact for the session a create request
// made, or was given back by Stripe for its idempotency key: the session
// must hold no registration yet, or this very one (a retry). One that
// differs gives ErrRegisteredOtherwise and nothing is stored, so a create
// request never changes the registration of a session an earlier request
// made.
func (s *Store) RegisterNewContact(ctx context.Context, c Contact, audit *AuditRecord) error {
	_, err := s.registerContact(ctx, c, audit, true)
	return err
}

func (s *Store) registerContact(ctx context.Context, c Contact, audit *AuditRecord, onlyNew bool) (changed []string, err error) {
	if c.SessionID == "" {
		return nil, errors.New("store: contact without session id")
	}
	t := now()
	lock := ""
	if s.dialect == goose.DialectPostgres {
		lock = " FOR UPDATE" // SQLite's write transactions are exclusive already
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// The row exists (a registration may come before any event), and
		// is locked: a transition that freezes it waits, or is seen.
		if _, err := tx.ExecContext(ctx, `
INSERT INTO sessions (session_id, created_at, updated_at) VALUES ($1, $2, $2)
ON CONFLICT (session_id) DO NOTHING`, c.SessionID, t); err != nil {
			return err
		}
		var ref, email, first, last, dob sql.NullString
		var status string
		var redacted, frozen sql.NullTime
		if err := tx.QueryRowContext(ctx, `
SELECT client_reference_id, contact_email, expected_first_name, expected_last_name, expected_dob,
       status, redacted_at, expected_frozen_at
FROM sessions WHERE session_id = $1`+lock, c.SessionID).Scan(&ref, &email, &first, &last, &dob,
			&status, &redacted, &frozen); err != nil {
			return err
		}
		if redacted.Valid {
			return ErrRedacted
		}
		var expected []string
		for _, f := range []struct {
			name     string
			old      sql.NullString
			new      string
			expected bool
		}{{"email", email, c.Email, true}, {"first_name", first, c.FirstName, true}, {"last_name", last, c.LastName, true},
			{"dob", dob, c.DOB, true}, {"client_reference_id", ref, c.ClientReferenceID, false}} {
			if f.old.String != clean(f.new) {
				changed = append(changed, f.name)
				if f.expected {
					expected = append(expected, f.name)
				}
			}
		}
		registered := email.Valid || first.Valid || last.Valid || dob.Valid || ref.Valid
		if onlyNew && registered && len(changed) > 0 {
			return ErrRegisteredOtherwise
		}
		if frozen.Valid && len(expected) > 0 {
			return &FrozenError{Status: status, Fields: expected}
		}
		if len(changed) > 0 {
			if _, err := tx.ExecContext(ctx, `
UPDATE sessions SET client_reference_id = $2, contact_email = $3, expected_first_name = $4,
       expected_last_name = $5, expected_dob = $6, updated_at = $7
WHERE session_id = $1`, c.SessionID, nullable(clean(c.ClientReferenceID)), nullable(clean(c.Email)),
				nullable(clean(c.FirstName)), nullable(clean(c.LastName)), nullable(clean(c.DOB)), t); err != nil {
				return err
			}
		}
		if audit != nil {
			audit.SessionID = c.SessionID
			switch {
			case len(changed) == 0:
				audit.Detail = "unchanged"
			case !registered:
				audit.Detail = "registered: " + strings.Join(changed, ",")
			default:
				audit.Detail = "changed: " + strings.Join(changed, ",")
			}
			_, err := tx.ExecContext(ctx, insertAudit, auditArgs(audit)...)
			return err
		}
		return nil
	})
	if errors.Is(err, ErrRedacted) || errors.Is(err, ErrFrozen) || errors.Is(err, ErrRegisteredOtherwise) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("store: register contact: %w", classify(err))
	}
	return changed, nil
}

// FrozenError refuses a registration that would change the email or an
// expected value of a session whose values are frozen.
type FrozenError struct {
	Status string   // the session's status when refused
	Fields []string // the fields the registration would have changed
}

func (e *FrozenError) Error() string {
	return fmt.Sprintf("the email and expected values of this session are frozen: the user has started verifying (status %s); "+
		"this registration would change %s", e.Status, strings.Join(e.Fields, ", "))
}

// Is makes errors.Is(err, ErrFrozen) true.
func (e *FrozenError) Is(target error) bool { return target == ErrFrozen }

// Contact returns the registered contact of a session, or ErrNotFound when
// there is none (a session created elsewhere, or redacted).
func (s *Store) Contact(ctx context.Context, sessionID string) (Contact, error) {
	var ref, email, first, last, dob sql.NullString
	err := s.db.QueryRowContext(ctx, `
SELECT client_reference_id, contact_email, expected_first_name, expected_last_name, expected_dob
FROM sessions WHERE session_id = $1`, sessionID).Scan(&ref, &email, &first, &last, &dob)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !email.Valid && !first.Valid && !last.Valid && !dob.Valid) {
		return Contact{}, ErrNotFound
	}
	if err != nil {
		return Contact{}, fmt.Errorf("store: contact: %w", classify(err))
	}
	return Contact{SessionID: sessionID, ClientReferenceID: ref.String, Email: email.String,
		FirstName: first.String, LastName: last.String, DOB: dob.String}, nil
}

// Session reads a session's row.
func (s *Store) Session(ctx context.Context, sessionID string) (Session, error) {
	var ss Session
	var email sql.NullString
	var redacted sql.NullTime
	err := s.db.QueryRowContext(ctx, `
SELECT session_id, status, stripe_status, session_type, attempts, last_error_code,
       last_error_reason, escalation, seq, state, contact_email, redacted_at
FROM sessions WHERE session_id = $1`, sessionID).Scan(&ss.SessionID, &ss.Status, &ss.StripeStatus,
		&ss.SessionType, &ss.Attempts, &ss.LastErrorCode, &ss.LastErrorReason, &ss.Escalation, &ss.Seq,
		&ss.State, &email, &redacted)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("store: session: %w", classify(err))
	}
	ss.HasContact, ss.Redacted = email.Valid, redacted.Valid
	return ss, nil
}

// ProcessedEventIDs returns up to limit of the newest Stripe event ids that
// took effect for a session, oldest first.
func (s *Store) ProcessedEventIDs(ctx context.Context, sessionID string, limit int) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `
SELECT event_id FROM processed_events WHERE session_id = $1
ORDER BY processed_at DESC, event_id DESC LIMIT $2`, sessionID, limit)
	if err != nil {
		return nil, fmt.Errorf("store: processed events: %w", classify(err))
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("store: processed events: %w", classify(err))
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: processed events: %w", classify(err))
	}
	for i, j := 0, len(ids)-1; i < j; i, j = i+1, j-1 {
		ids[i], ids[j] = ids[j], ids[i]
	}
	return ids, nil
}

// RecordTransition writes a transition to the audit trail, the event ledger
// and the session row in one transaction. It is idempotent on (session, Key,
// RunID): applied is false when the transition was already recorded. The
// row moves only forward: to a later run's transition (see
// Transition.RunID), or to a higher Seq of the run it holds. Writers of one
// session serialise on its row (PostgreSQL) or the database (SQLite).
func (s *Store) RecordTransition(ctx context.Context, t Transition) (applied bool, err error) {
	if t.SessionID == "" || t.Key == "" {
		return false, errors.New("store: transition without session id or key")
	}
	at := now()
	eventID, eventType, from, to := clean(t.EventID), clean(t.EventType), clean(t.From), clean(t.To)
	errCode, escalation := clean(t.LastErrorCode), clean(t.Escalation)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		ordinal, err := s.runOrdinal(ctx, tx, t.SessionID, t.RunID, at)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `
INSERT INTO status_transitions (session_id, transition_key, run_id, seq, event_id, from_status, to_status,
                                attempts, last_error_code, escalation, note, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (session_id, transition_key, run_id) DO NOTHING`,
			t.SessionID, t.Key, t.RunID, t.Seq, eventID, from, to, t.Attempts, errCode, escalation, clean(t.Note), at)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err // already recorded: nothing else to do
		}
		applied = true
		if eventID != "" {
			if err := recordProcessedEvent(ctx, tx, t.SessionID, eventID, eventType, at); err != nil {
				return err
			}
		}
		// A row written before runs were kept (run_ordinal 0) moves only to
		// a higher Seq, as it did then.
		_, err = tx.ExecContext(ctx, `
INSERT INTO sessions (session_id, status, stripe_status, session_type, attempts, last_error_code,
                      last_error_reason, escalation, seq, state, run_ordinal, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
ON CONFLICT (session_id) DO UPDATE SET
    status = excluded.status, stripe_status = excluded.stripe_status,
    session_type = excluded.session_type, attempts = excluded.attempts,
    last_error_code = excluded.last_error_code, last_error_reason = excluded.last_error_reason,
    escalation = excluded.escalation, seq = excluded.seq, state = excluded.state,
    run_ordinal = excluded.run_ordinal, updated_at = excluded.updated_at
WHERE (sessions.run_ordinal = excluded.run_ordinal AND sessions.seq < excluded.seq)
   OR (sessions.run_ordinal < excluded.run_ordinal AND (sessions.run_ordinal > 0 OR sessions.seq < excluded.seq))`,
			t.SessionID, to, clean(t.StripeStatus), clean(t.SessionType), t.Attempts, errCode,
			clean(t.LastErrorReason), escalation, t.Seq, clean(t.State), ordinal, at)
		if err != nil {
			return err
		}
		return freezeExpected(ctx, tx, t, at)
	})
	if err != nil {
		return false, fmt.Errorf("store: record transition: %w", classify(err))
	}
	return applied, nil
}

// freezeExpected sets the session's frozen marker, once, when the
// transition shows the user has started verifying: a status other than
// new, created or requires_input (which a session only reaches by leaving
// them), a comparison under way, or a failed attempt counted (a
// requires_input with an error is the answer to a submission, even when
// Stripe delivered it before the processing it followed, which is then
// stale and never shows). From then on UpsertContact refuses to change the
// email and the expected values. Called in RecordTransition's transaction,
// after the session's row is written; the marker is never cleared, and a
// late or out-of-order transition sets it as well as a newer one.
func freezeExpected(ctx context.Context, tx *sql.Tx, t Transition, at time.Time) error {
	switch t.To {
	case "", "new", "created", "requires_input":
		if !t.Comparing && t.Attempts == 0 && t.LastErrorCode == "" {
			return nil
		}
	}
	_, err := tx.ExecContext(ctx, `
UPDATE sessions SET expected_frozen_at = $2 WHERE session_id = $1 AND expected_frozen_at IS NULL`, t.SessionID, at)
	return err
}

// runOrdinal numbers a session's runs in the order of their first writes
// (0 for a transition without a run id), holding the session's row locked
// on PostgreSQL until the transaction ends, so two runs writing their
// first transitions at once are numbered one after the other.
func (s *Store) runOrdinal(ctx context.Context, tx *sql.Tx, sessionID, runID string, at time.Time) (int64, error) {
	if runID == "" {
		return 0, nil
	}
	if s.dialect == goose.DialectPostgres {
		if _, err := tx.ExecContext(ctx, `
INSERT INTO sessions (session_id, created_at, updated_at) VALUES ($1, $2, $2)
ON CONFLICT (session_id) DO NOTHING`, sessionID, at); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM sessions WHERE session_id = $1 FOR UPDATE`, sessionID); err != nil {
			return 0, err
		}
	}
	if _, err := tx.ExecContext(ctx, `
INSERT INTO session_runs (session_id, run_id, ordinal, first_seen_at)
SELECT $1, $2, COALESCE(MAX(ordinal), 0) + 1, $3 FROM session_runs WHERE session_id = $1
ON CONFLICT (session_id, run_id) DO NOTHING`, sessionID, clean(runID), at); err != nil {
		return 0, err
	}
	var ordinal int64
	err := tx.QueryRowContext(ctx, `SELECT ordinal FROM session_runs WHERE session_id = $1 AND run_id = $2`,
		sessionID, clean(runID)).Scan(&ordinal)
	return ordinal, err
}

// RecordProcessedEvent adds an event to a session's ledger on its own (a
// repeat is a no-op): for when the transition that would have recorded it
// was refused, so a redelivery is still recognised.
func (s *Store) RecordProcessedEvent(ctx context.Context, sessionID, eventID, eventType string) error {
	if sessionID == "" || eventID == "" {
		return errors.New("store: processed event without session or event id")
	}
	if err := recordProcessedEvent(ctx, s.db, sessionID, clean(eventID), clean(eventType), now()); err != nil {
		return fmt.Errorf("store: record processed event: %w", classify(err))
	}
	return nil
}

func recordProcessedEvent(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, sessionID, eventID, eventType string, at time.Time) error {
	_, err := db.ExecContext(ctx, `
INSERT INTO processed_events (session_id, event_id, event_type, processed_at)
VALUES ($1, $2, $3, $4) ON CONFLICT (session_id, event_id) DO NOTHING`, sessionID, eventID, eventType, at)
	return err
}

// AuditEntry is one row of a session's audit trail.
type AuditEntry struct {
	Key, EventID, From, To, LastErrorCode, Escalation, Note string
	Seq                                                     int64
	Attempts                                                int
}

// Audit returns a session's transitions in order: by run (in the order the
// runs first wrote), then by seq within a run.
func (s *Store) Audit(ctx context.Context, sessionID string) ([]AuditEntry, error) {
	rows, err := s.db.QueryContext(ctx, `
SELECT t.transition_key, t.event_id, t.from_status, t.to_status, t.last_error_code, t.escalation, t.note, t.seq, t.attempts
FROM status_transitions t
LEFT JOIN session_runs r ON r.session_id = t.session_id AND r.run_id = t.run_id
WHERE t.session_id = $1 ORDER BY COALESCE(r.ordinal, 0), t.seq, t.recorded_at`, sessionID)
	if err != nil {
		return nil, fmt.Errorf("store: audit: %w", classify(err))
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		if err := rows.Scan(&e.Key, &e.EventID, &e.From, &e.To, &e.LastErrorCode, &e.Escalation, &e.Note, &e.Seq, &e.Attempts); err != nil {
			return nil, fmt.Errorf("store: audit: %w", classify(err))
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit: %w", classify(err))
	}
	return out, nil
}

// Redact purges a session's personal data (contact, client reference, which
// may be an email address, expected values, review notes), closes an open
// review case, and keeps statuses, event ids, the workflow state and the
// audit trail. Idempotent; a later UpsertContact gives ErrRedacted.
func (s *Store) Redact(ctx context.Context, sessionID string) error {
	t := now()
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `
INSERT INTO sessions (session_id, created_at, updated_at) VALUES ($1, $2, $2)
ON CONFLICT (session_id) DO NOTHING`, sessionID, t); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `
UPDATE sessions SET client_reference_id = NULL, contact_email = NULL, expected_first_name = NULL,
       expected_last_name = NULL, expected_dob = NULL, redacted_at = COALESCE(redacted_at, $2), updated_at = $2
WHERE session_id = $1`, sessionID, t); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `
UPDATE review_cases SET note = '', status = CASE WHEN status = $2 THEN $3 ELSE status END
WHERE session_id = $1`, sessionID, ReviewOpen, ReviewClosed)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: redact: %w", classify(err))
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embedded folder is fixed at compile time
	}
	return sub
}

func joinFields(fields []string) string { return strings.Join(fields, ",") }

func splitFields(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}
