package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPostgresStopStart(t *testing.T) {
	bin, err := PostgresBinDir()
	if errors.Is(err, ErrNoPostgres) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL binaries: %s", bin)

	dir := t.TempDir()
	// t.TempDir makes 0700 folders (…/TestX123/001); the server runs as the
	// postgres user when we are root, so let it through both.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	begin := time.Now()
	pg, err := StartPostgres(ctx, dir, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pg.Stop(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("started %s in %v (log %s)", pg.URL, time.Since(begin).Round(time.Millisecond), pg.LogPath)
	if pg.Port == 5432 {
		t.Fatal("private server on the shared cluster's port")
	}

	dbURL, err := pg.CreateDatabase(ctx, "fault_test")
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec("CREATE TABLE kv (k text PRIMARY KEY, v text NOT NULL)")
	exec("INSERT INTO kv VALUES ($1, $2)", "greeting", "survives a restart")

	// A connection open across Stop is ended by the fast shutdown.
	held, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())

	begin = time.Now()
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(begin).Round(time.Millisecond))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", addr)
	} else {
		t.Logf("after Stop, dial %s: %v", addr, err)
	}
	if err := held.Ping(ctx); err == nil {
		t.Fatal("a connection held across Stop still answers")
	}
	if err := pg.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	begin = time.Now()
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %v", time.Since(begin).Round(time.Millisecond))
	if err := pg.Start(ctx); err == nil {
		t.Fatal("Start on a running server did not fail")
	}

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kv WHERE k = $1", "greeting").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "survives a restart" {
		t.Fatalf("read back %q", v)
	}
	t.Logf("row read back after restart: %q", v)
}
