package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"identityverification/activities"
	"identityverification/devstack"
	"identityverification/email"
	"identityverification/retrylink"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/stripeapi"
)

// Real components for the whole package: Mailpit (refusing recipients
// outside example.com, as a real server refuses unknown mailboxes) and
// stripe-mock.
var (
	mailpit *devstack.Mailpit
	stripe  *devstack.StripeMock
	// A fixed clock: the links' expiry is part of the URL.
	links = retrylink.New("https://verify.example.com", "test-link-secret").
		WithClock(func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) })
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		ctx := context.Background()
		dir, err := os.MkdirTemp("", "identity-activities-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		wd, _ := os.Getwd()
		root, err := devstack.Root(wd)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		start := func() error {
			mp, err := devstack.Tool(ctx, root, "mailpit", os.Stderr)
			if err != nil {
				return err
			}
			sm, err := devstack.Tool(ctx, root, "stripemock", os.Stderr)
			if err != nil {
				return err
			}
			ports := make([]int, 3)
			for i := range ports {
				if ports[i], err = devstack.FreePort(); err != nil {
					return err
				}
			}
			if mailpit, err = devstack.StartMailpit(ctx, mp, dir, ports[0], ports[1],
				"--smtp-allowed-recipients", `@example\.com$`); err != nil {
				return err
			}
			stripe, err = devstack.StartStripeMock(ctx, sm, dir, ports[2])
			return err
		}
		if err := start(); err != nil {
			fmt.Fprintln(os.Stderr, "activities:", err)
			return 1
		}
		defer mailpit.Stop()
		defer stripe.Stop()
		return m.Run()
	}())
}

// env is one database's activities in the SDK's activity test environment.
type env struct {
	t     *testing.T
	store *store.Store
	acts  *activities.Activities
	tenv  *testsuite.TestActivityEnvironment
}

func forEachDatabase(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			st, err := store.Open(context.Background(), db.URL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			sender, err := email.NewSender("smtp://"+mailpit.SMTPAddr, "identity@example.com")
			if err != nil {
				t.Fatal(err)
			}
			acts := &activities.Activities{Store: st, Mailer: sender, Stripe: stripeapi.New("sk_test_activities", stripe.URL),
				OpsEmail: "ops-" + db.Name + "@example.com", Links: links}
			var s testsuite.WorkflowTestSuite
			tenv := s.NewTestActivityEnvironment()
			tenv.RegisterActivity(acts)
			fn(t, &env{t: t, store: st, acts: acts, tenv: tenv})
		})
	}
}

func unique(prefix string) string { return fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano()) }

func (e *env) register(c store.Contact) store.Contact {
	e.t.Helper()
	if err := e.store.UpsertContact(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) sendEmail(req activities.EmailRequest) (activities.EmailResult, error) {
	v, err := e.tenv.ExecuteActivity(e.acts.SendEmail, req)
	if err != nil {
		return activities.EmailResult{}, err
	}
	var res activities.EmailResult
	return res, v.Get(&res)
}

func TestSendEmailDeliversOnceThroughSMTP(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_mail")
		to := unique("ada") + "@example.com"
		e.register(store.Contact{SessionID: vs, Email: to, FirstName: "Ada"})
		req := activities.EmailRequest{SessionID: vs, Kind: email.KindFailed, Ref: "document-2", Attempt: 2, MaxAttempts: 3, Reason: "The document is expired."}

		for range 2 { // the second call is a retried activity
			res, err := e.sendEmail(req)
			if err != nil || res.Status != store.EmailSent {
				t.Fatalf("send: %+v, %v", res, err)
			}
		}
		msgs, err := mailpit.Messages(context.Background(), to)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 1 {
			t.Fatalf("%d messages in Mailpit; want exactly 1", len(msgs))
		}
		m := msgs[0]
		if m.Subject != "We could not verify your document" || m.To[0].Address != to {
			t.Errorf("subject %q to %v", m.Subject, m.To)
		}
		link := links.URL(vs, false, 2) // the first method's second failure
		for _, want := range []string{"Hello Ada", "The document is expired.", "attempt 2 of 3", link} {
			if !strings.Contains(m.Text, want) {
				t.Errorf("text lacks %q:\n%s", want, m.Text)
			}
		}
		if !strings.Contains(m.HTML, `href="`+template.HTMLEscapeString(link)+`"`) {
			t.Errorf("HTML lacks the retry link:\n%s", m.HTML)
		}
		rec, err := e.store.Email(context.Background(), req.Key())
		if err != nil || rec.Status != store.EmailSent {
			t.Errorf("ledger = %+v, %v", rec, err)
		}
	})
}

