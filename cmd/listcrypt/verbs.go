package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/site"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/admin"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/policy"
)

// verb is one command of listcrypt. The table below drives parsing,
// the usage text and the listcrypt section of docs/cli.md
// (TestCLIReferenceUpToDate).
type verb struct {
	name  string // the words that name it: "list create"
	args  string // its synopsis after the name: "ADDRESS [--owner ADDR]"
	short string // the comment on its usage line
	// doc is its rows in docs/cli.md: arguments (replacing args when
	// set), what it does, what it prints.
	doc []docRow
	// store is how the site is opened for it.
	store site.StoreMode
	// min, max: how many positional arguments it takes.
	min, max int
	// flags take a value (--name VALUE or --name=VALUE); bools do not.
	flags, bools []string
	// required flags.
	required []string
	// check validates the arguments before any file is opened.
	check func(c *call) error
	run   func(c *call) error
}

type docRow struct{ args, does, output string }

// call is one parsed invocation of a verb.
type call struct {
	ctx   context.Context
	out   io.Writer
	verb  *verb
	pos   []string
	flags map[string]string
	set   map[string]bool // boolean flags given
	site  *site.Site
	admin *admin.Site
	id    int64 // hold verbs: the parsed ID
}

func (v *verb) synopsis() string {
	if v.args == "" {
		return v.name
	}
	return v.name + " " + v.args
}

