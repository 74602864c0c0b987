package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"identityverification/codec"
	"identityverification/config"
	"identityverification/devstack"
	"identityverification/replay"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/workflows"
)

const (
	codecToken = "e2e-codec-token"
	uiOrigin   = "http://127.0.0.1:8233"
)

// With PAYLOAD_ENCRYPTION_KEYS set, Temporal holds no payload in the
// clear: a session that failed once, was verified (compared after a
// Stripe outage), went to review (its outputs differ from the
// registration) and was rejected through the admin
// API leaves a history whose every payload (workflow input, signals,
// activity inputs and results, local activity markers, summaries, the
// update and its outcome) is encrypted with the key, read raw from the
// server by a client without the codec. Package replay replays it with the
// key and fails to without it; so does the replay command. The codec
// server, on the admin listener, refuses a request without its token and
// decodes the history's payloads with it. Encryption does not depend on
// the database: SQLite alone runs it.
func TestCodecEncryptsEveryPayloadInHistory(t *testing.T) {
	key, err := codec.NewKey("e2e")
	if err != nil {
		t.Fatal(err)
	}
	keyRing, err := codec.New(key)
	if err != nil {
		t.Fatal(err)
	}
	stripe := newFailingStripe(t, components.stripe.URL)
	s := startStack(t, storetest.Databases(t)[0], config.Map{"PAYLOAD_ENCRYPTION_KEYS": key.Entry(),
		"CODEC_TOKEN": codecToken, "CODEC_CORS_ORIGINS": uiOrigin, "STRIPE_API_BASE": stripe.url})

	vs := "vs_codec_" + testevent.RandomID(12)
	reg := map[string]string{"email": "codec-" + testevent.RandomID(8) + "@example.com", "first_name": "Ada",
		"last_name": "Lovelace", "dob": "1815-12-10"}
	if code := s.admin(http.MethodPut, "/admin/sessions/"+vs, adminToken, reg, nil); code != http.StatusNoContent {
		t.Fatalf("register: %d; want 204", code)
	}
	s.send(testevent.Options{Type: "requires_input", SessionID: vs, ErrorCode: "document_expired"})
	s.waitRow(vs, workflows.StatusRequiresInput)
	// stripe-mock's verified outputs are empty: the names differ, a review
	// opens. Stripe fails at first: the comparison, a local activity first,
	// goes on as an activity (its input and result in the history) that
	// retries until Stripe answers.
	stripe.failing.Store(true)
	s.send(testevent.Options{Type: "verified", SessionID: vs})
	s.waitState(vs, "the Stripe outage shown", func(st workflows.State) bool {
		return slices.ContainsFunc(st.Issues, func(is workflows.Issue) bool { return is.Code == workflows.IssueStripeUnavailable })
	})
	stripe.failing.Store(false)
	var st workflows.State
	eventually(t, "the review to open (the admin API's query, through the codec)", func() error {
		s.admin(http.MethodGet, "/admin/sessions/"+vs, adminToken, nil, &st)
		if !st.Review.Open() {
			return errNotYet
		}
		return nil
	})
	code := s.admin(http.MethodPost, "/admin/sessions/"+vs+"/review", adminToken,
		workflows.ReviewDecision{Decision: "reject", Reviewer: "ops-e2e"}, &st)
	if code != http.StatusOK || st.Status != workflows.StatusRejected {
		t.Fatalf("reject through the admin API (an update, through the codec): %d %+v", code, st)
	}
	s.waitRow(vs, workflows.StatusRejected)

	raw, err := client.Dial(client.Options{HostPort: s.env["TEMPORAL_ADDRESS"], Namespace: s.namespace, Logger: devstack.QuietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	id := workflows.WorkflowID(vs)
	eventually(t, "the workflow to complete", func() error {
		d, err := raw.DescribeWorkflowExecution(context.Background(), id, "")
		if err != nil {
			return err
		}
		if d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			return fmt.Errorf("status %s", d.GetWorkflowExecutionInfo().GetStatus())
		}
		return nil
	})
	h := rawHistory(t, raw, id)
	runID := h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetOriginalExecutionRunId()

	t.Run("every payload in the raw history is encrypted with the key", func(t *testing.T) {
		kinds := map[string]int{}
		codec.Walk(h, func(path string, p *commonpb.Payload) {
			if strings.Contains(path, "search_attributes") || strings.Contains(path, "header") {
				return // indexed by the server, or context: never through a codec
			}
			kind := strings.TrimPrefix(indexes.ReplaceAllString(path, ""), "events.")
			kinds[kind]++
			enc, keyID := string(p.GetMetadata()[converter.MetadataEncoding]), string(p.GetMetadata()[codec.MetadataKeyID])
			if enc != codec.Encoding || keyID != "e2e" {
				t.Errorf("%s: encoding %q, key %q; want %q with key e2e", path, enc, keyID, codec.Encoding)
			}
			if bytes.Contains(p.GetData(), []byte(vs)) || bytes.Contains(p.GetData(), []byte("json/plain")) {
				t.Errorf("%s holds plaintext", path)
			}
		})
		var seen []string
		for k := range kinds {
			seen = append(seen, k)
		}
		slices.Sort(seen)
		t.Logf("encrypted payloads by field: %v", kinds)
		for _, want := range []string{
			"workflow_execution_started_event_attributes.input",
			"workflow_execution_signaled_event_attributes.input",
			"activity_task_scheduled_event_attributes.input",
			"activity_task_completed_event_attributes.result",
			"marker_recorded_event_attributes.details",
			"workflow_execution_update_accepted_event_attributes.accepted_request",
			"workflow_execution_update_completed_event_attributes.outcome",
			"user_metadata.summary",
		} {
			if !slices.ContainsFunc(seen, func(k string) bool { return strings.HasPrefix(k, want) }) {
				t.Errorf("no %s payload in the history (fields seen: %v)", want, seen)
			}
		}
		for _, f := range failuresIn(h) {
			if f.GetMessage() != "Encoded failure" || f.GetStackTrace() != "" {
				t.Errorf("a failure in the clear: %q", f.GetMessage())
			}
		}
	})

	t.Run("package replay replays it with the key and not without", func(t *testing.T) {
		if res := replay.History(replay.NewWith(keyRing.DataConverter(), keyRing.FailureConverter()), id, runID, h); !res.OK() {
			t.Errorf("with the key: %s", res.Line())
		}
		res := replay.History(replay.New(), id, runID, h)
		if res.OK() || !strings.Contains(res.Err.Error(), codec.Encoding) {
			t.Errorf("without the key: %s; want a failure to decode %s", res.Line(), codec.Encoding)
		}
	})

	t.Run("the replay command replays it with the configured key", func(t *testing.T) {
		lines, exit, stderr := s.replayCommand(t, buildCommand(t, "../cmd/identity-verification"), "-query", "WorkflowId = '"+id+"'")
		if want := fmt.Sprintf("1 ok, 0 failed in namespace %s", s.namespace); exit != 0 || lines[len(lines)-1] != want {
			t.Errorf("exit %d, %q; want 0, %q\n%s", exit, lines, want, stderr)
		}
	})

	codecURL := s.adminURL + "/codec"
	input := h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetInput().GetPayloads()
	t.Run("the codec server refuses a request without its token", func(t *testing.T) {
		for name, headers := range map[string]map[string]string{
			"no token":            {"X-Namespace": s.namespace},
			"the admin API token": {"X-Namespace": s.namespace, "Authorization": "Bearer " + adminToken},
		} {
			if code, _ := codecCall(t, codecURL+"/decode", headers, input); code != http.StatusUnauthorized {
				t.Errorf("%s: %d; want 401", name, code)
			}
		}
	})
	t.Run("the codec server decodes the history and round-trips a payload with its token", func(t *testing.T) {
		headers := map[string]string{"X-Namespace": s.namespace, "Authorization": "Bearer " + codecToken}
		code, dec := codecCall(t, codecURL+"/decode", headers, input)
		if code != http.StatusOK || len(dec) != 1 {
			t.Fatalf("decode the workflow input: %d, %d payloads", code, len(dec))
		}
		var in workflows.Input
		if err := json.Unmarshal(dec[0].GetData(), &in); err != nil || in.SessionID != vs {
			t.Errorf("decoded input %s (%v); want the session %s", dec[0].GetData(), err, vs)
		}
		plain, _ := converter.GetDefaultDataConverter().ToPayload("in_review")
		code, enc := codecCall(t, codecURL+"/encode", headers, []*commonpb.Payload{plain})
		if code != http.StatusOK || len(enc) != 1 || string(enc[0].GetMetadata()[converter.MetadataEncoding]) != codec.Encoding {
			t.Fatalf("encode: %d %v", code, enc)
		}
		code, back := codecCall(t, codecURL+"/decode", headers, enc)
		if code != http.StatusOK || len(back) != 1 || string(back[0].GetData()) != string(plain.GetData()) {
			t.Errorf("decode of the encoded payload: %d %v; want %s", code, back, plain.GetData())
		}
	})
}

// indexes are the list indexes and map keys in a codec.Walk path.
var indexes = regexp.MustCompile(`\[[^\]]*\]`)

// rawHistory reads a workflow's history as the server stores it.
func rawHistory(t *testing.T, c client.Client, workflowID string) *historypb.History {
	t.Helper()
	h := &historypb.History{}
	it := c.GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, e)
	}
	if len(h.Events) == 0 {
		t.Fatalf("no history for %s", workflowID)
	}
	return h
}

