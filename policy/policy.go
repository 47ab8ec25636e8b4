// Package policy reads the list policy files (one TOML file per list in
// policy_dir, edited by list owners) and makes the decisions they drive.
// Decide is pure: findings in, an action out; the milter carries it out.
// The Policy struct is the source of truth: docs/policy.md is generated
// from its tags and defaults (see TestReferenceUpToDate).
package policy

import (
	"errors"
	"fmt"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/listcrypt/listcrypt/policy/tomlx"
)

// Policy is one list's policy file. Its keys are a stable interface.
type Policy struct {
	Address    string     `toml:"address" doc:"The list's posting address. Required; unique across policy files."`
	Owners     []string   `toml:"owners" doc:"Addresses of the list owners: told about skipped members and problems."`
	Moderators []string   `toml:"moderators" doc:"Addresses that approve held posts and new subscribers."`
	Post       Post       `toml:"post"`
	Distribute Distribute `toml:"distribute"`
	Keys       Keys       `toml:"keys"`
	Responder  Responder  `toml:"responder"`
	Bounces    Bounces    `toml:"bounces"`

	// File is the policy file this was read from.
	File string `toml:"-"`
}

// Post is the [post] table: what the list accepts.
type Post struct {
	Encrypted        string         `toml:"encrypted" values:"allow|require" doc:"\"require\": a post must be encrypted to the list key (others get 550 5.7.1 with how to get the key). \"allow\": plain posts are examined too."`
	Signed           string         `toml:"signed" values:"allow|hold|require" doc:"A post without a signature: \"require\" refuses it, \"hold\" holds it for a moderator, \"allow\" accepts it. A post counts as signed only when the signing key is the registered key of a member bound to the From address."`
	NonMember        string         `toml:"non_member" values:"accept|hold|reject|discard" doc:"A post whose From address is not an active member."`
	Replay           string         `toml:"replay" values:"reject|hold|discard" doc:"A post carrying a signature or ciphertext already seen on this list, or a signature older than replay_window."`
	BadSignature     string         `toml:"bad_signature" values:"reject|hold|discard" doc:"A signature that does not verify, is made by a key not registered to the From address, or is dated in the future beyond clock_skew."`
	MaxSize          tomlx.Size     `toml:"max_size" doc:"Largest post accepted (the site's limits.max_message_size caps it). Larger posts get 552 5.3.4 during DATA."`
	ReplayWindow     tomlx.Duration `toml:"replay_window" doc:"Signatures older than this are refused as replays; it bounds the replay table."`
	ClockSkew        tomlx.Duration `toml:"clock_skew" doc:"How far in the future a signature's creation time may be (senders' clocks drift)."`
	UnboundSignature string         `toml:"unbound_signature" values:"accept|hold|reject" doc:"A valid member signature that names no recipient: no Intended Recipient Fingerprint subpacket and no signed To/Cc (GnuPG 2.2 and most clients today), so nothing shows it was made for this list rather than re-sent from a private mail. \"accept\" distributes it with a line inside the encryption telling members the binding could not be checked; \"hold\" waits for a moderator; \"reject\" refuses it. Signatures that name other recipients are always refused. See docs/inbound.md."`
	HoldExpiry       tomlx.Duration `toml:"hold_expiry" doc:"How long a held post waits for a moderator; then it is dropped and the owners are told."`
}

// TableDoc documents the table in the reference.
func (Post) TableDoc() string { return "What the list accepts, and what it does with the rest." }