// verbs is the table of listcrypt's commands, in the order of the usage
// text and of docs/cli.md. Their names, flags and outputs are a stable
// interface: add, never change.
var verbs = []*verb{
	{
		name: "init", short: "create the schema and the passphrase file", store: site.StoreInit,
		doc: []docRow{{"", "creates the state folder, the schema (or migrates it to this version) and, if missing, the passphrase file (0600, written atomically)", "`ready: schema ENGINE`, `ready: passphrase PATH`"}},
		run: func(c *call) error {
			for _, cr := range c.site.Created {
				fmt.Fprintln(c.out, "ready:", cr)
			}
			return nil
		},
	},
	{
		name: "list ls", short: "every list with its key fingerprint and member count",
		doc: []docRow{{"", "lists the lists of the site", "one line per list, ordered by address: `ADDRESS<TAB>FINGERPRINT<TAB>MEMBERS` (the number of members in any state)"}},
		run: func(c *call) error {
			ls, err := c.admin.Lists(c.ctx)
			if err != nil {
				return err
			}
			for _, l := range ls {
				fmt.Fprintf(c.out, "%s\t%s\t%d\n", l.Address, l.KeyFingerprint, l.Members)
			}
			return nil
		},
	},
	{
		name: "list create", args: "ADDRESS [--owner ADDR] [--key-type ed25519|rsa3072|rsa4096]", min: 1, max: 1,
		flags: []string{"owner", "key-type"},
		doc:   []docRow{{"", "writes `policy_dir/ADDRESS.toml` if missing (every key with its default) and generates the list key; the secret key is stored sealed by the site passphrase", "`list ADDRESS created, key FINGERPRINT`"}},
		check: func(c *call) error {
			if v, ok := c.flags["key-type"]; ok {
				if _, err := keyring.ParseKeyType(v); err != nil {
					return err
				}
			}
			return nil
		},
		run: func(c *call) error {
			kt := keyring.KeyEd25519
			if v, ok := c.flags["key-type"]; ok {
				kt, _ = keyring.ParseKeyType(v)
			}
			fpr, err := c.admin.CreateList(c.ctx, c.pos[0], c.flags["owner"], kt)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "list %s created, key %s\n", c.pos[0], fpr)
			return nil
		},
	},
	{
		name: "list key export", args: "ADDRESS", short: "print the list's armored public key", min: 1, max: 1,
		doc: []docRow{{"", "prints the list's armored public key", "the armored key"}},
		run: func(c *call) error {
			armored, err := c.admin.ExportListKey(c.ctx, c.pos[0])
			if err != nil {
				return err
			}
			fmt.Fprint(c.out, armored)
			if !strings.HasSuffix(armored, "\n") {
				fmt.Fprintln(c.out)
			}
			return nil
		},
	},
	{
		name: "list key rotate", args: "ADDRESS", short: "make a new list key; members get it signed by the old and the new key", min: 1, max: 1,
		doc: []docRow{{"", "makes a new list key of the same type as the current one (sealed by the site passphrase) and switches the list to it in one transaction, which also keeps the old key (public and sealed secret) with the time it was retired and writes into the outbox, for every active member with a usable key, a notice encrypted to the member, signed by the old and the new key, with the new public key attached (`application/pgp-keys`); the notices are then sent (envelope sender the list's bounce address; what the MTA does not take now waits in the outbox for the next run). Posts encrypted to the old key are accepted for `[keys] old_key_grace` (docs/inbound.md)",
			"`list ADDRESS: new key FINGERPRINT (was FINGERPRINT)`, then `notices: N sent, M waiting in the outbox, K members without a usable key`"}},
		run: func(c *call) error {
			kc, err := c.admin.RotateListKey(c.ctx, c.pos[0])
			if err != nil {
				return err
			}
			printKeyChange(c, kc)
			return nil
		},
	},
	{
		name: "list key import", args: "ADDRESS FILE", short: "switch the list to an owner-generated secret key", min: 2, max: 2,
		doc: []docRow{{"", "switches the list to the secret key in FILE (armored or binary, `gpg --export-secret-keys`, without a passphrase: it is sealed by the site passphrase at once; FILE must not be readable by other users), exactly as `list key rotate` does with a new key: the old key kept for `[keys] old_key_grace`, the same notices. Refused: a protected or public-only key, more than one key, a key that is not version 4, weak algorithms (RSA under 2048 bits, DSA, ElGamal), a revoked or expired key, no valid user ID for ADDRESS, no encryption subkey",
			"as `list key rotate`"}},
		run: func(c *call) error {
			kc, err := c.admin.ImportListKey(c.ctx, c.pos[0], c.pos[1])
			if err != nil {
				return err
			}
			printKeyChange(c, kc)
			return nil
		},
	},
	{
		name: "list delete", args: "ADDRESS [--force] [--purge]", short: "delete a list (its keys are kept in state_dir unless --purge)", min: 1, max: 1,
		bools: []string{"force", "purge"},
		doc: []docRow{{"", "deletes the list and every row of it in the database (members, holds, delivery and replay records, challenges). First, unless `--purge`, it writes the list's key, public and secret, to `state_dir/deleted-ADDRESS-TIMESTAMP.key.asc` (0600, written atomically; the secret key stays sealed by the site passphrase exactly as stored: `gpg --import` asks for that passphrase), and moves the list's policy file aside to `FILE.deleted-TIMESTAMP` (no longer loaded; `--purge` removes it). A list with held posts waiting for a moderator, or whose approved delivery stopped half-way, is refused unless `--force`. Reload listcrypt-milter (`SIGHUP`) afterwards",
			"`list key of ADDRESS kept in PATH` (not with `--purge`), `policy FILE moved to FILE.deleted-TIMESTAMP` (or `policy FILE removed`), then `list ADDRESS deleted: N members, M holds`"}},
		run: func(c *call) error {
			d, err := c.admin.DeleteList(c.ctx, c.pos[0], admin.DeleteOptions{Force: c.set["force"], Purge: c.set["purge"]})
			if d.ExportPath != "" {
				fmt.Fprintf(c.out, "list key of %s kept in %s\n", d.Address, d.ExportPath)
			}
			if err != nil {
				return err
			}
			switch {
			case d.PolicyMoved != "":
				fmt.Fprintf(c.out, "policy %s moved to %s\n", d.PolicyFile, d.PolicyMoved)
			case d.PolicyFile != "":
				fmt.Fprintf(c.out, "policy %s removed\n", d.PolicyFile)
			}
			fmt.Fprintf(c.out, "list %s deleted: %d members, %d holds\n", d.Address, d.Members, d.Holds)
			return nil
		},
	},
	{
		name: "member add", args: "LIST ADDRESS --key FILE", short: "register a member with their key (no challenge)", min: 2, max: 2,
		flags: []string{"key"}, required: []string{"key"},
		doc: []docRow{{"", "admin path, no challenge: checks the key (size, signature count, strength, expiry, revocation, an encryption-capable subkey, a user ID for ADDRESS), strips other user IDs and third-party certifications, and registers the member as active. `--key -` reads standard input", "`member ADDRESS added to LIST, key FINGERPRINT`"}},
		run: func(c *call) error {
			data, err := readKeyFile(c.flags["key"])
			if err != nil {
				return err
			}
			fpr, err := c.admin.AddMember(c.ctx, c.pos[0], c.pos[1], data)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "member %s added to %s, key %s\n", c.pos[1], c.pos[0], fpr)
			return nil
		},
	},
	{
		name: "member import", args: "LIST FILE", short: "register many members with their keys, all or nothing", min: 2, max: 2,
		doc: []docRow{{"", "registers many members in one go, each as `member add` would (same key checks), all or nothing in one database transaction. FILE has one `ADDRESS KEYFILE` per line (see [member import](#member-import)); `-` reads it from standard input. An address already on the list with the same key and active is left as it is; one with another key or state is refused. When any line is refused nothing is imported: every refusal is reported on standard error as `FILE:LINE: reason` and the exit is non-zero",
			"one `member ADDRESS added to LIST, key FINGERPRINT` per member added, then `N members imported to LIST (M unchanged)`"}},
		run: runImport,
	},
	{
		name: "member list", args: "LIST", min: 1, max: 1,
		doc: []docRow{{"", "lists members", "one line per member: `ADDRESS<TAB>STATE<TAB>FINGERPRINT`"}},
		run: func(c *call) error {
			ms, err := c.admin.Members(c.ctx, c.pos[0])
			if err != nil {
				return err
			}
			for _, m := range ms {
				fmt.Fprintf(c.out, "%s\t%s\t%s\n", m.Address, m.State, m.Fingerprint)
			}
			return nil
		},
	},
	{
		name: "member remove", args: "LIST ADDRESS", min: 2, max: 2,
		doc: []docRow{{"", "removes a member", "`member ADDRESS removed from LIST`"}},
		run: func(c *call) error {
			if err := c.admin.RemoveMember(c.ctx, c.pos[0], c.pos[1]); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "member %s removed from %s\n", c.pos[1], c.pos[0])
			return nil
		},
	},
	{
		name: "member bounces", args: "LIST", short: "members whose copies bounced: score and delivery", min: 1, max: 1,
		doc: []docRow{{"", "lists the bounce records of the list's members (docs/bounces.md)", "one line per member that bounced or was disabled: `ADDRESS<TAB>SCORE<TAB>BOUNCES<TAB>LAST-BOUNCE (RFC 3339, or -)<TAB>LAST-STATUS (or -)<TAB>DELIVERY` (`enabled`, or `disabled` since RFC 3339)"}},
		run: func(c *call) error {
			bs, err := c.admin.Bounces(c.ctx, c.pos[0])
			if err != nil {
				return err
			}
			for _, b := range bs {
				fmt.Fprintln(c.out, bounceLine(b))
			}
			return nil
		},
	},
	{
		name: "member disable", args: "LIST ADDRESS", short: "stop delivery to a member (it stays a member)", min: 2, max: 2,
		doc: []docRow{{"", "stops delivery to a member; it stays a member and may still post", "`delivery to ADDRESS on LIST disabled` (or `... was disabled already`)"}},
		run: func(c *call) error { return setDelivery(c, false) },
	},
	{
		name: "member enable", args: "LIST ADDRESS", short: "deliver to a member again and clear its bounce score", min: 2, max: 2,
		doc: []docRow{{"", "delivers to a member again (after bounces or member disable) and clears its bounce score", "`delivery to ADDRESS on LIST enabled` (or `... was enabled already`)"}},
		run: func(c *call) error { return setDelivery(c, true) },
	},
	{
		name: "member pending", args: "LIST", short: "subscriptions and key changes waiting for a moderator", min: 1, max: 1,
		doc: []docRow{{"", "subscriptions and key changes confirmed by the subscriber and waiting for a moderator", "one line per entry: `ADDRESS<TAB>KIND<TAB>FINGERPRINT (blocks of 4)[<TAB>replaces OLD]<TAB>since RFC3339`"}},
		run: func(c *call) error {
			es, err := c.admin.PendingMembers(c.ctx, c.pos[0])
			if err != nil {
				return err
			}
			for _, e := range es {
				fmt.Fprintln(c.out, pendingLine(e))
			}
			return nil
		},
	},
	{
		name: "member approve", args: "LIST ADDRESS", short: "approve one (the subscriber is told by mail)", min: 2, max: 2,
		doc: []docRow{{"", "approves one (the member becomes active; the subscriber is told by mail)", "`KIND of ADDRESS on LIST approved, key FINGERPRINT`"}},
		run: func(c *call) error { return decideMember(c, true) },
	},
	{
		name: "member reject", args: "LIST ADDRESS", short: "reject one (the subscriber is told by mail)", min: 2, max: 2,
		doc: []docRow{{"", "rejects one (the subscriber is told by mail)", "`KIND of ADDRESS on LIST rejected, key FINGERPRINT`"}},
		run: func(c *call) error { return decideMember(c, false) },
	},
	{
		name: "hold list", args: "LIST [--all]", short: "--all: every hold with its state", min: 1, max: 1,
		bools: []string{"all"},
		doc: []docRow{
			{"LIST", "lists held posts waiting for a moderator", "one line per post: `ID<TAB>HELD-AT (RFC 3339)<TAB>SENDER<TAB>REASON<TAB>RECIPIENTS`"},
			{"LIST --all", "lists every hold of the list, whatever its state (a hold whose delivery stopped half-way shows as `delivering`)", "one line per hold: the five fields above, then `<TAB>STATE`: `held`, `delivering`, `delivered`, `rejected` or `expired`"},
		},
		run: func(c *call) error {
			all := c.set["all"]
			hs, err := c.admin.Holds(c.ctx, c.pos[0])
			if all {
				hs, err = c.admin.AllHolds(c.ctx, c.pos[0])
			}
			if err != nil {
				return err
			}
			for _, h := range hs {
				if all {
					fmt.Fprintln(c.out, admin.StatusLine(h))
				} else {
					fmt.Fprintln(c.out, admin.Summary(h))
				}
			}
			return nil
		},
	},
	{
		name: "hold show", args: "ID", min: 1, max: 1, check: holdID,
		doc: []docRow{{"", "opens a held post with the list key, in memory only", "a header block (`id:`, `list:`, `sender:`, `reason:`, `held:`, `state:`), a blank line, then the decrypted content. `state:` is `held`, `delivering` (approved, delivery not complete: `hold approve` resumes it), `delivered DATE`, `rejected`, or `expired DATE`"}},
		run: func(c *call) error {
			hp, err := c.admin.ShowHold(c.ctx, c.id)
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
			fmt.Fprintf(c.out, "id: %d\nlist: %s\nsender: %s\nreason: %s\nheld: %s\nstate: %s\n\n",
				hp.ID, hp.List, hp.Sender, hp.Reason, hp.CreatedAt.UTC().Format("2006-01-02 15:04:05 MST"), state)
			if hp.Plaintext != nil {
				fmt.Fprintln(c.out, "decrypted content:")
				c.out.Write(hp.Plaintext)
			} else {
				c.out.Write(hp.Raw)
			}
			return nil
		},
	},
	{
		name: "hold approve", args: "ID", min: 1, max: 1, check: holdID,
		doc: []docRow{{"", "delivers the post to the members (encrypted per batch, through `[reinject] address`). States: held → delivering (approved, compare-and-set: two moderators cannot both approve it) → delivered (once every batch is recorded). While it delivers, the process holds a claim on the post in the database (lease 2 min, renewed), so a second `hold approve` of the same hold, from any process or host, is refused meanwhile. If the delivery stops half-way (the MTA, the database, a kill), the command fails and the hold stays `delivering`: it never expires and cannot be rejected; `hold approve ID` again resumes it through the same delivery records, so no member gets it twice (after a kill, once the dead process's claim lapsed). A waiting hold older than its list's `post.hold_expiry` is refused as expired, marked or not; a delivered, rejected or expired hold is an error (non-zero exit: nothing is sent)",
			"`held post ID approved and delivered to N members`; on a resume `held post ID: delivery resumed and completed, N more members`"}},
		run: func(c *call) error {
			ap, err := c.admin.ApproveHold(c.ctx, c.id)
			if err != nil {
				return err
			}
			if ap.Resumed {
				fmt.Fprintf(c.out, "held post %d: delivery resumed and completed, %d more members\n", c.id, ap.Delivered)
			} else {
				fmt.Fprintf(c.out, "held post %d approved and delivered to %d members\n", c.id, ap.Delivered)
			}
			return nil
		},
	},
	{
		name: "hold reject", args: "ID", min: 1, max: 1, check: holdID,
		doc: []docRow{{"", "drops the post (an expired one is refused: it is dropped already; a delivering one is refused: part of the members have it, `hold approve` completes it)", "`held post ID rejected`"}},
		run: func(c *call) error {
			if err := c.admin.RejectHold(c.ctx, c.id); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "held post %d rejected\n", c.id)
			return nil
		},
	},
	{
		name: "hold expire", short: "expire holds older than post.hold_expiry, tell the owners",
		doc: []docRow{{"", "what listcrypt-milter does at start and hourly: expires the holds that waited longer than their list's `post.hold_expiry` (they can no longer be approved) and tells the owners (the moderators if there are none) which, with id, sender, reason and age; when nobody could be told for a temporary reason the holds keep waiting for the next run. Also re-sends moderator notices that failed, and sends the responder replies waiting in the outbox ([responder.md](responder.md))", "`N held posts expired`"}},
		run: func(c *call) error {
			n, err := c.admin.ExpireHolds(c.ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "%d held posts expired\n", n)
			return nil
		},
	},
	{
		name: "wkd export", args: "DIR [--domain DOMAIN]", short: "write the Web Key Directory of every list under DIR", min: 1, max: 1,
		flags: []string{"domain"},
		doc: []docRow{{"", "writes the lists' keys as a Web Key Directory (draft-koch-openpgp-webkey-service) for a web server to publish over HTTPS: the advanced layout for every domain with lists, `DIR/.well-known/openpgpkey/DOMAIN/hu/HASH` and `DIR/.well-known/openpgpkey/DOMAIN/policy` (served at `https://openpgpkey.DOMAIN/`), and the direct layout for one domain, `DIR/.well-known/openpgpkey/hu/HASH` and `DIR/.well-known/openpgpkey/policy` (served at `https://DOMAIN/`). HASH is the z-base-32 SHA-1 of the lower-cased local part (what `gpg-wks-client --print-wkd-hash` prints); a file holds the list's minimal key, binary (primary key, the list's user ID, the encryption subkey). The direct layout has no domain in its path, so it serves one domain: the only one, or with lists in several domains the one named by `--domain` (required then). Files 0644, written atomically, folders created 0755; the policy files are empty; nothing else under DIR is touched (remove a deleted list's file yourself); running it again writes the same bytes",
			"one line per list, by domain then address: `ADDRESS<TAB>HASH<TAB>FINGERPRINT`, then `N files written under DIR/.well-known/openpgpkey: advanced DOMAIN..., direct DOMAIN`"}},
		run: func(c *call) error {
			res, err := c.admin.WKDExport(c.ctx, c.pos[0], admin.WKDOptions{Domain: c.flags["domain"]})
			if err != nil {
				return err
			}
			for _, e := range res.Entries {
				fmt.Fprintf(c.out, "%s\t%s\t%s\n", e.Address, e.Hash, e.Fingerprint)
			}
			fmt.Fprintf(c.out, "%d files written under %s: advanced %s, direct %s\n", res.Files,
				filepath.Join(c.pos[0], ".well-known", "openpgpkey"), strings.Join(res.Domains, " "), res.Direct)
			return nil
		},
	},
	{
		name: "policy check", short: "validate every policy file", store: site.StoreNone,
		doc: []docRow{{"", "validates every policy file; all errors at once as `file:line: message`", "`N list policies OK in DIR`"}},
		run: func(c *call) error {
			set, err := admin.CheckPolicies(c.site.Config.PolicyDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "%d list policies OK in %s\n", len(set.Lists), c.site.Config.PolicyDir)
			return nil
		},
	},
	{
		name: "help", args: "[COMMAND]", short: "print this usage, or one command's", max: 3, store: site.StoreNone,
		doc: []docRow{{"", "prints the usage (also `-h`, `--help`), or with a command its synopsis and what it does; opens no file; exit 0", "the usage on standard output"}},
	},
}

