package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/pressly/goose/v3"
)

// AuditRecord is one row of the audit log: who did what to which session,
// from where, and with what result. It holds no personal data of the users
// being verified: ids, actions, results, field names.
type AuditRecord struct {
	ID string // time-ordered; set by AppendAudit
	At time.Time
	// Actor is the authenticated principal: "oidc:<sub>", "key:<id>",
	// "token:admin"; empty for a caller that did not authenticate.
	Actor string
	// ActorName is the person's email as the provider verified it, or the
	// API key's name.
	ActorName string
	Action    string // one of the Audit* actions
	SessionID string
	Source    string // the caller's address
	Result    string // AuditOK, AuditDenied, AuditRefused, AuditFailed, AuditThrottled
	Detail    string // short, no personal data
}

// Audit actions.
const (
	AuditSessionCreate   = "session.create"
	AuditSessionRegister = "session.register"
	AuditSessionRead     = "session.read"
	AuditReviewDecide    = "review.decide"
	AuditReviewView      = "review.view" // a reviewer saw the Stripe report and values
	AuditReviewsList     = "reviews.list"
	AuditAuditRead       = "audit.read"
	AuditAPIAuth         = "api.authenticate" // a failed bearer authentication
	AuditSignIn          = "desk.sign_in"
	AuditSignOut         = "desk.sign_out"
	AuditDeskAdmin       = "desk.admin_page"
	AuditKeyCreate       = "api_key.create"
	AuditKeyRevoke       = "api_key.revoke"
)

// Audit results.
const (
	AuditOK        = "ok"
	AuditDenied    = "denied"    // not authenticated, or not allowed
	AuditRefused   = "refused"   // authenticated and allowed, refused by a rule (frozen, validator)
	AuditFailed    = "failed"    // a dependency did not answer
	AuditThrottled = "throttled" // too many failures from the source or for the account
)

// AppendAudit adds a row to the audit log (setting its ID, and At when
// zero). There is no way to change or remove one: the service has no such
// path, and the database refuses it (migration 00006).
func (s *Store) AppendAudit(ctx context.Context, r AuditRecord) error {
	if _, err := s.db.ExecContext(ctx, insertAudit, auditArgs(&r)...); err != nil {
		return fmt.Errorf("store: append audit: %w", classify(err))
	}
	return nil
}

// appendAuditTx appends r, when not nil, in tx: the row of the change tx
// makes.
func appendAuditTx(ctx context.Context, tx *sql.Tx, r *AuditRecord) error {
	if r == nil {
		return nil
	}
	_, err := tx.ExecContext(ctx, insertAudit, auditArgs(r)...)
	return err
}

const insertAudit = `
INSERT INTO audit_log (id, at, actor, actor_name, action, session_id, source, result, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`

func auditArgs(r *AuditRecord) []any {
	if r.At.IsZero() {
		r.At = now()
	}
	r.At = r.At.UTC().Truncate(time.Microsecond)
	b := make([]byte, 6)
	rand.Read(b)
	r.ID = fmt.Sprintf("%019d-%s", r.At.UnixMicro(), hex.EncodeToString(b))
	return []any{r.ID, r.At, clean(r.Actor), clean(r.ActorName), clean(r.Action), clean(r.SessionID),
		clean(r.Source), clean(r.Result), clean(r.Detail)}
}

// AuditFilter chooses audit rows: of one session (empty: all), at or after
// Since, before the row whose id is Before (empty: up to the newest), at
// most Limit (0: MaxAuditRows).
type AuditFilter struct {
	SessionID string
	Since     time.Time
	// Before pages back: the id of the oldest row of the page read last.
	Before string
	Limit  int
}

// MaxAuditRows bounds one read of the audit log.
const MaxAuditRows = 1000

// AuditLog reads the newest rows that match, newest first: however many
// rows there are, the latest are always read (to read further back, pass
// the last row's id as Before).
func (s *Store) AuditLog(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	if f.Limit <= 0 || f.Limit > MaxAuditRows {
		f.Limit = MaxAuditRows
	}
	// Ids are the row's time (microseconds, zero-padded) and a random
	// tail: their order is the order of (at, id).
	q := `SELECT id, at, actor, actor_name, action, session_id, source, result, detail FROM audit_log
WHERE at >= $1 AND ($2 = '' OR session_id = $2) AND ($3 = '' OR id < $3) ORDER BY at DESC, id DESC LIMIT $4`
	args := []any{f.Since.UTC(), f.SessionID, f.Before, f.Limit}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: audit log: %w", classify(err))
	}
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		var r AuditRecord
		if err := rows.Scan(&r.ID, &r.At, &r.Actor, &r.ActorName, &r.Action, &r.SessionID, &r.Source, &r.Result, &r.Detail); err != nil {
			return nil, fmt.Errorf("store: audit log: %w", classify(err))
		}
		r.At = r.At.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit log: %w", classify(err))
	}
	return out, nil
}

// GoMigrations are the migrations written in Go (their versions are
// missing from migrations/), for a goose provider of the store's dialect
// ("postgres" or "sqlite3").
func GoMigrations(dialect string) goose.ProviderOption {
	return goose.WithGoMigrations(appendOnly(goose.Dialect(dialect)))
}

// appendOnly is migration 6: the database itself refuses to change or
// remove an audit row, whatever a future code path or a stray statement
// tries (PostgreSQL: a trigger on UPDATE, DELETE and TRUNCATE; SQLite:
// triggers on UPDATE and DELETE).
func appendOnly(dialect goose.Dialect) *goose.Migration {
	up := []string{
		`CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`,
		`CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`,
	}
	down := []string{`DROP TRIGGER audit_log_no_update`, `DROP TRIGGER audit_log_no_delete`}
	if dialect == goose.DialectPostgres {
		up = []string{
			`CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$`,
			`CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()`,
			`CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()`,
		}
		down = []string{`DROP TRIGGER audit_log_no_truncate ON audit_log`, `DROP TRIGGER audit_log_no_change ON audit_log`,
			`DROP FUNCTION audit_log_append_only()`}
	}
	run := func(stmts []string) *goose.GoFunc {
		return &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			for _, q := range stmts {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					return err
				}
			}
			return nil
		}}
	}
	return goose.NewGoMigration(6, run(up), run(down))
}