// Distribute is the [distribute] table: how an accepted post goes out.
type Distribute struct {
	Encrypt             string `toml:"encrypt" values:"require|when-possible|never" doc:"\"require\": members without a usable key (none, expired, revoked, no encryption subkey) get nothing, and the owners are told who was skipped and why. \"when-possible\": they get the post in clear. \"never\": nobody's copy is encrypted. A post that arrived encrypted never goes out in clear: members without a usable key are skipped whatever this says."`
	BatchSize           int    `toml:"batch_size" doc:"Recipients per delivered message. Each member's client tries every hidden key packet of its batch, so a big batch costs members time (see docs/benchmarks.md)."`
	HideRecipients      bool   `toml:"hide_recipients" doc:"Write wildcard (zero) key IDs in the key packets, so a copy does not reveal who else received it. RNP 0.16 cannot decrypt such messages; Thunderbird's RNP and GnuPG can."`
	Subject             string `toml:"subject" doc:"Outer Subject of every copy (the real one travels inside the encryption, RFC 9788 protected headers). \"keep\" keeps the real Subject outside too."`
	From                string `toml:"from" values:"keep|via" doc:"\"via\": From: \"Alice via devs\" <list address>, with Reply-To the author (DMARC-safe). \"keep\": the author's From unchanged."`
	KeepSenderSignature bool   `toml:"keep_sender_signature" doc:"Carry the author's own signed part inside the encryption, so members can verify the author end to end."`
	BounceAddress       string `toml:"bounce_address" doc:"Envelope sender of every copy; default LIST-bounces@DOMAIN (route it to the owners in your MTA's aliases)."`
	UnsubscribeURL      string `toml:"unsubscribe_url" doc:"Optional HTTPS URL for List-Unsubscribe; with it, List-Unsubscribe-Post: List-Unsubscribe=One-Click is added (RFC 8058)."`
}

// TableDoc documents the table in the reference.
func (Distribute) TableDoc() string { return "How an accepted post is delivered to the members." }

// Keys is the [keys] table: the key workflows of the command responder.
type Keys struct {
	TokenExpiry    tomlx.Duration `toml:"token_expiry" doc:"How long a key set / key confirm token stays valid."`
	ModerateNew    bool           `toml:"moderate_new" doc:"A new subscription waits for a moderator after its key is confirmed."`
	ModerateChange bool           `toml:"moderate_change" doc:"A key change waits for a moderator after it is confirmed."`
	OldKeyGrace    tomlx.Duration `toml:"old_key_grace" doc:"After \"listcrypt list key rotate\" or \"list key import\", how long posts encrypted to the old list key are still accepted; after it they are refused with a reply that points to the new key (\"key get\"). 0 refuses them at once; at most 365d."`
}

// Responder is the [responder] table: limits on what the command
// responder sends to senders it cannot verify.
type Responder struct {
	MaxRepliesPerAddress int            `toml:"max_replies_per_address" doc:"Most replies sent within reply_window to one address whose signature did not verify as a member or pending subscriber (subscribe, key get, help, errors). Further mails from it get no answer."`
	MaxRepliesPerList    int            `toml:"max_replies_per_list" doc:"Most replies the list sends within reply_window to all unverified senders together, so spoofed mails cannot turn the list into a flood source."`
	ReplyWindow          tomlx.Duration `toml:"reply_window" doc:"The period the reply limits count over."`
}

// TableDoc documents the table in the reference.
func (Responder) TableDoc() string {
	return "Replies of the command responder to senders whose signature did not verify."
}

// Bounces is the [bounces] table: what the list does with members whose
// copies bounce (docs/bounces.md).
type Bounces struct {
	ScoreThreshold float64        `toml:"score_threshold" doc:"A member's bounce score at which action is taken. A permanent failure (5.x.x) adds 1, a temporary one (4.x.x, a delay) 0.5, at most one bounce counts per member per 24 hours (as Mailman's one a day), and one bounce mail counts against at most 10 members."`
	ResetAfter     tomlx.Duration `toml:"reset_after" doc:"A score whose last counted bounce is older than this starts again from 0 (Mailman's bounce_info_stale_after)."`
	Action         string         `toml:"action" values:"disable|notify" doc:"At the threshold: \"disable\" stops delivery to the member until \"listcrypt member enable\", and tells the owners and the member (encrypted to the member's key); a member already at or above the threshold is disabled by its next counted bounce. \"notify\" only tells the owners, when the score reaches the threshold."`
	VERP           bool           `toml:"verp" doc:"Give each member's copy its own envelope sender (LIST-bounces+MEMBER@DOMAIN, Postfix's XVERP) when the reinjection listener offers XVERP, so a bounce names its member exactly; bounces to the plain bounce address are then not counted (anyone can write one) but go to the owners. Off by default, as in Mailman: Postfix then delivers each member's copy in its own transaction (what that costs: docs/bounces.md). Only where the MTA offers XVERP (Postfix), and not with a bounce address whose local part has a \"+\"."`
}

