package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
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

// A process whose database is not there yet waits for it: OpenRetrying
// logs each failure and opens once the database can be opened.
func TestOpenRetryingWaitsForTheDatabase(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "data") // a file where the database's folder must go
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	opened := make(chan error, 1)
	go func() {
		s, err := OpenRetrying(context.Background(), "sqlite:"+filepath.Join(blocker, "identity.db"), log)
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("opened while the database could not be: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	os.Remove(blocker)
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logged.String(), "database not ready") {
		t.Errorf("no failure logged: %q", logged.String())
	}

	// Stopped by its context while the database stays away.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	blocker = filepath.Join(dir, "other")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRetrying(ctx, "sqlite:"+filepath.Join(blocker, "identity.db"), log); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's error", err)
	}
}
