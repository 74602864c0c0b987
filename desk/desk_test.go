package desk_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"identityverification/access"
	"identityverification/config"
	"identityverification/desk"
	"identityverification/devstack"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/stripeapi"
	"identityverification/workflows"
)

// The desk under test is served at a fixed address, so that Dex (started
// once, a real OpenID Provider with its own login page) knows its
// callback; each test puts its own desk behind it.
var (
	deskURL string
	dex     *devstack.Dex
	current atomic.Pointer[http.Handler]
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		deskURL = "http://" + ln.Addr().String()
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*current.Load()).ServeHTTP(w, r) }))
		dir, _ := os.MkdirTemp("", "desk-test-")
		defer os.RemoveAll(dir)
		wd, _ := os.Getwd()
		root, err := devstack.Root(wd)
		if err == nil {
			var bin string
			if bin, err = devstack.Tool(context.Background(), root, "dex", os.Stderr); err == nil {
				var port int
				if port, err = devstack.FreePort(); err == nil {
					dex, err = devstack.StartDex(context.Background(), bin, dir, port, devstack.DexClient{ID: "review-desk",
						Secret: "desk-test-secret", RedirectURIs: []string{deskURL + config.DeskCallbackPath}}, devstack.DevUsers)
				}
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "desk:", err)
			return 1
		}
		defer dex.Stop()
		return m.Run()
	}())
}

// cases serves fixed review cases over the real store (everything else).
type cases struct {
	*store.Store
	open []store.DeskCase
}

func (c *cases) DeskOpenCases(context.Context, int) ([]store.DeskCase, error) { return c.open, nil }
func (c *cases) DeskCase(_ context.Context, id string) (store.DeskCase, error) {
	for _, x := range c.open {
		if x.SessionID == id {
			return x, nil
		}
	}
	return store.DeskCase{}, store.ErrNotFound
}

// temporalFake records the updates and answers them with err, or a state;
// its state query answers state.
type temporalFake struct {
	updates []client.UpdateWorkflowOptions
	err     error
	state   workflows.State
}

func (f *temporalFake) UpdateWorkflow(_ context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	f.updates = append(f.updates, o)
	return handle{err: f.err, state: f.state}, nil
}
func (f *temporalFake) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	return nil, errors.New("not used")
}
func (f *temporalFake) NewWithStartWorkflowOperation(client.StartWorkflowOptions, any, ...any) client.WithStartWorkflowOperation {
	return nil
}
func (f *temporalFake) UpdateWithStartWorkflow(context.Context, client.UpdateWithStartWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	return nil, errors.New("not used")
}
func (f *temporalFake) QueryWorkflow(context.Context, string, string, string, ...any) (converter.EncodedValue, error) {
	p, _ := converter.GetDefaultDataConverter().ToPayloads(f.state)
	return client.NewValue(p), nil
}

type handle struct {
	err   error
	state workflows.State
}

func (handle) WorkflowID() string { return "" }
func (handle) RunID() string      { return "" }
func (handle) UpdateID() string   { return "" }
func (h handle) Get(_ context.Context, v any) error {
	if h.err != nil {
		return h.err
	}
	st := h.state
	if st.Status == "" {
		st.Status = workflows.StatusVerified
	}
	*(v.(*workflows.State)) = st
	return nil
}

// stripeFake is Stripe's answer for the reviewer's view.
type stripeFake struct{}

