package codec_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"identityverification/codec"
)

const (
	token    = "codec-test-token"
	uiOrigin = "http://127.0.0.1:8233"
)

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	s := &codec.Server{Codec: newCodec(t, newKey(t, "k1")), Token: token, Origins: []string{uiOrigin}}
	mux := http.NewServeMux()
	mux.Handle(codec.Prefix, s.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// call POSTs payloads to url with the headers and returns the answer.
func call(t *testing.T, method, url string, headers map[string]string, payloads ...*commonpb.Payload) (*http.Response, []*commonpb.Payload) {
	t.Helper()
	body, err := protojson.Marshal(&commonpb.Payloads{Payloads: payloads})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
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
		return resp, nil
	}
	var out commonpb.Payloads
	if err := protojson.Unmarshal(b, &out); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return resp, out.Payloads
}

func TestCodecServerRoundTripsWithTheToken(t *testing.T) {
	srv := newServer(t)
	plain, _ := converter.GetDefaultDataConverter().ToPayload(outcome{SessionID: "vs_1", Code: "document_expired"})
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} { // the scheme in any case (RFC 9110)
		t.Run("the header "+scheme+" (the CLI) encodes and decodes", func(t *testing.T) {
			headers := map[string]string{"Authorization": scheme + " " + token, "X-Namespace": "default"}
			resp, enc := call(t, http.MethodPost, srv.URL+"/codec/encode", headers, plain)
			if resp.StatusCode != http.StatusOK || len(enc) != 1 {
				t.Fatalf("encode: %d, %d payloads", resp.StatusCode, len(enc))
			}
			if string(enc[0].Metadata[converter.MetadataEncoding]) != codec.Encoding {
				t.Errorf("encode answered %v; want an encrypted payload", enc[0])
			}
			resp, dec := call(t, http.MethodPost, srv.URL+"/codec/decode", headers, enc...)
			if resp.StatusCode != http.StatusOK || len(dec) != 1 || !proto.Equal(dec[0], plain) {
				t.Fatalf("decode: %d %v; want %v", resp.StatusCode, dec, plain)
			}
		})
	}
	t.Run("the token in the path (the UI) decodes only", func(t *testing.T) {
		_, enc := call(t, http.MethodPost, srv.URL+"/codec/encode", map[string]string{"Authorization": "Bearer " + token}, plain)
		headers := map[string]string{"Origin": uiOrigin, "X-Namespace": "default"}
		resp, dec := call(t, http.MethodPost, srv.URL+"/codec/"+token+"/decode", headers, enc...)
		if resp.StatusCode != http.StatusOK || len(dec) != 1 || !proto.Equal(dec[0], plain) {
			t.Fatalf("decode: %d %v; want %v", resp.StatusCode, dec, plain)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != uiOrigin {
			t.Errorf("Access-Control-Allow-Origin = %q; want %q", resp.Header.Get("Access-Control-Allow-Origin"), uiOrigin)
		}
		resp, _ = call(t, http.MethodPost, srv.URL+"/codec/"+token+"/encode", headers, plain)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("encode with the token in the path: %d; want 403", resp.StatusCode)
		}
	})
}

func TestCodecServerRefusesWithoutTheToken(t *testing.T) {
	srv := newServer(t)
	c := newCodec(t, newKey(t, "k1"))
	plain, _ := converter.GetDefaultDataConverter().ToPayload("verified")
	enc, _ := c.Encode([]*commonpb.Payload{plain})
	for _, tc := range []struct {
		name, url string
		headers   map[string]string
	}{
		{"no token", srv.URL + "/codec/decode", nil},
		{"a wrong bearer token", srv.URL + "/codec/decode", map[string]string{"Authorization": "Bearer nope"}},
		{"the token without Bearer", srv.URL + "/codec/decode", map[string]string{"Authorization": token}},
		{"a wrong path token", srv.URL + "/codec/nope/decode", map[string]string{"Authorization": "Bearer " + token}},
		{"the allowed origin alone", srv.URL + "/codec/encode", map[string]string{"Origin": uiOrigin}},
	} {
		t.Run(tc.name+" gets 401", func(t *testing.T) {
			resp, _ := call(t, http.MethodPost, tc.url, tc.headers, enc...)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d; want 401", resp.StatusCode)
			}
		})
	}
	t.Run("an unknown route gets 404", func(t *testing.T) {
		resp, _ := call(t, http.MethodPost, srv.URL+"/codec/"+token+"/other", nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("status %d; want 404", resp.StatusCode)
		}
	})
	t.Run("GET gets 405", func(t *testing.T) {
		resp, _ := call(t, http.MethodGet, srv.URL+"/codec/decode", map[string]string{"Authorization": "Bearer " + token})
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("status %d; want 405", resp.StatusCode)
		}
	})
	t.Run("a payload of an unknown key gets 400", func(t *testing.T) {
		other, _ := newCodec(t, newKey(t, "k9")).Encode([]*commonpb.Payload{plain})
		resp, _ := call(t, http.MethodPost, srv.URL+"/codec/decode", map[string]string{"Authorization": "Bearer " + token}, other...)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d; want 400", resp.StatusCode)
		}
	})
}

func TestCodecServerAnswersTheUIsPreflight(t *testing.T) {
	srv := newServer(t)
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/codec/"+token+"/decode", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type,x-namespace")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	t.Run("from the UI's origin it allows POST and the UI's headers", func(t *testing.T) {
		resp := preflight(uiOrigin)
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != uiOrigin ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
			t.Fatalf("%d %v", resp.StatusCode, h)
		}
		for _, want := range []string{"Content-Type", "X-Namespace", "Authorization"} {
			if !strings.Contains(h.Get("Access-Control-Allow-Headers"), want) {
				t.Errorf("Access-Control-Allow-Headers %q lacks %s", h.Get("Access-Control-Allow-Headers"), want)
			}
		}
	})
	t.Run("from another origin it is refused", func(t *testing.T) {
		resp := preflight("http://evil.example")
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%d %v; want 403 without CORS headers", resp.StatusCode, resp.Header)
		}
	})
}

func TestCodecServerWithoutATokenRefusesEverything(t *testing.T) {
	s := &codec.Server{Codec: newCodec(t, newKey(t, "k1"))}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for _, url := range []string{srv.URL + "/codec/decode", srv.URL + "/codec//decode"} {
		resp, _ := call(t, http.MethodPost, url, map[string]string{"Authorization": "Bearer "})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d; want 401", url, resp.StatusCode)
		}
	}
}
