package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"

	"identityverification/config"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/workflows"
)

// TestFaultAbuse: hostile input to the webhook (forged, missing, malformed,
// stale and future signatures, oversized and garbled bodies, wrong methods
// and paths) and to the admin API (no or wrong token, control characters in
// every field, in the session id and in a review decision) is refused with
// the status that names the fault, in a JSON body that gives nothing of the
// service's insides away, and leaves nothing behind: no workflow, no sessions
// row, no contact, no email. A genuine delivery replayed byte for byte has no
// effect either: within the signature tolerance it is taken as the duplicate
// it is, after it it is refused as stale.
func TestFaultAbuse(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			var hostile, replay abuseTally
			t.Run("hostile", func(t *testing.T) { hostile = startStack(t, db, nil).abuseHostile(t) })
			t.Run("replay", func(t *testing.T) {
				s := startStack(t, db, config.Map{"STRIPE_WEBHOOK_TOLERANCE": replayTolerance.String()})
				replay = s.abuseReplay(t)
			})

			all := hostile.add(replay)
			codes := slices.Sorted(maps.Keys(all.byStatus))
			var tally []string
			for _, c := range codes {
				tally = append(tally, fmt.Sprintf("%d×%d", c, all.byStatus[c]))
			}
			t.Logf("fault abuse on %s: faults %d, events %d, emails %d, lost %d, duplicates %d, stuck %d, refused %d (%s); "+
				"replays %d (%d accepted as a duplicate, %d refused as stale)",
				db.Name, all.faults, all.events, all.emails, all.lost, all.duplicates, all.stuck, all.refused,
				strings.Join(tally, " "), replay.faults, replay.accepted, replay.refused)
			if hostile.refused != hostile.faults || replay.faults != 2 || replay.accepted != 1 || replay.refused != 1 ||
				all.events != 0 || all.emails != 0 || all.lost != 0 || all.duplicates != 0 || all.stuck != 0 {
				t.Errorf("%d of %d hostile requests refused; of %d replays %d accepted as a duplicate and %d refused as stale; "+
					"%d events and %d emails recorded, %d duplicates, %d lost, %d stuck; "+
					"want all hostile requests refused, one replay accepted and one refused, nothing recorded",
					hostile.refused, hostile.faults, replay.faults, replay.accepted, replay.refused,
					all.events, all.emails, all.duplicates, all.lost, all.stuck)
			}
		})
	}
}

// abuseTally counts what hostile or replayed requests got and left behind.
type abuseTally struct {
	faults   int // requests sent
	refused  int // answered 4xx
	accepted int // answered 2xx (a replay within tolerance)
	byStatus map[int]int
	// What they left behind: workflows or processed events, emails in the
	// ledger or in Mailpit, emails beyond the first to one address,
	// requests that got no answer, workflows left running.
	events, emails, duplicates, lost, stuck int
}

func (a abuseTally) add(b abuseTally) abuseTally {
	out := abuseTally{faults: a.faults + b.faults, refused: a.refused + b.refused, accepted: a.accepted + b.accepted,
		events: a.events + b.events, emails: a.emails + b.emails, duplicates: a.duplicates + b.duplicates,
		lost: a.lost + b.lost, stuck: a.stuck + b.stuck, byStatus: map[int]int{}}
	for _, m := range []map[int]int{a.byStatus, b.byStatus} {
		for c, n := range m {
			out.byStatus[c] += n
		}
	}
	return out
}

