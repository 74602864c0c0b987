// Command identity-verification runs the service: the Stripe webhook, the
// Temporal worker, or both (the default).
//
//	identity-verification [webhook|worker|all]
//
// Configuration is the environment; see the README's table.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"identityverification/config"
	"identityverification/service"
)

func main() {
	role := "all"
	if len(os.Args) > 1 {
		role = os.Args[1]
	}
	if err := run(role); err != nil {
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
