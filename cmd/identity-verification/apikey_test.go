package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"identityverification/access"
	"identityverification/config"
	"identityverification/store"
	"identityverification/store/storetest"
)

var printedKey = regexp.MustCompile(`(?m)^key:\s+(ivk_\S+)$`)

func TestAPIKeysAreMadeListedAndRevokedWithTheSecretShownOnce(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			ctx := context.Background()
			env := config.Map{"DATABASE_URL": db.URL}
			var out bytes.Buffer
			if err := apiKey(ctx, env, []string{"create", "--name", "backend", "--scopes", "sessions:create,sessions:register"}, &out); err != nil {
				t.Fatal(err)
			}
			m := printedKey.FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("no key printed:\n%s", out.String())
			}
			secret := m[1]
			id, _ := access.KeyID(secret)
			st, err := store.Open(ctx, db.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			k, err := st.APIKey(ctx, id)
			if err != nil || !access.MatchKey(secret, k.SecretHash) || k.SecretHash == secret || k.Name != "backend" ||
				strings.Join(k.Scopes, ",") != "sessions:create,sessions:register" {
				t.Fatalf("stored key %+v, %v; want the hash of the printed key with its name and scopes", k, err)
			}
			out.Reset()
			if err := apiKey(ctx, env, []string{"list"}, &out); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), id) || strings.Contains(out.String(), secret) {
				t.Errorf("list:\n%s\nwant the id and never the secret", out.String())
			}
			out.Reset()
			if err := apiKey(ctx, env, []string{"revoke", id}, &out); err != nil {
				t.Fatal(err)
			}
			if k, _ := st.APIKey(ctx, id); !k.Revoked() {
				t.Error("the key still works after revoke")
			}
			for _, bad := range [][]string{{"create", "--name", "x", "--scopes", "sessions:delete"}, {"create", "--scopes", "audit:read"},
				{"revoke", "nope"}, {"rotate"}} {
				if err := apiKey(ctx, env, bad, &out); err == nil {
					t.Errorf("api-key %v: no error", bad)
				}
			}
			rows, _ := st.AuditLog(ctx, store.AuditFilter{})
			if len(rows) != 2 || rows[1].Action != store.AuditKeyCreate || rows[0].Action != store.AuditKeyRevoke || rows[1].Actor != "cli" {
				t.Errorf("audit rows %+v; want the create and the revoke", rows)
			}
		})
	}
}

// Making or revoking a key and its audit row are one transaction: when the
// audit log refuses the row, no key is made and none is revoked, and the
// command says so.
func TestAKeyIsMadeOrRevokedOnlyWithItsAuditRow(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			ctx := context.Background()
			env := config.Map{"DATABASE_URL": db.URL}
			var out bytes.Buffer
			if err := apiKey(ctx, env, []string{"create", "--name", "backend", "--scopes", "sessions:read"}, &out); err != nil {
				t.Fatal(err)
			}
			id, _ := access.KeyID(printedKey.FindStringSubmatch(out.String())[1])
			st, err := store.Open(ctx, db.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			// From here on the database refuses every new audit row.
			refuse := []string{`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'no audit'); END`}
			if st.Dialect() == "postgres" {
				refuse = []string{`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no audit'; END $$`,
					`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()`}
			}
			for _, q := range refuse {
				if _, err := st.DB().ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			out.Reset()
			if err := apiKey(ctx, env, []string{"create", "--name", "unaudited", "--scopes", "sessions:read"}, &out); err == nil ||
				strings.Contains(out.String(), "ivk_") {
				t.Errorf("create without its audit row: %v, printed %q; want an error and no key", err, out.String())
			}
			if err := apiKey(ctx, env, []string{"revoke", id}, &out); err == nil {
				t.Error("revoke without its audit row: no error")
			}
			keys, _ := st.APIKeys(ctx)
			if len(keys) != 1 || keys[0].Name != "backend" || keys[0].Revoked() {
				t.Errorf("keys %+v; want only the first, still working", keys)
			}
		})
	}
}
