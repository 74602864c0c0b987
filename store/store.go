// Package store keeps the service's own records of verification sessions in
// PostgreSQL (pgx) or SQLite (modernc.org/sqlite, the embedded default): one
// schema, migrations embedded in the binary and applied at open.
//
// It is the only place personal data lives: the contact email and the values
// the business expects the verified outputs to match. Redact purges them and
// keeps statuses, event ids and the audit trail.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Sentinel errors.
var (
	// ErrNotFound: no such session (or no such record of it).
	ErrNotFound = errors.New("store: not found")
	// ErrNoReviewOpen: a decision for a session without an open review case.
	ErrNoReviewOpen = errors.New("store: no open review case")
	// ErrRedacted: a contact registered for a session already redacted; the
	// purge is final, so nothing was stored.
	ErrRedacted = errors.New("store: session redacted")
	// ErrFrozen: a registration that would change the email or an expected
	// value of a session whose user has started verifying (FrozenError
	// says more); nothing was stored.
	ErrFrozen = errors.New("store: expected values frozen")
	// ErrRegisteredOtherwise: the registration of a session the admin API
	// created (or Stripe gave back for a repeated idempotency key) differs
	// from the one the session already holds; nothing was stored.
	ErrRegisteredOtherwise = errors.New("store: the session holds another registration")
	// ErrRejected: the database refused the data for what it is (a data
	// exception, a broken constraint), so retrying the same call cannot
	// succeed. The driver's error stays in the chain (errors.As finds it)
	// and in the message. Connection errors, timeouts, lock contention and
	// a schema or grant that does not match the binary are not ErrRejected:
	// they pass, or ops can mend them.
	ErrRejected = errors.New("store: rejected by the database")
)

// DefaultURL is the embedded default: a SQLite file in the working directory.
const DefaultURL = "sqlite:identity-verification.db"

// Store is a migrated database.
type Store struct {
	db      *sql.DB
	dialect goose.Dialect
	// sqlitePath is the SQLite file, locked while migrating and switched
	// to WAL; empty for PostgreSQL and an in-memory SQLite.
	sqlitePath string
}

// Open connects to databaseURL (postgres://... or postgresql://... for
// PostgreSQL; sqlite:PATH, file:PATH or a bare PATH for SQLite) and applies
// pending migrations.
func Open(ctx context.Context, databaseURL string) (*Store, error) {
	if databaseURL == "" {
		databaseURL = DefaultURL
	}
	var s Store
	var err error
	switch {
	case IsPostgres(databaseURL):
		s.dialect = goose.DialectPostgres
		s.db, err = sql.Open("pgx", databaseURL)
		if err == nil {
			// As many idle connections as open ones: database/sql keeps
			// 2 by default, so under load every burst above 2 opened
			// and closed PostgreSQL connections (a backend process each),
			// about 100 for a 300-session load run.
			s.db.SetMaxOpenConns(10)
			s.db.SetMaxIdleConns(10)
			s.db.SetConnMaxIdleTime(5 * time.Minute)
		}
	default:
		s.dialect = goose.DialectSQLite3
		var dsn string
		dsn, s.sqlitePath, err = sqliteDSN(databaseURL)
		if err == nil {
			s.db, err = sql.Open("sqlite", dsn)
		}
		if err == nil {
			// One writer at a time is SQLite's model; a single connection
			// avoids SQLITE_BUSY between this process's own goroutines, and
			// busy_timeout covers other processes on the same file.
			s.db.SetMaxOpenConns(1)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	if _, err := s.Migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return &s, nil
}

// IsPostgres says whether databaseURL names PostgreSQL (postgres:// or
// postgresql://): a database every replica can share.
func IsPostgres(databaseURL string) bool {
	return strings.HasPrefix(databaseURL, "postgres://") || strings.HasPrefix(databaseURL, "postgresql://")
}

// sqliteDSN turns a SQLite DATABASE_URL into a modernc DSN with a busy
// timeout and immediate write transactions, creating the file's folder, and
// returns the file's path ("" in memory).
func sqliteDSN(u string) (dsn, path string, err error) {
	path = u
	for _, p := range []string{"sqlite://", "sqlite:", "file:"} {
		if rest, ok := strings.CutPrefix(u, p); ok {
			path = rest
			break
		}
	}
	path, query, _ := strings.Cut(path, "?")
	if path == "" {
		return "", "", errors.New("empty SQLite path")
	}
	if path != ":memory:" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", "", err
		}
	}
	// journal_mode is not here: switching a new file to WAL needs a lock
	// SQLite does not wait for (busy_timeout does not apply), so processes
	// opening a new file together failed at once with SQLITE_BUSY. Migrate
	// switches it under the migration lock; the mode stays with the file,
	// and a connection opened before the switch reads it from the file.
	// (Switched back to DELETE from outside while the service runs, the
	// service's connections stay so until it restarts.)
	opts := "_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_txlock=immediate&_time_format=sqlite"
	if query != "" {
		opts += "&" + query
	}
	dsn = "file:" + path + "?" + opts
	if path == ":memory:" || strings.Contains("&"+query+"&", "&mode=memory&") {
		return dsn, "", nil // in memory: no file to lock, no WAL
	}
	return dsn, path, nil
}