func holdID(c *call) error {
	id, err := strconv.ParseInt(c.pos[0], 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("hold id %q is not a number", c.pos[0])
	}
	c.id = id
	return nil
}

func decideMember(c *call, approve bool) error {
	var (
		e   workflow.PendingEntry
		err error
	)
	if approve {
		e, err = c.admin.ApproveMember(c.ctx, c.pos[0], c.pos[1])
	} else {
		e, err = c.admin.RejectMember(c.ctx, c.pos[0], c.pos[1])
	}
	if err != nil {
		return err
	}
	done := "approved"
	if !approve {
		done = "rejected"
	}
	fmt.Fprintf(c.out, "%s of %s on %s %s, key %s\n", e.Kind, e.Address, e.List, done, e.Fingerprint)
	if e.NoticeErr != nil {
		fmt.Fprintf(c.out, "the subscriber could not be told by mail: %v\n", e.NoticeErr)
	}
	return nil
}

// usageText is the usage printed by -h, help and a usage error.
func usageText() string {
	var b strings.Builder
	b.WriteString("usage: listcrypt [-c CONFIG] COMMAND ...\n\n")
	for _, v := range verbs {
		s := v.synopsis()
		if v.short == "" {
			fmt.Fprintf(&b, "  %s\n", s)
		} else if len(s) >= 38 {
			fmt.Fprintf(&b, "  %s\n  %38s %s\n", s, "", v.short)
		} else {
			fmt.Fprintf(&b, "  %-38s %s\n", s, v.short)
		}
	}
	b.WriteString("\n  -c CONFIG   site config (default " + defaultConfig + ")\n")
	b.WriteString("  Flags of a command may come before or after its arguments.\n")
	b.WriteString("  Reference: docs/cli.md; listcrypt help COMMAND for one command.\n")
	return b.String()
}

