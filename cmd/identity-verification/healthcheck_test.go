package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"identityverification/config"
)

func TestHealthcheckProbesReadyzOnTheOpsListener(t *testing.T) {
	status := http.StatusOK
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		w.WriteHeader(status)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	// A container listens on all interfaces; the probe goes to loopback.
	env := config.Map{"ENVIRONMENT": "development", "OPS_ADDR": "0.0.0.0:" + port}
	var out strings.Builder
	if err := healthcheck(env, nil, &out); err != nil {
		t.Fatalf("healthy ops listener: %v", err)
	}
	if path != "/readyz" || !strings.Contains(out.String(), "http://127.0.0.1:"+port+"/readyz") {
		t.Errorf("probed %q, printed %q; want /readyz on 127.0.0.1:%s", path, out.String(), port)
	}
	if err := healthcheck(config.Map{"ENVIRONMENT": "development", "OPS_ADDR": ":" + port}, nil, &out); err != nil {
		t.Errorf("OPS_ADDR=:%s: %v", port, err)
	}

	status = http.StatusServiceUnavailable // Temporal unreachable
	if err := healthcheck(env, nil, &out); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("a 503 from /readyz: err %v; want unhealthy naming the status", err)
	}

	status = http.StatusOK
	if err := healthcheck(config.Map{"OPS_ADDR": "off"}, []string{"-url", srv.URL + "/livez"}, &out); err != nil || path != "/livez" {
		t.Errorf("-url %s/livez: %v (probed %q)", srv.URL, err, path)
	}
}

func TestHealthcheckFailsWithoutAListener(t *testing.T) {
	var out strings.Builder
	if err := healthcheck(config.Map{"ENVIRONMENT": "development", "OPS_ADDR": "off"}, nil, &out); err == nil || !strings.Contains(err.Error(), "OPS_ADDR is off") {
		t.Errorf("OPS_ADDR=off: err %v; want it named", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	if err := healthcheck(config.Map{"ENVIRONMENT": "development", "OPS_ADDR": addr}, nil, &out); err == nil {
		t.Errorf("nothing on %s: healthy; want an error", addr)
	}
	if err := healthcheck(config.Map{"ENVIRONMENT": "bogus"}, nil, &out); err == nil || !strings.Contains(err.Error(), "configuration") {
		t.Errorf("a bad configuration: err %v; want it reported", err)
	}
	if err := healthcheck(config.Map{}, []string{"extra"}, &out); err == nil {
		t.Error("an unexpected argument was accepted")
	}
}