func TestSendEmailWithoutAContactIsSkippedAndRecorded(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_nocontact")
		res, err := e.sendEmail(activities.EmailRequest{SessionID: vs, Kind: email.KindVerified})
		if err != nil || res.Status != store.EmailSkipped || !strings.Contains(res.Detail, "no contact") {
			t.Fatalf("result %+v, %v; want skipped for no contact", res, err)
		}
		recs, _ := e.store.Emails(context.Background(), vs)
		if len(recs) != 1 || recs[0].Status != store.EmailSkipped {
			t.Errorf("ledger = %+v", recs)
		}
	})
}

// A warning that the session closes soon, whose send came after the
// session closed (it waited out an outage), is skipped and recorded.
func TestAnExpiryWarningPastItsDeadlineIsSkipped(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_late_warning")
		if err := e.store.UpsertContact(context.Background(), store.Contact{SessionID: vs, Email: "late@example.com"}); err != nil {
			t.Fatal(err)
		}
		res, err := e.sendEmail(activities.EmailRequest{SessionID: vs, Kind: email.KindExpiryWarning, Ref: "3",
			Deadline: time.Now().Add(-time.Minute)})
		if err != nil || res.Status != store.EmailSkipped || !strings.Contains(res.Detail, "expired") {
			t.Fatalf("result %+v, %v; want skipped: the session expired", res, err)
		}
		res, err = e.sendEmail(activities.EmailRequest{SessionID: vs, Kind: email.KindExpiryWarning, Ref: "4",
			Deadline: time.Now().Add(time.Hour)})
		if err != nil || res.Status != store.EmailSent {
			t.Fatalf("a warning before its deadline: %+v, %v; want sent", res, err)
		}
	})
}

func TestOpsNoticesGoToTheOpsAddress(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_ops")
		deadline := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
		res, err := e.sendEmail(activities.EmailRequest{SessionID: vs, Kind: email.KindOpsReviewOpened,
			Reason: "mismatch", Fields: []string{"last_name", "dob"}, Deadline: deadline})
		if err != nil || res.Status != store.EmailSent {
			t.Fatalf("%+v, %v", res, err)
		}
		msgs, _ := mailpit.Messages(context.Background(), e.acts.OpsEmail)
		var found bool
		for _, m := range msgs {
			if m.Subject == "Review needed: "+vs && strings.Contains(m.Text, "differing fields: last_name, dob") &&
				strings.Contains(m.Text, "Sat, 28 Nov 2026 09:00:00 UTC") {
				found = true
			}
		}
		if !found {
			t.Errorf("no ops notice for %s among %d messages", vs, len(msgs))
		}
	})
}

func TestARefusedRecipientIsRecordedAndNotRetried(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_refused")
		e.register(store.Contact{SessionID: vs, Email: "nobody@refused.test"})
		_, err := e.sendEmail(activities.EmailRequest{SessionID: vs, Kind: email.KindVerified})
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != activities.ErrTypeEmailRefused {
			t.Fatalf("err = %v; want a non-retryable %s", err, activities.ErrTypeEmailRefused)
		}
		if strings.Contains(err.Error(), "nobody@refused.test") {
			t.Errorf("the error names the recipient: %v", err)
		}
		recs, _ := e.store.Emails(context.Background(), vs)
		if len(recs) != 1 || recs[0].Status != store.EmailRefused {
			t.Errorf("ledger = %+v; want refused", recs)
		}
	})
}

// givingUp is a Mailer whose caller gives up the moment the SMTP server
// has accepted the message (a local activity's timeout, a workflow task
// failing under it).
type givingUp struct {
	activities.Mailer
	cancel context.CancelFunc
}

func (g givingUp) Send(ctx context.Context, m email.Message) error {
	err := g.Mailer.Send(ctx, m)
	g.cancel()
	return err
}

