package desk_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"identityverification/desk"
	"identityverification/store"
	"identityverification/workflows"
)

type cases struct{ open []store.DeskCase }

func (c *cases) DeskOpenCases(context.Context, int) ([]store.DeskCase, error) { return c.open, nil }
func (c *cases) DeskCase(_ context.Context, id string) (store.DeskCase, error) {
	for _, x := range c.open {
		if x.SessionID == id {
			return x, nil
		}
	}
	return store.DeskCase{}, store.ErrNotFound
}

// temporalFake records the updates and answers them with err, or a state.
type temporalFake struct {
	updates []client.UpdateWorkflowOptions
	err     error
}

func (f *temporalFake) UpdateWorkflow(_ context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	f.updates = append(f.updates, o)
	return handle{err: f.err}, nil
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

type handle struct{ err error }

func (handle) WorkflowID() string { return "" }
func (handle) RunID() string      { return "" }
func (handle) UpdateID() string   { return "" }
func (h handle) Get(_ context.Context, v any) error {
	if h.err != nil {
		return h.err
	}
	*(v.(*workflows.State)) = workflows.State{Status: workflows.StatusVerified}
	return nil
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

type browser struct {
	t   *testing.T
	srv *httptest.Server
	c   *http.Client
}

func newDesk(t *testing.T, cs *cases, tf *temporalFake) *browser {
	return newDeskAt(t, cs, tf, time.Now)
}

func newDeskAt(t *testing.T, cs *cases, tf *temporalFake, now func() time.Time) *browser {
	t.Helper()
	d := &desk.Desk{Token: "admin-secret", Cases: cs, Temporal: tf, Now: now, SessionTTL: time.Hour,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, srv: srv, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(method, b.srv.URL+path, strings.NewReader(form.Encode()))
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func csrf(t *testing.T, body string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in %s", body)
	}
	return m[1]
}

// signIn signs in as reviewer and returns the session's CSRF token.
func (b *browser) signIn(token, reviewer string) (*http.Response, string) {
	b.t.Helper()
	_, body := b.do("GET", "/desk/login", nil)
	return b.do("POST", "/desk/login", url.Values{"csrf": {csrf(b.t, body)}, "token": {token}, "reviewer": {reviewer}})
}

func TestSignIn(t *testing.T) {
	b := newDesk(t, &cases{}, &temporalFake{})
	if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/desk/login" {
		t.Fatalf("GET /desk/ signed out: %d %s; want 303 to the sign-in page", res.StatusCode, res.Header.Get("Location"))
	}
	if res, body := b.signIn("wrong", "ops-eve"); res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "The admin token is not right.") {
		t.Fatalf("wrong token: %d %s", res.StatusCode, body)
	}
	if res, body := b.signIn("admin-secret", "ops\x00eve"); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, workflows.ErrBadReviewer.Error()) {
		t.Fatalf("bad reviewer: %d %s", res.StatusCode, body)
	}
	// Without the form's token, or with a made-up one, sign-in is refused.
	for _, tok := range []string{"", "forged"} {
		if res, _ := b.do("POST", "/desk/login", url.Values{"csrf": {tok}, "token": {"admin-secret"}, "reviewer": {"ops-eve"}}); res.StatusCode != http.StatusForbidden {
			t.Fatalf("sign-in with CSRF %q: %d; want 403", tok, res.StatusCode)
		}
	}
	res, _ := b.signIn("admin-secret", "ops-eve")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/desk/" {
		t.Fatalf("sign-in: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "desk_session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Secure || len(session.Value) < 40 {
		t.Fatalf("session cookie %+v; want HttpOnly, SameSite=Strict, not Secure over http, random", session)
	}
	if res, body := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusOK || !strings.Contains(body, "No review is open.") ||
		!strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("queue: %d %v %s", res.StatusCode, res.Header, body)
	}
}

