package email_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"identityverification/email"
)

func TestEveryKindRenders(t *testing.T) {
	d := email.Data{SessionID: "vs_1", FirstName: "Zoë", Reason: "The document is expired.",
		RetryURL: "https://verify.example.com/verify/retry/vs_1?token=abc", Attempt: 2, MaxAttempts: 3,
		Fields: []string{"last_name", "dob"}, Deadline: "Sat, 28 Nov 2026 09:00:00 UTC"}
	needsLink := map[email.Kind]bool{email.KindFailed: true, email.KindReminder: true, email.KindAlternateOffered: true}
	for _, k := range email.Kinds {
		t.Run(string(k), func(t *testing.T) {
			r, err := email.Render(k, d)
			if err != nil {
				t.Fatal(err)
			}
			if r.Subject == "" || strings.Contains(r.Subject, "\n") || r.Text == "" || !strings.Contains(r.HTML, "<html>") {
				t.Errorf("rendered %+v", r)
			}
			for _, body := range []string{r.Text, r.HTML} {
				if strings.Contains(body, "<no value>") {
					t.Errorf("a placeholder is missing:\n%s", body)
				}
				if needsLink[k] && !strings.Contains(body, d.RetryURL) {
					t.Errorf("no retry link in:\n%s", body)
				}
			}
			if k.ForOps() && !strings.Contains(r.Subject, "vs_1") {
				t.Errorf("ops subject %q does not name the session", r.Subject)
			}
		})
	}
}

func TestHTMLIsEscaped(t *testing.T) {
	r, err := email.Render(email.KindFailed, email.Data{FirstName: "<script>", Reason: "a & b", RetryURL: "https://x/?a=1&b=2"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.HTML, "<script>") || !strings.Contains(r.HTML, "a &amp; b") {
		t.Errorf("HTML not escaped:\n%s", r.HTML)
	}
}

func TestUnknownKind(t *testing.T) {
	if _, err := email.Render("birthday", email.Data{}); !errors.Is(err, email.ErrUnknownKind) {
		t.Errorf("err = %v; want ErrUnknownKind", err)
	}
}

func TestSMTPURLs(t *testing.T) {
	for _, bad := range []string{"", "127.0.0.1:25", "http://host:25", "smtp://host"} {
		if _, err := email.NewSender(bad, "from@example.com"); err == nil {
			t.Errorf("SMTP_URL %q accepted", bad)
		}
	}
	if _, err := email.NewSender("smtp://host:25", "not an address"); err == nil {
		t.Error("EMAIL_FROM without an address accepted")
	}
	for _, good := range []string{"smtp://127.0.0.1:1025", "smtp://u:p@mail.example.com:587?tls=required", "smtps://mail.example.com:465"} {
		if _, err := email.NewSender(good, "identity@example.com"); err != nil {
			t.Errorf("SMTP_URL %q: %v", good, err)
		}
	}
}

// A server that accepted the message and then fails the QUIT (it drops the
// connection) has the message: Send reports it sent, so that the caller
// does not send it again.
func TestAQuitThatFailsAfterTheServerAcceptedIsASend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan bool, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		say := func(s string) { fmt.Fprintf(conn, "%s\r\n", s) }
		say("220 stub ESMTP")
		inData := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			switch cmd := strings.ToUpper(strings.SplitN(line, " ", 2)[0]); {
			case inData:
				if line == "." {
					inData = false
					accepted <- true
					say("250 2.0.0 queued")
				}
			case cmd == "EHLO" || cmd == "HELO":
				say("250 stub")
			case cmd == "DATA":
				inData = true
				say("354 go on")
			case cmd == "QUIT":
				return // dropped: no 221
			default:
				say("250 2.0.0 ok")
			}
		}
	}()
	s, err := email.NewSender("smtp://"+ln.Addr().String(), "identity@example.com")
	if err != nil {
		t.Fatal(err)
	}
	r, err := email.Render(email.KindVerified, email.Data{SessionID: "vs_quit"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(context.Background(), email.Message{To: "user@example.com", Rendered: r}); err != nil {
		t.Errorf("Send = %v; want nil: the server accepted the message", err)
	}
	select {
	case <-accepted:
	default:
		t.Fatal("the stub accepted no message: the test proves nothing")
	}
}
