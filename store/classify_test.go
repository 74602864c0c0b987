package store

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"identityverification/store/storetest"
)

// TestClassifyRejectsOnlyWhatRetryingCannotFix feeds classify the errors real
// statements produce on each engine: the permanent ones become ErrRejected
// with the driver's error still in the chain, the transient ones stay plain.
func TestClassifyRejectsOnlyWhatRetryingCannotFix(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			ctx := context.Background()
			s, err := Open(ctx, db.URL)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			if _, err := s.RecordTransition(ctx, Transition{SessionID: "vs_taken", Key: "k", Seq: 1, To: "new", Escalation: "none"}); err != nil {
				t.Fatal(err)
			}
			exec := func(query string, args ...any) func() error {
				return func() error { _, err := s.db.ExecContext(ctx, query, args...); return err }
			}
			type codes = map[string]string
			cases := []struct {
				name string
				// code is, by engine, what the statement must fail with so the
				// case tests what it names: an SQLSTATE, a SQLite primary result
				// code, or "" for an error from outside the driver. The case
				// runs on the engines it names.
				code     codes
				rejected bool
				run      func() error
			}{
				{"a NOT NULL violation is rejected", codes{"postgres": "23502", "sqlite": "19"}, true,
					exec(`INSERT INTO sessions (session_id) VALUES ('vs_no_times')`)},
				{"a duplicate primary key is rejected", codes{"postgres": "23505", "sqlite": "19"}, true,
					exec(`INSERT INTO sessions (session_id, created_at, updated_at) VALUES ('vs_taken', $1, $1)`, now())},
				// A schema that does not match the binary (or a missing grant)
				// is a deployment mistake ops can mend: the write waits for it.
				{"a column the schema lacks is transient", codes{"postgres": "42703", "sqlite": "1"}, false,
					exec(`SELECT no_such_column FROM sessions`)},
				{"a syntax error is transient", codes{"postgres": "42601", "sqlite": "1"}, false,
					exec(`SELEC 1`)},
				{"a NUL byte in text is rejected by PostgreSQL", codes{"postgres": "22021"}, true,
					exec(`UPDATE sessions SET last_error_reason = $1`, "a\x00b")},
				{"invalid UTF-8 in text is rejected by PostgreSQL", codes{"postgres": "22021"}, true,
					exec(`UPDATE sessions SET last_error_reason = $1`, "a\xffb")},
				{"text that is not a number is rejected by PostgreSQL", codes{"postgres": "22P02"}, true,
					exec(`SELECT CAST('x' AS INTEGER)`)},
				{"a non-integer rowid is a mismatch SQLite rejects", codes{"sqlite": "20"}, true,
					exec(`INSERT INTO sessions (rowid, session_id, created_at, updated_at) VALUES ('x', 'vs_m', $1, $1)`, now())},
				{"a blob past SQLite's length limit is rejected", codes{"sqlite": "18"}, true,
					exec(`SELECT zeroblob(2000000000)`)},
				{"a statement timeout on PostgreSQL is transient", codes{"postgres": "57014"}, false, func() error {
					tx, err := s.db.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					defer tx.Rollback()
					if _, err := tx.ExecContext(ctx, `SET LOCAL statement_timeout = 1`); err != nil {
						return err
					}
					_, err = tx.ExecContext(ctx, `SELECT pg_sleep(5)`)
					return err
				}},
				{"a write lock held by another connection is transient on SQLite", codes{"sqlite": "5"}, false, func() error {
					other, err := sql.Open("sqlite", "file:"+s.sqlitePath+"?_pragma=busy_timeout(0)")
					if err != nil {
						return err
					}
					defer other.Close()
					tx, err := s.db.BeginTx(ctx, nil) // _txlock=immediate: takes the write lock now
					if err != nil {
						return err
					}
					defer tx.Rollback()
					_, err = other.ExecContext(ctx, `UPDATE sessions SET status = 'x'`)
					return err
				}},
				{"a canceled context is transient", codes{"postgres": "", "sqlite": ""}, false, func() error {
					canceled, cancel := context.WithCancel(ctx)
					cancel()
					_, err := s.db.ExecContext(canceled, `SELECT 1`)
					return err
				}},
				{"a closed pool is transient", codes{"postgres": "", "sqlite": ""}, false, func() error {
					driver, dsn := "sqlite", "file:"+s.sqlitePath
					if db.Name == "postgres" {
						driver, dsn = "pgx", db.URL
					}
					closed, err := sql.Open(driver, dsn)
					if err != nil {
						return err
					}
					closed.Close()
					_, err = closed.ExecContext(ctx, `SELECT 1`)
					return err
				}},
			}
			for _, c := range cases {
				if _, ok := c.code[db.Name]; !ok {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					err := c.run()
					if err == nil {
						t.Fatal("statement succeeded; want an error")
					}
					if code := driverCode(err); code != c.code[db.Name] {
						t.Fatalf("statement failed with %v (code %q); want code %q", err, code, c.code[db.Name])
					}
					got := classify(err)
					if errors.Is(got, ErrRejected) != c.rejected {
						t.Fatalf("classify(%v) = %v; ErrRejected %v, want %v", err, got, !c.rejected, c.rejected)
					}
					if !errors.Is(got, err) || !strings.Contains(got.Error(), err.Error()) {
						t.Errorf("classify(%v) = %v; want the driver's error kept in the chain and the message", err, got)
					}
					var pgErr *pgconn.PgError
					var liteErr *sqlite.Error
					if c.rejected && !errors.As(got, &pgErr) && !errors.As(got, &liteErr) {
						t.Errorf("classify(%v) = %v; want the driver's error reachable with errors.As", err, got)
					}
				})
			}
		})
	}
}

// driverCode is the SQLSTATE of a PostgreSQL error, the primary result code
// of a SQLite one, or "" for an error from neither driver.
func driverCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		return strconv.Itoa(liteErr.Code() & 0xff)
	}
	return ""
}

func TestClassifyLeavesNilAndAlreadyRejectedErrorsAlone(t *testing.T) {
	if err := classify(nil); err != nil {
		t.Errorf("classify(nil) = %v; want nil", err)
	}
	once := rejectedError{errors.New("boom")}
	if got := classify(once); !errors.Is(got, ErrRejected) || got.Error() != once.Error() {
		t.Errorf("classify(%v) = %v; want it unchanged", once, got)
	}
}

func TestCleanDropsNULBytesAndReplacesInvalidUTF8(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"plain text is unchanged", "document_expired", "document_expired"},
		{"valid non-ASCII text is unchanged", "Zoë Ångström ✓", "Zoë Ångström ✓"},
		{"NUL bytes are dropped", "a\x00b\x00", "ab"},
		{"an invalid byte becomes one replacement character", "a\xffb", "a\uFFFDb"},
		{"a run of invalid bytes becomes one replacement character", "a\xff\xfeb", "a\uFFFDb"},
		{"a NUL inside a broken sequence leaves valid text", "\xc3\x00", "\uFFFD"},
		{"empty stays empty", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := clean(c.in); got != c.want {
				t.Errorf("clean(%q) = %q; want %q", c.in, got, c.want)
			}
		})
	}
}
