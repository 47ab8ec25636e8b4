// Command listcrypt is the admin CLI: init, lists, list keys, members,
// holds and policy checks. Its verbs are a stable interface; see
// docs/cli.md. Every error exits non-zero with a one-line reason.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/site"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/admin"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/policy/config"
)

const usage = `usage: listcrypt [-c CONFIG] COMMAND ...

  init                                   create the schema and the passphrase file
  list create ADDRESS [--owner ADDR] [--key-type ed25519|rsa3072|rsa4096]
  list key export ADDRESS                print the list's armored public key
  member add LIST ADDRESS --key FILE     register a member with their key (no challenge)
  member list LIST
  member remove LIST ADDRESS
  member pending LIST                    subscriptions and key changes waiting for a moderator
  member approve LIST ADDRESS            approve one (the subscriber is told by mail)
  member reject LIST ADDRESS             reject one (the subscriber is told by mail)
  hold list LIST [--all]                 --all: every hold with its state
  hold show ID
  hold approve ID
  hold reject ID
  hold expire                            expire holds older than post.hold_expiry, tell the owners
  policy check                           validate every policy file
`

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, usage)
		}
		fmt.Fprintln(os.Stderr, "listcrypt:", msg)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("listcrypt", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("c", config.DefaultPath, "site config file")
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	args = fs.Args()
	if len(args) == 0 {
		return usageErr("no command")
	}
	// init creates the site's state, policy check needs the config
	// alone, the other verbs an initialised store.
	mode := site.StoreCurrent
	switch args[0] {
	case "init":
		mode = site.StoreInit
	case "list", "member", "hold":
	default:
		mode = site.StoreNone
	}
	s, err := site.Open(ctx, *cfgPath, site.Options{Store: mode})
	if err != nil {
		return err
	}
	defer s.Close()
	verb := strings.Join(args[:min(2, len(args))], " ")
	if args[0] == "init" {
		for _, c := range s.Created {
			fmt.Fprintln(out, "ready:", c)
		}
		return nil
	}
	if args[0] == "policy" {
		if len(args) != 2 || args[1] != "check" {
			return usageErr("policy check")
		}
		set, err := admin.CheckPolicies(s.Config.PolicyDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%d list policies OK in %s\n", len(set.Lists), s.Config.PolicyDir)
		return nil
	}
	a := admin.New(s)
	switch {
	case verb == "list create":
		pos, flags, err := parseArgs(args[2:], "owner", "key-type")
		if err != nil || len(pos) != 1 {
			return usageErr("list create ADDRESS [--owner ADDR] [--key-type ed25519|rsa3072|rsa4096]")
		}
		kt := keyring.KeyEd25519
		if v, ok := flags["key-type"]; ok {
			if kt, err = keyring.ParseKeyType(v); err != nil {
				return err
			}
		}
		fpr, err := a.CreateList(ctx, pos[0], flags["owner"], kt)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "list %s created, key %s\n", pos[0], fpr)
	case verb == "list key":
		if len(args) != 4 || args[2] != "export" {
			return usageErr("list key export ADDRESS")
		}
		armored, err := a.ExportListKey(ctx, args[3])
		if err != nil {
			return err
		}
		fmt.Fprint(out, armored)
		if !strings.HasSuffix(armored, "\n") {
			fmt.Fprintln(out)
		}
	case verb == "member add":
		pos, flags, err := parseArgs(args[2:], "key")
		if err != nil || len(pos) != 2 || flags["key"] == "" {
			return usageErr("member add LIST ADDRESS --key FILE")
		}
		data, err := readKeyFile(flags["key"])
		if err != nil {
			return err
		}
		fpr, err := a.AddMember(ctx, pos[0], pos[1], data)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "member %s added to %s, key %s\n", pos[1], pos[0], fpr)
	case verb == "member list":
		if len(args) != 3 {
			return usageErr("member list LIST")
		}
		ms, err := a.Members(ctx, args[2])
		if err != nil {
			return err
		}
		for _, m := range ms {
			fmt.Fprintf(out, "%s\t%s\t%s\n", m.Address, m.State, m.Fingerprint)
		}
	case verb == "member remove":
		if len(args) != 4 {
			return usageErr("member remove LIST ADDRESS")
		}
		if err := a.RemoveMember(ctx, args[2], args[3]); err != nil {
			return err
		}
		fmt.Fprintf(out, "member %s removed from %s\n", args[3], args[2])
	case verb == "member pending":
		if len(args) != 3 {
			return usageErr("member pending LIST")
		}
		es, err := a.PendingMembers(ctx, args[2])
		if err != nil {
			return err
		}
		for _, e := range es {
			fmt.Fprintln(out, pendingLine(e))
		}
	case verb == "member approve", verb == "member reject":
		if len(args) != 4 {
			return usageErr("%s LIST ADDRESS", verb)
		}
		approve := args[1] == "approve"
		var e workflow.PendingEntry
		if approve {
			e, err = a.ApproveMember(ctx, args[2], args[3])
		} else {
			e, err = a.RejectMember(ctx, args[2], args[3])
		}
		if err != nil {
			return err
		}
		done := "approved"
		if !approve {
			done = "rejected"
		}
		fmt.Fprintf(out, "%s of %s on %s %s, key %s\n", e.Kind, e.Address, e.List, done, e.Fingerprint)
		if e.NoticeErr != nil {
			fmt.Fprintf(out, "the subscriber could not be told by mail: %v\n", e.NoticeErr)
		}
	case verb == "hold list":
		var pos []string
		all := false
		for _, a := range args[2:] {
			switch {
			case a == "--all" || a == "-all":
				all = true
			case strings.HasPrefix(a, "-"):
				return usageErr("hold list LIST [--all]: unknown flag %s", a)
			default:
				pos = append(pos, a)
			}
		}
		if len(pos) != 1 {
			return usageErr("hold list LIST [--all]")
		}
		hs, err := a.Holds(ctx, pos[0])
		if all {
			hs, err = a.AllHolds(ctx, pos[0])
		}
		if err != nil {
			return err
		}
		for _, h := range hs {
			if all {
				fmt.Fprintln(out, admin.StatusLine(h))
			} else {
				fmt.Fprintln(out, admin.Summary(h))
			}
		}
	case verb == "hold expire":
		if len(args) != 2 {
			return usageErr("hold expire")
		}
		n, err := a.ExpireHolds(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%d held posts expired\n", n)
	case verb == "hold show", verb == "hold approve", verb == "hold reject":
		if len(args) != 3 {
			return usageErr("%s ID", verb)
		}
		id, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil || id <= 0 {
			return fmt.Errorf("hold id %q is not a number", args[2])
		}
		switch args[1] {
		case "show":
			hp, err := a.ShowHold(ctx, id)
			if err != nil {
				return err
			}
			state := hp.Status()
			switch state {
			case store.HoldExpired:
				state += " " + hp.ExpiredAt.UTC().Format("2006-01-02 15:04:05 MST")
			case store.HoldDelivered:
				state += " " + hp.DeliveredAt.UTC().Format("2006-01-02 15:04:05 MST")
			}
			fmt.Fprintf(out, "id: %d\nlist: %s\nsender: %s\nreason: %s\nheld: %s\nstate: %s\n\n",
				hp.ID, hp.List, hp.Sender, hp.Reason, hp.CreatedAt.UTC().Format("2006-01-02 15:04:05 MST"), state)
			if hp.Plaintext != nil {
				fmt.Fprintln(out, "decrypted content:")
				out.Write(hp.Plaintext)
			} else {
				out.Write(hp.Raw)
			}
		case "approve":
			ap, err := a.ApproveHold(ctx, id)
			if err != nil {
				return err
			}
			if ap.Resumed {
				fmt.Fprintf(out, "held post %d: delivery resumed and completed, %d more members\n", id, ap.Delivered)
			} else {
				fmt.Fprintf(out, "held post %d approved and delivered to %d members\n", id, ap.Delivered)
			}
		case "reject":
			if err := a.RejectHold(ctx, id); err != nil {
				return err
			}
			fmt.Fprintf(out, "held post %d rejected\n", id)
		}
	default:
		return usageErr("unknown command %q", strings.Join(args, " "))
	}
	return nil
}

