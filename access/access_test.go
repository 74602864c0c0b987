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

func (c counter) Hit(_ context.Context, b string, w time.Duration, at time.Time) (int, error) {
	k := b + at.UTC().Truncate(w).String()
	c[k]++
	return c[k], nil
}

func TestTheThrottleAnswers429PastTheLimitUntilTheWindowEnds(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC)
	th := &access.Throttle{Counter: counter{}, Now: func() time.Time { return now }}
	ctx := context.Background()
	for i := range 10 {
		if v, err := th.Fail(ctx, "source:a", "account:x"); err != nil || v.Over {
			t.Fatalf("failure %d: %+v, %v; want 10 failures answered as failures", i+1, v, err)
		}
	}
	v, err := th.Fail(ctx, "account:y", "source:a")
	if err != nil || !v.Over || !v.Started || v.Wait != 10*time.Minute || access.RetryAfterSeconds(v.Wait) != "600" {
		t.Errorf("the 11th failure: %+v, %v; want over the limit, starting the throttle, for the 10 minutes left", v, err)
	}
	if v, _ := th.Fail(ctx, "source:a"); !v.Over || v.Started {
		t.Errorf("the 12th failure: %+v; want over the limit, the throttle already started", v)
	}
	if v, _ := th.Fail(ctx, "source:b"); v.Over {
		t.Error("another source is over the limit")
	}
	now = now.Add(10 * time.Minute)
	if v, _ := th.Fail(ctx, "source:a"); v.Over {
		t.Error("still over the limit in the next window")
	}
}

func TestTheSourceIsThePeerUnlessATrustedProxyForwardedIt(t *testing.T) {
	proxies, err := access.ParseProxies(" 10.0.0.5, 192.168.7.0/24,fd00::/8 ")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"a caller that reaches the service directly is its peer", "203.0.113.9:4711", nil, "203.0.113.9"},
		{"a caller's own X-Forwarded-For is not believed", "203.0.113.9:4711", []string{"198.51.100.1"}, "203.0.113.9"},
		{"behind a trusted proxy, the address it forwarded", "10.0.0.5:4711", []string{"198.51.100.1"}, "198.51.100.1"},
		{"an address a caller put before the proxy's is not believed", "10.0.0.5:4711", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"through two trusted proxies, the right-most address that is none", "192.168.7.20:1", []string{"6.6.6.6", "198.51.100.1, 10.0.0.5"}, "198.51.100.1"},
		{"a proxy's entry with a port", "10.0.0.5:4711", []string{"198.51.100.1:5555"}, "198.51.100.1"},
		{"IPv6 behind an IPv6 proxy", "[fd00::1]:4711", []string{"[2001:db8::7]:80"}, "2001:db8::7"},
		{"a trusted proxy without the header is the source", "10.0.0.5:4711", nil, "10.0.0.5"},
		{"garbage left of a trusted hop stops at that hop", "10.0.0.5:4711", []string{"<script>, 192.168.7.3"}, "192.168.7.3"},
		{"every hop trusted: the left-most", "10.0.0.5:4711", []string{"192.168.7.9"}, "192.168.7.9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = c.peer
			for _, h := range c.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			if got := proxies.Source(r); got != c.want {
				t.Errorf("Source = %q; want %q", got, c.want)
			}
		})
	}
	t.Run("without trusted proxies the peer is always the source", func(t *testing.T) {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr, r.Header["X-Forwarded-For"] = "10.0.0.5:1", []string{"198.51.100.1"}
		if got := access.Proxies(nil).Source(r); got != "10.0.0.5" {
			t.Errorf("Source = %q; want the peer", got)
		}
	})
	for _, bad := range []string{"10.0.0", "proxy.internal", "10.0.0.0/33", "fe80::1%eth0"} {
		if _, err := access.ParseProxies(bad); err == nil {
			t.Errorf("ParseProxies(%q) accepted", bad)
		}
	}
}
