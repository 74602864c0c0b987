// Package devstack starts the real components this service talks to, as
// local processes on 127.0.0.1: the Temporal CLI dev server (with its Web UI
// and this service's search attributes), Mailpit and stripe-mock. The run
// command and the end-to-end tests both use it. The binaries are the pinned
// tools under tools/, built into .bin/ on first use.
package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"identityverification/workflows"
)

// Tools names the pinned tools: the folder under tools/ and the binary name.
var Tools = map[string]string{"temporal": "temporal", "mailpit": "mailpit", "stripemock": "stripe-mock", "dex": "dex"}

// Root finds the repository root (the folder with go.mod and tools/) from dir up.
func Root(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "tools", "temporal", "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("devstack: repository root not found above " + dir)
		}
	}
}

// Tool returns the path of a pinned tool's binary, building it into
// ROOT/.bin when it is missing (the Temporal CLI takes minutes cold).
func Tool(ctx context.Context, root, name string, log io.Writer) (string, error) {
	bin := filepath.Join(root, ".bin", Tools[name])
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	fmt.Fprintf(log, "building %s (pinned in tools/%s; first time only)...\n", Tools[name], name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(root, ".bin")+"/", "tool")
	cmd.Dir = filepath.Join(root, "tools", name)
	cmd.Stdout, cmd.Stderr = log, log
	if name == "dex" {
		// Dex links SQLite through cgo; the dev stack keeps its state in
		// memory, so it builds without a C compiler (as the Makefile does).
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("devstack: build %s: %w", name, err)
	}
	return bin, nil
}

// Process is a started component.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// start runs bin with args, its output appended to logPath. The child is in
// its own process group and dies with this process (Pdeathsig).
func start(name, bin, logPath string, args ...string) (*Process, error) {
	return StartProcess(name, bin, logPath, nil, args...)
}