// failuresIn returns every failure in a history, causes included.
func failuresIn(h *historypb.History) []*failurepb.Failure {
	var out []*failurepb.Failure
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		if f, ok := m.Interface().(*failurepb.Failure); ok {
			out = append(out, f)
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := range v.List().Len() {
					visit(v.List().Get(i).Message())
				}
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				visit(v.Message())
			}
			return true
		})
	}
	visit(h.ProtoReflect())
	return out
}

// codecCall POSTs payloads to a codec endpoint and returns the status and
// the payloads answered.
func codecCall(t *testing.T, url string, headers map[string]string, payloads []*commonpb.Payload) (int, []*commonpb.Payload) {
	t.Helper()
	body, err := protojson.Marshal(&commonpb.Payloads{Payloads: payloads})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var out commonpb.Payloads
	if err := protojson.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s answered %s: %v", url, b, err)
	}
	return resp.StatusCode, out.Payloads
}

// checkUIDecodes checks what `make dev` promises ops: the Temporal UI's
// settings name the codec server as its codec endpoint, the session's
// payloads are encrypted on the server, and the endpoint decodes them for
// a browser on the UI's origin, which sends no token of its own (CORS
// preflight, then the UI's POST).
func checkUIDecodes(t *testing.T, temporalPort, uiPort, adminPort int, sessionID string) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/settings", uiPort))
	if err != nil {
		t.Fatal(err)
	}
	var settings struct{ Codec struct{ Endpoint string } }
	err = json.NewDecoder(resp.Body).Decode(&settings)
	resp.Body.Close()
	endpoint := settings.Codec.Endpoint
	if err != nil || !strings.HasPrefix(endpoint, fmt.Sprintf("http://127.0.0.1:%d/codec/", adminPort)) {
		t.Fatalf("the UI's codec endpoint is %q (%v); want the codec server on the admin listener", endpoint, err)
	}

	raw, err := client.Dial(client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", temporalPort), Logger: devstack.QuietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	input := rawHistory(t, raw, workflows.WorkflowID(sessionID)).GetEvents()[0].
		GetWorkflowExecutionStartedEventAttributes().GetInput().GetPayloads()
	if len(input) != 1 || string(input[0].GetMetadata()[converter.MetadataEncoding]) != codec.Encoding {
		t.Fatalf("the demo workflow's input is not encrypted: %v", input)
	}

	origin := fmt.Sprintf("http://127.0.0.1:%d", uiPort)
	req, _ := http.NewRequest(http.MethodOptions, endpoint+"/decode", nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type,x-namespace")
	pre, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pre.Body.Close()
	if pre.StatusCode != http.StatusNoContent || pre.Header.Get("Access-Control-Allow-Origin") != origin ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "X-Namespace") {
		t.Errorf("preflight from the UI: %d %v", pre.StatusCode, pre.Header)
	}
	code, dec := codecCall(t, endpoint+"/decode", map[string]string{"Origin": origin, "X-Namespace": "default"}, input)
	var in workflows.Input
	if code != http.StatusOK || len(dec) != 1 || json.Unmarshal(dec[0].GetData(), &in) != nil || in.SessionID != sessionID {
		t.Errorf("the UI's decode: %d %v; want the input of %s", code, dec, sessionID)
	}
}