// TableDoc documents the table in the reference.
func (Bounces) TableDoc() string {
	return "Mail returned to the list's bounce address: scores and what a dead member address leads to."
}

// TableDoc documents the table in the reference.
func (Keys) TableDoc() string {
	return "Subscription and key workflows by mail to LIST-request@DOMAIN."
}

// Default returns the strict defaults every key falls back to.
func Default() *Policy {
	return &Policy{
		Owners:     []string{},
		Moderators: []string{},
		Post: Post{
			Encrypted:        "require",
			Signed:           "require",
			NonMember:        "reject",
			Replay:           "reject",
			BadSignature:     "reject",
			MaxSize:          tomlx.NewSize("10MB"),
			ReplayWindow:     tomlx.NewDuration("30d"),
			ClockSkew:        tomlx.NewDuration("15m"),
			UnboundSignature: "accept",
			HoldExpiry:       tomlx.NewDuration("14d"),
		},
		Distribute: Distribute{
			Encrypt:        "require",
			BatchSize:      50,
			HideRecipients: true,
			Subject:        "...",
			From:           "via",
		},
		Keys: Keys{
			TokenExpiry: tomlx.NewDuration("72h"),
			ModerateNew: true,
			OldKeyGrace: tomlx.NewDuration("30d"),
		},
		Responder: Responder{
			MaxRepliesPerAddress: 5,
			MaxRepliesPerList:    200,
			ReplyWindow:          tomlx.NewDuration("24h"),
		},
		// Mailman 3's defaults (bounce_score_threshold, bounce_info_stale_after,
		// VERP off).
		Bounces: Bounces{
			ScoreThreshold: 5,
			ResetAfter:     tomlx.NewDuration("7d"),
			Action:         "disable",
		},
	}
}

// NormalizeAddress returns the form addresses are stored and compared in:
// the bare address (display name and angle brackets removed), trimmed and
// lower-cased, as list managers do.
func NormalizeAddress(s string) string {
	s = strings.TrimSpace(s)
	if a, err := mail.ParseAddress(s); err == nil {
		s = a.Address
	}
	s = strings.Trim(s, "<>")
	return strings.ToLower(s)
}

// ValidAddress reports whether s (normalised) looks like local@domain.
func ValidAddress(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t\r\n<>,;\"") {
		return false
	}
	_, err := mail.ParseAddress(s)
	return err == nil
}

// BounceAddress is the envelope sender of the list's copies.
func (p *Policy) BounceAddress() string {
	if p.Distribute.BounceAddress != "" {
		return p.Distribute.BounceAddress
	}
	local, domain, _ := strings.Cut(p.Address, "@")
	return local + "-bounces@" + domain
}

// RequestAddress is the list's command address, LIST-request@DOMAIN.
func (p *Policy) RequestAddress() string {
	local, domain, _ := strings.Cut(p.Address, "@")
	return local + "-request@" + domain
}

