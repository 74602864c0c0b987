package access_test

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"identityverification/access"
)

func TestAKeyIsFoundByItsIDAndMatchedByItsHash(t *testing.T) {
	k, err := access.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Secret, access.KeyPrefix+k.ID+"_") {
		t.Fatalf("secret %q does not carry its id %q", k.Secret, k.ID)
	}
	if id, ok := access.KeyID(k.Secret); !ok || id != k.ID {
		t.Errorf("KeyID = %q, %v; want %q", id, ok, k.ID)
	}
	if !access.MatchKey(k.Secret, k.Hash) || access.MatchKey(k.Secret+"x", k.Hash) {
		t.Error("MatchKey does not tell the key from another")
	}
	for _, bad := range []string{"", "ivk_", "ivk_zzzzzzzzzzzz_" + strings.Repeat("a", 43), "key_" + k.Secret[4:], k.Secret[:len(k.Secret)-1]} {
		if _, ok := access.KeyID(bad); ok {
			t.Errorf("KeyID(%q) accepted", bad)
		}
	}
	other, _ := access.NewKey()
	if other.ID == k.ID || other.Secret == k.Secret {
		t.Error("two keys alike")
	}
}

func TestScopesAreKnownAndRolesComeFromGroups(t *testing.T) {
	got, err := access.ParseScopes(" sessions:create,audit:read,sessions:create ")
	if err != nil || !reflect.DeepEqual(got, []string{"sessions:create", "audit:read"}) {
		t.Errorf("ParseScopes = %v, %v", got, err)
	}
	for _, bad := range []string{"", "sessions:delete", ","} {
		if _, err := access.ParseScopes(bad); err == nil {
			t.Errorf("ParseScopes(%q) accepted", bad)
		}
	}
	for _, c := range []struct {
		groups []string
		want   []string
	}{
		{[]string{"staff", "reviewers"}, []string{access.RoleReviewer}},
		{[]string{"admins"}, []string{access.RoleReviewer, access.RoleAdmin}},
		{[]string{"staff"}, nil},
		{nil, nil},
	} {
		if got := access.RolesFor(c.groups, []string{"reviewers"}, []string{"admins"}); !reflect.DeepEqual(got, c.want) {
			t.Errorf("RolesFor(%v) = %v; want %v", c.groups, got, c.want)
		}
	}
}

func TestTheBearerSchemeIsMatchedWithoutRegardToCase(t *testing.T) {
	for header, want := range map[string]string{"Bearer abc": "abc", "bearer abc": "abc", "BEARER abc": "abc",
		"Basic abc": "", "Bearer ": "", "Bearerabc": "", "": ""} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", header)
		if got, _ := access.Bearer(r); got != want {
			t.Errorf("Bearer(%q) = %q; want %q", header, got, want)
		}
	}
}

// counter is the store's fixed windows in memory, for the throttle's rules.
type counter map[string]int

func (c counter) key(b string, w time.Duration, at time.Time) string {
	return b + at.UTC().Truncate(w).String()
}
func (c counter) Hit(_ context.Context, b string, w time.Duration, at time.Time) (int, error) {
	c[c.key(b, w, at)]++
	return c[c.key(b, w, at)], nil
}
func (c counter) Hits(_ context.Context, b string, w time.Duration, at time.Time) (int, error) {
	return c[c.key(b, w, at)], nil
}

func TestTheThrottleBlocksAtTheLimitUntilTheWindowEnds(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC)
	th := &access.Throttle{Counter: counter{}, Now: func() time.Time { return now }}
	ctx := context.Background()
	for i := range 10 {
		if _, blocked, _ := th.Blocked(ctx, "source:a", "account:x"); blocked {
			t.Fatalf("blocked after %d failures; want 10 allowed", i)
		}
		th.Fail(ctx, "source:a")
	}
	wait, blocked, err := th.Blocked(ctx, "account:x", "source:a")
	if err != nil || !blocked || wait != 10*time.Minute || access.RetryAfterSeconds(wait) != "600" {
		t.Errorf("after 10 failures: %v, %v, %v; want blocked for the 10 minutes left of the window", wait, blocked, err)
	}
	if _, blocked, _ := th.Blocked(ctx, "source:b"); blocked {
		t.Error("another source is blocked")
	}
	now = now.Add(10 * time.Minute)
	if _, blocked, _ := th.Blocked(ctx, "source:a"); blocked {
		t.Error("still blocked in the next window")
	}
}