// Migrate applies pending migrations and returns how many it applied; a
// second call is a no-op. Processes starting together (several workers, a
// webhook) migrate one at a time: PostgreSQL through an advisory lock,
// SQLite through a lock file beside the database.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	opts := []goose.ProviderOption{GoMigrations(string(s.dialect))}
	if s.dialect == goose.DialectPostgres {
		// Retry the lock every second (goose's default is every 5 s): a
		// worker starting beside a webhook waits for its migration a second,
		// not five. Up to 5 minutes in all, as goose's default.
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
		if err != nil {
			return 0, fmt.Errorf("store: migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(s.dialect, s.db, mustSub(migrations, "migrations"), opts...)
	if err != nil {
		return 0, fmt.Errorf("store: migrations: %w", err)
	}
	var res []*goose.MigrationResult
	err = withFileLock(ctx, s.sqlitePath, func() error {
		if s.sqlitePath != "" {
			var mode string
			if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
				return fmt.Errorf("journal mode: %w", err)
			}
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("journal mode: SQLite kept %q, not WAL", mode)
			}
		}
		res, err = p.Up(ctx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: migrate: %w", err)
	}
	return len(res), nil
}

// withFileLock runs fn holding an exclusive flock on path+".lock"; with no
// path (PostgreSQL, in-memory SQLite) it just runs fn. It waits for the
// lock until ctx is done.
func withFileLock(ctx context.Context, path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// Dialect names the database engine ("postgres" or "sqlite3").
func (s *Store) Dialect() string { return string(s.dialect) }

// Close releases the connection pool.
func (s *Store) Close() error { return s.db.Close() }

// DB exposes the pool to tests that assert on rows directly.
func (s *Store) DB() *sql.DB { return s.db }

func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// inTx runs fn in a transaction and commits it unless fn fails.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// classify marks err as ErrRejected when the database refused the statement
// itself, so that callers (activities and their retry policies) stop retrying
// what cannot succeed; any other error is returned as is, as transient.
//
// Permanent on PostgreSQL: SQLSTATE class 22 (data exception, e.g. a NUL
// byte) and 23 (integrity constraint violation). On SQLite: the primary
// result codes CONSTRAINT, MISMATCH, TOOBIG and RANGE. Class 42 and SQLite's
// ERROR (an undefined column or table, a missing grant: a schema or
// deployment that does not match the binary) stay transient, as do BUSY,
// LOCKED, I/O and connection errors and context ends: the write waits, shown
// to ops, until the deployment is mended, instead of being dropped.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrRejected) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if class := pgErr.Code[:min(2, len(pgErr.Code))]; class == "22" || class == "23" {
			return rejectedError{err}
		}
		return err
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() & 0xff {
		case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_RANGE:
			return rejectedError{err}
		}
	}
	return err
}

// rejectedError is a driver error classify found permanent: errors.Is sees
// ErrRejected, errors.As still finds the driver's error, and the message
// keeps the driver's text after one "store: ..." prefix added by the caller.
type rejectedError struct{ err error }

func (e rejectedError) Error() string        { return "rejected by the database: " + e.err.Error() }
func (e rejectedError) Unwrap() error        { return e.err }
func (e rejectedError) Is(target error) bool { return target == ErrRejected }

// clean makes text from outside storable on both engines whatever bytes it
// holds: PostgreSQL refuses NUL bytes and invalid UTF-8 in TEXT (SQLSTATE
// 22021), which would fail the whole write for one odd byte in an error
// reason or a note. NUL bytes are dropped and invalid sequences become
// U+FFFD. Every text value the store writes goes through it. Identifiers the
// store looks rows up by (session id, transition key, email key) do not:
// rewriting them could make two ids one row, so PostgreSQL refuses a
// malformed one (ErrRejected) rather than merge it.
func clean(s string) string {
	if !strings.Contains(s, "\x00") && utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
}

// OpenRetrying opens the store as Open does and, while it fails because
// the database cannot be reached or is busy (Unavailable), logs the
// failure and tries again after a growing pause (1 s, doubling to 30 s)
// until it opens or ctx is done. A worker or admin API started while the
// database is down, or while another process migrates it, waits for it
// instead of stopping the process (and a webhook beside it, which does not
// need the database). Any other error (a bad URL, a folder that cannot be
// made, a migration that fails) is returned at once: waiting cannot mend it.
func OpenRetrying(ctx context.Context, databaseURL string, log *slog.Logger) (*Store, error) {
	for pause := time.Second; ; pause = min(2*pause, 30*time.Second) {
		s, err := Open(ctx, databaseURL)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !Unavailable(err) {
			return nil, err
		}
		log.Error("database not ready: trying again", "retry_in", pause.String(), "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
	}
}

// Unavailable reports whether err says the database cannot be used now
// but may be soon: no connection (refused, reset, timed out, cut), a server
// starting, stopping or out of connections (SQLSTATE classes 08, 53, 57P),
// or a lock held by someone else (SQLite BUSY and LOCKED, 55P03). A host
// name that does not resolve counts as no connection (DNS may be late).
func Unavailable(err error) bool {
	// The server's own answer decides first: pgx wraps every failure while
	// connecting in a ConnectError, a wrong password (28P01) or a missing
	// database (3D000) too, and those no wait mends.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := pgErr.Code
		return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "53") || strings.HasPrefix(c, "57P") || c == "55P03"
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
		return false
	}
	var netErr *net.OpError // not net.Error: every syscall.Errno is one
	return errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) ||
		pgconn.Timeout(err)
}