func (stripeFake) ReviewView(context.Context, string) (stripeapi.ReviewView, error) {
	return stripeapi.ReviewView{ReportID: "vr_1", Checks: []stripeapi.Check{{Name: "document", Status: "verified"},
		{Name: "selfie", Status: "unverified", ErrorCode: "selfie_face_mismatch"}},
		Verified: stripeapi.Outputs{FirstName: "Ada", LastName: "Byron", DOB: "1815-12-10"}}, nil
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// browser is a person's browser: cookies kept, redirects followed.
type browser struct {
	t *testing.T
	c *http.Client
}

type deskEnv struct {
	t     *testing.T
	st    *store.Store
	cases *cases
	tf    *temporalFake
	desk  *desk.Desk
}

// forEachDatabase puts a desk on a fresh store of each engine behind deskURL.
func forEachDatabase(t *testing.T, fn func(t *testing.T, e *deskEnv)) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			st, err := store.Open(context.Background(), db.URL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			e := &deskEnv{t: t, st: st, cases: &cases{Store: st}, tf: &temporalFake{}}
			e.desk = &desk.Desk{Store: e.cases, Temporal: e.tf, Stripe: stripeFake{}, StripeKey: "sk_test_desk",
				Throttle: &access.Throttle{Counter: st}, SessionTTL: time.Hour,
				OIDC: config.OIDC{Issuer: dex.Issuer, ClientID: dex.ClientID, ClientSecret: dex.ClientSecret,
					RedirectURL: deskURL + config.DeskCallbackPath, GroupsClaim: "groups",
					ReviewerGroups: []string{"reviewers"}, AdminGroups: []string{"admins"}},
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			h := e.desk.Handler()
			current.Store(&h)
			fn(t, e)
		})
	}
}

func (e *deskEnv) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: e.t, c: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// signIn signs in through Dex's login page as the dev user with email.
func (b *browser) signIn(email string) (*http.Response, string) {
	b.t.Helper()
	res, err := dex.SignIn(context.Background(), b.c, deskURL+"/desk/login/start", email, dex.User(email).Password)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func (b *browser) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(method, deskURL+path, strings.NewReader(form.Encode()))
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	c := *b.c
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(deskURL + "/desk/")
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func csrf(t *testing.T, body string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in %s", body)
	}
	return m[1]
}

