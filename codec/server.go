package codec

import (
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"

	"go.temporal.io/sdk/converter"
)

// Prefix is where Server's routes live: POST Prefix+"encode" and
// Prefix+"decode", the remote codec protocol of the Temporal UI and CLI.
const Prefix = "/codec/"

// MaxBody bounds a request: a history page of payloads, well above
// Temporal's 2 MB limit per payload.
const MaxBody = 8 << 20

// Server serves a codec over HTTP so that people who hold the token read
// encrypted payloads in the Temporal UI and CLI without holding the keys.
//
// A request is authenticated by the header "Authorization: Bearer <Token>"
// (the CLI: --codec-auth), or, to decode only, by the token as the path
// segment before decode, Prefix+"<Token>/decode". The second form is for the
// Temporal UI, which sends no header of its own (it passes only an OIDC
// access token, and only over HTTPS): its codec endpoint is then
// http://host/codec/<Token>.
type Server struct {
	Codec *Codec
	Token string // required; an empty token refuses every request
	// Origins may call from a browser (CORS): the Temporal UI's, such as
	// http://127.0.0.1:8233.
	Origins []string
}

// corsHeaders are the request headers the Temporal UI sends to a codec
// server.
const corsHeaders = "Content-Type, X-Namespace, Authorization, Authorization-Extras"

// Handler serves the codec under Prefix.
func (s *Server) Handler() http.Handler {
	codec := converter.NewPayloadCodecHTTPHandler(s.Codec)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := origin != "" && slices.Contains(s.Origins, origin)
		if allowed {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Add("Vary", "Origin")
		}
		if r.Method == http.MethodOptions { // a browser's preflight: no credentials in it
			if !allowed {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", corsHeaders)
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		token, inPath, ok := s.token(r)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if s.Token == "" || subtle.ConstantTimeCompare([]byte(token), []byte(s.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="codec"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if inPath && !strings.HasSuffix(r.URL.Path, "/decode") {
			// A token in a URL leaks (history, logs, referrers): the UI's
			// form may only read, never make a payload Temporal trusts.
			http.Error(w, "the token in the path decodes only; encode with an Authorization header", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		codec.ServeHTTP(w, r)
	})
}

// token is the credential a request carries: from the path
// (Prefix+"<token>/decode"; inPath) or from its Authorization header
// (Prefix+"decode", the scheme "Bearer" in any case). ok is false for a
// path that is no codec route.
func (s *Server) token(r *http.Request) (token string, inPath, ok bool) {
	rest, found := strings.CutPrefix(r.URL.Path, Prefix)
	if !found {
		return "", false, false
	}
	i := strings.LastIndexByte(rest, '/')
	if op := rest[i+1:]; op != "encode" && op != "decode" {
		return "", false, false
	}
	if i >= 0 {
		return rest[:i], true, true
	}
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(cred), false, true
	}
	return "", false, true
}
