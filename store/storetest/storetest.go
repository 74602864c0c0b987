// Package storetest gives tests fresh, empty databases of each engine the
// suite runs on: SQLite always, PostgreSQL when TEST_DATABASE_URL is set.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// Database names a fresh database for one test.
type Database struct {
	Name string // "sqlite" or "postgres"
	URL  string // a DATABASE_URL
}

// Databases returns a fresh SQLite file and, when TEST_DATABASE_URL is set, a
// fresh PostgreSQL schema (dropped when the test ends) on that server.
func Databases(t testing.TB) []Database {
	t.Helper()
	dbs := []Database{{Name: "sqlite", URL: "sqlite:" + filepath.Join(t.TempDir(), "identity.db")}}
	if base := os.Getenv("TEST_DATABASE_URL"); base != "" {
		dbs = append(dbs, Database{Name: "postgres", URL: FreshPostgresSchema(t, base)})
	}
	return dbs
}

// FreshPostgresSchema creates an empty schema on the server at base and
// returns a URL whose search_path selects it.
func FreshPostgresSchema(t testing.TB, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("TEST_DATABASE_URL: %v", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open %s: %v", u.Redacted(), err)
	}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		db.Close()
		t.Fatalf("create schema on %s: %v", u.Redacted(), err)
	}
	t.Cleanup(func() {
		db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		db.Close()
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