// An email the SMTP server accepted is in the ledger even when its caller
// gave up meanwhile: no retry of its key sends it again, and a run that no
// longer owes it (a stale email dropped) leaves no message nobody recorded.
func TestAnAcceptedEmailIsRecordedAfterItsCallerGaveUp(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_gaveup")
		to := unique("grace") + "@example.com"
		e.register(store.Contact{SessionID: vs, Email: to})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		acts := *e.acts
		acts.Mailer = givingUp{Mailer: e.acts.Mailer, cancel: cancel}
		req := activities.EmailRequest{SessionID: vs, Kind: email.KindVerified}
		if _, err := acts.SendEmail(ctx, req); err != nil {
			t.Fatalf("send: %v", err)
		}
		if ctx.Err() == nil {
			t.Fatal("the caller did not give up: the test proves nothing")
		}
		rec, err := e.store.Email(context.Background(), req.Key())
		if err != nil || rec.Status != store.EmailSent {
			t.Fatalf("ledger = %+v, %v; want sent", rec, err)
		}
		if res, err := e.sendEmail(req); err != nil || res.Status != store.EmailSent { // the retry
			t.Fatalf("retry: %+v, %v", res, err)
		}
		msgs, err := mailpit.Messages(context.Background(), to)
		if err != nil || len(msgs) != 1 {
			t.Errorf("%d messages in Mailpit (%v); want exactly 1", len(msgs), err)
		}
	})
}

func TestATransientSMTPFailureIsRetryable(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		port, _ := devstack.FreePort() // nothing listens there
		sender, _ := email.NewSender(fmt.Sprintf("smtp://127.0.0.1:%d", port), "identity@example.com")
		e.acts.Mailer = sender
		vs := unique("vs_transient")
		e.register(store.Contact{SessionID: vs, Email: "user@example.com"})
		_, err := e.sendEmail(activities.EmailRequest{SessionID: vs, Kind: email.KindVerified})
		var appErr *temporal.ApplicationError
		if err == nil || (errors.As(err, &appErr) && appErr.NonRetryable()) {
			t.Fatalf("err = %v; want a retryable error", err)
		}
		if recs, _ := e.store.Emails(context.Background(), vs); len(recs) != 0 {
			t.Errorf("ledger = %+v; a transient failure must leave no entry, so the retry sends", recs)
		}
	})
}

func TestCompareVerifiedOutputsAgainstStripeMock(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		compare := func(vs string) activities.Comparison {
			t.Helper()
			v, err := e.tenv.ExecuteActivity(e.acts.CompareVerifiedOutputs, vs)
			if err != nil {
				t.Fatal(err)
			}
			var c activities.Comparison
			v.Get(&c)
			return c
		}
		// stripe-mock answers every session verified with empty outputs.
		vs := unique("vs_expect")
		e.register(store.Contact{SessionID: vs, Email: "a@example.com", LastName: "Lovelace", DOB: "1815-12-10"})
		if c := compare(vs); c.Match || !c.Compared || strings.Join(c.MismatchedFields, ",") != "last_name,dob" {
			t.Errorf("comparison = %+v; want last_name and dob differing", c)
		}
		nothing := unique("vs_nothing")
		e.register(store.Contact{SessionID: nothing, Email: "a@example.com"})
		if c := compare(nothing); !c.Match || c.Compared {
			t.Errorf("comparison without expectations = %+v; want a match, not compared", c)
		}
	})
}

func TestStripeActivitiesAgainstStripeMock(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		if _, err := e.tenv.ExecuteActivity(e.acts.CancelSession, "vs_cancel_me"); err != nil {
			t.Errorf("cancel: %v", err)
		}
		if _, err := e.tenv.ExecuteActivity(e.acts.SwitchSessionType, activities.SwitchInput{SessionID: "vs_x", Type: "id_number"}); err != nil {
			t.Errorf("switch: %v", err)
		}
		v, err := e.tenv.ExecuteActivity(e.acts.FetchSessionStatus, "vs_status")
		var status string
		if err != nil || v.Get(&status) != nil || status == "" {
			t.Errorf("status = %q, %v", status, err)
		}
		// stripe-mock validates parameters like Stripe: a bad type is a 400.
		_, err = e.tenv.ExecuteActivity(e.acts.SwitchSessionType, activities.SwitchInput{SessionID: "vs_x", Type: "carrier_pigeon"})
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != activities.ErrTypeStripeRefused {
			t.Errorf("bad type: err = %v; want non-retryable %s", err, activities.ErrTypeStripeRefused)
		}
		if err != nil && strings.Contains(err.Error(), "sk_test_activities") {
			t.Errorf("the error shows the API key: %v", err)
		}
	})
}

