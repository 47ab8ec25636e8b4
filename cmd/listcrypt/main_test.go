package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

func cli(t *testing.T, cfg string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"-c", cfg}, args...), &out)
	return out.String(), err
}

func mustCLI(t *testing.T, cfg string, args ...string) string {
	t.Helper()
	out, err := cli(t, cfg, args...)
	if err != nil {
		t.Fatalf("listcrypt %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// The stable verbs, end to end on a fresh site.
func TestVerbs(t *testing.T) {
	sink := rig.NewSink(t)
	site := milterfix.New(t, milterfix.Options{Reinject: sink.Addr()})
	cfg := site.Config.File
	if out := mustCLI(t, cfg, "init"); !strings.Contains(out, "schema sqlite") {
		t.Fatalf("init: %q", out)
	}
	fi, err := os.Stat(site.Config.PassphraseFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("passphrase file: %v %v", fi, err)
	}

	out := mustCLI(t, cfg, "list", "create", "ops@lists.example.org", "--owner", "Carol@Example.org", "--key-type", "ed25519")
	if !strings.Contains(out, "list ops@lists.example.org created, key ") {
		t.Fatalf("list create: %q", out)
	}
	pol, err := os.ReadFile(filepath.Join(site.Config.PolicyDir, "ops@lists.example.org.toml"))
	if err != nil || !strings.Contains(string(pol), `owners = ["carol@example.org"]`) {
		t.Fatalf("policy file: %s %v", pol, err)
	}
	if _, err := cli(t, cfg, "list", "create", "ops@lists.example.org"); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("second create: %v", err)
	}
	armored := mustCLI(t, cfg, "list", "key", "export", "ops@lists.example.org")
	ents, err := openpgp.ReadArmoredKeyRing(strings.NewReader(armored))
	if err != nil || len(ents) != 1 || ents[0].PrivateKey != nil {
		t.Fatalf("exported key: %v", err)
	}

	dave := milterfix.NewKey(t, "dave@example.org")
	keyFile := filepath.Join(t.TempDir(), "dave.asc")
	a, _ := keyring.ArmorPublicKey(dave)
	os.WriteFile(keyFile, []byte(a), 0o644)
	out = mustCLI(t, cfg, "member", "add", "ops@lists.example.org", "Dave@example.org", "--key", keyFile)
	if !strings.Contains(out, keyring.Fingerprint(dave)) {
		t.Fatalf("member add: %q", out)
	}
	out = mustCLI(t, cfg, "member", "list", "ops@lists.example.org")
	if out != "dave@example.org\tactive\t"+keyring.Fingerprint(dave)+"\n" {
		t.Fatalf("member list: %q", out)
	}
	// A key for another address is refused, and nothing changes.
	if _, err := cli(t, cfg, "member", "add", "ops@lists.example.org", "erin@example.org", "--key", keyFile); err == nil {
		t.Fatal("key of another address accepted")
	}
	mustCLI(t, cfg, "member", "remove", "ops@lists.example.org", "dave@example.org")
	if out := mustCLI(t, cfg, "member", "list", "ops@lists.example.org"); out != "" {
		t.Fatalf("after remove: %q", out)
	}
	if _, err := cli(t, cfg, "member", "remove", "ops@lists.example.org", "dave@example.org"); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("second remove: %v", err)
	}

	// Holds: one held post, shown decrypted, approved (delivered to the
	// reinjection listener exactly once), a second rejected.
	ctx := context.Background()
	lk, err := site.Admin.Store.GetList(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	listPub, err := keyring.ParseStoredKey(lk.PublicKey, keyring.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	alice := site.AddMember(t, "alice@example.org")
	raw := milterfix.Build(t, milterfix.Post{From: "alice@example.org", Body: "held body CANARY-42"})
	sealed, err := keyring.EncryptTo(raw, []*openpgp.Entity{listPub}, keyring.DefaultLimits, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := site.Admin.Store.AddHold(ctx, store.Hold{List: milterfix.List, Sender: "alice@example.org",
			Recipients: []string{milterfix.List}, Reason: "not-signed", Message: sealed, State: "held", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	out = mustCLI(t, cfg, "hold", "list", milterfix.List)
	if strings.Count(out, "\n") != 2 || !strings.HasPrefix(out, "1\t") || !strings.Contains(out, "not-signed") {
		t.Fatalf("hold list: %q", out)
	}
	if out := mustCLI(t, cfg, "hold", "show", "1"); !strings.Contains(out, "CANARY-42") || !strings.Contains(out, "reason: not-signed") {
		t.Fatalf("hold show: %q", out)
	}
	if out := mustCLI(t, cfg, "hold", "approve", "1"); out != "held post 1 approved and delivered to 1 members\n" {
		t.Fatalf("hold approve: %q", out)
	}
	got, err := sink.Wait(ctx, 1)
	if err != nil || got[0].To[0] != "alice@example.org" || got[0].From != "devs-bounces@lists.example.org" || bytes.Contains(got[0].Data, []byte("CANARY-42")) {
		t.Fatalf("approved post not delivered encrypted to the member: %v %v", got, err)
	}
	if pt := milterfix.DecryptCopy(t, got[0].Data, alice, site.ListKey); !bytes.Contains(pt, []byte("CANARY-42")) {
		t.Fatalf("member copy: %q", pt)
	}
	if _, err := cli(t, cfg, "hold", "approve", "1"); err == nil || !strings.Contains(err.Error(), "already approved") {
		t.Fatalf("second approve: %v", err)
	}
	mustCLI(t, cfg, "hold", "reject", "2")
	if out := mustCLI(t, cfg, "hold", "list", milterfix.List); out != "" {
		t.Fatalf("holds left: %q", out)
	}
	if len(sink.Messages()) != 1 {
		t.Fatalf("%d deliveries, want exactly 1", len(sink.Messages()))
	}
}

// Every error exits non-zero with a one-line reason; bad usage shows it.
func TestErrors(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	cfg := site.Config.File
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"list", "create"}, "list create ADDRESS"},
		{[]string{"list", "create", "not-an-address"}, "not an email address"},
		{[]string{"list", "create", "x@lists.example.org", "--key-type", "dsa"}, "unknown key type"},
		{[]string{"list", "create", "x@lists.example.org", "--colour", "red"}, "list create ADDRESS"},
		{[]string{"list", "key", "export", "none@lists.example.org"}, "no list none@lists.example.org"},
		{[]string{"member", "add", milterfix.List, "a@example.org"}, "--key FILE"},
		{[]string{"member", "add", milterfix.List, "a@example.org", "--key", "/nonexistent"}, "key file"},
		{[]string{"hold", "show", "x"}, "not a number"},
		{[]string{"hold", "show", "99"}, "no held post 99"},
		{[]string{"hold", "reject", "99"}, "no held post 99"},
	} {
		_, err := cli(t, cfg, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("listcrypt %v: err %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, err := cli(t, filepath.Join(t.TempDir(), "missing.toml"), "init"); err == nil {
		t.Error("missing config accepted")
	}
}

func TestPolicyCheck(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	cfg := site.Config.File
	if out := mustCLI(t, cfg, "policy", "check"); !strings.Contains(out, "1 list policies OK") {
		t.Fatalf("policy check: %q", out)
	}
	bad := filepath.Join(site.Config.PolicyDir, "bad.toml")
	os.WriteFile(bad, []byte("address = \"b@lists.example.org\"\n[post]\nsigned = \"sometimes\"\n"), 0o644)
	_, err := cli(t, cfg, "policy", "check")
	if err == nil || !strings.Contains(err.Error(), bad+":3: post.signed") {
		t.Fatalf("policy check: %v", err)
	}
}
