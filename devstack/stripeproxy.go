package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
)

// StripeRecorder is a reverse proxy in front of stripe-mock that records
// every request, for tests that assert what a client sent. stripe-mock is
// stateless, so the recorder also stands in for the state it cannot keep:
// the webhook endpoints a list returns and the signing secret a create
// returns (stripe-mock's fixture has none). Everything else is
// stripe-mock's own answer, after its validation of the request.
type StripeRecorder struct {
	URL  string // point STRIPE_API_BASE here
	mock *StripeMock
	srv  *httptest.Server

	mu        sync.Mutex
	requests  []StripeRequest
	endpoints []map[string]any
	secret    string
}

// StripeRequest is one request the recorder forwarded.
type StripeRequest struct {
	Method, Path string
	Form         url.Values // the form body (POST) or the query (GET)
}

// StartStripeRecorder starts stripe-mock (built into ROOT/.bin on first
// use, its log in dir) and the recording proxy in front of it.
func StartStripeRecorder(ctx context.Context, root, dir string) (*StripeRecorder, error) {
	bin, err := Tool(ctx, root, "stripemock", io.Discard)
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	mock, err := StartStripeMock(ctx, bin, dir, port)
	if err != nil {
		return nil, err
	}
	target, _ := url.Parse(mock.URL)
	r := &StripeRecorder{mock: mock}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = r.standIn
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		form := req.URL.Query()
		if req.Method == http.MethodPost {
			form, _ = url.ParseQuery(string(body))
		}
		r.mu.Lock()
		r.requests = append(r.requests, StripeRequest{Method: req.Method, Path: req.URL.Path, Form: form})
		r.mu.Unlock()
		proxy.ServeHTTP(w, req)
	}))
	r.URL = r.srv.URL
	return r, nil
}

// Stop stops the proxy and stripe-mock.
func (r *StripeRecorder) Stop() {
	r.srv.Close()
	r.mock.Stop()
}

// Requests returns the requests recorded so far, oldest first.
func (r *StripeRecorder) Requests() []StripeRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]StripeRequest(nil), r.requests...)
}

// ListEndpoints makes GET /v1/webhook_endpoints return these endpoints,
// each stripe-mock's fixture endpoint with the given fields replaced (id,
// url, status, enabled_events, api_version...). With none, the list is
// stripe-mock's own again.
func (r *StripeRecorder) ListEndpoints(endpoints ...map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endpoints = endpoints
}

// CreateSecret makes POST /v1/webhook_endpoints return secret as the new
// endpoint's signing secret, as Stripe does on create.
func (r *StripeRecorder) CreateSecret(secret string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secret = secret
}

// standIn rewrites stripe-mock's successful answers to the webhook
// endpoint list and create, when the test asked for it.
func (r *StripeRecorder) standIn(resp *http.Response) error {
	r.mu.Lock()
	endpoints, secret := r.endpoints, r.secret
	r.mu.Unlock()
	req := resp.Request
	list := req.Method == http.MethodGet && endpoints != nil
	create := req.Method == http.MethodPost && secret != ""
	if req.URL.Path != "/v1/webhook_endpoints" || resp.StatusCode != http.StatusOK || !(list || create) {
		return nil
	}
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("stripe recorder: %s %s: %w", req.Method, req.URL.Path, err)
	}
	resp.Body.Close()
	if create {
		body["secret"] = secret
	} else {
		data, _ := body["data"].([]any)
		if len(data) == 0 {
			return fmt.Errorf("stripe recorder: stripe-mock listed no fixture endpoint")
		}
		fixture, _ := data[0].(map[string]any)
		out := make([]any, len(endpoints))
		for i, e := range endpoints {
			ep := maps.Clone(fixture)
			maps.Copy(ep, e)
			out[i] = ep
		}
		body["data"] = out
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return nil
}
