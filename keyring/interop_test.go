package keyring

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Interoperability of generated list keys with the OpenPGP tools
// subscribers use: GnuPG 2.2, Sequoia sq 0.27, RNP 0.16 (Debian 12).
// Each runs in a throw-away home. (keyring/pgptest will carry shared
// helpers; these tests only need a few commands.)

// requireTool skips when name is missing on a developer machine and fails
// when CI is set, so CI never passes by skipping.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

func run(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// gpgHome returns a throw-away GnuPG home that never looks keys up on the
// network, and stops its agent at the end of the test.
func gpgHome(t *testing.T) string {
	t.Helper()
	requireTool(t, "gpg")
	// A short path: the agent's socket path must stay under 108 bytes.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "gpg.conf"), []byte("auto-key-locate local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p, err := exec.LookPath("gpgconf"); err == nil {
			c := exec.Command(p, "--homedir", home, "--kill", "gpg-agent")
			_ = c.Run()
		}
		os.RemoveAll(home)
	})
	return home
}

func interopKey(t *testing.T, kt KeyType) (address, armored string, sealed, pass []byte) {
	t.Helper()
	address = "devs@lists.example.org"
	// Keys are made a minute ago: sq refuses signatures from the future.
	e, err := GenerateListKey(address, kt, time.Now().Add(-time.Minute), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	armored, err = ArmorPublicKey(e)
	if err != nil {
		t.Fatal(err)
	}
	pass = []byte("interop passphrase")
	sealed, err = SealSecretKey(e, pass)
	if err != nil {
		t.Fatal(err)
	}
	return address, armored, sealed, pass
}

// decryptSealed opens the sealed list key and decrypts msg with it.
func decryptSealed(t *testing.T, sealed, pass, msg []byte) string {
	t.Helper()
	e, err := OpenSecretKey(sealed, pass)
	if err != nil {
		t.Fatal(err)
	}
	return decryptWith(t, e, msg)
}

func TestInteropGnuPG(t *testing.T) {
	for _, kt := range []KeyType{KeyEd25519, KeyRSA3072} {
		t.Run(string(kt), func(t *testing.T) {
			home := gpgHome(t)
			addr, armored, sealed, pass := interopKey(t, kt)
			gpg := func(stdin []byte, args ...string) []byte {
				return run(t, stdin, "gpg", append([]string{"--homedir", home, "--batch", "--no-tty"}, args...)...)
			}
			gpg([]byte(armored), "--import")
			out := string(gpg(nil, "--with-colons", "--list-keys", addr))
			if !strings.Contains(out, "uid:-::::") || !strings.Contains(out, "devs <"+addr+">") {
				t.Fatalf("gpg lists:\n%s", out)
			}
			var sub bool
			for _, line := range strings.Split(out, "\n") {
				f := strings.Split(line, ":")
				if f[0] == "sub" && len(f) > 11 && strings.Contains(f[11], "e") {
					sub = true
				}
			}
			if !sub {
				t.Fatalf("gpg sees no encryption subkey:\n%s", out)
			}
			msg := gpg([]byte("to the list via gpg\n"), "--trust-model", "always", "--encrypt", "--recipient", addr)
			if got := decryptSealed(t, sealed, pass, msg); got != "to the list via gpg\n" {
				t.Errorf("decrypted %q", got)
			}

			// The sealed secret key itself is importable by gpg 2.2 with
			// the passphrase (the reason for iterated S2K over Argon2).
			passFile := filepath.Join(home, "pass")
			if err := os.WriteFile(passFile, pass, 0o600); err != nil {
				t.Fatal(err)
			}
			gpg(sealed, "--pinentry-mode", "loopback", "--passphrase-file", passFile, "--import")
			e, err := OpenSecretKey(sealed, pass)
			if err != nil {
				t.Fatal(err)
			}
			ours := encryptTo(t, e, "from listcrypt\n")
			if got := string(gpg(ours, "--pinentry-mode", "loopback", "--passphrase-file", passFile, "--decrypt")); got != "from listcrypt\n" {
				t.Errorf("gpg decrypted %q", got)
			}
		})
	}
}

func TestInteropSequoia(t *testing.T) {
	requireTool(t, "sq")
	addr, armored, sealed, pass := interopKey(t, KeyEd25519)
	dir := t.TempDir()
	pub := filepath.Join(dir, "list.pub.asc")
	if err := os.WriteFile(pub, []byte(armored), 0o600); err != nil {
		t.Fatal(err)
	}
	out := string(run(t, nil, "sq", "inspect", pub))
	for _, want := range []string{"OpenPGP Certificate", "EdDSA", "devs <" + addr + ">", "transport encryption"} {
		if !strings.Contains(out, want) {
			t.Errorf("sq inspect lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Invalid") {
		t.Errorf("sq finds the key invalid:\n%s", out)
	}
	msg := run(t, []byte("to the list via sq\n"), "sq", "encrypt", "--binary", "--recipient-cert", pub)
	if got := decryptSealed(t, sealed, pass, msg); got != "to the list via sq\n" {
		t.Errorf("decrypted %q", got)
	}
}

func TestInteropRNP(t *testing.T) {
	requireTool(t, "rnpkeys")
	requireTool(t, "rnp")
	addr, armored, sealed, pass := interopKey(t, KeyEd25519)
	home := t.TempDir()
	pub := filepath.Join(home, "list.pub.asc")
	if err := os.WriteFile(pub, []byte(armored), 0o600); err != nil {
		t.Fatal(err)
	}
	// RNP 0.16 imports with rnpkeys (rnp itself has no --import).
	run(t, nil, "rnpkeys", "--homedir", home, "--import", pub)
	out := string(run(t, nil, "rnpkeys", "--homedir", home, "--list-keys"))
	if !strings.Contains(out, "devs <"+addr+">") || !strings.Contains(out, "[E]") {
		t.Fatalf("rnpkeys lists:\n%s", out)
	}
	msg := run(t, []byte("to the list via rnp\n"), "rnp", "--homedir", home, "--encrypt", "--recipient", addr, "--output", "-")
	if got := decryptSealed(t, sealed, pass, msg); got != "to the list via rnp\n" {
		t.Errorf("decrypted %q", got)
	}
}