func TestAReviewerSignsInAtTheProviderAndDecidesAsTheProvidersSubject(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		e.cases.open = []store.DeskCase{{SessionID: "vs_old", Reason: "non_retryable:selfie_manipulated", Status: "open",
			LastErrorCode: "selfie_manipulated", Attempts: 1, OpenedAt: time.Now().Add(-3 * time.Hour), DeadlineAt: time.Now().Add(-time.Hour)}}
		b := e.browser()
		if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/desk/login" {
			t.Fatalf("GET /desk/ signed out: %d %s; want 303 to the sign-in page", res.StatusCode, res.Header.Get("Location"))
		}
		res, body := b.signIn("ann@example.com")
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "Signed in as ann@example.com") {
			t.Fatalf("sign-in: %d %s", res.StatusCode, body)
		}
		if b.cookie("desk_login") != nil {
			t.Error("the sign-in cookie outlived the sign-in")
		}
		res, body = b.do("GET", "/desk/", nil)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "vs_old") || !strings.Contains(body, `<strong id="reviewer">ann@example.com</strong>`) ||
			strings.Contains(body, "/desk/admin/keys") {
			t.Fatalf("queue: %d %s", res.StatusCode, body)
		}
		_, body = b.do("GET", "/desk/reviews/vs_old", nil)
		for _, want := range []string{"https://dashboard.stripe.com/test/identity/verification-sessions/vs_old", "selfie_face_mismatch", "review.view"} {
			if !strings.Contains(body, want) {
				t.Errorf("the review page lacks %q", want)
			}
		}
		if strings.Contains(body, "Byron") {
			t.Error("the review page shows verified values for a review that is not a mismatch")
		}
		tok := csrf(t, body)
		for _, bad := range []string{"", "x" + tok} {
			if res, _ := b.do("POST", "/desk/reviews/vs_old", url.Values{"csrf": {bad}, "decision": {"approve"}}); res.StatusCode != http.StatusForbidden {
				t.Errorf("decision with CSRF %q: %d; want 403", bad, res.StatusCode)
			}
		}
		// A form that says who decides changes nothing: the session does.
		res, _ = b.do("POST", "/desk/reviews/vs_old", url.Values{"csrf": {tok}, "decision": {"approve"},
			"reviewer": {"eve@example.com"}, "subject": {"oidc:eve"}})
		if res.StatusCode != http.StatusSeeOther || len(e.tf.updates) != 1 {
			t.Fatalf("decision: %d, %d updates", res.StatusCode, len(e.tf.updates))
		}
		sub := "oidc:" + devstack.DexSubject("ann")
		sent := e.tf.updates[0].Args[0].(workflows.ReviewDecision)
		if sent.Voucher == "" {
			t.Error("the decision carries no voucher")
		}
		if vouched, err := e.st.RedeemDecisionVoucher(context.Background(), store.DecisionVoucher{ID: sent.Voucher, SessionID: "vs_old",
			Subject: sub, Decision: "approve"}, time.Now().Add(-time.Minute)); err != nil || !vouched {
			t.Errorf("the desk did not vouch for the decision: %v, %v", vouched, err)
		}
		sent.Voucher = ""
		if sent != (workflows.ReviewDecision{Decision: "approve", Reviewer: "ann@example.com", Subject: sub}) {
			t.Errorf("decision sent %+v; want the provider's subject and email", sent)
		}
		if _, body = b.do("GET", "/desk/reviews/vs_old", nil); !strings.Contains(body, "Decided: approve. The session is now verified.") {
			t.Errorf("no confirmation after the decision: %s", body)
		}
		rows, _ := e.st.AuditLog(context.Background(), store.AuditFilter{})
		var got []string
		for _, r := range rows {
			got = append(got, fmt.Sprintf("%s %s %s %s %s %s", r.Actor, r.ActorName, r.Action, r.SessionID, r.Result, r.Detail))
		}
		want := []string{ // newest first
			sub + " ann@example.com review.view vs_old ok ",
			sub + " ann@example.com review.decide vs_old ok approve",
			sub + " ann@example.com review.view vs_old ok ",
			sub + " ann@example.com desk.sign_in  ok reviewer",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("audit rows:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

func TestTheDeskShowsApprovalsAndTheValuesOfAMismatch(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		ctx := context.Background()
		if err := e.st.UpsertContact(ctx, store.Contact{SessionID: "vs_mm", Email: "x@example.com", FirstName: "Ada", LastName: "Lovelace<b>", DOB: "1815-12-10"}); err != nil {
			t.Fatal(err)
		}
		e.cases.open = []store.DeskCase{{SessionID: "vs_mm", Reason: "mismatch", MismatchedFields: []string{"last_name"},
			Status: "open", Attempts: 1, OpenedAt: time.Now()},
			{SessionID: "vs_esc", Reason: "mismatch<script>alert(1)</script>", Status: "open", OpenedAt: time.Now()}}
		e.tf.state = workflows.State{Status: workflows.StatusInReview, Review: &workflows.Review{Reason: "mismatch", ApprovalsNeeded: 2,
			Approvals: []workflows.Approval{{Subject: "oidc:bob", Reviewer: "bob@example.com"}}}}
		b := e.browser()
		b.signIn("ann@example.com")
		_, body := b.do("GET", "/desk/", nil)
		if strings.Contains(body, "<script>") || !strings.Contains(body, "mismatch&lt;script&gt;") {
			t.Errorf("the reason is not escaped: %s", body)
		}
		_, body = b.do("GET", "/desk/reviews/vs_mm", nil)
		for _, want := range []string{`<dd id="approvals">1 of 2 approvals, by bob@example.com</dd>`,
			`<tr class="differs"><td>last_name</td><td>Lovelace&lt;b&gt;</td><td>Byron</td></tr>`} {
			if !strings.Contains(body, want) {
				t.Errorf("the review page lacks %s:\n%s", want, body)
			}
		}
		// The first of two approvals: the page says the review waits.
		e.tf.state.Review.Approvals = append(e.tf.state.Review.Approvals, workflows.Approval{Subject: "oidc:ann", Reviewer: "ann@example.com"})
		e.tf.state.Review.Approvals = e.tf.state.Review.Approvals[1:]
		b.do("POST", "/desk/reviews/vs_mm", url.Values{"csrf": {csrf(t, body)}, "decision": {"approve"}})
		if _, body = b.do("GET", "/desk/reviews/vs_mm", nil); !strings.Contains(body, "Your approval is recorded: 1 of 2 approvals, by ann@example.com.") {
			t.Errorf("after the first approval: %s", body)
		}
		// The workflow refuses a second approval by the same person; the desk shows why.
		e.tf.err = temporal.NewApplicationError(workflows.ErrSameApprover.Error(), workflows.ErrTypeReviewRefused)
		res, body := b.do("POST", "/desk/reviews/vs_mm", url.Values{"csrf": {csrf(t, body)}, "decision": {"approve"}})
		if res.StatusCode != http.StatusConflict || !strings.Contains(body, html.EscapeString("The decision was refused: "+workflows.ErrSameApprover.Error())) {
			t.Errorf("the same approver again: %d %s", res.StatusCode, body)
		}
	})
}