// Parse validates src as the policy file named file.
func Parse(file string, src []byte) (*Policy, error) {
	p := Default()
	errs := tomlx.Decode(file, src, p)
	if errs.Unreadable {
		return nil, errs.Err()
	}
	// Unknown keys and invalid values are reported together.
	p.File = file
	p.validate(errs)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Policy) validate(e *tomlx.Errors) {
	if p.Address == "" {
		e.At([]string{"address"}, "address is required (the list's posting address)")
	} else {
		n := NormalizeAddress(p.Address)
		if !ValidAddress(n) {
			e.At([]string{"address"}, "address %q is not an email address", p.Address)
		}
		p.Address = n
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"owners", p.Owners}, {"moderators", p.Moderators}} {
		for i, a := range l.list {
			n := NormalizeAddress(a)
			if !ValidAddress(n) {
				e.At([]string{l.key}, "%s: %q is not an email address", l.key, a)
			}
			l.list[i] = n
		}
	}
	oneOf := func(v, key string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		e.At([]string{"post", key}, "post.%s = %q: must be one of %s", key, v, strings.Join(allowed, ", "))
	}
	oneOf(p.Post.Encrypted, "encrypted", "allow", "require")
	oneOf(p.Post.Signed, "signed", "allow", "hold", "require")
	oneOf(p.Post.NonMember, "non_member", "accept", "hold", "reject", "discard")
	oneOf(p.Post.Replay, "replay", "reject", "hold", "discard")
	oneOf(p.Post.BadSignature, "bad_signature", "reject", "hold", "discard")
	oneOf(p.Post.UnboundSignature, "unbound_signature", "accept", "hold", "reject")
	if p.Post.HoldExpiry.Err != nil {
		e.At([]string{"post", "hold_expiry"}, "post.hold_expiry: %v", p.Post.HoldExpiry.Err)
	} else if p.Post.HoldExpiry.D < time.Hour || p.Post.HoldExpiry.D > 365*24*time.Hour {
		e.At([]string{"post", "hold_expiry"}, "post.hold_expiry must be between 1h and 365d")
	}
	if p.Responder.MaxRepliesPerAddress < 0 {
		e.At([]string{"responder", "max_replies_per_address"}, "responder.max_replies_per_address must not be negative")
	}
	if p.Responder.MaxRepliesPerList < 0 {
		e.At([]string{"responder", "max_replies_per_list"}, "responder.max_replies_per_list must not be negative")
	}
	if p.Responder.ReplyWindow.Err != nil {
		e.At([]string{"responder", "reply_window"}, "responder.reply_window: %v", p.Responder.ReplyWindow.Err)
	} else if p.Responder.ReplyWindow.D < time.Minute || p.Responder.ReplyWindow.D > 30*24*time.Hour {
		e.At([]string{"responder", "reply_window"}, "responder.reply_window must be between 1m and 30d")
	}
	if p.Post.MaxSize.Err != nil {
		e.At([]string{"post", "max_size"}, "post.max_size: %v", p.Post.MaxSize.Err)
	} else if p.Post.MaxSize.Bytes < 1024 {
		e.At([]string{"post", "max_size"}, "post.max_size must be at least 1KB")
	}
	if p.Post.ReplayWindow.Err != nil {
		e.At([]string{"post", "replay_window"}, "post.replay_window: %v", p.Post.ReplayWindow.Err)
	} else if p.Post.ReplayWindow.D < time.Hour {
		e.At([]string{"post", "replay_window"}, "post.replay_window must be at least 1h")
	}
	oneOfT := func(v, table, key string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		e.At([]string{table, key}, "%s.%s = %q: must be one of %s", table, key, v, strings.Join(allowed, ", "))
	}
	oneOfT(p.Distribute.Encrypt, "distribute", "encrypt", "require", "when-possible", "never")
	oneOfT(p.Distribute.From, "distribute", "from", "keep", "via")
	if p.Distribute.BatchSize < 1 || p.Distribute.BatchSize > 1000 {
		e.At([]string{"distribute", "batch_size"}, "distribute.batch_size must be between 1 and 1000")
	}
	if strings.TrimSpace(p.Distribute.Subject) == "" || strings.ContainsAny(p.Distribute.Subject, "\r\n") {
		e.At([]string{"distribute", "subject"}, "distribute.subject must be one line of text, or \"keep\"")
	}
	if b := p.Distribute.BounceAddress; b != "" {
		n := NormalizeAddress(b)
		if !ValidAddress(n) {
			e.At([]string{"distribute", "bounce_address"}, "distribute.bounce_address %q is not an email address", b)
		}
		p.Distribute.BounceAddress = n
	}
	if u := p.Distribute.UnsubscribeURL; u != "" && (!strings.HasPrefix(u, "https://") || strings.ContainsAny(u, " <>\r\n")) {
		e.At([]string{"distribute", "unsubscribe_url"}, "distribute.unsubscribe_url must be an https:// URL")
	}
	if p.Keys.TokenExpiry.Err != nil {
		e.At([]string{"keys", "token_expiry"}, "keys.token_expiry: %v", p.Keys.TokenExpiry.Err)
	} else if p.Keys.TokenExpiry.D < 10*time.Minute || p.Keys.TokenExpiry.D > 30*24*time.Hour {
		e.At([]string{"keys", "token_expiry"}, "keys.token_expiry must be between 10m and 30d")
	}
	if p.Keys.OldKeyGrace.Err != nil {
		e.At([]string{"keys", "old_key_grace"}, "keys.old_key_grace: %v", p.Keys.OldKeyGrace.Err)
	} else if p.Keys.OldKeyGrace.D < 0 || p.Keys.OldKeyGrace.D > 365*24*time.Hour {
		e.At([]string{"keys", "old_key_grace"}, "keys.old_key_grace must be between 0 and 365d")
	}
	if p.Post.ClockSkew.Err != nil {
		e.At([]string{"post", "clock_skew"}, "post.clock_skew: %v", p.Post.ClockSkew.Err)
	} else if p.Post.ClockSkew.D > 24*time.Hour {
		e.At([]string{"post", "clock_skew"}, "post.clock_skew must be at most 24h")
	}
	if t := p.Bounces.ScoreThreshold; !(t >= 0.5 && t <= 1000) { // also NaN
		e.At([]string{"bounces", "score_threshold"}, "bounces.score_threshold must be between 0.5 and 1000")
	}
	if p.Bounces.ResetAfter.Err != nil {
		e.At([]string{"bounces", "reset_after"}, "bounces.reset_after: %v", p.Bounces.ResetAfter.Err)
	} else if p.Bounces.ResetAfter.D < 24*time.Hour || p.Bounces.ResetAfter.D > 365*24*time.Hour {
		e.At([]string{"bounces", "reset_after"}, "bounces.reset_after must be between 1d and 365d")
	}
	oneOfT(p.Bounces.Action, "bounces", "action", "disable", "notify")
	if local, _, _ := strings.Cut(p.Distribute.BounceAddress, "@"); p.Bounces.VERP && strings.Contains(local, "+") {
		e.At([]string{"bounces", "verp"}, "bounces.verp = true needs a bounce address without \"+\" in its local part (VERP puts the member after a \"+\"): distribute.bounce_address is %q", p.Distribute.BounceAddress)
	}
}

