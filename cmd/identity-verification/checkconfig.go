package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"identityverification/config"
	"identityverification/service"
)

// checkConfig loads the configuration from env for the role in args
// (webhook, worker, admin or all, the default), prints every variable, whether it
// is set, defaulted or unset, and its value (secrets masked), and returns
// every problem found: bad values and the secrets the role needs but
// lacks. With -q it prints only the verdict: the compose file's
// check-config job, whose log is then the one line that says why a stack
// does not start.
func checkConfig(env config.Env, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	quiet := fs.Bool("q", false, "print only the verdict, not every variable")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("check-config: %w", err)
	}
	role := "all"
	switch fs.NArg() {
	case 0:
	case 1:
		role = fs.Arg(0)
	default:
		return fmt.Errorf("check-config: unexpected argument %q", fs.Arg(1))
	}
	roles, err := service.ParseRoles(role)
	if err != nil {
		return fmt.Errorf("check-config: %w", err)
	}
	cfg, settings, err := config.Effective(env)
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	for _, s := range settings {
		source := "set"
		switch {
		case s.Default && s.Value == "":
			source = "unset"
		case s.Default:
			source = "default"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, source, s.Value)
	}
	tw.Flush()
	if !*quiet {
		for _, line := range strings.Split(strings.TrimSuffix(table.String(), "\n"), "\n") {
			fmt.Fprintln(out, strings.TrimRight(line, " "))
		}
	}

	var problems []string
	add := func(err error) {
		if err == nil {
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !slices.Contains(problems, line) { // both roles lack the same secret
				problems = append(problems, line)
			}
		}
	}
	add(err)
	if roles.Webhook {
		add(cfg.CheckWebhook())
	}
	if roles.Worker {
		add(cfg.CheckWorker())
	}
	if roles.Admin {
		add(cfg.CheckAdmin())
	}
	switch len(problems) {
	case 0:
	case 1:
		return fmt.Errorf("configuration for %s: %s", role, problems[0])
	default:
		return fmt.Errorf("configuration for %s: %d problem(s):\n  %s", role, len(problems), strings.Join(problems, "\n  "))
	}
	fmt.Fprintf(out, "configuration for %s: ok\n", role)
	return nil
}