// Stripe-mock never answers 429 or 5xx, so those come from a stand-in server.
func TestStripeRateLimitsAndServerErrorsAreRetryable(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusServiceUnavailable} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":{"type":"api_error","message":"try later"}}`)
		}))
		acts := &activities.Activities{Stripe: stripeapi.New("sk_test_x", srv.URL)}
		var s testsuite.WorkflowTestSuite
		tenv := s.NewTestActivityEnvironment()
		tenv.RegisterActivity(acts)
		_, err := tenv.ExecuteActivity(acts.CancelSession, "vs_busy")
		var appErr *temporal.ApplicationError
		if err == nil || (errors.As(err, &appErr) && appErr.NonRetryable()) {
			t.Errorf("HTTP %d: err = %v; want retryable", code, err)
		}
		srv.Close()
	}
}

func TestReviewActivities(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_review")
		open := activities.ReviewInput{SessionID: vs, Reason: "attempts_exhausted", OpenedAt: time.Now().UTC()}
		for range 2 { // opening twice is a no-op
			if _, err := e.tenv.ExecuteActivity(e.acts.OpenReview, open); err != nil {
				t.Fatal(err)
			}
		}
		decision := activities.ReviewInput{SessionID: vs, Status: store.ReviewApproved, Reviewer: "ops", DecidedAt: time.Now().UTC()}
		for range 2 { // a retried decision is a no-op
			if _, err := e.tenv.ExecuteActivity(e.acts.DecideReview, decision); err != nil {
				t.Fatalf("decide: %v", err)
			}
		}
		decision.Status = store.ReviewRejected
		_, err := e.tenv.ExecuteActivity(e.acts.DecideReview, decision)
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != activities.ErrTypeReviewClosed || !appErr.NonRetryable() {
			t.Errorf("deciding a closed case: %v; want non-retryable %s", err, activities.ErrTypeReviewClosed)
		}
	})
}

func TestTransitionsLoadAndRedactionThroughActivities(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_flow")
		e.register(store.Contact{SessionID: vs, Email: "flow@example.com", FirstName: "Flo"})
		// The workflow's state as it stores it, with a field of its own
		// (alternate_attempts, review) that the columns do not hold.
		state := `{"session_id":"` + vs + `","status":"in_review","stripe_status":"requires_input","attempts":1,` +
			`"alternate_attempts":2,"last_error_code":"document_expired","escalation":"manual_review","seq":1,` +
			`"review":{"reason":"attempts_exhausted","opened_at":"2026-11-26T09:00:00Z","deadline_at":"2026-11-28T09:00:00Z"}}`
		tr := activities.Transition{SessionID: vs, Key: "evt_1", EventID: "evt_1", EventType: "identity.verification_session.requires_input",
			From: "new", Note: "in review", State: json.RawMessage(state)}
		for range 2 {
			if _, err := e.tenv.ExecuteActivity(e.acts.RecordTransition, tr); err != nil {
				t.Fatal(err)
			}
		}
		v, err := e.tenv.ExecuteActivity(e.acts.LoadSession, vs)
		if err != nil {
			t.Fatal(err)
		}
		var snap activities.Snapshot
		v.Get(&snap)
		if !snap.Known || !reflect.DeepEqual(snap.ProcessedEventIDs, []string{"evt_1"}) || !jsonEqual(t, snap.State, state) {
			t.Errorf("snapshot = %+v %s; want known, [evt_1], the state stored as it was", snap, snap.State)
		}
		row, err := e.store.Session(context.Background(), vs)
		if err != nil {
			t.Fatal(err)
		}
		if want := (store.Session{SessionID: vs, Status: "in_review", StripeStatus: "requires_input", Attempts: 3,
			LastErrorCode: "document_expired", Escalation: "manual_review", Seq: 1, HasContact: true, State: row.State}); !reflect.DeepEqual(row, want) {
			t.Errorf("row = %+v\nwant %+v", row, want)
		}
		audit, _ := e.store.Audit(context.Background(), vs)
		if len(audit) != 1 || audit[0].From != "new" || audit[0].To != "in_review" || audit[0].Note != "in review" {
			t.Errorf("audit = %+v; want one transition from new to in_review", audit)
		}
		if _, err := e.tenv.ExecuteActivity(e.acts.RedactSession, vs); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Contact(context.Background(), vs); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("contact after redaction: %v", err)
		}
		v, _ = e.tenv.ExecuteActivity(e.acts.LoadSession, "vs_never_seen")
		var none activities.Snapshot
		v.Get(&none)
		if none.Known {
			t.Errorf("unknown session loaded as known: %+v", none)
		}
	})
}

