// Command identity-verification runs the service: the Stripe webhook (with
// retry links), the Temporal worker, the admin listener (admin API, review
// desk, codec server), or all three (the default, for dev). With replay, it
// checks instead that the workflow code in this binary still replays the
// histories of the namespace's runs: run it before rolling out new workers.
//
//	identity-verification [webhook|worker|admin|all]
//	identity-verification replay [-query Q] [-days N] [-limit N] [-save DIR]
//	identity-verification check-config [-q] [webhook|worker|admin|all]
//	identity-verification api-key create --name NAME --scopes S1,S2 | list | revoke ID
//	identity-verification gen-key [-id ID]
//	identity-verification register-endpoint -url https://HOST/webhooks/stripe
//
// replay prints one line per run (ok, or the SDK's error code and the
// event where replay parted from the history) and a summary, and exits 1
// when any run does not replay. It needs only the TEMPORAL_* variables,
// and PAYLOAD_ENCRYPTION_KEYS when the workers encrypt payloads.
//
// check-config validates the configuration the environment gives the role
// without starting anything: it prints every variable with its value or
// default (secrets masked to a prefix and a length) and exits 1 listing
// every bad or missing value (-q: the verdict only). Run it before a
// deploy.
//
// gen-key prints a new random payload encryption key as an entry of
// PAYLOAD_ENCRYPTION_KEYS (id:base64): put it first to encrypt with it,
// and keep the old keys after it to decrypt what they encrypted.
//
// Configuration is the environment; see docs/configuration.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"identityverification/codec"
	"identityverification/config"
	"identityverification/replay"
	"identityverification/service"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "replay" {
		err = runReplay(os.Args[2:])
	} else if len(os.Args) > 1 && os.Args[1] == "gen-key" {
		err = genKey(os.Args[2:], os.Stdout)
	} else if len(os.Args) > 1 && os.Args[1] == "healthcheck" { // the image's health check (no shell in it)
		err = healthcheck(config.OS, os.Args[2:], os.Stdout)
	} else if len(os.Args) > 1 && os.Args[1] == "check-config" {
		err = checkConfig(config.OS, os.Args[2:], os.Stdout)
	} else if len(os.Args) > 1 && os.Args[1] == "api-key" {
		err = apiKey(context.Background(), config.OS, os.Args[2:], os.Stdout)
	} else if len(os.Args) > 1 && os.Args[1] == "register-endpoint" {
		err = registerEndpoint(context.Background(), config.OS, os.Args[2:], os.Stdout)
	} else {
		role := "all"
		if len(os.Args) > 1 {
			role = os.Args[1]
		}
		err = run(role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "identity-verification:", err)
		os.Exit(1)
	}
}

func run(role string) error {
	roles, err := service.ParseRoles(role)
	if err != nil {
		return err
	}
	cfg, err := config.Load(config.OS)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return service.Run(ctx, cfg, roles, service.NewLogger(cfg.LogLevel))
}

// runReplay replays the runs of the namespace the TEMPORAL_* variables
// name against this binary's workflow code.
func runReplay(args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	var opts replay.Options
	fs.StringVar(&opts.Query, "query", "", "visibility query choosing the runs (default: this workflow's open runs and those closed in the last -days)")
	fs.IntVar(&opts.Days, "days", replay.DefaultDays, "days back the default query takes closed runs")
	fs.IntVar(&opts.Limit, "limit", replay.DefaultLimit, "most runs to replay")
	fs.StringVar(&opts.Save, "save", "", "folder to write each fetched history to, as <workflow id>_<run id>.json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("replay: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("replay: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := config.Load(config.OS)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.Codec != nil { // the workers encrypt: replay with their converters
		opts.DataConverter, opts.FailureConverter = cfg.Codec.DataConverter(), cfg.Codec.FailureConverter()
	}
	c, err := service.Dial(ctx, cfg, false, service.NewLogger(cfg.LogLevel))
	if err != nil {
		return err
	}
	defer c.Close()
	sum, err := replay.Live(ctx, c, cfg.Temporal.Namespace, opts, os.Stdout)
	if err != nil {
		return err
	}
	if sum.Failed > 0 {
		return fmt.Errorf("replay: %d of %d runs do not replay against this build: put the change behind workflow.GetVersion",
			sum.Failed, sum.OK+sum.Failed)
	}
	if sum.More {
		// A gate that checked only some runs has not passed: the ones left
		// out are the oldest open sessions, the likeliest to break.
		return fmt.Errorf("replay: more runs match than -limit %d; nothing failed among those checked, but the rest were not: raise -limit", opts.Limit)
	}
	return nil
}

// genKey prints a new payload encryption key, "id:base64", to out. The id
// defaults to today's date, which tells keys apart in a ring.
func genKey(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("gen-key", flag.ContinueOnError)
	id := fs.String("id", "k"+time.Now().UTC().Format("20060102"), "the key's id (1 to 64 letters, digits, '.', '_' or '-')")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("gen-key: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("gen-key: unexpected argument %q", fs.Arg(0))
	}
	k, err := codec.NewKey(*id)
	if err != nil {
		return fmt.Errorf("gen-key: %w", err)
	}
	_, err = fmt.Fprintln(out, k.Entry())
	return err
}
