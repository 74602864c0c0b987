package e2e

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"identityverification/config"
	"identityverification/devstack"
	"identityverification/store"
	"identityverification/testevent"
	"identityverification/workflows"
)

const chromiumPath = "/usr/bin/chromium"

// browser starts headless Chromium (Debian's package) for one test and
// returns its context. Without Chromium the test is skipped, except in CI
// (CI set), where .ci/run installs it: there it must run.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("the review desk's browser test needs Chromium at %s (apt-get install -y chromium); .ci/run installs it", chromiumPath)
		}
		t.Fatalf("CI is set and Chromium is missing at %s: %v", chromiumPath, err)
	}
	// As root (CI, containers) Chromium needs --no-sandbox; the other flags
	// keep it from phoning home or updating itself during the test.
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 720),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first call starts the browser; it gets no timeout of its own.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// step runs browser actions with a bound, failing the test with what.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func html(t *testing.T, ctx context.Context) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatalf("page HTML: %v", err)
	}
	return s
}

// TestDeskDecidesAReviewInTheBrowser: a reviewer without Temporal signs in
// to the review desk through the OpenID Provider's own login page (Dex),
// finds the session in the queue, sees why it is there (and no personal
// data), is refused an invalid decision with the reason, approves it, and
// the workflow moves on; the decision, the review case and the audit log
// carry the provider's subject and verified email. A form without its CSRF
// token is refused, and a reviewer cannot open the admin pages.
func TestDeskDecidesAReviewInTheBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil && os.Getenv("CI") == "" {
		t.Skipf("the review desk's browser test needs Chromium at %s (apt-get install -y chromium); .ci/run installs it", chromiumPath)
	}
	// A code no retry can fix goes to review (one approval: not a fraud code).
	forEachDatabaseWith(t, config.Map{withDesk: "1"}, func(t *testing.T, s *stack) {
		vs := "vs_e2e_desk_" + testevent.RandomID(16)
		// Personal data the desk must not show for this review.
		if err := s.store.UpsertContact(context.Background(), store.Contact{SessionID: vs, Email: "desk-ada@example.com",
			FirstName: "Augusta", LastName: "Lovelace", DOB: "1815-12-10"}); err != nil {
			t.Fatal(err)
		}
		s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "under_supported_age"})
		s.waitRow(vs, workflows.StatusInReview)

		ctx := browser(t)
		desk := s.adminURL + "/desk/"
		ann := s.dex.User("ann@example.com")

		// Signed out, the desk sends the browser to its sign-in page, and
		// from there to the provider's login page: a wrong password is
		// refused there, by the provider.
		step(t, ctx, "open the provider's login page",
			chromedp.Navigate(desk),
			chromedp.WaitVisible(chromedp.CSS("#signin")),
			chromedp.Click(chromedp.CSS("#signin")),
			chromedp.WaitVisible(chromedp.CSS("#password")),
		)
		step(t, ctx, "a wrong password at the provider",
			chromedp.SendKeys(chromedp.CSS("#login"), ann.Email),
			chromedp.SendKeys(chromedp.CSS("#password"), "not-her-password"),
			chromedp.Submit(chromedp.CSS("#password")),
			chromedp.WaitVisible(chromedp.CSS("#login-error")),
		)
		step(t, ctx, "sign in at the provider",
			chromedp.SetValue(chromedp.CSS("#login"), ann.Email),
			chromedp.SetValue(chromedp.CSS("#password"), ann.Password),
			chromedp.Submit(chromedp.CSS("#password")),
			chromedp.WaitVisible(chromedp.CSS("#queue")),
		)
		if got := text(t, ctx, "#reviewer"); got != ann.Email {
			t.Errorf("signed in as %q; want the provider's email %q", got, ann.Email)
		}
		if row := text(t, ctx, "#queue"); !strings.Contains(row, vs) || !strings.Contains(row, "non_retryable:under_supported_age") {
			t.Errorf("queue lacks the session: %q", row)
		}

		// The session cookie is HttpOnly and SameSite=Strict; the sign-in's
		// own cookie is gone.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cookies, err := chromedp.Call(cctx, network.GetCookies, network.GetCookiesParams{URLs: []string{desk}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var session *network.Cookie
		for _, c := range cookies.Cookies {
			switch c.Name {
			case "desk_session":
				session = c
			case "desk_login":
				t.Errorf("the sign-in cookie outlived the sign-in: %+v", c)
			}
		}
		if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict {
			t.Fatalf("session cookie %+v; want HttpOnly, SameSite=Strict", session)
		}

		// A reviewer is not an admin: the admin pages answer 403.
		step(t, ctx, "open an admin page",
			chromedp.Navigate(desk+"admin/keys"),
			chromedp.WaitVisible(chromedp.CSS("#error")),
		)
		if got := text(t, ctx, "#error"); got != "This page is for the desk's admins." {
			t.Errorf("a reviewer on the admin page sees %q", got)
		}
		for _, p := range []string{"admin/keys", "admin/audit"} {
			if code := deskGet(t, desk+p, session); code != http.StatusForbidden {
				t.Errorf("a reviewer's GET %s: %d; want 403", p, code)
			}
		}

		// The review: the reason and the failure code, attempts, deadline; no
		// name, email or date of birth.
		step(t, ctx, "open the review",
			chromedp.Navigate(desk),
			chromedp.WaitVisible(chromedp.CSS("#queue")),
			chromedp.Click(chromedp.CSS(`a[href="/desk/reviews/`+vs+`"]`)),
			chromedp.WaitVisible(chromedp.CSS("#decide")),
		)
		for sel, want := range map[string]string{"#session": vs, "#reason": "non_retryable:under_supported_age",
			"#code": "under_supported_age", "#attempts": "1", "#status": "open"} {
			if got := text(t, ctx, sel); got != want {
				t.Errorf("%s shows %q; want %q", sel, got, want)
			}
		}
		if got := text(t, ctx, "#deadline"); !strings.Contains(got, "UTC") {
			t.Errorf("deadline shows %q", got)
		}
		page := html(t, ctx)
		for _, pii := range []string{"desk-ada@example.com", "Augusta", "Lovelace", "1815-12-10"} {
			if strings.Contains(page, pii) {
				t.Errorf("the review page shows personal data %q", pii)
			}
		}
		if !strings.Contains(page, "https://dashboard.stripe.com/test/identity/verification-sessions/"+vs) {
			t.Error("the review page has no link to the session in the Stripe Dashboard (test mode)")
		}
		if s.db == "sqlite" && os.Getenv("UPDATE_DESK_SCREENSHOT") != "" {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("..", "docs", "desk.png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}

		// An invalid decision (the form crafted in the browser) is refused by
		// the workflow's validator, and the page says why.
		step(t, ctx, "submit an invalid decision",
			chromedp.SetAttributeValue(chromedp.CSS("#approve"), "value", "maybe"),
			chromedp.Click(chromedp.CSS("#approve")),
			chromedp.WaitVisible(chromedp.CSS("#error")),
		)
		if got := text(t, ctx, "#error"); !strings.Contains(got, workflows.ErrUnknownDecision.Error()) {
			t.Errorf("invalid decision: the page says %q; want the validator's reason", got)
		}

		// A POST with the session cookie but without the CSRF token: 403,
		// and the review stays open.
		req, _ := http.NewRequest(http.MethodPost, desk+"reviews/"+vs, strings.NewReader(url.Values{"decision": {"approve"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("POST without CSRF token: %d; want 403", res.StatusCode)
		}
		if c, err := s.store.Review(context.Background(), vs); err != nil || c.Status != store.ReviewOpen {
			t.Errorf("after the forged POST the review is %+v, %v; want still open", c, err)
		}

		// Approve: the workflow applies it and the session is verified, by
		// the provider's subject and email.
		step(t, ctx, "approve",
			chromedp.Click(chromedp.CSS("#approve")),
			chromedp.WaitVisible(chromedp.CSS("#flash")),
		)
		if got := text(t, ctx, "#flash"); got != "Decided: approve. The session is now verified." {
			t.Errorf("after approving the page says %q", got)
		}
		if got := text(t, ctx, "#status"); !strings.HasPrefix(got, "approved by "+ann.Email) {
			t.Errorf("status after approving: %q", got)
		}
		s.waitRow(vs, workflows.StatusVerified)
		sub := "oidc:" + devstack.DexSubject(ann.ID)
		st, err := s.state(vs)
		if err != nil || st.Review == nil || st.Review.Subject != sub || st.Review.Reviewer != ann.Email {
			t.Errorf("the workflow's review %+v, %v; want decided by %s (%s)", st.Review, err, sub, ann.Email)
		}
		if c, err := s.store.Review(context.Background(), vs); err != nil || c.Status != store.ReviewApproved || c.Reviewer != ann.Email {
			t.Errorf("review case after approving: %+v, %v; want approved by %s", c, err, ann.Email)
		}
		rows, err := s.store.AuditLog(context.Background(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		slices.Reverse(rows) // newest first in the log; oldest first here
		var got []string
		for _, r := range rows {
			if r.Actor != sub || r.ActorName != ann.Email || r.Source != "127.0.0.1" {
				t.Errorf("audit row %+v; want it by %s from 127.0.0.1", r, sub)
			}
			got = append(got, strings.Join(strings.Fields(r.Action+" "+r.SessionID+" "+r.Result+" "+r.Detail), " "))
		}
		want := []string{"desk.sign_in ok reviewer", "desk.admin_page denied /desk/admin/keys",
			"desk.admin_page denied /desk/admin/keys", "desk.admin_page denied /desk/admin/audit",
			"review.view " + vs + " ok",
			"review.decide " + vs + " refused maybe: " + workflows.ErrUnknownDecision.Error(), "review.view " + vs + " ok",
			"review.decide " + vs + " ok approve", "review.view " + vs + " ok"}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("audit log:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

// deskGet GETs a desk page with a session cookie and answers its status.
func deskGet(t *testing.T, u string, session *network.Cookie) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
	res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