// verbHelp is "listcrypt help COMMAND".
func verbHelp(v *verb) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: listcrypt [-c CONFIG] %s\n", v.synopsis())
	for _, r := range v.doc {
		b.WriteString("\n")
		if r.args != "" {
			fmt.Fprintf(&b, "%s %s: ", v.name, r.args)
		}
		fmt.Fprintf(&b, "%s.\nPrints: %s.\n", r.does, r.output)
	}
	return b.String()
}

// lookup finds the verb named by the first words of args (the longest
// name that matches) and returns it with the remaining arguments.
func lookup(args []string) (*verb, []string) {
	var best *verb
	n := 0
	for _, v := range verbs {
		w := strings.Fields(v.name)
		if len(w) <= n || len(w) > len(args) {
			continue
		}
		match := true
		for i := range w {
			if args[i] != w[i] {
				match = false
				break
			}
		}
		if match {
			best, n = v, len(w)
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, args[n:]
}

// unknownName is what a usage error calls an unknown command: its first
// word, or its first two when the first names a group of verbs ("list
// frob").
func unknownName(args []string) string {
	for _, v := range verbs {
		if w := strings.Fields(v.name); len(w) > 1 && w[0] == args[0] && len(args) > 1 {
			return args[0] + " " + args[1]
		}
	}
	return args[0]
}

// parse checks the positionals and flags of a call to v against the
// table; flags may come before or after the positionals.
func (v *verb) parse(args []string) (pos []string, flags map[string]string, set map[string]bool, err error) {
	flags, set = map[string]string{}, map[string]bool{}
	has := func(list []string, n string) bool {
		for _, x := range list {
			if x == n {
				return true
			}
		}
		return false
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case has(v.bools, name):
			if hasVal {
				return nil, nil, nil, fmt.Errorf("flag --%s takes no value", name)
			}
			set[name] = true
		case has(v.flags, name):
			if !hasVal {
				if i+1 >= len(args) {
					return nil, nil, nil, fmt.Errorf("flag %s needs a value", a)
				}
				i++
				val = args[i]
			}
			flags[name] = val
		case name == "h" || name == "help":
			return nil, nil, nil, errHelp
		default:
			return nil, nil, nil, fmt.Errorf("unknown flag %s", a)
		}
	}
	for _, r := range v.required {
		if flags[r] == "" {
			return nil, nil, nil, fmt.Errorf("missing --%s", r)
		}
	}
	if len(pos) < v.min || len(pos) > v.max {
		switch {
		case v.max == 0:
			return nil, nil, nil, fmt.Errorf("takes no arguments")
		case len(pos) < v.min:
			return nil, nil, nil, fmt.Errorf("missing arguments")
		default:
			return nil, nil, nil, fmt.Errorf("too many arguments")
		}
	}
	return pos, flags, set, nil
}

// runImport is "member import LIST FILE".
func runImport(c *call) error {
	name, dir := c.pos[1], filepath.Dir(c.pos[1])
	data, err := readInput(name, admin.MaxImportFile+1)
	if name == "-" {
		name, dir = "(stdin)", "."
	}
	if err != nil {
		return fmt.Errorf("import file: %w", err)
	}
	res, err := c.admin.ImportMembers(c.ctx, c.pos[0], data, dir)
	if errors.Is(err, admin.ErrRefused) {
		le := &lineErrors{summary: fmt.Sprintf("member import %s: %v", name, err)}
		for _, r := range res.Refused {
			le.lines = append(le.lines, name+":"+r.String())
		}
		return le
	}
	if err != nil {
		return fmt.Errorf("member import %s: %w", name, err)
	}
	for _, m := range res.Members {
		if !m.Unchanged {
			fmt.Fprintf(c.out, "member %s added to %s, key %s\n", m.Address, c.pos[0], m.Fingerprint)
		}
	}
	fmt.Fprintf(c.out, "%d members imported to %s (%d unchanged)\n", res.Added, c.pos[0], res.Unchanged)
	return nil
}

// refHead starts the table of docs/cli.md generated from the verb
// table; a blank line ends it.
const refHead = "| command | does | output |\n"

// reference is the table of docs/cli.md, from refHead to the blank line
// after it.
func reference() string {
	var b strings.Builder
	b.WriteString(refHead + "|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, v := range verbs {
		prefix := "listcrypt -c CFG "
		if v.store == site.StoreNone && v.run == nil {
			prefix = "listcrypt " // help opens no file
		}
		for _, r := range v.doc {
			args := v.args
			if r.args != "" {
				args = r.args
			}
			cmd := strings.TrimSpace(prefix + v.name + " " + args)
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", cell(cmd), r.does, r.output)
		}
	}
	return b.String()
}

// setDelivery is "member enable" and "member disable".
func setDelivery(c *call, enabled bool) error {
	changed, err := c.admin.SetDelivery(c.ctx, c.pos[0], c.pos[1], enabled)
	if err != nil {
		return err
	}
	state := map[bool]string{true: "enabled", false: "disabled"}[enabled]
	if !changed {
		fmt.Fprintf(c.out, "delivery to %s on %s was %s already\n", policy.NormalizeAddress(c.pos[1]), policy.NormalizeAddress(c.pos[0]), state)
		return nil
	}
	fmt.Fprintf(c.out, "delivery to %s on %s %s\n", policy.NormalizeAddress(c.pos[1]), policy.NormalizeAddress(c.pos[0]), state)
	return nil
}

// bounceLine is one line of "member bounces".
func bounceLine(b store.BounceState) string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	status := b.LastStatus
	if status == "" {
		status = "-"
	}
	delivery := "enabled"
	if b.Disabled() {
		delivery = "disabled since " + at(b.DisabledAt)
	}
	return fmt.Sprintf("%s\t%g\t%d\t%s\t%s\t%s", b.Address, b.Score, b.Bounces, at(b.LastBounceAt), status, delivery)
}

// printKeyChange prints what list key rotate / import did.
func printKeyChange(c *call, kc admin.KeyChange) {
	fmt.Fprintf(c.out, "list %s: new key %s (was %s)\n", kc.List, kc.NewFingerprint, kc.OldFingerprint)
	fmt.Fprintf(c.out, "notices: %d sent, %d waiting in the outbox, %d members without a usable key\n",
		kc.Sent, kc.Notices-kc.Sent, kc.NoKey)
}