// Set is every list's policy, by normalised list address.
type Set struct {
	Dir   string
	Lists map[string]*Policy
}

// Lookup returns the policy of the list at addr (any case), or nil.
func (s *Set) Lookup(addr string) *Policy {
	if s == nil {
		return nil
	}
	return s.Lists[NormalizeAddress(addr)]
}

// Addresses returns the list addresses in order.
func (s *Set) Addresses() []string {
	out := make([]string, 0, len(s.Lists))
	for a := range s.Lists {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// LoadDir reads every *.toml file in dir. It reports every problem of
// every file at once; on any error it returns no Set, so a reload with a
// bad file keeps the last good one. A missing dir is an empty Set.
func LoadDir(dir string) (*Set, error) {
	set := &Set{Dir: dir, Lists: map[string]*Policy{}}
	srcs := map[string][]byte{}
	files, err := filepath.Glob(filepath.Join(dir, "*.toml"))
	if err != nil {
		return nil, fmt.Errorf("policy dir %s: %w", dir, err)
	}
	if _, err := os.Stat(dir); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("policy dir: %w", err)
	}
	sort.Strings(files)
	var errs []error
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		p, err := Parse(f, src)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := set.Lists[p.Address]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: list %s is also defined in %s", f, tomlx.KeyLine(src, "address"), p.Address, prev.File))
			continue
		}
		set.Lists[p.Address] = p
		srcs[p.Address] = src
	}
	errs = append(errs, set.routeClashes(srcs)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return set, nil
}

