package e2e

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

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
// to the review desk, finds the session in the queue, sees why it is there
// (and no personal data), is refused an invalid decision with the reason,
// approves it, and the workflow moves on. A form without its CSRF token is
// refused.
func TestDeskDecidesAReviewInTheBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil && os.Getenv("CI") == "" {
		t.Skipf("the review desk's browser test needs Chromium at %s (apt-get install -y chromium); .ci/run installs it", chromiumPath)
	}
	forEachDatabase(t, func(t *testing.T, s *stack) {
		vs := "vs_e2e_desk_" + testevent.RandomID(16)
		// Personal data the desk must not show.
		if err := s.store.UpsertContact(context.Background(), store.Contact{SessionID: vs, Email: "desk-ada@example.com",
			FirstName: "Augusta", LastName: "Lovelace", DOB: "1815-12-10"}); err != nil {
			t.Fatal(err)
		}
		s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "under_supported_age"}) // one approval decides
		s.waitRow(vs, workflows.StatusInReview)

		ctx := browser(t)
		desk := s.adminURL + "/desk/"

		// Signed out, the desk sends the browser to the sign-in form; a wrong
		// token is refused.
		step(t, ctx, "sign in with a wrong token",
			chromedp.Navigate(desk),
			chromedp.WaitVisible(chromedp.CSS("#login")),
			chromedp.SendKeys(chromedp.CSS("#reviewer-name"), "ops-desk"),
			chromedp.SendKeys(chromedp.CSS("#token"), "not-the-admin-token"),
			chromedp.Click(chromedp.CSS("#signin")),
			chromedp.WaitVisible(chromedp.CSS("#error")),
		)
		if got := text(t, ctx, "#error"); !strings.Contains(got, "The admin token is not right.") {
			t.Fatalf("wrong token: the page says %q", got)
		}

		// The right token: the queue, with the session in it.
		step(t, ctx, "sign in",
			chromedp.SetValue(chromedp.CSS("#reviewer-name"), "ops-desk"),
			chromedp.SetValue(chromedp.CSS("#token"), adminToken),
			chromedp.Click(chromedp.CSS("#signin")),
			chromedp.WaitVisible(chromedp.CSS("#queue")),
		)
		if got := text(t, ctx, "#reviewer"); got != "ops-desk" {
			t.Errorf("signed in as %q", got)
		}
		if row := text(t, ctx, "#queue"); !strings.Contains(row, vs) || !strings.Contains(row, "non_retryable:under_supported_age") {
			t.Errorf("queue lacks the session: %q", row)
		}

		// The session cookie is HttpOnly and SameSite=Strict.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cookies, err := chromedp.Call(cctx, network.GetCookies, network.GetCookiesParams{URLs: []string{desk}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var session *network.Cookie
		for _, c := range cookies.Cookies {
			if c.Name == "desk_session" {
				session = c
			}
		}
		if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict {
			t.Fatalf("session cookie %+v; want HttpOnly, SameSite=Strict", session)
		}

		// The review: the reason and the failure code, attempts, deadline; no
		// name, email or date of birth.
		step(t, ctx, "open the review",
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

		// Approve: the workflow applies it and the session is verified.
		step(t, ctx, "approve",
			chromedp.Click(chromedp.CSS("#approve")),
			chromedp.WaitVisible(chromedp.CSS("#flash")),
		)
		if got := text(t, ctx, "#flash"); got != "Decided: approve. The session is now verified." {
			t.Errorf("after approving the page says %q", got)
		}
		if got := text(t, ctx, "#status"); !strings.HasPrefix(got, "approved by ops-desk") {
			t.Errorf("status after approving: %q", got)
		}
		s.waitRow(vs, workflows.StatusVerified)
		if c, err := s.store.Review(context.Background(), vs); err != nil || c.Status != store.ReviewApproved || c.Reviewer != "ops-desk" {
			t.Errorf("review case after approving: %+v, %v; want approved by ops-desk", c, err)
		}
	})
}
