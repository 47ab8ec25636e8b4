package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// main's view of a run: exit code, standard output and standard error.
func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = report(run(context.Background(), args, &out), &errb)
	return code, out.String(), errb.String()
}

// A new user's first tries: help, unknown verbs and bad arguments
// answer clearly, with the right exit code, and open no file. The config
// named here does not exist: any verb that read it would fail on it.
func TestUsage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.toml")
	usageHead := "usage: listcrypt [-c CONFIG] COMMAND ..."
	for _, tc := range []struct {
		args      []string
		code      int
		stdout    string // prefix; "" wants none
		stderr    []string
		notStderr string
		fullUsage bool // the usage on stderr
	}{
		{args: []string{"-h"}, stdout: usageHead},
		{args: []string{"--help"}, stdout: usageHead},
		{args: []string{"-help"}, stdout: usageHead},
		{args: []string{"help"}, stdout: usageHead},
		{args: []string{"-c", missing, "-h"}, stdout: usageHead},
		{args: []string{"-c", missing, "help"}, stdout: usageHead},
		{args: []string{"-c", missing, "help", "member", "import"}, stdout: "usage: listcrypt [-c CONFIG] member import LIST FILE"},
		{args: []string{"-c", missing, "list", "delete", "-h"}, stdout: "usage: listcrypt [-c CONFIG] list delete ADDRESS"},
		{args: []string{"-c", missing, "help", "frob"}, code: 2, stderr: []string{`unknown command "frob"`}, fullUsage: true},
		{args: []string{"-c", missing}, code: 2, stderr: []string{"listcrypt: no command"}, fullUsage: true},
		{args: []string{"-c", missing, "foo", "bar"}, code: 2, stderr: []string{`listcrypt: unknown command "foo"`}, fullUsage: true},
		{args: []string{"-c", missing, "lsit", "ls"}, code: 2, stderr: []string{`unknown command "lsit"`}, fullUsage: true},
		{args: []string{"-c", missing, "list", "frob", "x"}, code: 2, stderr: []string{`unknown command "list frob"`}, fullUsage: true},
		{args: []string{"-c", missing, "list"}, code: 2, stderr: []string{`unknown command "list"`}, fullUsage: true},
		{args: []string{"-x"}, code: 2, stderr: []string{"-x"}, fullUsage: true},
		{args: []string{"-c", missing, "list", "create"}, code: 2, stderr: []string{"list create: missing arguments; usage: listcrypt list create ADDRESS"}},
		{args: []string{"-c", missing, "list", "ls", "extra"}, code: 2, stderr: []string{"list ls: takes no arguments"}},
		{args: []string{"-c", missing, "member", "remove", "a", "b", "c"}, code: 2, stderr: []string{"too many arguments"}},
		{args: []string{"-c", missing, "list", "delete", "x@example.org", "--colour"}, code: 2, stderr: []string{"unknown flag --colour"}},
		{args: []string{"-c", missing, "list", "delete", "x@example.org", "--force=yes"}, code: 2, stderr: []string{"--force takes no value"}},
		{args: []string{"-c", missing, "member", "add", "l@example.org", "a@example.org"}, code: 2, stderr: []string{"missing --key"}},
		{args: []string{"-c", missing, "list", "create", "x@example.org", "--key-type", "dsa"}, code: 1, stderr: []string{"unknown key type"}},
		{args: []string{"-c", missing, "hold", "show", "x"}, code: 1, stderr: []string{"not a number"}},
		// A valid verb reads the config, and says so.
		{args: []string{"-c", missing, "list", "ls"}, code: 1, stderr: []string{"missing.toml"}, notStderr: usageHead},
	} {
		code, stdout, stderr := runMain(t, tc.args...)
		if code != tc.code {
			t.Errorf("listcrypt %q: exit %d, want %d (stderr %q)", tc.args, code, tc.code, stderr)
		}
		if tc.stdout == "" && stdout != "" || !strings.HasPrefix(stdout, tc.stdout) {
			t.Errorf("listcrypt %q: stdout %q, want %q...", tc.args, stdout, tc.stdout)
		}
		if tc.code == 0 && stderr != "" {
			t.Errorf("listcrypt %q: stderr %q, want none", tc.args, stderr)
		}
		for _, w := range tc.stderr {
			if !strings.Contains(stderr, w) {
				t.Errorf("listcrypt %q: stderr %q, want %q", tc.args, stderr, w)
			}
		}
		if strings.Contains(stderr, usageHead) != tc.fullUsage {
			t.Errorf("listcrypt %q: usage on stderr %v, want %v", tc.args, !tc.fullUsage, tc.fullUsage)
		}
		if tc.notStderr != "" && strings.Contains(stderr, tc.notStderr) {
			t.Errorf("listcrypt %q: stderr %q has %q", tc.args, stderr, tc.notStderr)
		}
		if tc.code == 2 && strings.Contains(stderr, "missing.toml") {
			t.Errorf("listcrypt %q: a usage error read the config: %q", tc.args, stderr)
		}
		if strings.Contains(stderr, "help requested") {
			t.Errorf("listcrypt %q: %q", tc.args, stderr)
		}
	}
}

