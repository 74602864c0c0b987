// Command devstack runs the whole stack locally on its embedded defaults: the
// Temporal dev server with its Web UI, Mailpit, stripe-mock, Dex (the review
// desk's OpenID Provider, with static users), and this service's worker,
// webhook and admin listener, all on 127.0.0.1, with data kept in .data/.
// Ctrl-C stops everything it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"identityverification/config"
	"identityverification/devstack"
	"identityverification/service"
	"identityverification/store"
	"identityverification/testevent"
)

// The dev stack's payload key and codec token. Not secrets: the dev stack's
// data stays on this machine, and a fixed key keeps the workflows in .data
// readable from one run to the next. PAYLOAD_ENCRYPTION_KEYS and
// CODEC_TOKEN in the environment replace them.
const (
	devPayloadKeys = "devstack:l8qpJ+9oo8Tm2TDD98Aabq5rucZLznumME5OugdR6rs="
	devCodecToken  = "devstack-codec-token"
	devDeskSecret  = "devstack-desk-client-secret"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run() error {
	dataDir := flag.String("data", ".data", "folder for the SQLite database, Temporal's and Mailpit's data, and logs")
	temporalPort := flag.Int("temporal-port", 7233, "Temporal frontend port")
	uiPort := flag.Int("ui-port", 8233, "Temporal Web UI port")
	smtpPort := flag.Int("smtp-port", 1025, "Mailpit SMTP port")
	mailpitPort := flag.Int("mailpit-port", 8025, "Mailpit API port")
	stripePort := flag.Int("stripe-port", 12111, "stripe-mock HTTP port")
	dexPort := flag.Int("dex-port", 5556, "Dex (the desk's OpenID Provider) port")
	webhookAddr := flag.String("listen", "127.0.0.1:8080", "webhook address")
	adminAddr := flag.String("admin-listen", "127.0.0.1:8081", "admin API address")
	opsAddr := flag.String("ops-listen", "127.0.0.1:9090", "health and metrics address")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	wd, _ := os.Getwd()
	root, err := devstack.Root(wd)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range []int{*temporalPort, *uiPort, *smtpPort, *mailpitPort, *stripePort, *dexPort} {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err != nil {
			return fmt.Errorf("port %d is taken (is another stack running?): %w", p, err)
		} else {
			ln.Close()
		}
	}
	ln, err := net.Listen("tcp", *webhookAddr)
	if err != nil {
		return fmt.Errorf("webhook address %s: %w", *webhookAddr, err)
	}
	adminLn, err := net.Listen("tcp", *adminAddr)
	if err != nil {
		return fmt.Errorf("admin API address %s: %w", *adminAddr, err)
	}
	opsLn, err := net.Listen("tcp", *opsAddr)
	if err != nil {
		return fmt.Errorf("ops address %s: %w", *opsAddr, err)
	}

	bins := map[string]string{}
	for name := range devstack.Tools {
		if bins[name], err = devstack.Tool(ctx, root, name, os.Stderr); err != nil {
			return err
		}
	}
	// The UI decodes payloads through the codec server on the admin
	// listener; it sends no token of its own, so the endpoint holds it.
	codecToken := os.Getenv("CODEC_TOKEN")
	if codecToken == "" {
		codecToken = devCodecToken
	}
	codecURL := "http://" + adminLn.Addr().String() + "/codec"
	fmt.Fprintln(os.Stderr, "starting Temporal, Mailpit, stripe-mock and Dex...")
	temporal, err := devstack.StartTemporalWithCodec(ctx, bins["temporal"], dir, *temporalPort, *uiPort, codecURL+"/"+codecToken)
	if err != nil {
		return err
	}
	defer temporal.Stop()
	mailpit, err := devstack.StartMailpit(ctx, bins["mailpit"], dir, *smtpPort, *mailpitPort)
	if err != nil {
		return err
	}
	defer mailpit.Stop()
	stripe, err := devstack.StartStripeMock(ctx, bins["stripemock"], dir, *stripePort)
	if err != nil {
		return err
	}
	defer stripe.Stop()
	// The review desk signs people in at Dex, on its own login page.
	callback := "http://" + adminLn.Addr().String() + config.DeskCallbackPath
	dex, err := devstack.StartDex(ctx, bins["dex"], dir, *dexPort,
		devstack.DexClient{ID: "review-desk", Secret: devDeskSecret, RedirectURIs: []string{callback}}, devstack.DevUsers)
	if err != nil {
		return err
	}
	defer dex.Stop()

	// The environment wins; the stack fills in what it started.
	env := config.FromEnviron(os.Environ())
	defaults := map[string]string{
		"TEMPORAL_ADDRESS":      temporal.Address,
		"TEMPORAL_NAMESPACE":    "default",
		"DATABASE_URL":          "sqlite:" + filepath.Join(dir, "identity-verification.db"),
		"SMTP_URL":              "smtp://" + mailpit.SMTPAddr,
		"STRIPE_API_BASE":       stripe.URL,
		"STRIPE_API_KEY":        "sk_test_devstack",
		"STRIPE_WEBHOOK_SECRET": "whsec_devstack_not_a_secret",
		"OPS_EMAIL":             "ops@example.com",
		"RETRY_LINK_SECRET":     "devstack-retry-link-secret",
		"ADMIN_TOKEN":           "devstack-admin-token",
		"ENVIRONMENT":           "development", // the secrets above are short
		"LISTEN_ADDR":           ln.Addr().String(),
		"PUBLIC_BASE_URL":       "http://" + ln.Addr().String(),

		// Payloads encrypted as in production, readable in the UI.
		"PAYLOAD_ENCRYPTION_KEYS": devPayloadKeys,
		"CODEC_TOKEN":             codecToken,
		"CODEC_CORS_ORIGINS":      fmt.Sprintf("http://127.0.0.1:%d,http://localhost:%d", *uiPort, *uiPort),

		// The review desk, signing people in at Dex.
		"OIDC_ISSUER":        dex.Issuer,
		"OIDC_CLIENT_ID":     dex.ClientID,
		"OIDC_CLIENT_SECRET": dex.ClientSecret,
		"OIDC_REDIRECT_URL":  callback,
		"REVIEWER_GROUPS":    "reviewers",
		"ADMIN_GROUPS":       "admins",
	}
	for k, v := range defaults {
		if env[k] == "" {
			env[k] = v
		}
	}
	cfg, err := config.Load(env)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}

	// A demo session with a registered contact, so the printed command
	// produces both a row and an email.
	demo := "vs_demo_" + testevent.RandomID(12)
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	err = st.UpsertContact(ctx, store.Contact{SessionID: demo, Email: "demo.user@example.com"})
	st.Close()
	if err != nil {
		return err
	}

	log := service.NewLogger(cfg.LogLevel)
	errc := make(chan error, 1)
	go func() {
		errc <- service.Run(ctx, cfg, service.Roles{Webhook: true, Worker: true, Admin: true, Listener: ln, AdminListener: adminLn,
			OpsListener: opsLn}, log)
	}()

	fmt.Printf(`
Stack is up (data in %s; logs of the tools there too). Ctrl-C stops everything.

  Webhook         http://%s/webhooks/stripe
  Health, metrics http://%s/livez /readyz /metrics
  Admin API       http://%s/admin/sessions/{vs_id}   (Authorization: Bearer %s)
  Review desk     http://%s/desk/   (sign in at Dex, %s)
  Temporal UI     %s
  Temporal        %s (namespace default)
  Mailpit API     %s/api/v1/messages   (SMTP %s)
  stripe-mock     %s
  Database        %s

Send a signed test event (session %s has a registered contact):

  STRIPE_WEBHOOK_SECRET=%s go run ./cmd/stripe-event -url http://%s/webhooks/stripe -type verified -session %s

Then: the workflow identity-verification-%s in the Temporal UI, its row in the
database, and the email at %s/api/v1/messages. Its state through the admin API:

  curl -s -H 'Authorization: Bearer %s' http://%s/admin/sessions/%s

`, dir, ln.Addr(), opsLn.Addr(), adminLn.Addr(), cfg.AdminToken, adminLn.Addr(), dex.Issuer, temporal.UIURL, temporal.Address, mailpit.APIURL, mailpit.SMTPAddr, stripe.URL, cfg.DatabaseURL,
		demo, cfg.WebhookSecrets[0], ln.Addr(), demo, demo, mailpit.APIURL, cfg.AdminToken, adminLn.Addr(), demo)
	fmt.Println("Review desk users (password; groups):")
	for _, u := range dex.Users {
		fmt.Printf("  %-20s %-16s %s\n", u.Email, u.Password, strings.Join(u.Groups, ", "))
	}
	fmt.Printf(`reviewers review and decide (two of them approve a fraud or mismatch review);
admins also see the API keys and the audit log; nobody@ is in no allowed group.
A scoped API key for the admin API:

  DATABASE_URL=%s go run ./cmd/identity-verification api-key create --name backend --scopes sessions:create,sessions:read

`, cfg.DatabaseURL)
	if cfg.Codec != nil {
		fmt.Printf(`Payloads are encrypted in Temporal (%s); the UI decodes them through the
codec server %s/{encode,decode} (Authorization: Bearer %s), and so can the CLI:

  .bin/temporal workflow show --address %s -w identity-verification-%s --codec-endpoint %s --codec-auth 'Bearer %s'

`, cfg.Codec, codecURL, cfg.CodecToken, temporal.Address, demo, codecURL, cfg.CodecToken)
	}

	select {
	case err = <-errc:
		return err // the service stopped (Ctrl-C, or an error); deferred Stops end the tools
	case <-temporal.Exited():
		err = fmt.Errorf("the Temporal dev server exited; see %s", filepath.Join(dir, "temporal.log"))
	case <-mailpit.Exited():
		err = fmt.Errorf("Mailpit exited; see %s", filepath.Join(dir, "mailpit.log"))
	case <-dex.Exited():
		err = fmt.Errorf("Dex exited; see %s", filepath.Join(dir, "dex.log"))
	}
	stop()
	select {
	case <-errc:
	case <-time.After(cfg.ShutdownGrace):
	}
	return err
}