func TestATransitionWithBadStateIsRefusedForGood(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		_, err := e.tenv.ExecuteActivity(e.acts.RecordTransition, activities.Transition{SessionID: "vs_bad", Key: "k",
			State: json.RawMessage(`{"seq": "not a number"}`)})
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != activities.ErrTypeStoreRejected || !appErr.NonRetryable() {
			t.Errorf("err = %v; want non-retryable %s", err, activities.ErrTypeStoreRejected)
		}
	})
}

// jsonEqual reports whether two JSON documents hold the same values.
func jsonEqual(t *testing.T, a []byte, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

func TestNormalizeName(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"  José  GARCÍA ", "jose garcia"},
		{"Zoë", "ZOE"},
		{"Łukasz", "łukasz"},
		{"Anne-Marie", "anne-marie"},
	} {
		if activities.NormalizeName(tc.a) != activities.NormalizeName(tc.b) {
			t.Errorf("%q and %q should compare equal (%q vs %q)", tc.a, tc.b, activities.NormalizeName(tc.a), activities.NormalizeName(tc.b))
		}
	}
	if activities.NormalizeName("Ann") == activities.NormalizeName("Anne") {
		t.Error("different names compare equal")
	}
}

// BenchmarkNormalizeName measures the name folding the output comparison
// does for each expected and verified name.
func BenchmarkNormalizeName(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if activities.NormalizeName("  José  María GARCÍA-Ñúñez ") == "" {
			b.Fatal("empty")
		}
	}
}

// A reminder's retry link is for the attempt the session's newest recorded
// state is on; the alternate method's offer opens its first attempt.
func TestRetryLinksAreForTheCurrentAttempt(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		vs := unique("vs_lane")
		to := unique("lane") + "@example.com"
		e.register(store.Contact{SessionID: vs, Email: to, FirstName: "Lin"})
		state := `{"session_id":"` + vs + `","status":"requires_input","attempts":3,"alternate_attempts":1,` +
			`"escalation":"alternate_method","seq":4}`
		tr := activities.Transition{SessionID: vs, Key: "evt_lane", EventID: "evt_lane",
			EventType: "identity.verification_session.requires_input", From: "requires_input", State: json.RawMessage(state)}
		if _, err := e.tenv.ExecuteActivity(e.acts.RecordTransition, tr); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			req  activities.EmailRequest
			want string
		}{
			{activities.EmailRequest{SessionID: vs, Kind: email.KindReminder, Ref: "5"}, links.URL(vs, true, 1)},
			{activities.EmailRequest{SessionID: vs, Kind: email.KindAlternateOffered, Ref: "4", MaxAttempts: 2}, links.URL(vs, true, 0)},
			{activities.EmailRequest{SessionID: vs, Kind: email.KindFailed, Ref: "id_number-2", Attempt: 2, MaxAttempts: 2}, links.URL(vs, true, 2)},
			// Workflow v3 names the lane itself: the first method's, whatever the Ref says.
			{activities.EmailRequest{SessionID: vs, Kind: email.KindFailed, Ref: "id_number-1", Attempt: 1, MaxAttempts: 3,
				Link: &activities.LinkLane{Attempt: 1}}, links.URL(vs, false, 1)},
			{activities.EmailRequest{SessionID: vs, Kind: email.KindReminder, Ref: "6", Link: &activities.LinkLane{Attempt: 3}},
				links.URL(vs, false, 3)},
		} {
			if res, err := e.sendEmail(tc.req); err != nil || res.Status != store.EmailSent {
				t.Fatalf("%s: %+v, %v", tc.req.Kind, res, err)
			}
			msgs, err := mailpit.Messages(context.Background(), to)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, m := range msgs {
				found = found || strings.Contains(m.Text, tc.want)
			}
			if !found {
				t.Errorf("%s: no email with %s", tc.req.Kind, tc.want)
			}
		}
	})
}