func TestListLsAndDelete(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	cfg := site.Config.File
	ctx := context.Background()
	site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
	out := mustCLI(t, cfg, "list", "create", "ops@lists.example.org")
	opsFpr := strings.TrimSpace(out[strings.LastIndex(out, " "):])
	devs, err := site.Admin.Store.GetList(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	want := milterfix.List + "\t" + devs.KeyFingerprint + "\t2\n" + "ops@lists.example.org\t" + opsFpr + "\t0\n"
	if out := mustCLI(t, cfg, "list", "ls"); out != want {
		t.Fatalf("list ls:\n%q\nwant\n%q", out, want)
	}

	// A held post waiting refuses the delete, clearly, and keeps nothing.
	id, err := site.Admin.Store.AddHold(ctx, store.Hold{List: milterfix.List, Sender: "x@example.net",
		Recipients: []string{milterfix.List}, Reason: "non-member", Message: []byte("sealed"), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runMain(t, "-c", cfg, "list", "delete", milterfix.List)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "1 held posts waiting for a moderator") || !strings.Contains(stderr, "--force") ||
		!strings.Contains(stderr, "nothing was deleted") {
		t.Fatalf("delete with a hold: %d %q %q", code, stdout, stderr)
	}
	if ents, _ := filepath.Glob(filepath.Join(site.Config.StateDir, "deleted-*")); len(ents) != 0 {
		t.Fatalf("a refused delete kept %v", ents)
	}
	if out := mustCLI(t, cfg, "list", "ls"); out != want {
		t.Fatalf("list ls after a refused delete: %q", out)
	}

	// --force: deleted, its key kept sealed in state_dir, the policy
	// file moved aside.
	out = mustCLI(t, cfg, "list", "delete", milterfix.List, "--force")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "list key of "+milterfix.List+" kept in "+site.Config.StateDir+"/deleted-"+milterfix.List+"-") ||
		!strings.HasPrefix(lines[1], "policy "+filepath.Join(site.Config.PolicyDir, milterfix.List+".toml")+" moved to ") ||
		lines[2] != "list "+milterfix.List+" deleted: 2 members, 1 holds" {
		t.Fatalf("list delete --force:\n%s", out)
	}
	export := strings.TrimPrefix(lines[0], "list key of "+milterfix.List+" kept in ")
	fi, err := os.Stat(export)
	if err != nil || fi.Mode().Perm() != 0o600 || !strings.HasSuffix(export, ".key.asc") {
		t.Fatalf("export %s: %v %v", export, fi, err)
	}
	data, _ := os.ReadFile(export)
	if !bytes.Contains(data, []byte("BEGIN PGP PRIVATE KEY BLOCK")) {
		t.Fatalf("export: %s", data)
	}
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	if err != nil || len(el) != 1 || el[0].PrivateKey == nil || !el[0].PrivateKey.Encrypted || keyring.Fingerprint(el[0]) != devs.KeyFingerprint {
		t.Fatalf("export is not the list key, sealed: %v", err)
	}
	pass, err := site.Admin.Passphrase()
	if err != nil {
		t.Fatal(err)
	}
	if err := el[0].DecryptPrivateKeys(pass); err != nil {
		t.Fatalf("export does not open with the site passphrase: %v", err)
	}
	if _, err := os.Stat(filepath.Join(site.Config.PolicyDir, milterfix.List+".toml")); !os.IsNotExist(err) {
		t.Fatalf("policy file still loaded: %v", err)
	}
	if out := mustCLI(t, cfg, "list", "ls"); out != "ops@lists.example.org\t"+opsFpr+"\t0\n" {
		t.Fatalf("list ls after delete: %q", out)
	}
	if _, err := site.Admin.Store.GetHold(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("hold after delete: %v", err)
	}
	if out := mustCLI(t, cfg, "policy", "check"); !strings.HasPrefix(out, "1 list policies OK") {
		t.Fatalf("policy check after delete: %q", out)
	}
	if _, err := cli(t, cfg, "list", "delete", milterfix.List); err == nil || !strings.Contains(err.Error(), "no list "+milterfix.List) {
		t.Fatalf("second delete: %v", err)
	}

	// --purge keeps nothing.
	out = mustCLI(t, cfg, "list", "delete", "ops@lists.example.org", "--purge")
	if strings.Contains(out, "kept in") || !strings.Contains(out, "policy "+filepath.Join(site.Config.PolicyDir, "ops@lists.example.org.toml")+" removed\n") ||
		!strings.HasSuffix(out, "list ops@lists.example.org deleted: 0 members, 0 holds\n") {
		t.Fatalf("list delete --purge: %q", out)
	}
	if ents, _ := filepath.Glob(filepath.Join(site.Config.StateDir, "deleted-ops*")); len(ents) != 0 {
		t.Fatalf("--purge kept %v", ents)
	}
	if out := mustCLI(t, cfg, "list", "ls"); out != "" {
		t.Fatalf("list ls: %q", out)
	}
}

func TestMemberImport(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	cfg := site.Config.File
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keys := map[string]*openpgp.Entity{}
	for _, a := range []string{"alice@example.org", "bob@example.org", "carol@example.org"} {
		keys[a] = milterfix.NewKey(t, a)
		arm, err := keyring.ArmorPublicKey(keys[a])
		if err != nil {
			t.Fatal(err)
		}
		write("keys/"+strings.TrimSuffix(a, "@example.org")+" key.asc", arm)
	}
	write("keys/garbage.asc", "not a key")
	dave2, err := keyring.ArmorPublicKey(milterfix.NewKey(t, "dave@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	write("keys/dave2.asc", dave2)
	// dave is on the list already with another key.
	site.AddMember(t, "dave@example.org")
	before := mustCLI(t, cfg, "member", "list", milterfix.List)

	bad := write("bad.txt", `# members of devs
alice@example.org keys/alice key.asc

bob@example.org	keys/alice key.asc
not-an-address keys/bob key.asc
alice@example.org keys/alice key.asc
carol@example.org keys/missing.asc
erin@example.org keys/garbage.asc
dave@example.org keys/dave2.asc
frank@example.org
`)
	code, stdout, stderr := runMain(t, "-c", cfg, "member", "import", milterfix.List, bad)
	wantErr := []string{
		bad + ":4: bob@example.org: key ",                // alice's key for bob
		bad + ":5: not-an-address: not an email address", //
		bad + ":6: alice@example.org: listed already on line 2",
		bad + ":7: carol@example.org: key file: ",
		bad + ":8: erin@example.org: key ",
		bad + ":9: dave@example.org: already a member of " + milterfix.List + " (active, key ",
		bad + ":10: want ADDRESS KEYFILE",
		"listcrypt: member import " + bad + ": 7 of 8 lines refused, nothing imported",
	}
	if code != 1 || stdout != "" {
		t.Fatalf("import with refusals: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(got) != len(wantErr) {
		t.Fatalf("stderr:\n%s", stderr)
	}
	for i, w := range wantErr {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("stderr line %d: %q, want %q...", i+1, got[i], w)
		}
	}
	if after := mustCLI(t, cfg, "member", "list", milterfix.List); after != before {
		t.Fatalf("a refused import changed the members:\n%s", after)
	}

	// dave with another key, alone: refused as already a member.
	conflict := write("conflict.txt", "dave@example.org keys/dave2.asc\n")
	if _, err := cli(t, cfg, "member", "import", milterfix.List, conflict); err == nil || !strings.Contains(err.Error(), "already a member") {
		t.Fatal("import over a member with another key accepted")
	}

	good := write("sub/good.txt", "alice@example.org ../keys/alice key.asc\n"+
		"Bob@Example.org  "+filepath.Join(dir, "keys/bob key.asc")+"\n# end\n")
	out := mustCLI(t, cfg, "member", "import", milterfix.List, good)
	want := "member alice@example.org added to " + milterfix.List + ", key " + keyring.Fingerprint(keys["alice@example.org"]) + "\n" +
		"member bob@example.org added to " + milterfix.List + ", key " + keyring.Fingerprint(keys["bob@example.org"]) + "\n" +
		"2 members imported to " + milterfix.List + " (0 unchanged)\n"
	if out != want {
		t.Fatalf("import:\n%s\nwant\n%s", out, want)
	}
	ms := mustCLI(t, cfg, "member", "list", milterfix.List)
	if !strings.Contains(ms, "alice@example.org\tactive\t"+keyring.Fingerprint(keys["alice@example.org"])) ||
		!strings.Contains(ms, "bob@example.org\tactive\t"+keyring.Fingerprint(keys["bob@example.org"])) || strings.Count(ms, "\n") != 3 {
		t.Fatalf("member list: %s", ms)
	}
	// The same import again changes nothing.
	if out := mustCLI(t, cfg, "member", "import", milterfix.List, good); out != "0 members imported to "+milterfix.List+" (2 unchanged)\n" {
		t.Fatalf("second import: %q", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"member", "import", milterfix.List, filepath.Join(dir, "none.txt")}, "import file"},
		{[]string{"member", "import", milterfix.List, write("empty.txt", "# nobody\n\n")}, "lists no members"},
		{[]string{"member", "import", "none@lists.example.org", good}, "no list none@lists.example.org"},
	} {
		if _, err := cli(t, cfg, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("listcrypt %q: %v, want %q", tc.args, err, tc.want)
		}
	}
}
