// Package email renders the service's emails from embedded templates and
// sends them over SMTP with github.com/wneessen/go-mail.
package email

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"net"
	"net/url"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/wneessen/go-mail"
)

// Kind names an email; it is part of the idempotency key.
type Kind string

// The emails this service sends. The ops_* kinds go to the ops address.
const (
	KindVerified         Kind = "verified"
	KindFailed           Kind = "failed"
	KindReminder         Kind = "reminder"
	KindExpiryWarning    Kind = "expiry_warning"
	KindExpired          Kind = "expired"
	KindAlternateOffered Kind = "alternate_offered"
	KindUnderReview      Kind = "under_review"
	KindReviewApproved   Kind = "review_approved"
	KindReviewRejected   Kind = "review_rejected"
	KindOpsReviewOpened  Kind = "ops_review_opened"
	KindOpsReviewOverdue Kind = "ops_review_overdue"
)

// Kinds lists every kind, for validation and tests.
var Kinds = []Kind{KindVerified, KindFailed, KindReminder, KindExpiryWarning, KindExpired, KindAlternateOffered,
	KindUnderReview, KindReviewApproved, KindReviewRejected, KindOpsReviewOpened, KindOpsReviewOverdue}

// ForOps reports whether the kind goes to ops rather than to the user.
func (k Kind) ForOps() bool { return strings.HasPrefix(string(k), "ops_") }

// Sentinel errors.
var (
	// ErrPermanent: the SMTP server refused the message for good (a 5xx
	// reply); retrying cannot help.
	ErrPermanent = errors.New("email: permanently refused")
	// ErrUnknownKind: no template for the kind.
	ErrUnknownKind = errors.New("email: unknown kind")
)

//go:embed templates
var templates embed.FS

var funcs = map[string]any{"join": strings.Join}

// Data fills a template. Only what a kind uses needs setting.
type Data struct {
	SessionID   string
	FirstName   string
	Reason      string
	RetryURL    string
	Attempt     int
	MaxAttempts int
	Fields      []string
	Deadline    string
}

// Rendered is a rendered email.
type Rendered struct {
	Subject, Text, HTML string
}

// Render renders a kind's subject, text and HTML bodies.
func Render(kind Kind, d Data) (Rendered, error) {
	var r Rendered
	if _, err := fs.Stat(templates, "templates/"+string(kind)+".txt"); err != nil {
		return r, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	// Each kind defines "subject", "text" and "body", so each is parsed on
	// its own (the names would clash in one set).
	t, err := texttemplate.New("").Funcs(funcs).ParseFS(templates, "templates/"+string(kind)+".txt")
	if err != nil {
		return r, fmt.Errorf("email: %s: %w", kind, err)
	}
	h, err := htmltemplate.New("").Funcs(funcs).ParseFS(templates, "templates/layout.html", "templates/"+string(kind)+".html")
	if err != nil {
		return r, fmt.Errorf("email: %s: %w", kind, err)
	}
	var subject, text, html bytes.Buffer
	if err := t.ExecuteTemplate(&subject, "subject", d); err != nil {
		return r, fmt.Errorf("email: %s subject: %w", kind, err)
	}
	if err := t.ExecuteTemplate(&text, "text", d); err != nil {
		return r, fmt.Errorf("email: %s text: %w", kind, err)
	}
	if err := h.ExecuteTemplate(&html, "layout", d); err != nil {
		return r, fmt.Errorf("email: %s html: %w", kind, err)
	}
	return Rendered{Subject: strings.TrimSpace(subject.String()), Text: text.String(), HTML: html.String()}, nil
}

// Message is one email to send.
type Message struct {
	To string
	Rendered
	// MessageID is derived from the idempotency key, so that if a send is
	// repeated after a crash the receiving side can still recognise it.
	MessageID string
}

// Sender sends over SMTP.
type Sender struct {
	host    string
	opts    []mail.Option
	from    string
	timeout time.Duration
}

// NewSender parses an SMTP URL: smtp://[user:pass@]host:port for plain SMTP
// upgraded by STARTTLS when offered (?tls=none turns it off, ?tls=required
// demands it), smtps://... for implicit TLS.
func NewSender(smtpURL, from string) (*Sender, error) {
	u, err := url.Parse(smtpURL)
	if err != nil || u.Host == "" {
		return nil, errors.New("email: SMTP_URL must look like smtp://host:port")
	}
	if err := mail.NewMsg().From(from); err != nil {
		return nil, errors.New("email: EMAIL_FROM must be an email address")
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("email: SMTP_URL host: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("email: SMTP_URL port: %w", err)
	}
	s := &Sender{host: host, from: from, timeout: 20 * time.Second}
	s.opts = []mail.Option{mail.WithPort(port), mail.WithTimeout(s.timeout), mail.WithHELO("localhost")}
	switch u.Scheme {
	case "smtp":
		switch u.Query().Get("tls") {
		case "none":
			s.opts = append(s.opts, mail.WithTLSPolicy(mail.NoTLS))
		case "required":
			s.opts = append(s.opts, mail.WithTLSPolicy(mail.TLSMandatory))
		default:
			s.opts = append(s.opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
		}
	case "smtps":
		s.opts = append(s.opts, mail.WithSSL())
	default:
		return nil, fmt.Errorf("email: SMTP_URL scheme %q: want smtp or smtps", u.Scheme)
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		s.opts = append(s.opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover),
			mail.WithUsername(u.User.Username()), mail.WithPassword(pw))
	}
	return s, nil
}

// Send delivers one message. A permanent refusal wraps ErrPermanent; its text
// carries SMTP codes only, never the recipient's address.
func (s *Sender) Send(ctx context.Context, m Message) error {
	msg := mail.NewMsg()
	if err := msg.From(s.from); err != nil {
		return fmt.Errorf("%w: invalid sender address", ErrPermanent)
	}
	if err := msg.To(m.To); err != nil {
		return fmt.Errorf("%w: invalid recipient address", ErrPermanent)
	}
	msg.Subject(m.Subject)
	if m.MessageID != "" {
		msg.SetMessageIDWithValue(m.MessageID)
	}
	msg.SetDate()
	msg.SetBodyString(mail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	}
	c, err := mail.NewClient(s.host, s.opts...)
	if err != nil {
		return fmt.Errorf("email: client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn, err := c.DialToSMTPClientWithContext(ctx)
	if err == nil {
		err = c.SendWithSMTPClient(conn, msg)
		// Once the server accepted the message (DATA answered), a QUIT
		// that fails does not unsend it: reporting it would make the
		// caller send the message again. The connection is closed either
		// way.
		if qerr := c.CloseWithSMTPClient(conn); qerr != nil {
			_ = conn.Close()
		}
	}
	if err != nil {
		var se *mail.SendError
		if errors.As(err, &se) {
			// se.Error() lists the recipients: report codes only.
			if !se.IsTemp() && se.ErrorCode() >= 500 {
				return fmt.Errorf("%w: %s (SMTP %d %s)", ErrPermanent, se.Reason, se.ErrorCode(), se.EnhancedStatusCode())
			}
			return fmt.Errorf("email: send failed: %s (SMTP %d %s)", se.Reason, se.ErrorCode(), se.EnhancedStatusCode())
		}
		return fmt.Errorf("email: send: %w", err)
	}
	return nil
}