func TestAReviewerCannotOpenTheAdminPages(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		if err := e.st.CreateAPIKey(context.Background(), store.APIKey{ID: "0123456789ab", Name: "backend",
			Scopes: []string{"sessions:create"}, SecretHash: "x"}, nil); err != nil {
			t.Fatal(err)
		}
		ann := e.browser()
		ann.signIn("ann@example.com")
		for _, p := range []string{"/desk/admin/keys", "/desk/admin/audit"} {
			if res, _ := ann.do("GET", p, nil); res.StatusCode != http.StatusForbidden {
				t.Errorf("a reviewer opens %s: %d; want 403", p, res.StatusCode)
			}
		}
		ada := e.browser()
		ada.signIn("ada@example.com")
		res, body := ada.do("GET", "/desk/admin/keys", nil)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "backend") || !strings.Contains(body, "sessions:create") {
			t.Errorf("an admin opens the keys: %d %s", res.StatusCode, body)
		}
		res, body = ada.do("GET", "/desk/admin/audit", nil)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "desk.admin_page") || !strings.Contains(body, "denied") {
			t.Errorf("an admin opens the audit log: %d; want it with the reviewer's refused visits", res.StatusCode)
		}
	})
}

// The admin's audit page shows the newest rows, however many there are,
// and pages back from them.
func TestTheAuditPageShowsTheNewestRowsAndPagesBack(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		ctx := context.Background()
		days := time.Now().Add(-3 * 24 * time.Hour)
		for i := range store.MaxAuditRows {
			if err := e.st.AppendAudit(ctx, store.AuditRecord{At: days.Add(time.Duration(i) * time.Second), Actor: "key:backend",
				Action: store.AuditSessionRegister, SessionID: "vs_busy", Result: store.AuditOK, Detail: fmt.Sprintf("row %04d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.st.AppendAudit(ctx, store.AuditRecord{Actor: "oidc:mallory", Action: store.AuditReviewDecide,
			SessionID: "vs_fraud", Result: store.AuditOK, Detail: "approve, the newest row"}); err != nil {
			t.Fatal(err)
		}
		ada := e.browser()
		ada.signIn("ada@example.com")
		res, body := ada.do("GET", "/desk/admin/audit", nil)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "approve, the newest row") || !strings.Contains(body, "row 0999") {
			t.Fatalf("the audit page: %d; want the newest rows on it:\n%s", res.StatusCode, body)
		}
		older := regexp.MustCompile(`href="(/desk/admin/audit\?before=[^"]+)"`).FindStringSubmatch(body)
		if older == nil || strings.Contains(body, "row 0700") {
			t.Fatalf("the first page links no older rows, or shows too many")
		}
		if res, body = ada.do("GET", html.UnescapeString(older[1]), nil); res.StatusCode != http.StatusOK ||
			!strings.Contains(body, "row 0700") || strings.Contains(body, "row 0999") || strings.Contains(body, "the newest row") {
			t.Errorf("the older page: %d; want the rows before the first page's", res.StatusCode)
		}
		if res, _ := ada.do("GET", "/desk/admin/audit?before=x", nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("a page before a made-up row: %d; want 404", res.StatusCode)
		}
	})
}

