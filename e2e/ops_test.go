package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"identityverification/devstack"
	"identityverification/store"
	"identityverification/store/storetest"
	"identityverification/testevent"
	"identityverification/workflows"
)

// TestOpsListenerOfAWorkerOnlyProcess: a worker-only process serves health
// and metrics on its ops listener, the Temporal SDK's and the activities'
// included once a workflow ran; the webhook's process serves its own there,
// and its public listener no metrics (only /livez and /readyz, kept for
// load balancers, besides the webhook and retry links).
func TestOpsListenerOfAWorkerOnlyProcess(t *testing.T) {
	bin := buildCommand(t, "../cmd/identity-verification")
	db := storetest.Databases(t)[0]
	s := startRoles(t, db, nil, false)
	opsPort, _ := devstack.FreePort()
	opsURL := fmt.Sprintf("http://127.0.0.1:%d", opsPort)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range s.env {
		if k != "OPS_ADDR" {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, fmt.Sprintf("OPS_ADDR=127.0.0.1:%d", opsPort))
	w, err := devstack.StartProcess("worker", bin, filepath.Join(t.TempDir(), "worker.log"), env, "worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	eventually(t, "the worker's ops listener ready", func() error { return devstack.HTTPOK(context.Background(), opsURL+"/readyz") })
	if err := devstack.HTTPOK(context.Background(), opsURL+"/livez"); err != nil {
		t.Error(err)
	}

	vs, _ := s.newSession(store.Contact{})
	s.send(testevent.Options{Type: "verified", SessionID: vs})
	s.waitRow(vs, workflows.StatusVerified)
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, "the worker's metrics", func() error {
		_, m := get(opsURL + "/metrics")
		for _, want := range []string{"temporal_workflow_completed", "temporal_workflow_task_execution_latency_bucket{",
			"temporal_workflow_task_schedule_to_start_latency_bucket{", "identity_emails_total{", "identity_sessions_with_issue",
			"go_goroutines"} {
			if !strings.Contains(m, want) {
				return fmt.Errorf("no %s yet in:\n%s", want, grepLines(m, "identity_", "temporal_workflow_completed"))
			}
		}
		if !strings.Contains(grepLines(m, "identity_emails_total{"), `status="sent"`) {
			return fmt.Errorf("no email counted as sent:\n%s", grepLines(m, "identity_emails"))
		}
		if strings.Contains(m, "_total_total") || strings.Contains(m, "temporal_workflow_task_execution_latency{quantile=") {
			return fmt.Errorf("a counter named twice _total, or a latency still a summary:\n%s", grepLines(m, "_total_total", "quantile="))
		}
		return nil
	})
	if _, m := get(s.opsURL + "/metrics"); !strings.Contains(m, `webhook_requests_total{outcome="accepted"`) ||
		!strings.Contains(m, "temporal_request") {
		t.Errorf("the webhook process's metrics lack its own or the SDK's:\n%.2000s", m)
	}
	public := strings.TrimSuffix(s.webhookURL, "/webhooks/stripe")
	for path, want := range map[string]int{"/metrics": http.StatusNotFound, "/readyz": http.StatusOK, "/livez": http.StatusOK} {
		if code, _ := get(public + path); code != want {
			t.Errorf("public listener %s: %d; want %d (metrics only on the ops listener; health on both)", path, code, want)
		}
	}
}

// grepLines keeps the lines holding any of the words (a failure's context).
func grepLines(text string, words ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) && !strings.HasPrefix(l, "#") {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
