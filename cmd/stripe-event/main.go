// Command stripe-event builds a real-shaped Stripe Identity event, signs it
// with the webhook secret and POSTs it to the webhook, offline.
//
//	go run ./cmd/stripe-event -type requires_input -session vs_123 -code document_expired
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"identityverification/testevent"
)

func main() {
	var o testevent.Options
	url := flag.String("url", "http://127.0.0.1:8080/webhooks/stripe", "webhook URL")
	secret := flag.String("secret", "", "signing secret (default: the first of $STRIPE_WEBHOOK_SECRET)")
	print := flag.Bool("print", false, "print the signed event instead of sending it")
	flag.StringVar(&o.Type, "type", "verified", "event type: created, processing, requires_input, verified, canceled, redacted")
	flag.StringVar(&o.SessionID, "session", "", "VerificationSession id (default: random vs_...)")
	flag.StringVar(&o.EventID, "event", "", "event id (default: random evt_...)")
	flag.StringVar(&o.Status, "status", "", "session status (default: follows -type)")
	flag.StringVar(&o.ErrorCode, "code", "", "last_error.code, e.g. document_expired")
	flag.StringVar(&o.ErrorReason, "reason", "", "last_error.reason")
	flag.BoolVar(&o.NullCode, "null-code", false, "send last_error with a null code")
	flag.BoolVar(&o.NoLastError, "no-last-error", false, "send requires_input without last_error")
	flag.StringVar(&o.APIVersion, "api-version", "2023-10-16", "the event's api_version")
	flag.StringVar(&o.ClientReferenceID, "ref", "", "client_reference_id")
	flag.Parse()

	if *secret == "" {
		*secret, _, _ = strings.Cut(os.Getenv("STRIPE_WEBHOOK_SECRET"), ",")
	}
	if *secret == "" {
		fail("no secret: pass -secret or set STRIPE_WEBHOOK_SECRET")
	}
	payload, err := testevent.Build(o)
	if err != nil {
		fail(err.Error())
	}
	if *print {
		fmt.Printf("Stripe-Signature: %s\n\n%s\n", testevent.Sign(payload, *secret, time.Now()), payload)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	code, body, err := testevent.Send(ctx, &http.Client{}, *url, *secret, payload)
	if err != nil {
		fail(err.Error())
	}
	fmt.Printf("%d %s", code, body)
	if code/100 != 2 {
		os.Exit(1)
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "stripe-event:", msg)
	os.Exit(2)
}