// The workflow's state says when a comparison runs: a transition recorded
// with it freezes the expected values, and so does one past requires_input.
func TestATransitionThatStartsAComparisonFreezesTheExpectedValues(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, e *env) {
		for _, c := range []struct{ name, state string }{
			{"comparing", `"status":"created","escalation":"none","seq":1,"comparing":{"id":"evt_v","type":"identity.verification_session.verified"}`},
			{"processing", `"status":"processing","escalation":"none","seq":1`},
		} {
			vs := unique("vs_freeze_" + c.name)
			e.register(store.Contact{SessionID: vs, Email: "freeze@example.com", LastName: "Lovelace"})
			tr := activities.Transition{SessionID: vs, Key: "evt_1", From: "new",
				State: json.RawMessage(`{"session_id":"` + vs + `",` + c.state + `}`)}
			if _, err := e.tenv.ExecuteActivity(e.acts.RecordTransition, tr); err != nil {
				t.Fatal(err)
			}
			err := e.store.UpsertContact(context.Background(), store.Contact{SessionID: vs, Email: "eve@example.com", LastName: "Lovelace"})
			if !errors.Is(err, store.ErrFrozen) {
				t.Errorf("%s: a changed registration: %v; want ErrFrozen", c.name, err)
			}
		}
		vs := unique("vs_not_frozen")
		e.register(store.Contact{SessionID: vs, Email: "open@example.com"})
		tr := activities.Transition{SessionID: vs, Key: "evt_1", From: "new",
			State: json.RawMessage(`{"session_id":"` + vs + `","status":"requires_input","escalation":"none","seq":1,"comparing":null}`)}
		if _, err := e.tenv.ExecuteActivity(e.acts.RecordTransition, tr); err != nil {
			t.Fatal(err)
		}
		if err := e.store.UpsertContact(context.Background(), store.Contact{SessionID: vs, Email: "new@example.com"}); err != nil {
			t.Errorf("a change while the session waits for the user: %v", err)
		}
	})
}

// Issue 19, item 2: a cancel Stripe refuses because the session is canceled
// or verified already has nothing left to do; any other refusal stays a
// refusal; a refused key is retryable, of its own type.
func TestCancelSessionRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		cancelCode   int
		wantType     string // "" = success
		retryable    bool
	}{
		{"already canceled", "canceled", 400, "", false},
		{"already verified: Stripe's answer, for the workflow", "verified", 400, activities.ErrTypeStripeSessionVerified, false},
		{"refused while the session waits for the user", "requires_input", 400, activities.ErrTypeStripeRefused, false},
		{"the key is refused", "requires_input", 401, activities.ErrTypeStripeUnauthorized, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.Method == http.MethodPost {
					w.WriteHeader(tc.cancelCode)
					fmt.Fprint(w, `{"error":{"type":"invalid_request_error","code":"session_invalid_state","message":"no"}}`)
					return
				}
				fmt.Fprintf(w, `{"id":"vs_x","object":"identity.verification_session","status":%q}`, tc.status)
			}))
			defer srv.Close()
			acts := &activities.Activities{Stripe: stripeapi.New("sk_test_x", srv.URL)}
			var s testsuite.WorkflowTestSuite
			tenv := s.NewTestActivityEnvironment()
			tenv.RegisterActivity(acts)
			_, err := tenv.ExecuteActivity(acts.CancelSession, "vs_x")
			var appErr *temporal.ApplicationError
			switch {
			case tc.wantType == "" && err != nil:
				t.Errorf("err = %v; want success", err)
			case tc.wantType != "" && (!errors.As(err, &appErr) || appErr.Type() != tc.wantType || appErr.NonRetryable() == tc.retryable):
				t.Errorf("err = %v; want %s, retryable %v", err, tc.wantType, tc.retryable)
			}
		})
	}
}

// A verified event Stripe did not send (someone with Temporal access
// signalled it) does not verify a session: Stripe is asked whatever the
// business expected, even nothing, and a session it has not verified
// differs.
func TestACompareAsksStripeWhetherItVerifiedTheSession(t *testing.T) {
	for _, status := range []string{"requires_input", "processing", "canceled"} {
		t.Run("Stripe says "+status, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"id":"vs_x","object":"identity.verification_session","status":%q,"verified_outputs":null}`, status)
			}))
			defer srv.Close()
			acts := &activities.Activities{Stripe: stripeapi.New("sk_test_x", srv.URL), Store: noContacts{}}
			var s testsuite.WorkflowTestSuite
			tenv := s.NewTestActivityEnvironment()
			tenv.RegisterActivity(acts)
			v, err := tenv.ExecuteActivity(acts.CompareVerifiedOutputs, "vs_x")
			var c activities.Comparison
			if err != nil || v.Get(&c) != nil || c.Match || !slices.Equal(c.MismatchedFields, []string{activities.NotVerified}) {
				t.Errorf("comparison = %+v, %v; want a difference: %s", c, err, activities.NotVerified)
			}
		})
	}
}

// noContacts is a store without a registered contact for any session.
type noContacts struct{ activities.Store }

func (noContacts) Contact(context.Context, string) (store.Contact, error) {
	return store.Contact{}, store.ErrNotFound
}
