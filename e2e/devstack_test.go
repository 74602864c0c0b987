package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"identityverification/devstack"
)

// TestRunCommand runs the README's run command (cmd/devstack) twice on one
// data folder: the printed test-event command, run as printed, yields an
// email; the load tool (docs/performance.md's `go run ./cmd/loadgen`, with a
// few sessions and this stack's addresses) runs against it; a printed
// reviewer signs in to the desk at Dex; Ctrl-C leaves nothing listening,
// and the second run keeps the first run's data.
func TestRunCommand(t *testing.T) {
	bin := buildCommand(t, "../cmd/devstack")
	data := t.TempDir()
	ports := map[string]int{}
	for _, name := range []string{"temporal-port", "ui-port", "smtp-port", "mailpit-port", "stripe-port", "dex-port", "webhook", "admin", "ops"} {
		p, err := devstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[name] = p
	}
	args := []string{"-data", data, "-listen", fmt.Sprintf("127.0.0.1:%d", ports["webhook"]),
		"-admin-listen", fmt.Sprintf("127.0.0.1:%d", ports["admin"]), "-ops-listen", fmt.Sprintf("127.0.0.1:%d", ports["ops"])}
	for _, name := range []string{"temporal-port", "ui-port", "smtp-port", "mailpit-port", "stripe-port", "dex-port"} {
		args = append(args, fmt.Sprintf("-%s=%d", name, ports[name]))
	}
	mailpit := &devstack.Mailpit{APIURL: fmt.Sprintf("http://127.0.0.1:%d", ports["mailpit-port"])}

	first := runStack(t, bin, args)
	runPrinted(t, first)
	eventually(t, "the demo email", func() error {
		msgs, err := mailpit.Messages(context.Background(), "demo.user@example.com")
		if err == nil && len(msgs) < 1 {
			err = fmt.Errorf("no email yet")
		}
		return err
	})
	// The load tool against the stack: it exits 1 unless every event is
	// taken and every session holds its final status in the database.
	load := exec.Command("go", "run", "./cmd/loadgen", "-sessions", "4", "-concurrency", "2", "-bare=false",
		"-url", first.url, "-secret", first.secret, "-database", "sqlite:"+filepath.Join(data, "identity-verification.db"),
		"-temporal", fmt.Sprintf("127.0.0.1:%d", ports["temporal-port"]), "-settle", "1m")
	load.Dir = ".."
	if out, err := load.CombinedOutput(); err != nil || !strings.Contains(string(out), "load: 4 sessions") {
		t.Errorf("go run ./cmd/loadgen against the stack: %v\n%s", err, out)
	}
	checkUIDecodes(t, ports["temporal-port"], ports["ui-port"], ports["admin"], first.session)
	signInAsPrinted(t, first, ports["dex-port"], ports["admin"])
	first.stop(t)
	for name, p := range ports {
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			conn.Close()
			t.Errorf("after Ctrl-C, %s port %d still answers", name, p)
		}
	}

	second := runStack(t, bin, args)
	defer second.stop(t)
	msgs, err := mailpit.Messages(context.Background(), "demo.user@example.com")
	if err != nil || len(msgs) != 1 {
		t.Errorf("second run: %d emails of the first run, %v; want 1 kept", len(msgs), err)
	}
	out, err := exec.Command(filepath.Join("..", ".bin", "temporal"), "workflow", "describe", "--address",
		fmt.Sprintf("127.0.0.1:%d", ports["temporal-port"]), "-w", "identity-verification-"+first.session).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "COMPLETED") {
		t.Errorf("second run: the first run's workflow is gone: %v\n%s", err, out)
	}
}

type runningStack struct {
	cmd         *exec.Cmd
	out, errOut strings.Builder
	url, secret string
	session     string
	command     string // the test-event command it printed
	exited      chan error
}

var printedCommand = regexp.MustCompile(`STRIPE_WEBHOOK_SECRET=(\S+) go run \./cmd/stripe-event -url (\S+) -type verified -session (\S+)`)

// runStack starts the run command and waits for it to print the test command.
func runStack(t *testing.T, bin string, args []string) *runningStack {
	t.Helper()
	s := &runningStack{cmd: exec.Command(bin, args...), exited: make(chan error, 1)}
	s.cmd.Dir = ".."
	stdout, _ := s.cmd.StdoutPipe()
	s.cmd.Stderr = &s.errOut
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.out.WriteString(sc.Text() + "\n")
			if m := printedCommand.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
		s.exited <- s.cmd.Wait()
	}()
	select {
	case m := <-found:
		s.command, s.secret, s.url, s.session = m[0], m[1], m[2], m[3]
	case err := <-s.exited:
		t.Fatalf("the run command exited (%v) before it was ready:\n%s%s", err, s.out.String(), tail(s.errOut.String()))
	case <-time.After(3 * time.Minute):
		s.cmd.Process.Kill()
		t.Fatalf("the run command did not print its test command:\n%s", s.out.String())
	}
	return s
}

// tail is the end of a long output.
func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// runPrinted runs the printed test-event command as printed (`go run
// ./cmd/stripe-event` from the repository's root), which answers 200 once
// the webhook took the event.
func runPrinted(t *testing.T, s *runningStack) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", s.command)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "200 ") {
		t.Fatalf("the printed command %q: %v\n%s", s.command, err, out)
	}
}

// stop sends Ctrl-C and waits for the command to exit.
func (s *runningStack) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-s.exited:
		if err != nil {
			t.Errorf("the run command exited with %v after Ctrl-C", err)
		}
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		t.Error("the run command did not stop on Ctrl-C")
	}
}

var printedUser = regexp.MustCompile(`(?m)^  (ann@example\.com)\s+(\S+)\s+reviewers$`)

// signInAsPrinted signs in to the printed review desk as the printed
// reviewer, through Dex's login page.
func signInAsPrinted(t *testing.T, s *runningStack, dexPort, adminPort int) {
	t.Helper()
	m := printedUser.FindStringSubmatch(s.out.String())
	desk := fmt.Sprintf("http://127.0.0.1:%d/desk/", adminPort)
	if m == nil || !strings.Contains(s.out.String(), "Review desk     "+desk) {
		t.Fatalf("the run command does not say how to sign in to the desk:\n%s", s.out.String())
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	dex := &devstack.Dex{Issuer: fmt.Sprintf("http://127.0.0.1:%d/dex", dexPort)}
	res, err := dex.SignIn(context.Background(), c, desk+"login/start", m[1], m[2])
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("the printed reviewer signs in: %d; want the desk", res.StatusCode)
	}
	res, err = c.Get(desk)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), `<strong id="reviewer">`+m[1]+`</strong>`) {
		t.Errorf("the desk after signing in:\n%s", body)
	}
}