func TestSessionCookieIsSecureBehindHTTPS(t *testing.T) {
	b := newDesk(t, &cases{}, &temporalFake{})
	_, body := b.do("GET", "/desk/login", nil)
	req, _ := http.NewRequest("POST", b.srv.URL+"/desk/login", strings.NewReader(url.Values{"csrf": {csrf(t, body)},
		"token": {"admin-secret"}, "reviewer": {"ops-eve"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-Proto", "https")
	res, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for _, c := range res.Cookies() {
		if c.Name == "desk_session" && !c.Secure {
			t.Errorf("session cookie over https is not Secure: %+v", c)
		}
	}
}

func TestQueueAndDecision(t *testing.T) {
	now := time.Now()
	cs := &cases{open: []store.DeskCase{
		{SessionID: "vs_old", Reason: "non_retryable:selfie_manipulated", Status: "open", LastErrorCode: "selfie_manipulated",
			Attempts: 1, OpenedAt: now.Add(-3 * time.Hour), DeadlineAt: now.Add(-time.Hour)},
		{SessionID: "vs_new", Reason: "mismatch<script>alert(1)</script>", MismatchedFields: []string{"dob", "last_name"},
			Status: "open", Attempts: 2, OpenedAt: now.Add(-5 * time.Minute), DeadlineAt: now.Add(47 * time.Hour)},
	}}
	tf := &temporalFake{}
	b := newDesk(t, cs, tf)
	b.signIn("admin-secret", "ops-eve")
	res, body := b.do("GET", "/desk/", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("queue: %d", res.StatusCode)
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, "mismatch&lt;script&gt;") {
		t.Errorf("the reason is not escaped: %s", body)
	}
	if i, j := strings.Index(body, "vs_old"), strings.Index(body, "vs_new"); i < 0 || j < i {
		t.Errorf("queue not in the store's order (oldest first): %s", body)
	}
	for _, want := range []string{"dob, last_name", "selfie_manipulated", "3 hours", "overdue"} {
		if !strings.Contains(body, want) {
			t.Errorf("queue lacks %q: %s", want, body)
		}
	}
	_, body = b.do("GET", "/desk/reviews/vs_old", nil)
	tok := csrf(t, body)

	// A form without its token, or with another, is refused and sends nothing.
	for _, bad := range []string{"", "x" + tok} {
		if res, _ := b.do("POST", "/desk/reviews/vs_old", url.Values{"csrf": {bad}, "decision": {"approve"}}); res.StatusCode != http.StatusForbidden {
			t.Errorf("decision with CSRF %q: %d; want 403", bad, res.StatusCode)
		}
	}
	if len(tf.updates) != 0 {
		t.Fatalf("%d updates sent without a CSRF token", len(tf.updates))
	}

	// A refusal shows the validator's reason.
	tf.err = temporal.NewApplicationError("decision must be approve or reject", workflows.ErrTypeReviewRefused)
	res, body = b.do("POST", "/desk/reviews/vs_old", url.Values{"csrf": {tok}, "decision": {"maybe"}})
	if res.StatusCode != http.StatusConflict || !strings.Contains(body, "The decision was refused: decision must be approve or reject.") {
		t.Errorf("refused decision: %d %s", res.StatusCode, body)
	}
	tf.err = nil
	res, _ = b.do("POST", "/desk/reviews/vs_old", url.Values{"csrf": {tok}, "decision": {"approve"}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/desk/reviews/vs_old" {
		t.Fatalf("decision: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	last := tf.updates[len(tf.updates)-1]
	d := last.Args[0].(workflows.ReviewDecision)
	if last.UpdateName != workflows.UpdateReviewDecision || last.WorkflowID != workflows.WorkflowID("vs_old") ||
		d != (workflows.ReviewDecision{Decision: "approve", Reviewer: "ops-eve", Subject: workflows.SubjectAdminToken}) || last.WaitForStage != client.WorkflowUpdateStageCompleted {
		t.Errorf("update %+v", last)
	}
	if _, body = b.do("GET", "/desk/reviews/vs_old", nil); !strings.Contains(body, "Decided: approve. The session is now verified.") {
		t.Errorf("no confirmation after the decision: %s", body)
	}
	if res, _ := b.do("GET", "/desk/reviews/vs_nope", nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown review: %d", res.StatusCode)
	}

	// Signing out ends the session: the old token is worthless.
	b.do("POST", "/desk/logout", url.Values{"csrf": {tok}})
	if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusSeeOther {
		t.Errorf("after sign-out: %d; want 303 to the sign-in page", res.StatusCode)
	}
	n := len(tf.updates)
	if res, _ := b.do("POST", "/desk/reviews/vs_old", url.Values{"csrf": {tok}, "decision": {"approve"}}); res.StatusCode != http.StatusForbidden || len(tf.updates) != n {
		t.Errorf("decision after sign-out: %d", res.StatusCode)
	}
}

func TestSessionsExpire(t *testing.T) {
	now := time.Now()
	b := newDeskAt(t, &cases{}, &temporalFake{}, func() time.Time { return now })
	b.signIn("admin-secret", "ops-eve")
	if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusOK {
		t.Fatalf("signed in: %d", res.StatusCode)
	}
	now = now.Add(time.Hour + time.Second)
	if res, _ := b.do("GET", "/desk/", nil); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/desk/login" {
		t.Fatalf("after the session's hour: %d %s; want 303 to the sign-in page", res.StatusCode, res.Header.Get("Location"))
	}
	// A sign-in form older than its half hour is refused too.
	_, body := b.do("GET", "/desk/login", nil)
	now = now.Add(31 * time.Minute)
	if res, _ := b.do("POST", "/desk/login", url.Values{"csrf": {csrf(t, body)}, "token": {"admin-secret"}, "reviewer": {"ops-eve"}}); res.StatusCode != http.StatusForbidden {
		t.Fatalf("stale sign-in form: %d; want 403", res.StatusCode)
	}
}
