package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// exportedFingerprint is the fingerprint "list key export" prints.
func exportedFingerprint(t *testing.T, cfg string) string {
	t.Helper()
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(mustCLI(t, cfg, "list", "key", "export", milterfix.List)))
	if err != nil || len(el) != 1 {
		t.Fatalf("export: %v", err)
	}
	return keyring.Fingerprint(el[0])
}

// list key rotate and list key import through the CLI: the summary
// lines; import refuses a key file others can read, a public key only, a
// key without the list's address, and takes a key made by gpg, which
// "list key export" then gives; the old keys are kept.
func TestListKeyRotateImport(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	cfg := site.Config.File
	first := exportedFingerprint(t, cfg)

	out := mustCLI(t, cfg, "list", "key", "rotate", milterfix.List)
	second := exportedFingerprint(t, cfg)
	if second == first || out != "list "+milterfix.List+": new key "+second+" (was "+first+")\nnotices: 0 sent, 0 waiting in the outbox, 0 members without a usable key\n" {
		t.Fatalf("rotate printed %q (export %s)", out, second)
	}

	g := pgptest.NewGPG(t)
	fpr := g.GenKey("devs <" + milterfix.List + ">")
	otherFpr := g.GenKey("other <other@lists.example.org>")
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := g.ExportSecret(fpr)
	for _, tc := range []struct {
		name, file, want string
	}{
		{"readable by others", write("open.asc", good, 0o644), "readable by other users"},
		{"public key only", write("pub.asc", g.Export(fpr), 0o600), "public key " + fpr + " only"},
		{"no user ID for the list", write("other.asc", g.ExportSecret(otherFpr), 0o600), "no user ID for " + milterfix.List},
	} {
		if _, err := cli(t, cfg, "list", "key", "import", milterfix.List, tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v, want ...%s", tc.name, err, tc.want)
		}
		if got := exportedFingerprint(t, cfg); got != second {
			t.Fatalf("%s: the list key changed to %s", tc.name, got)
		}
	}
	out = mustCLI(t, cfg, "list", "key", "import", milterfix.List, write("good.asc", good, 0o600))
	if !strings.HasPrefix(out, "list "+milterfix.List+": new key "+fpr+" (was "+second+")\n") {
		t.Fatalf("import printed %q", out)
	}
	if got := exportedFingerprint(t, cfg); got != fpr {
		t.Fatalf("export after import: %s, want %s", got, fpr)
	}
	old, err := site.Admin.Store.OldListKeys(t.Context(), milterfix.List)
	if err != nil || len(old) != 2 || old[0].Fingerprint != second || old[1].Fingerprint != first {
		t.Fatalf("old keys %v %+v", err, old)
	}
	// Imported twice: it is the list's key already.
	if _, err := cli(t, cfg, "list", "key", "import", milterfix.List, filepath.Join(dir, "good.asc")); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("second import: %v", err)
	}
}
