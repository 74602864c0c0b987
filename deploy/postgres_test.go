package deploy

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"identityverification/testevent"
)

// The postgresql-setup job, run for real: its script and SQL on this
// machine's PostgreSQL (TEST_DATABASE_URL's server) with psql, under names
// of this test's own, twice (each `up` runs it again). Each role then
// owns its databases and nothing else: neither is a superuser or may
// create databases or roles, neither may connect to the other's databases,
// the service's role creates its tables, and Temporal's creates the
// extension its visibility schema needs. (The local server trusts every
// login on 127.0.0.1, so this shows privileges, not passwords.)
func TestTheDatabaseRolesHaveLeastPrivilege(t *testing.T) {
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		t.Skip("needs TEST_DATABASE_URL (a PostgreSQL server to make roles on)")
	}
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("needs psql, as the postgres image has")
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	suffix := strings.ToLower(testevent.RandomID(8))
	names := map[string]string{
		"TEMPORAL_ROLE": "t_temporal_" + suffix, "TEMPORAL_DB": "t_temporal_" + suffix,
		"VISIBILITY_DB": "t_visibility_" + suffix,
		"SERVICE_ROLE":  "t_service_" + suffix, "SERVICE_DB": "t_service_" + suffix,
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	t.Cleanup(func() {
		for _, db := range []string{names["TEMPORAL_DB"], names["VISIBILITY_DB"], names["SERVICE_DB"]} {
			admin.Exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)")
		}
		for _, role := range []string{names["TEMPORAL_ROLE"], names["SERVICE_ROLE"]} {
			admin.Exec("DROP ROLE IF EXISTS " + role)
		}
	})

	job := service(t, mustLoad(t, dev, nil), "postgresql-setup")
	sqlFile := filepath.Join(t.TempDir(), "postgresql-setup.sql")
	if err := os.WriteFile(sqlFile, []byte(mustLoad(t, dev, nil).Configs[job.Configs[0].Source].Content), 0o600); err != nil {
		t.Fatal(err)
	}
	script := strings.ReplaceAll(job.Command[0], job.Configs[0].Target, sqlFile)
	if script == job.Command[0] {
		t.Fatalf("the script does not read the SQL from %s", job.Configs[0].Target)
	}
	pass, _ := u.User.Password()
	env := environment(job)
	for k, v := range names {
		env[k] = v
	}
	for k, v := range map[string]string{"PGHOST": u.Hostname(), "PGPORT": u.Port(), "PGUSER": u.User.Username(),
		"PGDATABASE": strings.TrimPrefix(u.Path, "/"), "POSTGRES_PASSWORD": pass} {
		env[k] = v
	}
	for run := 1; run <= 2; run++ {
		cmd := exec.Command(job.Entrypoint[0], append(slices.Clone(job.Entrypoint[1:]), script)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("postgresql-setup, run %d: %v\n%s", run, err, out)
		}
	}

	for _, role := range []string{names["TEMPORAL_ROLE"], names["SERVICE_ROLE"]} {
		var login, super, createDB, createRole bool
		err := admin.QueryRow("SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = $1", role).
			Scan(&login, &super, &createDB, &createRole)
		if err != nil || !login || super || createDB || createRole {
			t.Errorf("role %s: login %v, superuser %v, create databases %v, create roles %v (%v); want a login and nothing more",
				role, login, super, createDB, createRole, err)
		}
	}
	for db, owner := range map[string]string{names["TEMPORAL_DB"]: names["TEMPORAL_ROLE"],
		names["VISIBILITY_DB"]: names["TEMPORAL_ROLE"], names["SERVICE_DB"]: names["SERVICE_ROLE"]} {
		var got string
		if err := admin.QueryRow("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", db).Scan(&got); err != nil || got != owner {
			t.Errorf("database %s: owner %q (%v); want %s", db, got, err, owner)
		}
	}

	as := func(role, db string, stmts ...string) error {
		v := *u
		v.User = url.User(role)
		v.Path = "/" + db
		c, err := sql.Open("pgx", v.String())
		if err != nil {
			return err
		}
		defer c.Close()
		for _, s := range stmts {
			if _, err := c.ExecContext(context.Background(), s); err != nil {
				return err
			}
		}
		return nil
	}
	if err := as(names["SERVICE_ROLE"], names["SERVICE_DB"], "CREATE TABLE t (id bigint PRIMARY KEY)", "DROP TABLE t"); err != nil {
		t.Errorf("the service's role cannot make its tables in its database: %v", err)
	}
	if err := as(names["TEMPORAL_ROLE"], names["VISIBILITY_DB"], "CREATE EXTENSION IF NOT EXISTS btree_gin",
		"CREATE TABLE t (id bigint PRIMARY KEY)"); err != nil {
		t.Errorf("Temporal's role cannot set up its visibility schema (btree_gin, tables): %v", err)
	}
	for _, c := range []struct{ role, db string }{
		{names["SERVICE_ROLE"], names["TEMPORAL_DB"]}, {names["SERVICE_ROLE"], names["VISIBILITY_DB"]},
		{names["TEMPORAL_ROLE"], names["SERVICE_DB"]},
	} {
		if err := as(c.role, c.db, "SELECT 1"); err == nil || !strings.Contains(err.Error(), "permission denied for database") {
			t.Errorf("%s connects to %s (%v); want it refused", c.role, c.db, err)
		}
	}
	if err := as(names["SERVICE_ROLE"], names["SERVICE_DB"], "CREATE DATABASE t_refused_"+suffix); err == nil {
		admin.Exec("DROP DATABASE IF EXISTS t_refused_" + suffix)
		t.Error("the service's role creates databases")
	}
}