func TestSomeoneInNoAllowedGroupCannotSignIn(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		b := e.browser()
		res, body := b.signIn("nobody@example.com")
		if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "not in a group that may use the review desk") {
			t.Fatalf("sign-in outside the groups: %d %s", res.StatusCode, body)
		}
		if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusSeeOther {
			t.Errorf("after a refused sign-in: %d; want the sign-in page", res.StatusCode)
		}
		rows, _ := e.st.AuditLog(context.Background(), store.AuditFilter{})
		if len(rows) != 1 || rows[0].Actor != "oidc:"+devstack.DexSubject("nobody") || rows[0].Result != store.AuditDenied ||
			rows[0].Detail != "in no allowed group" {
			t.Errorf("audit rows %+v; want the refusal with the subject", rows)
		}
	})
}

func TestSessionsRotateOnSignInAndEndEverywhereOnSignOut(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		b := e.browser()
		b.signIn("ann@example.com")
		first := b.cookie("desk_session")
		if first == nil || len(first.Value) < 40 {
			t.Fatalf("session cookie %+v", first)
		}
		res, _ := b.signIn("ann@example.com")
		res.Body.Close()
		second := b.cookie("desk_session")
		if second == nil || second.Value == first.Value {
			t.Fatal("signing in again kept the session id")
		}
		var hdr *http.Cookie
		for _, c := range res.Cookies() {
			if c.Name == "desk_session" {
				hdr = c
			}
		}
		if hdr == nil || !hdr.HttpOnly || hdr.SameSite != http.SameSiteStrictMode || hdr.Secure {
			t.Errorf("session cookie %+v; want HttpOnly, SameSite=Strict, not Secure over http", hdr)
		}
		old := &browser{t: t, c: &http.Client{Jar: newJar(first)}}
		if res, _ := old.do("GET", "/desk/", nil); res.StatusCode != http.StatusSeeOther {
			t.Errorf("the session from before the new sign-in: %d; want it ended", res.StatusCode)
		}
		_, body := b.do("GET", "/desk/", nil)
		b.do("POST", "/desk/logout", url.Values{"csrf": {csrf(t, body)}})
		// The cookie's id, from any browser (any replica), is worthless now.
		stolen := &browser{t: t, c: &http.Client{Jar: newJar(second)}}
		if res, _ := stolen.do("GET", "/desk/", nil); res.StatusCode != http.StatusSeeOther {
			t.Errorf("after sign-out: %d; want the session ended", res.StatusCode)
		}
	})
}

func newJar(c *http.Cookie) http.CookieJar {
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(deskURL + "/desk/")
	jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: c.Value, Path: "/desk/"}})
	return jar
}

func TestSessionsExpire(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		now := time.Now()
		e.desk.Now = func() time.Time { return now }
		b := e.browser()
		b.signIn("ann@example.com")
		if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusOK {
			t.Fatalf("signed in: %d", res.StatusCode)
		}
		now = now.Add(time.Hour + time.Second)
		if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/desk/login" {
			t.Fatalf("after the session's hour: %d %s; want 303 to the sign-in page", res.StatusCode, res.Header.Get("Location"))
		}
	})
}