// abuseHostile sends the hostile requests and checks each is refused and
// leaves nothing behind.
func (s *stack) abuseHostile(t *testing.T) abuseTally {
	ctx := context.Background()
	reqs := s.abuseRequests()
	client := &http.Client{Timeout: 30 * time.Second}
	n := abuseTally{faults: len(reqs), byStatus: map[int]int{}}
	for _, r := range reqs {
		code, body, err := r.do(ctx, client)
		switch {
		case err != nil:
			n.lost++
			t.Errorf("%s: no answer: %v", r.name, err)
			continue
		case code >= 400 && code < 500:
			n.refused++
			n.byStatus[code]++
		}
		if code != r.want {
			t.Errorf("%s: %d %s; want %d", r.name, code, body, r.want)
		}
		if code >= 400 {
			if leak := abuseLeak(body, r.session); leak != "" {
				t.Errorf("%s: refusal %d %q %s", r.name, code, body, leak)
			}
		}
	}

	// Nothing recorded: no workflow, no row, no contact, no email.
	sessions, seen := []string{}, map[string]bool{}
	for _, r := range reqs {
		if !seen[r.session] {
			seen[r.session] = true
			sessions = append(sessions, r.session)
		}
	}
	for _, vs := range sessions {
		// Temporal's client cannot address an id that is not printable
		// ASCII (it travels in a gRPC header), nor PostgreSQL store a
		// NUL: the service could not have recorded anything under such
		// an id, and a lookup refused for it shows just that.
		unaddressable := strings.ContainsFunc(vs, func(r rune) bool { return r < 0x20 || r >= 0x7f })
		unstorable := strings.Contains(vs, "\x00")
		desc, err := s.temporal.DescribeWorkflowExecution(ctx, workflows.WorkflowID(vs), "")
		var notFound *serviceerror.NotFound
		switch {
		case err == nil:
			n.events++
			if desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				n.stuck++
			}
			t.Errorf("session %q: a workflow exists for a refused request", vs)
		case !errors.As(err, &notFound) && !unaddressable:
			t.Errorf("session %q: describe workflow: %v", vs, err)
		}
		if _, err := s.store.Session(ctx, vs); err == nil {
			t.Errorf("session %q: a sessions row exists for a refused request", vs)
		} else if !errors.Is(err, store.ErrNotFound) && !unstorable {
			t.Errorf("session %q: read row: %v", vs, err)
		}
		if c, err := s.store.Contact(ctx, vs); err == nil {
			t.Errorf("session %q: a contact was recorded for a refused request: %+q", vs, c)
		} else if !errors.Is(err, store.ErrNotFound) && !unstorable {
			t.Errorf("session %q: read contact: %v", vs, err)
		}
	}
	for _, r := range reqs {
		if r.mailbox == "" {
			continue
		}
		if m := len(mails(t, r.mailbox)); m > 0 {
			n.emails += m
			n.duplicates += m - 1
			t.Errorf("%s: %d email(s) to %s", r.name, m, r.mailbox)
		}
	}
	return n
}

// replayTolerance is the signature tolerance of the replay's stack: short,
// so that the same delivery can be replayed both within it and after it.
const replayTolerance = 3 * time.Second