// routeClashes finds addresses that two routes would share: a list's
// address, request address and bounce address each go somewhere else
// (the milter, the responder's commands, its bounce mode), so no address
// may be two of them, for one list or two (two lists with one bounce
// address could not tell whose member bounced; a bounce address that is
// another list's request address would take its commands).
func (s *Set) routeClashes(srcs map[string][]byte) []error {
	type route struct {
		p    *Policy
		what string
		key  []string
	}
	seen := map[string]route{}
	var errs []error
	for _, a := range s.Addresses() {
		p := s.Lists[a]
		for _, r := range []struct {
			addr string
			route
		}{
			{p.Address, route{p, "address", []string{"address"}}},
			{p.RequestAddress(), route{p, "request address", []string{"address"}}},
			{p.BounceAddress(), route{p, "bounce address", []string{"distribute", "bounce_address"}}},
		} {
			prev, dup := seen[r.addr]
			if !dup {
				seen[r.addr] = r.route
				continue
			}
			key := r.key
			if r.what == "bounce address" && p.Distribute.BounceAddress == "" {
				key = []string{"address"} // the default, LIST-bounces@
			}
			whose := "list " + prev.p.Address + "'s"
			if prev.p == p {
				whose = "its"
			}
			errs = append(errs, fmt.Errorf("%s:%d: %s %s of list %s is also %s %s (%s)", p.File, tomlx.KeyLine(srcs[p.Address], key...),
				r.what, r.addr, p.Address, whose, prev.what, prev.p.File))
		}
	}
	return errs
}

// Template returns the text of a new policy file for address: every key
// with its default, so the owner sees what can be set.
func Template(address, owner string) string {
	owners := "[]"
	if owner != "" {
		owners = fmt.Sprintf("[%q]", owner)
	}
	d := Default()
	return fmt.Sprintf(`# listcrypt list policy: see docs/policy.md for every key.
address = %q
owners = %s
moderators = []

[post]
encrypted = %q      # allow | require
signed = %q         # allow | hold | require
non_member = %q      # accept | hold | reject | discard
replay = %q          # reject | hold | discard
bad_signature = %q   # reject | hold | discard
max_size = %q
replay_window = %q
clock_skew = %q
unbound_signature = %q  # accept | hold | reject
hold_expiry = %q

[distribute]
encrypt = %q         # require | when-possible | never
batch_size = %d
hide_recipients = %t
subject = %q             # "keep" keeps the real Subject outside
from = %q                # keep | via
keep_sender_signature = %t

[keys]
token_expiry = %q
moderate_new = %t
moderate_change = %t
old_key_grace = %q

[responder]
max_replies_per_address = %d
max_replies_per_list = %d
reply_window = %q
`, address, owners, d.Post.Encrypted, d.Post.Signed, d.Post.NonMember, d.Post.Replay, d.Post.BadSignature,
		d.Post.MaxSize.Raw, d.Post.ReplayWindow.Raw, d.Post.ClockSkew.Raw, d.Post.UnboundSignature, d.Post.HoldExpiry.Raw,
		d.Distribute.Encrypt, d.Distribute.BatchSize, d.Distribute.HideRecipients, d.Distribute.Subject,
		d.Distribute.From, d.Distribute.KeepSenderSignature,
		d.Keys.TokenExpiry.Raw, d.Keys.ModerateNew, d.Keys.ModerateChange, d.Keys.OldKeyGrace.Raw,
		d.Responder.MaxRepliesPerAddress, d.Responder.MaxRepliesPerList, d.Responder.ReplyWindow.Raw)
}