// parseArgs splits args into positionals and --name VALUE / --name=VALUE
// flags (flags may come after positionals, as the documented verbs write
// them). Unknown flags are an error.
func parseArgs(args []string, names ...string) ([]string, map[string]string, error) {
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	var pos []string
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !known[name] {
			return nil, nil, fmt.Errorf("unknown flag %s", a)
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, nil, fmt.Errorf("flag %s needs a value", a)
			}
			i++
			val = args[i]
		}
		flags[name] = val
	}
	return pos, flags, nil
}

func readKeyFile(path string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("key file: %w", err)
		}
		defer f.Close()
		r = f
	}
	// Read one byte more than any acceptable key so the size limit in
	// keyring reports it, without reading an unbounded file.
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	return data, nil
}

// pendingLine is one line of "member pending": address, kind, the
// fingerprint to compare out of band (in blocks of four), what it
// replaces, and since when it waits.
func pendingLine(e workflow.PendingEntry) string {
	line := fmt.Sprintf("%s\t%s\t%s", e.Address, e.Kind, groupFingerprint(e.Fingerprint))
	if e.OldFingerprint != "" {
		line += "\treplaces " + groupFingerprint(e.OldFingerprint)
	}
	return line + "\tsince " + e.Since.UTC().Format(time.RFC3339)
}

func groupFingerprint(f string) string {
	var parts []string
	for i := 0; i < len(f); i += 4 {
		parts = append(parts, f[i:min(i+4, len(f))])
	}
	return strings.Join(parts, " ")
}
