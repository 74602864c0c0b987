package config_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"identityverification/config"
)

func oidcEnv() config.Map {
	return config.Map{"OIDC_ISSUER": "https://login.example.com/", "OIDC_CLIENT_ID": "review-desk",
		"OIDC_CLIENT_SECRET": longSecret, "OIDC_REDIRECT_URL": "https://admin.example.com/desk/callback",
		"REVIEWER_GROUPS": "id-reviewers, id-leads", "ADMIN_GROUPS": "id-admins"}
}

func TestTheDesksSignInIsReadWhole(t *testing.T) {
	c, err := config.Load(oidcEnv())
	if err != nil {
		t.Fatal(err)
	}
	want := config.OIDC{Issuer: "https://login.example.com/", ClientID: "review-desk", ClientSecret: longSecret,
		RedirectURL: "https://admin.example.com/desk/callback", GroupsClaim: "groups",
		ReviewerGroups: []string{"id-reviewers", "id-leads"}, AdminGroups: []string{"id-admins"}}
	if !reflect.DeepEqual(c.OIDC, want) || !c.OIDC.Enabled() {
		t.Errorf("OIDC = %+v; want %+v", c.OIDC, want)
	}
	if c, _ := config.Load(config.Map{}); c.OIDC.Enabled() {
		t.Error("the desk's sign-in is on without OIDC_ISSUER")
	}
}

// Each OIDC problem is reported with the others, by name, and the client
// secret never appears.
func TestBadSignInSettingsAreReportedByName(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit config.Map
		want []string // the variables the messages name
	}{
		{"the issuer alone", config.Map{"OIDC_CLIENT_ID": "", "OIDC_CLIENT_SECRET": "", "OIDC_REDIRECT_URL": "", "REVIEWER_GROUPS": "", "ADMIN_GROUPS": ""},
			[]string{"OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "OIDC_REDIRECT_URL", "REVIEWER_GROUPS"}},
		{"a redirect elsewhere", config.Map{"OIDC_REDIRECT_URL": "https://admin.example.com/callback"}, []string{"OIDC_REDIRECT_URL"}},
		{"an issuer without a scheme", config.Map{"OIDC_ISSUER": "login.example.com"}, []string{"OIDC_ISSUER"}},
		{"a short client secret in production", config.Map{"OIDC_CLIENT_SECRET": "hunter2hunter2"}, []string{"OIDC_CLIENT_SECRET"}},
		{"groups without a sign-in", config.Map{"OIDC_ISSUER": "", "OIDC_CLIENT_ID": "", "OIDC_CLIENT_SECRET": "", "OIDC_REDIRECT_URL": ""},
			[]string{"OIDC_ISSUER"}},
		{"a claim with a space", config.Map{"OIDC_GROUPS_CLAIM": "my groups"}, []string{"OIDC_GROUPS_CLAIM"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := oidcEnv()
			for k, v := range tc.edit {
				env[k] = v
			}
			_, err := config.Load(env)
			if err == nil {
				t.Fatal("accepted")
			}
			var named []string
			for _, m := range strings.Split(err.Error(), "\n") {
				name, _, _ := strings.Cut(m, ":")
				named = append(named, name)
			}
			slices.Sort(named)
			if !reflect.DeepEqual(named, tc.want) {
				t.Errorf("messages name %v; want %v:\n%v", named, tc.want, err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
	env := oidcEnv()
	env["OIDC_CLIENT_SECRET"], env["ENVIRONMENT"] = "short", "development"
	if _, err := config.Load(env); err != nil {
		t.Errorf("a short client secret in development: %v", err)
	}
}

func TestCheckConfigMasksTheClientSecret(t *testing.T) {
	_, settings, err := config.Effective(oidcEnv())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]config.Setting{}
	for _, s := range settings {
		got[s.Name] = s
	}
	for name, want := range map[string]config.Setting{
		"OIDC_CLIENT_SECRET": {Name: "OIDC_CLIENT_SECRET", Value: "***(32 bytes)"},
		"OIDC_ISSUER":        {Name: "OIDC_ISSUER", Value: "https://login.example.com/"},
		"OIDC_GROUPS_CLAIM":  {Name: "OIDC_GROUPS_CLAIM", Value: "groups", Default: true},
		"REVIEWER_GROUPS":    {Name: "REVIEWER_GROUPS", Value: "id-reviewers, id-leads"},
	} {
		if got[name] != want {
			t.Errorf("%s = %+v; want %+v", name, got[name], want)
		}
	}
}

// Production signs people in over https only: one message for each URL
// that is http:// to another machine.
func TestProductionSignsInOverHTTPSOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit config.Map
		want []string // the variables the messages name
	}{
		{"an http issuer", config.Map{"OIDC_ISSUER": "http://sso.corp.example/realms/staff"}, []string{"OIDC_ISSUER"}},
		{"an http redirect", config.Map{"OIDC_REDIRECT_URL": "http://desk.corp.example/desk/callback"}, []string{"OIDC_REDIRECT_URL"}},
		{"both", config.Map{"OIDC_ISSUER": "http://sso.corp.example/", "OIDC_REDIRECT_URL": "http://desk.corp.example/desk/callback"},
			[]string{"OIDC_ISSUER", "OIDC_REDIRECT_URL"}},
		{"a provider and a desk on this machine", config.Map{"OIDC_ISSUER": "http://127.0.0.1:5556/dex",
			"OIDC_REDIRECT_URL": "http://localhost:8081/desk/callback"}, nil},
		{"a provider on IPv6 loopback", config.Map{"OIDC_ISSUER": "http://[::1]:5556/dex"}, nil},
		{"a host that only starts like loopback", config.Map{"OIDC_ISSUER": "http://127.0.0.1.nip.io/dex"}, []string{"OIDC_ISSUER"}},
		{"http in development", config.Map{"ENVIRONMENT": "development", "OIDC_ISSUER": "http://sso.corp.example/",
			"OIDC_REDIRECT_URL": "http://desk.corp.example/desk/callback"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := oidcEnv()
			for k, v := range tc.edit {
				env[k] = v
			}
			_, err := config.Load(env)
			var named []string
			if err != nil {
				for _, m := range strings.Split(err.Error(), "\n") {
					name, why, _ := strings.Cut(m, ":")
					if !strings.Contains(why, "must be https:// in production") {
						t.Errorf("unexpected message: %s", m)
					}
					named = append(named, name)
				}
			}
			slices.Sort(named)
			if !reflect.DeepEqual(named, tc.want) {
				t.Errorf("messages name %v; want %v:\n%v", named, tc.want, err)
			}
		})
	}
}