// failSignIn starts a sign-in and comes back with a forged state, as a
// failed sign-in does, from the address forwardedFor names (through a
// trusted proxy) when not empty.
func (b *browser) failSignIn(i int, forwardedFor string) *http.Response {
	b.t.Helper()
	if res, _ := b.do("GET", "/desk/login/start", nil); res.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("start a sign-in: %d", res.StatusCode)
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/desk/callback?code=c%d&state=forged", deskURL, i), nil)
	if forwardedFor != "" {
		req.Header.Set("X-Forwarded-For", forwardedFor)
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	res.Body.Close()
	return res
}

func TestTwentyWrongSignInsAreThrottledButARightOnePasses(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		e.desk.Proxies, _ = access.ParseProxies("127.0.0.1") // the test's proxy
		b := e.browser()
		var codes []int
		for i := range 20 {
			res := b.failSignIn(i, "198.51.100.1")
			codes = append(codes, res.StatusCode)
			if i >= access.DefaultFailureLimit && res.Header.Get("Retry-After") == "" {
				t.Errorf("attempt %d: no Retry-After", i+1)
			}
		}
		for i, c := range codes {
			want := http.StatusUnauthorized
			if i >= access.DefaultFailureLimit {
				want = http.StatusTooManyRequests
			}
			if c != want {
				t.Fatalf("attempt %d: %d; want %d (codes %v)", i+1, c, want, codes)
			}
		}
		// Another person behind the same proxy has a count of their own.
		if res := e.browser().failSignIn(0, "198.51.100.2"); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("a failure from another address behind the proxy: %d; want 401", res.StatusCode)
		}
		rows, _ := e.st.AuditLog(context.Background(), store.AuditFilter{})
		n := map[string]int{}
		for _, r := range rows {
			n[r.Result+" from "+r.Source]++
		}
		if want := map[string]int{"denied from 198.51.100.1": 10, "throttled from 198.51.100.1": 1,
			"denied from 198.51.100.2": 1}; !reflect.DeepEqual(n, want) {
			t.Errorf("audit rows %v; want %v: the failures up to the limit, one row when the throttle starts", n, want)
		}
		// The throttle answers failures; it never turns a good sign-in away.
		if res, body := b.signIn("ann@example.com"); res.StatusCode != http.StatusOK || !strings.Contains(body, "Signed in as ann@example.com") {
			t.Errorf("a good sign-in from the throttled browser: %d", res.StatusCode)
		}
	})
}

// A callback that carries no sign-in cookie is not a sign-in this desk
// started: however many come, they are not counted against the address
// (everyone behind a proxy shares it) and not recorded.
func TestCallbacksWithoutASignInUnderWayAreNotCounted(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		probe := e.browser()
		for i := range 3 * access.DefaultFailureLimit {
			if res, _ := probe.do("GET", fmt.Sprintf("/desk/callback?code=x%d&state=y", i), nil); res.StatusCode != http.StatusUnauthorized {
				t.Fatalf("callback %d without a sign-in: %d; want 401", i+1, res.StatusCode)
			}
		}
		if rows, _ := e.st.AuditLog(context.Background(), store.AuditFilter{}); len(rows) != 0 {
			t.Errorf("%d audit rows for callbacks without a sign-in; want none", len(rows))
		}
		if res := e.browser().failSignIn(0, ""); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("a real failed sign-in from the same address after them: %d; want 401, the first failure", res.StatusCode)
		}
		if res, _ := e.browser().signIn("ann@example.com"); res.StatusCode != http.StatusOK {
			t.Errorf("a sign-in after them: %d; want 200", res.StatusCode)
		}
	})
}

// A session unused for the idle timeout ends, though its 8 hours are not
// over; its last use is in the database, so a use on one replica keeps it
// alive on the others.
func TestAnIdleSessionEndsOnEveryReplica(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		now := time.Now()
		clock := func() time.Time { return now }
		e.desk.Now, e.desk.SessionTTL = clock, 8*time.Hour
		other := &desk.Desk{Store: e.cases, Temporal: e.tf, OIDC: e.desk.OIDC, SessionTTL: 8 * time.Hour, Now: clock,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		replicas := []http.Handler{e.desk.Handler(), other.Handler()}
		b := e.browser()
		b.signIn("ann@example.com")
		for i, step := range []struct {
			after time.Duration
			want  int
		}{{50 * time.Minute, http.StatusOK}, {50 * time.Minute, http.StatusOK}, {50 * time.Minute, http.StatusOK},
			{desk.DefaultIdleTimeout, http.StatusSeeOther}} {
			now = now.Add(step.after)
			current.Store(&replicas[i%2])
			if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != step.want {
				t.Fatalf("step %d, %s after the last use, on replica %d: %d; want %d", i+1, step.after, i%2+1, res.StatusCode, step.want)
			}
		}
	})
}

