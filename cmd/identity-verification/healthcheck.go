package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"identityverification/config"
)

// healthcheck is the container health check of an image without a shell
// or curl (distroless): `identity-verification healthcheck` GETs /readyz on
// the process's own ops listener (OPS_ADDR from the same environment, an
// all-interfaces host probed on loopback) and exits 0 only on 200. -url
// probes another address. It ignores HTTP(S)_PROXY: the probe is local.
func healthcheck(env config.Env, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	target := fs.String("url", "", "URL to GET (default: http://OPS_ADDR/readyz, loopback for an all-interfaces host)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("healthcheck: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q", fs.Arg(0))
	}
	if *target == "" {
		cfg, err := config.Load(env)
		if err != nil {
			return fmt.Errorf("healthcheck: configuration: %w", err)
		}
		if cfg.OpsAddr == config.OpsOff {
			return errors.New("healthcheck: OPS_ADDR is off: no listener to probe (give -url)")
		}
		host, port, err := net.SplitHostPort(cfg.OpsAddr)
		if err != nil {
			return fmt.Errorf("healthcheck: OPS_ADDR: %w", err)
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		*target = "http://" + net.JoinHostPort(host, port) + "/readyz"
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", *target, resp.Status)
	}
	_, err = fmt.Fprintln(out, "ok", *target)
	return err
}
