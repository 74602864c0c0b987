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
