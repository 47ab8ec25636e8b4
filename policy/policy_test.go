package policy

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/policy/tomlx"
)

var update = flag.Bool("update", false, "rewrite docs/policy.md")

func TestStableKeysParse(t *testing.T) {
	src := `address = "Devs@Lists.Example.org"
owners = ["alice@example.org"]
moderators = []
[post]
encrypted = "require"      # allow | require
signed = "require"         # allow | hold | require
non_member = "reject"      # accept | hold | reject | discard
replay = "reject"          # reject | hold | discard
bad_signature = "reject"   # reject | hold | discard
max_size = "10MB"
`
	p, err := Parse("devs.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if p.Address != "devs@lists.example.org" || p.Owners[0] != "alice@example.org" || p.Post.MaxSize.Bytes != 10<<20 {
		t.Fatalf("%+v", p)
	}
	if p.RequestAddress() != "devs-request@lists.example.org" {
		t.Fatal(p.RequestAddress())
	}
}

func TestAllErrorsWithLines(t *testing.T) {
	src := `owners = ["not an address"]
[post]
encrypted = "maybe"
signed = "always"
non_member = "bounce"
replay = "accept"
bad_signature = "allow"
max_size = "huge"
replay_window = "10m"
colour = "blue"
`
	_, err := Parse("/p/devs.toml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	// The unknown key and every invalid value, in one run.
	for _, want := range []string{
		`/p/devs.toml:10: unknown key "post.colour"`,
		"/p/devs.toml:1: address is required",
		"/p/devs.toml:1: owners:",
		"/p/devs.toml:3: post.encrypted",
		"/p/devs.toml:4: post.signed",
		"/p/devs.toml:5: post.non_member",
		"/p/devs.toml:6: post.replay",
		"/p/devs.toml:7: post.bad_signature",
		"/p/devs.toml:8: post.max_size",
		"/p/devs.toml:9: post.replay_window",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.toml", Template("a@lists.example.org", "o@example.org"))
	write("b.toml", Template("b@lists.example.org", ""))
	write("ignored.txt", "junk")
	set, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.Addresses(), ","); got != "a@lists.example.org,b@lists.example.org" {
		t.Fatal(got)
	}
	if set.Lookup("A@LISTS.example.org") == nil {
		t.Fatal("lookup is not case-insensitive")
	}
	write("c.toml", "address = \"A@lists.example.org\"\n")
	write("d.toml", "address = 5\n")
	_, err = LoadDir(dir)
	if err == nil || !strings.Contains(err.Error(), "c.toml:1: list a@lists.example.org is also defined in") ||
		!strings.Contains(err.Error(), "d.toml:1:") {
		t.Fatalf("err = %v", err)
	}
	empty, err := LoadDir(filepath.Join(dir, "missing"))
	if err != nil || len(empty.Lists) != 0 {
		t.Fatalf("missing dir: %v %v", empty, err)
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	good := Findings{Encrypted: true, Signature: SignedValid, SignerBoundToFrom: true, SigTime: now.Add(-time.Minute), FromMember: true}
	with := func(f func(*Findings)) Findings { g := good; f(&g); return g }
	pol := func(f func(*Post)) *Policy {
		p := Default()
		p.Address = "devs@lists.example.org"
		f(&p.Post)
		return p
	}
	strict := pol(func(*Post) {})
	lax := pol(func(p *Post) {
		p.Encrypted, p.Signed, p.NonMember, p.Replay, p.BadSignature = "allow", "allow", "accept", "discard", "hold"
	})
	for _, tc := range []struct {
		name   string
		p      *Policy
		f      Findings
		action Action
		reason string
		text   string
	}{
		{"good post", strict, good, Accept, "ok", ""},
		{"problem wins", lax, with(func(f *Findings) {
			f.Problem = &Problem{Code: 554, Enhanced: "5.6.0", Text: "mixed", Reason: "mixed"}
		}), Reject, "mixed", "mixed"},
		{"plain refused", strict, with(func(f *Findings) { f.Encrypted = false }), Reject, "not-encrypted", "key get"},
		{"plain allowed", lax, with(func(f *Findings) { f.Encrypted = false }), Accept, "ok", ""},
		{"non-member rejected", strict, with(func(f *Findings) { f.FromMember = false; f.Signature = SignedUnknown }), Reject, "non-member", "subscribe"},
		{"non-member accepted skips signature rules", lax, with(func(f *Findings) { f.FromMember = false; f.Signature = SignedUnknown }), Accept, "ok", ""},
		{"non-member replay still caught", lax, with(func(f *Findings) { f.FromMember = false; f.Replay = true }), Discard, "replay", ""},
		{"non-member held", pol(func(p *Post) { p.NonMember = "hold" }), with(func(f *Findings) { f.FromMember = false }), Hold, "non-member", ""},
		{"non-member discarded", pol(func(p *Post) { p.NonMember = "discard" }), with(func(f *Findings) { f.FromMember = false }), Discard, "non-member", ""},
		{"tampered", strict, with(func(f *Findings) { f.Signature = SignedBad }), Reject, "bad-signature", "altered"},
		{"tampered held", lax, with(func(f *Findings) { f.Signature = SignedBad }), Hold, "bad-signature", ""},
		{"unknown signer", strict, with(func(f *Findings) { f.Signature = SignedUnknown }), Reject, "unknown-signer", "key show"},
		{"signed by member B, From A", strict, with(func(f *Findings) { f.SignerBoundToFrom = false }), Reject, "signer-not-from", "not registered for the From"},
		{"unsigned refused", strict, with(func(f *Findings) { f.Signature = Unsigned }), Reject, "not-signed", "signed"},
		{"unsigned held", pol(func(p *Post) { p.Signed = "hold" }), with(func(f *Findings) { f.Signature = Unsigned }), Hold, "not-signed", ""},
		{"unsigned allowed", lax, with(func(f *Findings) { f.Signature = Unsigned }), Accept, "ok", ""},
		{"future signature", strict, with(func(f *Findings) { f.SigTime = now.Add(time.Hour) }), Reject, "signature-in-future", "clock"},
		{"small skew ok", strict, with(func(f *Findings) { f.SigTime = now.Add(10 * time.Minute) }), Accept, "ok", ""},
		{"too old", strict, with(func(f *Findings) { f.SigTime = now.Add(-31 * 24 * time.Hour) }), Reject, "signature-too-old", "30d"},
		{"replay", strict, with(func(f *Findings) { f.Replay = true }), Reject, "replay", "already sent"},
		{"replay held", pol(func(p *Post) { p.Replay = "hold" }), with(func(f *Findings) { f.Replay = true }), Hold, "replay", ""},
		{"replay wins over a hold rule", pol(func(p *Post) { p.Signed = "hold" }), with(func(f *Findings) { f.Replay = true; f.Signature = Unsigned }), Reject, "replay", "already sent"},
		{"replay of a non-member post", pol(func(p *Post) { p.NonMember = "hold" }), with(func(f *Findings) { f.Replay = true; f.FromMember = false }), Reject, "replay", "already sent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.p.Decide(tc.f, now)
			if d.Action != tc.action || d.Reason != tc.reason || !strings.Contains(d.Text, tc.text) {
				t.Fatalf("got %+v, want %s/%s/%q", d, tc.action, tc.reason, tc.text)
			}
			if d.Action == Reject && (d.Code < 500 || d.Enhanced == "" || d.Text == "") {
				t.Fatalf("reject without a full reply: %+v", d)
			}
		})
	}
}

func TestNormalizeAddress(t *testing.T) {
	for in, want := range map[string]string{
		" Alice@Example.ORG ":            "alice@example.org",
		"<bob@example.org>":              "bob@example.org",
		`"Bob B" <Bob@Example.org>`:      "bob@example.org",
		"devs-request@lists.example.org": "devs-request@lists.example.org",
	} {
		if got := NormalizeAddress(in); got != want {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
}

func TestReferenceUpToDate(t *testing.T) {
	ref := "# List policy reference\n\nOne TOML file per list in `policy_dir`, edited by the list owner. `listcrypt policy check` validates every file; " +
		"`listcrypt-milter` reloads them on SIGHUP (an invalid reload keeps the last good policy and logs why).\n" +
		"Generated from `policy/policy.go` by `go test ./policy -update`; do not edit.\n\n" +
		tomlx.Reference(Default())
	if *update {
		if err := os.WriteFile("../docs/policy.md", []byte(ref), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != ref {
		t.Fatal("docs/policy.md is out of date: go test ./policy -update")
	}
	// The template for new lists parses to the defaults.
	p, err := Parse("t.toml", []byte(Template("x@lists.example.org", "o@example.org")))
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if p.Post != d.Post || p.Distribute != d.Distribute || p.Keys != d.Keys || p.Responder != d.Responder {
		t.Fatalf("template differs from defaults: %+v", p)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(Template("x@lists.example.org", "o@example.org")))
	f.Add([]byte("address = \"a@b.c\"\n[post]\nmax_size = \"1KB\"\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse("f.toml", src)
		if err == nil && !ValidAddress(p.Address) {
			t.Fatalf("accepted invalid address %q", p.Address)
		}
	})
}

func TestDistributeAndKeysValidation(t *testing.T) {
	src := `address = "d@lists.example.org"
[distribute]
encrypt = "sometimes"
batch_size = 0
subject = ""
from = "spoof"
bounce_address = "nope"
unsubscribe_url = "http://x"
[keys]
token_expiry = "1m"
`
	_, err := Parse("/p.toml", []byte(src))
	for _, want := range []string{"/p.toml:3: distribute.encrypt", "/p.toml:4: distribute.batch_size", "/p.toml:5: distribute.subject",
		"/p.toml:6: distribute.from", "/p.toml:7: distribute.bounce_address", "/p.toml:8: distribute.unsubscribe_url", "/p.toml:10: keys.token_expiry"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	p, err := Parse("/p.toml", []byte("address = \"d@lists.example.org\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.BounceAddress() != "d-bounces@lists.example.org" || p.Distribute.BatchSize != 50 || !p.Distribute.HideRecipients || p.Distribute.Subject != "..." {
		t.Fatalf("defaults: %+v", p.Distribute)
	}
}

func TestBouncesValidation(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want string // "" valid
	}{
		{"", ""},
		{"score_threshold = 3\nreset_after = \"30d\"\naction = \"notify\"\nverp = true", ""},
		{"score_threshold = 2.5", ""},
		{"score_threshold = 0", "/p.toml:3: bounces.score_threshold must be between 0.5 and 1000"},
		{"score_threshold = -1.0", "/p.toml:3: bounces.score_threshold"},
		{"score_threshold = nan", "/p.toml:3: bounces.score_threshold"},
		{"score_threshold = 1001", "/p.toml:3: bounces.score_threshold"},
		{"score_threshold = \"5\"", "/p.toml:3"},
		{"reset_after = \"12h\"", "/p.toml:3: bounces.reset_after must be between 1d and 365d"},
		{"reset_after = \"soon\"", "/p.toml:3: bounces.reset_after"},
		{"action = \"remove\"", "/p.toml:3: bounces.action = \"remove\": must be one of disable, notify"},
	} {
		p, err := Parse("/p.toml", []byte("address = \"d@lists.example.org\"\n[bounces]\n"+tc.src+"\n"))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.src, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
		if tc.src == "" && err == nil {
			b := p.Bounces
			if b.ScoreThreshold != 5 || b.ResetAfter.D != 7*24*time.Hour || b.Action != "disable" || b.VERP {
				t.Errorf("defaults (Mailman's): %+v", b)
			}
		}
	}
}

// No address may be two routes (a list, its request address, its bounce
// address), for one list or two; every clash is named with file:line.
func TestRouteClashes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // "" : loads
	}{
		{"distinct", map[string]string{
			"a.toml": "address = \"devs@lists.example.org\"\n",
			"b.toml": "address = \"ops@lists.example.org\"\n[distribute]\nbounce_address = \"ops-errors@lists.example.org\"\n",
		}, nil},
		{"one bounce address for two lists", map[string]string{
			"a.toml": "address = \"devs@lists.example.org\"\n[distribute]\nbounce_address = \"bounces@lists.example.org\"\n",
			"b.toml": "address = \"ops@lists.example.org\"\n[distribute]\nbounce_address = \"bounces@lists.example.org\"\n",
		}, []string{"b.toml:3: bounce address bounces@lists.example.org of list ops@lists.example.org is also list devs@lists.example.org's bounce address"}},
		{"a bounce address that is another list's request address", map[string]string{
			"a.toml": "address = \"aaa@lists.example.org\"\n[distribute]\nbounce_address = \"devs-request@lists.example.org\"\n",
			"b.toml": "address = \"devs@lists.example.org\"\n",
		}, []string{"b.toml:1: request address devs-request@lists.example.org of list devs@lists.example.org is also list aaa@lists.example.org's bounce address"}},
		{"a list named like another's default bounce address", map[string]string{
			"a.toml": "address = \"devs@lists.example.org\"\n",
			"b.toml": "address = \"devs-bounces@lists.example.org\"\n",
		}, []string{"a.toml:1: bounce address devs-bounces@lists.example.org of list devs@lists.example.org is also list devs-bounces@lists.example.org's address"}},
		{"a bounce address that is the list itself", map[string]string{
			"a.toml": "address = \"devs@lists.example.org\"\n[distribute]\nbounce_address = \"devs@lists.example.org\"\n",
		}, []string{"a.toml:3: bounce address devs@lists.example.org of list devs@lists.example.org is also its address"}},
		{"verp with a + in the bounce address", map[string]string{
			"a.toml": "address = \"devs@lists.example.org\"\n[distribute]\nbounce_address = \"devs+errors@lists.example.org\"\n[bounces]\nverp = true\n",
		}, []string{"a.toml:5: bounces.verp = true needs a bounce address without \"+\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, src := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			set, err := LoadDir(dir)
			if len(tc.want) == 0 {
				if err != nil || len(set.Lists) != len(tc.files) {
					t.Fatalf("%v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestOldKeyGraceValidation(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want string // "" valid
	}{
		{"", ""},
		{`old_key_grace = "0s"`, ""},
		{`old_key_grace = "365d"`, ""},
		{`old_key_grace = "366d"`, "/p.toml:3: keys.old_key_grace must be between 0 and 365d"},
		{`old_key_grace = "-1h"`, "/p.toml:3: keys.old_key_grace"},
		{`old_key_grace = "later"`, "/p.toml:3: keys.old_key_grace"},
	} {
		p, err := Parse("/p.toml", []byte("address = \"d@lists.example.org\"\n[keys]\n"+tc.src+"\n"))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.src, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
		if tc.src == "" && err == nil && p.Keys.OldKeyGrace.D != 30*24*time.Hour {
			t.Errorf("default old_key_grace %v, want 30d", p.Keys.OldKeyGrace.D)
		}
	}
	// The reply to a post for a key retired too long ago names the way
	// to the new key.
	p, err := Parse("/p.toml", []byte("address = \"d@lists.example.org\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := p.ReplyOldListKey(); r.Code != 550 || r.Reason != "old-list-key" || !strings.Contains(r.Text, `send "key get" to d-request@lists.example.org`) {
		t.Fatalf("reply %+v", r)
	}
}