// StartProcess runs bin with args and, when env is not nil, that
// environment; its output is appended to logPath. The child is in its own
// process group and dies with this process (Pdeathsig).
func StartProcess(name, bin, logPath string, env []string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("devstack: start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Stop asks the process group to terminate and kills it after a grace period.
func (p *Process) Stop() {
	p.once.Do(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// Kill kills the process group at once (SIGKILL), as a crash or an OOM kill
// would, and waits until it is gone.
func (p *Process) Kill() {
	p.once.Do(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
}

// CPUTime is the CPU time (user and system) the process has used so far,
// from /proc (Linux): what a load run costs the server, per session.
func (p *Process) CPUTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces), from field 3.
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("devstack: unexpected /proc stat for %s", p.Name)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// Pid is the process's id (its process group's too).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process ends.
func (p *Process) Exited() <-chan struct{} { return p.done }

// FreePort returns a port free on 127.0.0.1 at the time of the call, for a
// process started later. It picks below Linux's ephemeral range (32768 and
// up), so the port is not taken meanwhile by an outgoing connection or a
// server binding port 0, and never returns the same port twice.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := 20000 + rand.IntN(12000)
		if portsGiven[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[p] = true
		return p, nil
	}
	return 0, errors.New("devstack: no free port found")
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// waitFor polls ready until it succeeds, the process exits or ctx ends.
func waitFor(ctx context.Context, p *Process, logPath string, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			tail, _ := os.ReadFile(logPath)
			return fmt.Errorf("devstack: %s exited (%v); the end of %s:\n%s", p.Name, p.err, logPath, lastLines(tail))
		case <-ctx.Done():
			p.Stop()
			return fmt.Errorf("devstack: %s not ready: %v; see %s", p.Name, err, logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Temporal is a running Temporal CLI dev server.
type Temporal struct {
	*Process
	Address string // host:port of the frontend
	UIURL   string
}

// StartTemporal starts the dev server with its Web UI, keeping its data in
// dir/temporal.db (reused across runs), creates the namespaces (default when
// none) and registers this service's search attributes on each (idempotent,
// and needed on an existing database too).
func StartTemporal(ctx context.Context, bin, dir string, port, uiPort int, namespaces ...string) (*Temporal, error) {
	return startTemporal(ctx, bin, dir, filepath.Join(dir, "temporal.db"), port, uiPort, "", namespaces)
}

// StartTemporalWithCodec is StartTemporal with the Web UI decoding payloads
// through the codec server at codecEndpoint (--ui-codec-endpoint): the
// browser POSTs to codecEndpoint+"/decode" and "/encode".
func StartTemporalWithCodec(ctx context.Context, bin, dir string, port, uiPort int, codecEndpoint string, namespaces ...string) (*Temporal, error) {
	return startTemporal(ctx, bin, dir, filepath.Join(dir, "temporal.db"), port, uiPort, codecEndpoint, namespaces)
}

// StartTemporalInMemory starts the dev server with its data in memory (its
// log in dir): for tests and benchmarks, which keep nothing across runs and
// should not measure a SQLite file's fsyncs.
func StartTemporalInMemory(ctx context.Context, bin, dir string, port, uiPort int, namespaces ...string) (*Temporal, error) {
	return startTemporal(ctx, bin, dir, "", port, uiPort, "", namespaces)
}

func startTemporal(ctx context.Context, bin, dir, dbFile string, port, uiPort int, codecEndpoint string, namespaces []string) (*Temporal, error) {
	if len(namespaces) == 0 {
		namespaces = []string{"default"}
	}
	logPath := filepath.Join(dir, "temporal.log")
	args := []string{"server", "start-dev",
		"--ip", "127.0.0.1", "--port", strconv.Itoa(port), "--ui-port", strconv.Itoa(uiPort),
		"--log-level", "warn", "--log-format", "json"}
	if dbFile != "" {
		args = append(args, "--db-filename", dbFile)
	}
	if codecEndpoint != "" {
		args = append(args, "--ui-codec-endpoint", codecEndpoint)
	}
	for _, ns := range namespaces {
		args = append(args, "--namespace", ns)
	}
	p, err := start("temporal", bin, logPath, args...)
	if err != nil {
		return nil, err
	}
	t := &Temporal{Process: p, Address: fmt.Sprintf("127.0.0.1:%d", port), UIURL: fmt.Sprintf("http://127.0.0.1:%d", uiPort)}
	if err := t.waitAndRegister(ctx, bin, logPath, false, namespaces); err != nil {
		return nil, err
	}
	return t, nil
}

// waitAndRegister waits until the server answers, creates the namespaces
// when asked (the dev server makes its own), and registers this service's
// search attributes on each (idempotent). A real server may refuse the first
// registrations for a moment after the namespace appears: each step is tried
// again until the server's start timeout.
func (t *Temporal) waitAndRegister(ctx context.Context, cli, logPath string, createNamespaces bool, namespaces []string) error {
	err := waitFor(ctx, t.Process, logPath, func(ctx context.Context) error {
		c, err := client.Dial(client.Options{HostPort: t.Address, Logger: QuietLogger})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
		return err
	})
	if err != nil {
		return err
	}
	run := func(what string, args ...string) error {
		return waitFor(ctx, t.Process, logPath, func(ctx context.Context) error {
			out, err := exec.CommandContext(ctx, cli, append(args, "--address", t.Address)...).CombinedOutput()
			if err != nil && !strings.Contains(string(out), "already") {
				return fmt.Errorf("%s: %v: %s", what, err, out)
			}
			return nil
		})
	}
	for _, ns := range namespaces {
		if createNamespaces {
			if err := run("create namespace "+ns, "operator", "namespace", "create", "--namespace", ns); err != nil {
				t.Stop()
				return fmt.Errorf("devstack: %w", err)
			}
		}
		for _, sa := range workflows.SearchAttributes {
			if err := run("register search attribute "+sa.Name, "operator", "search-attribute", "create",
				"--namespace", ns, "--name", sa.Name, "--type", sa.Type); err != nil {
				t.Stop()
				return fmt.Errorf("devstack: %w", err)
			}
		}
	}
	return nil
}

// Mailpit is a running Mailpit: SMTP and its HTTP API.
type Mailpit struct {
	*Process
	SMTPAddr string
	APIURL   string
}

// StartMailpit starts Mailpit with its messages in dir/mailpit.db; extra
// arguments pass through (e.g. --smtp-allowed-recipients REGEXP).
func StartMailpit(ctx context.Context, bin, dir string, smtpPort, httpPort int, extra ...string) (*Mailpit, error) {
	logPath := filepath.Join(dir, "mailpit.log")
	m := &Mailpit{SMTPAddr: fmt.Sprintf("127.0.0.1:%d", smtpPort), APIURL: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	args := append([]string{"--smtp", m.SMTPAddr, "--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--database", filepath.Join(dir, "mailpit.db"), "--disable-version-check"}, extra...)
	p, err := start("mailpit", bin, logPath, args...)
	if err != nil {
		return nil, err
	}
	m.Process = p
	return m, waitFor(ctx, p, logPath, func(ctx context.Context) error {
		return HTTPOK(ctx, m.APIURL+"/api/v1/info")
	})
}

// StripeMock is a running stripe-mock (stateless).
type StripeMock struct {
	*Process
	URL string
}

// StartStripeMock starts stripe-mock on two free ports (HTTP and HTTPS).
func StartStripeMock(ctx context.Context, bin, dir string, httpPort int) (*StripeMock, error) {
	httpsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "stripe-mock.log")
	p, err := start("stripe-mock", bin, logPath, "-http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"-https-addr", fmt.Sprintf("127.0.0.1:%d", httpsPort))
	if err != nil {
		return nil, err
	}
	s := &StripeMock{Process: p, URL: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	return s, waitFor(ctx, p, logPath, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/v1/identity/verification_sessions/vs_ping", nil)
		req.SetBasicAuth("sk_test_devstack", "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// HTTPOK GETs url and fails unless it answers 200.
func HTTPOK(ctx context.Context, url string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// QuietLogger drops the Temporal SDK's logs: for clients that poll for
// readiness, and for tests.
var QuietLogger = sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))

// Message is an email as Mailpit's API shows it.
type Message struct {
	ID        string
	MessageID string
	Subject   string
	To        []struct{ Address string }
	Created   time.Time // when Mailpit received it
	Text      string    // filled by Messages
	HTML      string    // filled by Messages
}

// Messages returns the messages Mailpit holds for a recipient, oldest first,
// with their bodies.
func (m *Mailpit) Messages(ctx context.Context, to string) ([]Message, error) {
	var list struct{ Messages []Message }
	if err := getJSON(ctx, m.APIURL+"/api/v1/search?query="+url.QueryEscape(`to:"`+to+`"`), &list); err != nil {
		return nil, err
	}
	msgs := list.Messages
	slices.Reverse(msgs)
	for i := range msgs {
		var full struct{ Text, HTML string }
		if err := getJSON(ctx, m.APIURL+"/api/v1/message/"+msgs[i].ID, &full); err != nil {
			return nil, err
		}
		msgs[i].Text, msgs[i].HTML = full.Text, full.HTML
	}
	return msgs, nil
}

// MailTally counts the messages Mailpit holds: by Message-ID (how many
// copies of each email arrived) and by recipient.
type MailTally struct {
	ByMessageID, ByRecipient map[string]int
	To                       map[string]string // Message-ID: its (first) recipient
}

// Tally counts every message Mailpit holds.
func (m *Mailpit) Tally(ctx context.Context) (MailTally, error) {
	out := MailTally{ByMessageID: map[string]int{}, ByRecipient: map[string]int{}, To: map[string]string{}}
	for start := 0; ; {
		var page struct {
			Total    int
			Messages []Message
		}
		if err := getJSON(ctx, fmt.Sprintf("%s/api/v1/messages?start=%d&limit=500", m.APIURL, start), &page); err != nil {
			return out, err
		}
		for _, msg := range page.Messages {
			out.ByMessageID[msg.MessageID]++
			if len(msg.To) > 0 {
				out.To[msg.MessageID] = strings.ToLower(msg.To[0].Address)
			}
			for _, to := range msg.To {
				out.ByRecipient[strings.ToLower(to.Address)]++
			}
		}
		start += len(page.Messages)
		if len(page.Messages) == 0 || start >= page.Total {
			return out, nil
		}
	}
}

func getJSON(ctx context.Context, u string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
