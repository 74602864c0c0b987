package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"identityverification/config"
	"identityverification/devstack"
	"identityverification/store"
	"identityverification/testevent"
	"identityverification/workflows"
)

// sessionProxy records the requests for verification sessions in front of
// stripe-mock and stands in for the state stripe-mock cannot keep: a
// retrieved session waits for the user (requires_input) and has a URL.
type sessionProxy struct {
	URL string
	srv *httptest.Server

	mu      sync.Mutex
	gets    map[string]int // GETs of each session
	creates []url.Values   // the forms of the sessions created
}

func startSessionProxy(t *testing.T) *sessionProxy {
	t.Helper()
	target, _ := url.Parse(components.stripe.URL)
	p := &sessionProxy{gets: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		id, ok := strings.CutPrefix(req.URL.Path, "/v1/identity/verification_sessions/")
		if req.Method != http.MethodGet || !ok || strings.Contains(id, "/") || resp.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var vs map[string]any
		if err := json.Unmarshal(body, &vs); err == nil {
			vs["status"], vs["url"] = "requires_input", "https://verify.stripe.com/start/test_"+id
			body, _ = json.Marshal(vs)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		resp.Header.Del("Content-Encoding")
		return nil
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.URL.Path, "/v1/identity/verification_sessions/"); ok && r.Method == http.MethodGet {
			p.mu.Lock()
			p.gets[strings.SplitN(id, "/", 2)[0]]++
			p.mu.Unlock()
		}
		if r.URL.Path == "/v1/identity/verification_sessions" && r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			form, _ := url.ParseQuery(string(body))
			p.mu.Lock()
			p.creates = append(p.creates, form)
			p.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	p.URL = p.srv.URL
	return p
}

func (p *sessionProxy) fetches(sessionID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gets[sessionID]
}

var retryLinkShape = regexp.MustCompile(`http://\S+/verify/retry/\S+`)

// retryLink is the retry link in an email.
func retryLink(t *testing.T, m devstack.Message) string {
	t.Helper()
	link := retryLinkShape.FindString(m.Text)
	if link == "" {
		t.Fatalf("no retry link in %q:\n%s", m.Subject, m.Text)
	}
	return link
}

// click follows a retry link once, without following the redirect, and
// checks the answer's status, that Stripe was asked for the session's URL
// only on a 303, and that every refusal is a page.
func click(t *testing.T, p *sessionProxy, sessionID, link string, want int) string {
	t.Helper()
	before := p.fetches(sessionID)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Errorf("%s: %d; want %d\n%s", link, resp.StatusCode, want, body)
	}
	calls := p.fetches(sessionID) - before
	loc := resp.Header.Get("Location")
	if want == http.StatusSeeOther {
		if calls != 1 || loc != "https://verify.stripe.com/start/test_"+sessionID {
			t.Errorf("303 to %q after %d calls to Stripe; want its session URL after 1", loc, calls)
		}
	} else {
		if calls != 0 {
			t.Errorf("a refused link (%d) reached Stripe %d times", resp.StatusCode, calls)
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "<p>") {
			t.Errorf("refusal %d is not a page: %q", resp.StatusCode, body)
		}
	}
	return loc
}

func failAttempt(s *stack, sessionID string) {
	s.send(testevent.Options{Type: "requires_input", SessionID: sessionID, ErrorCode: "document_expired",
		EventID: "evt_" + testevent.RandomID(24)})
}

func TestRetryLinksStayInTheirLane(t *testing.T) {
	p := startSessionProxy(t)
	forEachDatabaseWith(t, config.Map{"STRIPE_API_BASE": p.URL, "MAX_ATTEMPTS": "3"}, func(t *testing.T, s *stack) {
		vs, to := s.newSession(store.Contact{FirstName: "Ada"})

		failAttempt(s, vs)
		s.waitState(vs, "one attempt", func(st workflows.State) bool { return st.Attempts == 1 })
		link1 := retryLink(t, waitMails(t, to, 1)[0])
		t.Run("valid", func(t *testing.T) { click(t, p, vs, link1, http.StatusSeeOther) })
		t.Run("tampered", func(t *testing.T) {
			click(t, p, vs, strings.Replace(link1, "token=", "token=x", 1), http.StatusForbidden)
			click(t, p, vs, strings.Replace(link1, "n=1", "n=2", 1), http.StatusForbidden)
			click(t, p, vs, strings.Replace(link1, "exp=", "exp=9", 1), http.StatusForbidden)
		})

		failAttempt(s, vs)
		s.waitState(vs, "two attempts", func(st workflows.State) bool { return st.Attempts == 2 })
		link2 := retryLink(t, waitMails(t, to, 2)[1])
		t.Run("old attempt", func(t *testing.T) {
			click(t, p, vs, link1, http.StatusGone)
			click(t, p, vs, link2, http.StatusSeeOther)
		})

		failAttempt(s, vs) // the third: the first method is used up
		s.waitState(vs, "the alternate method", func(st workflows.State) bool {
			return st.Escalation == workflows.EscalationAlternate && st.Status == workflows.StatusRequiresInput
		})
		var offer string // the offer of the alternate method, whose link opens it
		eventually(t, "the alternate method's email", func() error {
			for _, m := range mails(t, to) {
				if l := retryLinkShape.FindString(m.Text); strings.Contains(l, "m=a") {
					offer = l
					return nil
				}
			}
			return errors.New("not yet")
		})
		t.Run("after escalation", func(t *testing.T) {
			click(t, p, vs, link2, http.StatusConflict)
			click(t, p, vs, offer, http.StatusSeeOther)
		})

		t.Run("rate limited", func(t *testing.T) {
			vs2, to2 := s.newSession(store.Contact{FirstName: "Ada"})
			failAttempt(s, vs2)
			s.waitState(vs2, "one attempt", func(st workflows.State) bool { return st.Attempts == 1 })
			link := retryLink(t, waitMails(t, to2, 1)[0])
			for range 5 {
				click(t, p, vs2, link, http.StatusSeeOther)
			}
			click(t, p, vs2, link, http.StatusTooManyRequests)
		})
	})
}

func TestRetryLinkExpires(t *testing.T) {
	p := startSessionProxy(t)
	forEachDatabaseWith(t, config.Map{"STRIPE_API_BASE": p.URL, "RETRY_LINK_TTL": "2s"}, func(t *testing.T, s *stack) {
		vs, to := s.newSession(store.Contact{FirstName: "Ada"})
		failAttempt(s, vs)
		s.waitState(vs, "one attempt", func(st workflows.State) bool { return st.Attempts == 1 })
		link := retryLink(t, waitMails(t, to, 1)[0])
		exp, err := url.Parse(link)
		if err != nil {
			t.Fatal(err)
		}
		sec, _ := strconv.ParseInt(exp.Query().Get("exp"), 10, 64)
		time.Sleep(time.Until(time.Unix(sec, 0)) + 100*time.Millisecond)
		click(t, p, vs, link, http.StatusGone)
	})
}