// Served over https (OIDC_REDIRECT_URL), the desk's cookies are Secure and
// __Host- prefixed; over http they are not, whatever X-Forwarded-Proto a
// client sends.
func TestCookiesAreSecureWhenTheDeskIsServedOverHTTPS(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		start := func(d *desk.Desk, proto string) *http.Cookie {
			t.Helper()
			req := httptest.NewRequest(http.MethodGet, "/desk/login/start", nil)
			if proto != "" {
				req.Header.Set("X-Forwarded-Proto", proto)
			}
			rec := httptest.NewRecorder()
			d.Handler().ServeHTTP(rec, req)
			if cs := rec.Result().Cookies(); rec.Code == http.StatusSeeOther && len(cs) == 1 {
				return cs[0]
			}
			t.Fatalf("start a sign-in: %d %v", rec.Code, rec.Result().Cookies())
			return nil
		}
		plain := &desk.Desk{Store: e.cases, OIDC: e.desk.OIDC, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if c := start(plain, "https"); c.Name != "desk_login" || c.Secure || c.Path != "/desk/" {
			t.Errorf("over http, with X-Forwarded-Proto: https from the client: %+v; want desk_login, not Secure", c)
		}
		o := e.desk.OIDC
		o.RedirectURL = "https://desk.example.com" + config.DeskCallbackPath
		secure := &desk.Desk{Store: e.cases, OIDC: o, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if c := start(secure, ""); c.Name != "__Host-desk_login" || !c.Secure || c.Path != "/" || !c.HttpOnly || c.Domain != "" {
			t.Errorf("over https: %+v; want __Host-desk_login, Secure, Path=/, HttpOnly, no Domain", c)
		}
		// The session is read from the __Host- cookie only.
		ctx := context.Background()
		if err := e.st.CreateDeskSession(ctx, store.DeskSession{IDHash: hashOf("sid"), Subject: "oidc:ann", Email: "ann@example.com",
			Roles: []string{access.RoleReviewer}, CSRF: "c", ExpiresAt: time.Now().Add(time.Hour)}, ""); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]int{"__Host-desk_session": http.StatusOK, "desk_session": http.StatusSeeOther} {
			req := httptest.NewRequest(http.MethodGet, "/desk/", nil)
			req.AddCookie(&http.Cookie{Name: name, Value: "sid"})
			rec := httptest.NewRecorder()
			secure.Handler().ServeHTTP(rec, req)
			if rec.Code != want {
				t.Errorf("the session in %s: %d; want %d", name, rec.Code, want)
			}
		}
	})
}

func hashOf(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// Nobody signed in learns what failed inside the desk.
func TestAnUnavailableDeskNamesNothingInside(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *deskEnv) {
		b := e.browser()
		if res, _ := b.do("GET", "/desk/login/start", nil); res.StatusCode != http.StatusSeeOther {
			t.Fatalf("start a sign-in: %d", res.StatusCode)
		}
		e.st.Close() // the database stops answering
		for _, path := range []string{"/desk/callback?code=x&state=y", "/desk/login/start", "/desk/"} {
			req, _ := http.NewRequest(http.MethodGet, deskURL+path, nil)
			for _, c := range b.c.Jar.Cookies(req.URL) {
				req.AddCookie(c)
			}
			req.AddCookie(&http.Cookie{Name: "desk_session", Value: "sid"})
			res, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "Sign-in is unavailable just now; try again shortly.") ||
				strings.Contains(strings.ToLower(string(body)), "database") {
				t.Errorf("GET %s with the database down: %d %s; want 503 naming nothing inside", path, res.StatusCode, body)
			}
		}
	})
}
