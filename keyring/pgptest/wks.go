package pgptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireWKSClient returns the path of gpg-wks-client, which GnuPG
// installs in its libexec folder (not on PATH: /usr/lib/gnupg on
// Debian), skipping the test if it is missing (failing it if CI is set).
func RequireWKSClient(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("gpg-wks-client"); err == nil {
		return p
	}
	var dirs []string
	if gc, err := exec.LookPath("gpgconf"); err == nil {
		if o, _, err := run(gc, nil, "", nil, "--list-dirs", "libexecdir"); err == nil {
			dirs = append(dirs, strings.TrimSpace(string(o)))
		}
	}
	dirs = append(dirs, "/usr/lib/gnupg", "/usr/libexec", "/usr/lib/gnupg2")
	for _, d := range dirs {
		p := filepath.Join(d, "gpg-wks-client")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("pgptest: gpg-wks-client not found (PATH, %s) and CI is set", strings.Join(dirs, ", "))
	}
	t.Skipf("pgptest: gpg-wks-client not found (PATH, %s)", strings.Join(dirs, ", "))
	return ""
}

// WKDHash returns what `gpg-wks-client --print-wkd-hash ADDRESS` prints
// for address: the Web Key Directory name of its key.
func WKDHash(t testing.TB, address string) string {
	t.Helper()
	bin := RequireWKSClient(t)
	o, e, err := run(bin, []string{"HOME=" + t.TempDir()}, "", nil, "--print-wkd-hash", address)
	if err != nil {
		t.Fatalf("gpg-wks-client --print-wkd-hash %s: %v: %s", address, err, e)
	}
	hash, addr, ok := strings.Cut(strings.TrimSpace(string(o)), " ")
	if !ok || addr != address || len(hash) != 32 {
		t.Fatalf("gpg-wks-client --print-wkd-hash %s printed %q", address, o)
	}
	return hash
}
