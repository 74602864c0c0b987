package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"identityverification/access"
	"identityverification/config"
	"identityverification/store"
	"identityverification/workflows"
)

// apiKey makes, lists and revokes the admin API's keys in the database
// DATABASE_URL names:
//
//	identity-verification api-key create --name backend --scopes sessions:create,sessions:register
//	identity-verification api-key list
//	identity-verification api-key revoke ID
//
// create prints the key once: only its hash is stored. Making and revoking
// a key are audit rows (actor cli, the operating system's user), written in
// the change's own transaction: a key the audit log cannot record is not
// made (or not revoked), and the command fails.
func apiKey(ctx context.Context, env config.Env, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("api-key: want create, list or revoke")
	}
	cfg, err := config.Load(env)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	open := func() (*store.Store, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return store.Open(ctx, cfg.DatabaseURL)
	}
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("api-key create", flag.ContinueOnError)
		fs.SetOutput(out)
		name := fs.String("name", "", "who the key is for (e.g. backend)")
		scopes := fs.String("scopes", "", "comma-separated: "+strings.Join(access.Scopes, ", "))
		if err := fs.Parse(args[1:]); err != nil {
			return fmt.Errorf("api-key create: %w", err)
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("api-key create: unexpected argument %q", fs.Arg(0))
		}
		if *name == "" || len(*name) > 100 || strings.ContainsFunc(*name, workflows.Unprintable) {
			return errors.New("api-key create: --name is required: up to 100 characters of text")
		}
		sc, err := access.ParseScopes(*scopes)
		if err != nil {
			return fmt.Errorf("api-key create: --scopes: %w", err)
		}
		k, err := access.NewKey()
		if err != nil {
			return err
		}
		st, err := open()
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.CreateAPIKey(ctx, store.APIKey{ID: k.ID, Name: *name, Scopes: sc, SecretHash: k.Hash},
			cliAudit(store.AuditKeyCreate, k.ID+" "+*name+": "+strings.Join(sc, ","))); err != nil {
			return fmt.Errorf("api-key create: no key was made: %w", err)
		}
		_, err = fmt.Fprintf(out, "id:     %s\nname:   %s\nscopes: %s\nkey:    %s\n\nThe key is shown this once and not stored: give it to %s now (Authorization: Bearer <key>).\n",
			k.ID, *name, strings.Join(sc, ","), k.Secret, *name)
		return err
	case "list":
		if len(args) > 1 {
			return fmt.Errorf("api-key list: unexpected argument %q", args[1])
		}
		st, err := open()
		if err != nil {
			return err
		}
		defer st.Close()
		keys, err := st.APIKeys(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tCREATED\tREVOKED")
		for _, k := range keys {
			revoked := "-"
			if k.Revoked() {
				revoked = k.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, strings.Join(k.Scopes, ","), k.CreatedAt.Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	case "revoke":
		if len(args) != 2 {
			return errors.New("api-key revoke: want the key's id")
		}
		st, err := open()
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.RevokeAPIKey(ctx, args[1], cliAudit(store.AuditKeyRevoke, args[1])); errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("api-key revoke: no key %q", args[1])
		} else if err != nil {
			return fmt.Errorf("api-key revoke: the key still works: %w", err)
		}
		_, err = fmt.Fprintf(out, "revoked %s: it is refused from now on\n", args[1])
		return err
	}
	return fmt.Errorf("api-key: unknown command %q: want create, list or revoke", args[0])
}

// cliAudit is the audit row of a key's making or revoking, by whoever runs
// the command.
func cliAudit(action, detail string) *store.AuditRecord {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	return &store.AuditRecord{Actor: "cli", ActorName: who, Action: action, Source: cmp.Or(host, "local"),
		Result: store.AuditOK, Detail: detail}
}
