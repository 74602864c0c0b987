package store

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Processes starting together (a worker, a webhook with its admin API, a
// test) open a new SQLite file at once: each must open it. Before the WAL
// switch moved under the migration lock, about one start in five failed
// at once with SQLITE_BUSY, and the process with it.
func TestStoresOpenedTogetherOnANewSQLiteFileAllOpen(t *testing.T) {
	for run := range 20 {
		url := "sqlite:" + filepath.Join(t.TempDir(), "identity.db")
		var wg sync.WaitGroup
		stores := make([]*Store, 5)
		for i := range stores {
			wg.Go(func() {
				s, err := Open(context.Background(), url)
				if err != nil {
					t.Errorf("run %d, store %d: %v", run, i, err)
					return
				}
				stores[i] = s
			})
		}
		wg.Wait()
		for _, s := range stores {
			if s == nil {
				continue
			}
			var mode string
			if err := s.DB().QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("run %d: journal mode %q, %v; want wal", run, mode, err)
			}
			s.Close()
		}
	}
}

// A process whose database is busy waits for it: OpenRetrying logs each
// failure and opens once the lock is gone. An error no wait can mend (here
// a folder that cannot be made) is returned at once, so the process stops
// and says why instead of waiting forever.
func TestOpenRetryingWaitsForABusyDatabaseOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity.db")
	// Another process holds the new file's lock: the switch to WAL is
	// refused (a short busy_timeout, so the test waits 50 ms, not 10 s).
	holder, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("CREATE TABLE held (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	opened := make(chan error, 1)
	go func() {
		s, err := OpenRetrying(context.Background(), "sqlite:"+path+"?_pragma=busy_timeout(50)", log)
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("opened while another held the database: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logged.String(), "database not ready") || !strings.Contains(logged.String(), "SQLITE_BUSY") {
		t.Errorf("the wait was not logged: %q", logged.String())
	}

	// A permanent error: returned at once, nothing logged as a wait.
	logged.Reset()
	blocker := filepath.Join(dir, "data") // a file where the database's folder must go
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := OpenRetrying(ctx, "sqlite:"+filepath.Join(blocker, "identity.db"), log); err == nil || ctx.Err() != nil {
		t.Errorf("got %v after %v; want the error at once", err, ctx.Err())
	}
	if logged.Len() > 0 {
		t.Errorf("a permanent error was waited for: %q", logged.String())
	}
}

// In-memory databases open (no file to lock, no WAL to switch to).
func TestInMemorySQLiteOpens(t *testing.T) {
	dir := t.TempDir()
	for _, url := range []string{"sqlite::memory:", "sqlite:" + filepath.Join(dir, "m.db") + "?mode=memory&cache=shared"} {
		s, err := Open(context.Background(), url)
		if err != nil {
			t.Errorf("%s: %v", url, err)
			continue
		}
		s.Close()
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "*")); len(matches) > 0 {
		t.Errorf("an in-memory database left files: %v", matches)
	}
}

// What OpenRetrying waits for: a PostgreSQL that refuses connections is
// unavailable; a URL it cannot parse is not.
func TestUnavailableIsAboutReachingTheDatabase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = Open(context.Background(), "postgres://postgres@"+addr+"/test?sslmode=disable&connect_timeout=2")
	if err == nil || !Unavailable(err) {
		t.Errorf("refused connection: Unavailable(%v) = false", err)
	}
	_, err = Open(context.Background(), "postgres://postgres@127.0.0.1:5432/test?sslmode=bogus")
	if err == nil || Unavailable(err) {
		t.Errorf("bad URL: Unavailable(%v) = true", err)
	}
	// A server that answers "no such database" (pgx wraps it in the same
	// ConnectError as a refused connection): nothing to wait for.
	if base := os.Getenv("TEST_DATABASE_URL"); base != "" {
		u, err := neturl.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/no_such_database_" + strings.ReplaceAll(t.Name(), "/", "_")
		_, err = Open(context.Background(), u.String())
		if err == nil || Unavailable(err) {
			t.Errorf("missing database: Unavailable(%v) = true", err)
		}
	}
}