// abuseReplay delivers one genuine verified event, waits until it has taken
// effect, then replays the very same bytes and Stripe-Signature header twice:
// at once, within the tolerance (a duplicate: 200, no effect), and once the
// tolerance has passed (400 timestamp_out_of_tolerance, no effect).
func (s *stack) abuseReplay(t *testing.T) abuseTally {
	ctx := context.Background()
	client := &http.Client{Timeout: 30 * time.Second}
	n := abuseTally{byStatus: map[int]int{}}
	vs, to := s.newSession(store.Contact{})
	payload, err := testevent.Build(testevent.Options{Type: "verified", SessionID: vs})
	if err != nil {
		t.Fatal(err)
	}
	signedAt := time.Now()
	delivery := abuseRequest{session: vs, method: http.MethodPost, url: s.webhookURL, body: payload,
		header: http.Header{"Content-Type": {"application/json"}, "Stripe-Signature": {testevent.Sign(payload, secret, signedAt)}}}
	// The header carries whole seconds: the service measures the skew from those.
	stamped := signedAt.Truncate(time.Second)
	if code, body, err := delivery.do(ctx, client); err != nil || code != http.StatusOK {
		t.Fatalf("the genuine delivery: %d %s %v; want 200", code, body, err)
	}
	// (a) At once, well within the tolerance: the duplicate Stripe could
	// send. It is accepted and must add nothing to the one effect below.
	n.faults++
	if code, body, err := delivery.do(ctx, client); err != nil || code != http.StatusOK {
		t.Errorf("replay within the tolerance: %d %s %v; want 200", code, body, err)
	} else {
		n.accepted++
	}

	// The delivery takes effect: the row verified, one processed event, one
	// email in the ledger and in Mailpit.
	s.waitRow(vs, workflows.StatusVerified)
	eventually(t, "the email ledger to hold one email for "+vs, func() error {
		if es, err := s.store.Emails(ctx, vs); err != nil || len(es) != 1 {
			return fmt.Errorf("%d ledger entries, %v", len(es), err)
		}
		return nil
	})
	waitMails(t, to, 1)
	type effect struct {
		seq          int64
		events       []string
		ledger, sent int
	}
	now := func() effect {
		t.Helper()
		row, err := s.store.Session(ctx, vs)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := s.store.ProcessedEventIDs(ctx, vs, 10)
		if err != nil {
			t.Fatal(err)
		}
		es, err := s.store.Emails(ctx, vs)
		if err != nil {
			t.Fatal(err)
		}
		return effect{seq: row.Seq, events: ids, ledger: len(es), sent: len(mails(t, to))}
	}
	before := now()
	if len(before.events) != 1 || before.ledger != 1 || before.sent != 1 {
		t.Fatalf("after the genuine delivery: events %v, %d ledger entries, %d messages; want one of each",
			before.events, before.ledger, before.sent)
	}
	// compare counts what a replay left behind, against before.
	compare := func(what string) {
		t.Helper()
		after := now()
		if after.seq != before.seq {
			n.events++
			t.Errorf("after %s: the row's seq moved from %d to %d", what, before.seq, after.seq)
		}
		if d := len(after.events) - len(before.events); d != 0 || !slices.Equal(after.events, before.events) {
			n.events += max(d, 1)
			t.Errorf("after %s: processed events %v; want %v", what, after.events, before.events)
		}
		if d := after.ledger - before.ledger; d != 0 {
			n.emails += d
			t.Errorf("after %s: %d ledger entries; want %d", what, after.ledger, before.ledger)
		}
		if d := after.sent - before.sent; d != 0 {
			n.duplicates += d
			t.Errorf("after %s: %d messages to %s; want %d", what, after.sent, to, before.sent)
		}
		before = after
	}
	// closed waits (bounded) for the session's current run to close: a
	// replay within tolerance may start a run that must find nothing to do.
	closed := func(what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			d, err := s.temporal.DescribeWorkflowExecution(ctx, workflows.WorkflowID(vs), "")
			if err != nil {
				t.Errorf("after %s: describe workflow: %v", what, err)
				return
			}
			if d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				return
			}
			if time.Now().After(deadline) {
				n.stuck++
				t.Errorf("after %s: the session's workflow is still running", what)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	replay := func(what string, want int, reason string) {
		t.Helper()
		n.faults++
		code, body, err := delivery.do(ctx, client)
		switch {
		case err != nil:
			n.lost++
			t.Errorf("%s: no answer: %v", what, err)
			return
		case code >= 200 && code < 300:
			n.accepted++
		case code >= 400 && code < 500:
			n.refused++
			n.byStatus[code]++
		}
		if code != want {
			t.Errorf("%s: %d %s; want %d", what, code, body, want)
		}
		if code >= 400 {
			if leak := abuseLeak(body, vs); leak != "" {
				t.Errorf("%s: refusal %d %q %s", what, code, body, leak)
			}
			var v map[string]string
			if json.Unmarshal([]byte(body), &v); v["error"] != reason {
				t.Errorf("%s: refusal %q; want reason %q", what, body, reason)
			}
		}
	}

	// (b) Once the tolerance has passed, which also gives a duplicate time
	// to show.
	time.Sleep(time.Until(stamped.Add(replayTolerance + time.Second)))
	closed("the replay within the tolerance")
	compare("the replay within the tolerance")
	replay("replay after the tolerance", http.StatusBadRequest, "timestamp_out_of_tolerance")
	time.Sleep(time.Second)
	closed("the replay after the tolerance")
	compare("the replay after the tolerance")
	return n
}

// abuseRequest is one hostile request and the refusal it must get.
type abuseRequest struct {
	name    string
	session string // the session it names; nothing may be recorded for it
	mailbox string // what its registration's address contains; no email may go there
	method  string
	url     string
	header  http.Header
	body    []byte
	want    int
}

func (r abuseRequest) do(ctx context.Context, client *http.Client) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, bytes.NewReader(r.body))
	if err != nil {
		return 0, "", err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode >= 400 && !strings.HasPrefix(ct, "application/json") {
		return resp.StatusCode, fmt.Sprintf("(Content-Type %q) %s", ct, bytes.TrimSpace(body)), nil
	}
	return resp.StatusCode, strings.TrimSpace(string(body)), nil
}

// abuseChars are the control characters (and look-alikes: a Unicode line
// separator, an ANSI colour escape) put in every field.
var abuseChars = []struct{ name, s string }{
	{"NUL", "\x00"}, {"LF", "\n"}, {"CR", "\r"}, {"TAB", "\t"}, {"DEL", "\x7f"},
	{"U+2028", "\u2028"}, {"ANSI", "\x1b[31m"},
}

// abuseLeak says what a refusal's body gives away that it should not: it
// must be a JSON object of plain strings, with no Go error text, stack,
// file path or backend name, and must not echo the session it names.
func abuseLeak(body, session string) string {
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return "is not a JSON object"
	}
	lower := strings.ToLower(body)
	for _, w := range []string{"goroutine", ".go:", "panic", "runtime error", "sql", "temporal", "postgres",
		"/tmp/", "/work/", "identityverification/", "stripe-go", "rpc error", "pq:"} {
		if strings.Contains(lower, w) {
			return fmt.Sprintf("echoes %q", w)
		}
	}
	if strings.Contains(body, session) {
		return "echoes the session id"
	}
	for k, x := range v {
		str, ok := x.(string)
		if !ok {
			return fmt.Sprintf("has a non-string %q", k)
		}
		if strings.ContainsFunc(str, func(r rune) bool {
			return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == unicode.ReplacementChar
		}) {
			return fmt.Sprintf("echoes control characters in %q", k)
		}
	}
	return ""
}

// abuseRequests builds the hostile requests, each naming a session of its own.
func (s *stack) abuseRequests() []abuseRequest {
	t := s.t
	t.Helper()
	cfg, err := config.Load(config.Map{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	fresh := func() string { return "vs_abuse_" + testevent.RandomID(16) }
	event := func(vs string, edit func(ev, obj map[string]any)) []byte {
		b, err := testevent.Build(testevent.Options{Type: "verified", SessionID: vs})
		if err != nil {
			t.Fatal(err)
		}
		if edit == nil {
			return b
		}
		var ev map[string]any
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		edit(ev, ev["data"].(map[string]any)["object"].(map[string]any))
		out, _ := json.Marshal(ev)
		return out
	}
	signed := func(payload []byte, secret string, at time.Time) http.Header {
		return http.Header{"Content-Type": {"application/json"}, "Stripe-Signature": {testevent.Sign(payload, secret, at)}}
	}
	var reqs []abuseRequest
	hook := func(name string, want int, method, path string, vs string, body []byte, header http.Header) {
		u := strings.TrimSuffix(s.webhookURL, "/webhooks/stripe") + path
		reqs = append(reqs, abuseRequest{name: "webhook " + name, session: vs, method: method, url: u,
			header: header, body: body, want: want})
	}

	// The webhook.
	vs := fresh()
	p := event(vs, nil)
	hook("forged signature (another secret)", http.StatusBadRequest, http.MethodPost, "/webhooks/stripe", vs, p,
		signed(p, "whsec_attacker_secret", now))
	vs = fresh()
	p = event(vs, nil)
	hook("no Stripe-Signature header", http.StatusBadRequest, http.MethodPost, "/webhooks/stripe", vs, p,
		http.Header{"Content-Type": {"application/json"}})
	for _, h := range []func(p []byte) string{
		func([]byte) string { return "garbage" },
		func(p []byte) string { return strings.Replace(testevent.Sign(p, secret, now), "t=", "t=x", 1) },
		func(p []byte) string { return strings.Split(testevent.Sign(p, secret, now), ",")[0] }, // no v1
		func([]byte) string { return "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1=zz" },
	} {
		vs = fresh()
		p = event(vs, nil)
		header := h(p)
		hook(fmt.Sprintf("malformed Stripe-Signature %q", header), http.StatusBadRequest, http.MethodPost,
			"/webhooks/stripe", vs, p, http.Header{"Content-Type": {"application/json"}, "Stripe-Signature": {header}})
	}
	for _, c := range []struct {
		name string
		at   time.Time
	}{
		{"stale signature (10 min old)", now.Add(-10 * time.Minute)},
		{"future signature (10 min ahead)", now.Add(10 * time.Minute)},
	} {
		vs = fresh()
		p = event(vs, nil)
		hook(c.name, http.StatusBadRequest, http.MethodPost, "/webhooks/stripe", vs, p, signed(p, secret, c.at))
	}
	vs = fresh()
	p = event(vs, func(_, obj map[string]any) {
		obj["metadata"] = map[string]any{"padding": strings.Repeat("a", int(cfg.WebhookMaxBody))}
	})
	hook(fmt.Sprintf("oversized body (%d bytes, limit %d)", len(p), cfg.WebhookMaxBody), http.StatusRequestEntityTooLarge,
		http.MethodPost, "/webhooks/stripe", vs, p, signed(p, secret, now))
	vs = fresh()
	p = []byte(`{"id": "evt_abuse", "type": "identity.verification_session.verified", "data": {"object": {"id": "` + vs + `"`)
	hook("truncated JSON, signed", http.StatusBadRequest, http.MethodPost, "/webhooks/stripe", vs, p, signed(p, secret, now))
	vs = fresh()
	p = append([]byte("\x00\xff\xfe"+vs), bytes.Repeat([]byte{0x9c, 0x1b}, 64)...)
	hook("binary body, signed", http.StatusBadRequest, http.MethodPost, "/webhooks/stripe", vs, p, signed(p, secret, now))
	for _, c := range []struct {
		name string
		edit func(ev, obj map[string]any)
	}{
		{"JSON without the session id", func(_, obj map[string]any) { delete(obj, "id") }},
		{"JSON with another object than a session", func(_, obj map[string]any) { obj["object"] = "charge" }},
		{"JSON without the event id", func(ev, _ map[string]any) { delete(ev, "id") }},
	} {
		vs = fresh()
		p = event(vs, c.edit)
		hook(c.name+", signed", http.StatusBadRequest, http.MethodPost, "/webhooks/stripe", vs, p, signed(p, secret, now))
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		vs = fresh()
		p = event(vs, nil)
		hook(m+" /webhooks/stripe", http.StatusMethodNotAllowed, m, "/webhooks/stripe", vs, p, signed(p, secret, now))
	}
	for _, path := range []string{"/webhooks/stripe/extra", "/webhook/stripe"} {
		vs = fresh()
		p = event(vs, nil)
		hook("POST "+path, http.StatusNotFound, http.MethodPost, path, vs, p, signed(p, secret, now))
	}

	// The admin API.
	bearer := http.Header{"Authorization": {"Bearer " + adminToken}, "Content-Type": {"application/json"}}
	adminReq := func(name string, want int, method, vs, suffix, mailbox string, header http.Header, body any) {
		b, _ := json.Marshal(body)
		reqs = append(reqs, abuseRequest{name: "admin " + name, session: vs, mailbox: mailbox, method: method,
			url: s.adminURL + "/admin/sessions/" + url.PathEscape(vs) + suffix, header: header, body: b, want: want})
	}
	registration := func() (map[string]string, string) {
		box := "abuse-" + testevent.RandomID(12)
		return map[string]string{"email": box + "@example.com", "first_name": "Ada", "last_name": "Lovelace",
			"dob": "1815-12-10", "client_reference_id": "ref_" + testevent.RandomID(8)}, box
	}
	for _, c := range []struct {
		name   string
		header http.Header
	}{
		{"no Authorization header", http.Header{"Content-Type": {"application/json"}}},
		{"a wrong token", http.Header{"Authorization": {"Bearer wrong-token"}}},
		{"the token in another scheme", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+adminToken))}}},
		{"an empty bearer token", http.Header{"Authorization": {"Bearer "}}},
	} {
		reg, box := registration()
		adminReq("registration with "+c.name, http.StatusUnauthorized, http.MethodPut, fresh(), "", box, c.header, reg)
	}
	for _, ch := range abuseChars {
		for _, field := range []string{"email", "first_name", "last_name", "dob", "client_reference_id"} {
			reg, box := registration()
			v := reg[field]
			reg[field] = v[:len(v)/2] + ch.s + v[len(v)/2:]
			if field == "email" {
				reg[field] = box + ch.s + "x@example.com"
			}
			adminReq(fmt.Sprintf("registration with %s in %s", ch.name, field), http.StatusBadRequest,
				http.MethodPut, fresh(), "", box, bearer, reg)
		}
		id := "vs_abuse" + ch.s + testevent.RandomID(16)
		reg, box := registration()
		adminReq("registration with "+ch.name+" in the session id", http.StatusBadRequest, http.MethodPut, id, "", box, bearer, reg)
		adminReq("state with "+ch.name+" in the session id", http.StatusBadRequest, http.MethodGet, id, "", "", bearer, nil)
		adminReq("review with "+ch.name+" in the session id", http.StatusBadRequest, http.MethodPost, id, "/review", "", bearer,
			workflows.ReviewDecision{Decision: workflows.DecisionApprove, Reviewer: "ops-eve"})
		for _, d := range []map[string]string{
			{"decision": "approve", "reviewer": "ops" + ch.s + "eve"},
			{"decision": "approve" + ch.s, "reviewer": "ops-eve"},
		} {
			field := "reviewer"
			if d["decision"] != "approve" {
				field = "decision"
			}
			adminReq(fmt.Sprintf("review with %s in %s", ch.name, field), http.StatusBadRequest, http.MethodPost,
				fresh(), "/review", "", bearer, d)
		}
	}
	return reqs
}
