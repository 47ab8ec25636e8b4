// Package pgptest runs real OpenPGP tools (GnuPG, Sequoia sq, RNP) in
// throw-away homes, for tests that must interoperate with what
// subscribers use. Every helper fails the test (t.Fatal) on a tool error
// unless its name says it returns the error.
//
// Tools are found on PATH. RequireTool skips the test when a tool is
// missing on a developer machine and fails it when the environment
// variable CI is non-empty, so CI can never pass by skipping.
package pgptest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Timeout bounds every tool invocation.
var Timeout = 60 * time.Second

// RequireTool returns the path of the named executable, skipping the
// test if it is missing (failing it if CI is set).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pgptest: %s not found and CI is set: %v", name, err)
		}
		t.Skipf("pgptest: %s not found: %v", name, err)
	}
	return p
}

// run runs bin with args, stdin and env added to a minimal environment.
func run(bin string, env []string, dir string, stdin []byte, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LANG=C", "LC_ALL=C"}, env...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(Timeout):
		_ = cmd.Process.Kill()
		<-done
		err = fmt.Errorf("%s timed out after %v", filepath.Base(bin), Timeout)
	}
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.Bytes(), e.Bytes(), err
}

// shortTempDir makes a directory with a short path (gpg-agent's socket
// path must fit in sockaddr_un) removed at the end of the test.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// writeFile writes data to a new file in dir and returns its path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var seq atomic.Int64

// tmpName returns a file name unique in this process.
func tmpName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, seq.Add(1))
}

// GPG is GnuPG 2.2+ in a private GNUPGHOME: no network key lookup, batch,
// loopback pinentry, keys without passphrase.
type GPG struct {
	t    testing.TB
	bin  string
	Home string
}

// NewGPG creates a GnuPG home for the test; its agent is stopped at the end.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	g := &GPG{t: t, bin: RequireTool(t, "gpg"), Home: shortTempDir(t, "gpg")}
	conf := "auto-key-locate local\nno-auto-key-retrieve\nbatch\npinentry-mode loopback\ntrust-model always\nno-tty\n"
	writeFile(t, g.Home, "gpg.conf", []byte(conf))
	writeFile(t, g.Home, "gpg-agent.conf", []byte("allow-loopback-pinentry\n"))
	t.Cleanup(func() {
		if p, err := exec.LookPath("gpgconf"); err == nil {
			_, _, _ = run(p, []string{"GNUPGHOME=" + g.Home}, g.Home, nil, "--kill", "all")
		}
	})
	return g
}

// RunErr runs gpg with args in this home.
func (g *GPG) RunErr(stdin []byte, args ...string) (stdout, stderr []byte, err error) {
	return run(g.bin, []string{"GNUPGHOME=" + g.Home, "HOME=" + g.Home}, g.Home, stdin, args...)
}

// Run runs gpg and fails the test on error.
func (g *GPG) Run(stdin []byte, args ...string) (stdout, stderr []byte) {
	g.t.Helper()
	o, e, err := g.RunErr(stdin, args...)
	if err != nil {
		g.t.Fatal(err)
	}
	return o, e
}

// GenKey creates an Ed25519 signing key with a Curve25519 encryption
// subkey (gpg's "future-default"), without passphrase and without expiry,
// and returns its fingerprint.
func (g *GPG) GenKey(uid string) string {
	g.t.Helper()
	g.Run(nil, "--passphrase", "", "--quick-gen-key", uid, "future-default", "default", "never")
	o, _ := g.Run(nil, "--with-colons", "--list-secret-keys", "="+uid)
	for _, l := range strings.Split(string(o), "\n") {
		if f := strings.Split(l, ":"); len(f) > 9 && f[0] == "fpr" {
			return f[9]
		}
	}
	g.t.Fatalf("pgptest: no fingerprint for %q in %s", uid, o)
	return ""
}

// Import imports keys (armored or binary).
func (g *GPG) Import(key []byte) {
	g.t.Helper()
	g.Run(key, "--import")
}

// Export returns the armored public key.
func (g *GPG) Export(fpr string) []byte {
	g.t.Helper()
	o, _ := g.Run(nil, "--armor", "--export", fpr)
	return o
}

// ExportSecret returns the armored secret key.
func (g *GPG) ExportSecret(fpr string) []byte {
	g.t.Helper()
	o, _ := g.Run(nil, "--passphrase", "", "--armor", "--export-secret-keys", fpr)
	return o
}

// SQ is Sequoia's sq (0.27 CLI: keys and certificates are files).
type SQ struct {
	t   testing.TB
	bin string
	Dir string
}

// NewSQ creates a working directory (also sq's HOME) for the test.
func NewSQ(t testing.TB) *SQ {
	t.Helper()
	return &SQ{t: t, bin: RequireTool(t, "sq"), Dir: shortTempDir(t, "sq")}
}

// RunErr runs sq with args in the working directory.
func (s *SQ) RunErr(stdin []byte, args ...string) (stdout, stderr []byte, err error) {
	return run(s.bin, []string{"HOME=" + s.Dir, "SEQUOIA_HOME=" + s.Dir}, s.Dir, stdin, args...)
}

// Run runs sq and fails the test on error.
func (s *SQ) Run(stdin []byte, args ...string) (stdout, stderr []byte) {
	s.t.Helper()
	o, e, err := s.RunErr(stdin, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return o, e
}

// WriteFile writes data into the working directory and returns the path.
func (s *SQ) WriteFile(name string, data []byte) string {
	return writeFile(s.t, s.Dir, name, data)
}

// SQKey is a key made by sq: the secret key and its certificate as files.
type SQKey struct {
	KeyFile, CertFile, Fingerprint string
}

// GenKey creates a key (Cv25519 suite, sq's default) for uid.
func (s *SQ) GenKey(uid string) SQKey {
	s.t.Helper()
	name := tmpName("key")
	k := SQKey{KeyFile: filepath.Join(s.Dir, name+".key"), CertFile: filepath.Join(s.Dir, name+".cert")}
	s.Run(nil, "key", "generate", "--userid", uid, "--export", k.KeyFile)
	s.Run(nil, "key", "extract-cert", "--output", k.CertFile, k.KeyFile)
	o, _ := s.Run(nil, "inspect", k.CertFile)
	m := regexp.MustCompile(`Fingerprint: ([0-9A-F]{40,64})`).FindSubmatch(o)
	if m == nil {
		s.t.Fatalf("pgptest: no fingerprint in sq inspect output: %s", o)
	}
	k.Fingerprint = string(m[1])
	return k
}

// Cert returns the armored certificate (public key) of k.
func (s *SQ) Cert(k SQKey) []byte {
	s.t.Helper()
	b, err := os.ReadFile(k.CertFile)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// Encrypt encrypts plaintext (armored) to the certificates in the given
// files, signing with signerKey if it is not empty.
func (s *SQ) Encrypt(plaintext []byte, recipientCertFiles []string, signerKeyFile string) []byte {
	s.t.Helper()
	args := []string{"encrypt"}
	for _, r := range recipientCertFiles {
		args = append(args, "--recipient-cert", r)
	}
	if signerKeyFile != "" {
		args = append(args, "--signer-key", signerKeyFile)
	}
	o, _ := s.Run(plaintext, args...)
	return o
}

// Sign makes an armored signature over data: detached, or an inline
// signed message.
func (s *SQ) Sign(data []byte, signerKeyFile string, detached bool) []byte {
	s.t.Helper()
	args := []string{"sign", "--signer-key", signerKeyFile}
	if detached {
		args = append(args, "--detached")
	}
	o, _ := s.Run(data, args...)
	return o
}

// DecryptErr decrypts with the key in keyFile; with signerCertFiles it
// also requires a valid signature by one of them.
func (s *SQ) DecryptErr(ciphertext []byte, keyFile string, signerCertFiles ...string) (plaintext, stderr []byte, err error) {
	args := []string{"decrypt", "--recipient-key", keyFile}
	for _, c := range signerCertFiles {
		args = append(args, "--signer-cert", c)
	}
	return s.RunErr(ciphertext, args...)
}

// Decrypt is DecryptErr failing the test on error.
func (s *SQ) Decrypt(ciphertext []byte, keyFile string, signerCertFiles ...string) []byte {
	s.t.Helper()
	o, _, err := s.DecryptErr(ciphertext, keyFile, signerCertFiles...)
	if err != nil {
		s.t.Fatal(err)
	}
	return o
}

// VerifyErr verifies a detached signature (sig) over data, or an inline
// signed message (sig nil, data the message), against signerCertFile.
func (s *SQ) VerifyErr(data, sig []byte, signerCertFile string) (stdout, stderr []byte, err error) {
	args := []string{"verify", "--signer-cert", signerCertFile}
	if sig != nil {
		args = append(args, "--detached", writeFile(s.t, s.Dir, tmpName("sig"), sig))
	}
	return s.RunErr(data, args...)
}

// RNP is RNP (rnp, rnpkeys) with a private --homedir.
type RNP struct {
	t          testing.TB
	rnp, keys  string
	Home       string
	scratchDir string
}

// NewRNP creates an RNP home for the test.
func NewRNP(t testing.TB) *RNP {
	t.Helper()
	r := &RNP{t: t, rnp: RequireTool(t, "rnp"), keys: RequireTool(t, "rnpkeys")}
	r.scratchDir = shortTempDir(t, "rnp")
	r.Home = filepath.Join(r.scratchDir, "home")
	if err := os.Mkdir(r.Home, 0o700); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *RNP) env() []string { return []string{"HOME=" + r.scratchDir} }

// RunErr runs rnp with --homedir and args.
func (r *RNP) RunErr(stdin []byte, args ...string) (stdout, stderr []byte, err error) {
	return run(r.rnp, r.env(), r.scratchDir, stdin, append([]string{"--homedir", r.Home, "--notty"}, args...)...)
}

// Run runs rnp and fails the test on error. rnp exits 0 on some failed
// verifications: check its stderr where it matters.
func (r *RNP) Run(stdin []byte, args ...string) (stdout, stderr []byte) {
	r.t.Helper()
	o, e, err := r.RunErr(stdin, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return o, e
}

// RunKeys runs rnpkeys with --homedir and args.
func (r *RNP) RunKeys(stdin []byte, args ...string) (stdout, stderr []byte) {
	r.t.Helper()
	o, e, err := run(r.keys, r.env(), r.scratchDir, stdin, append([]string{"--homedir", r.Home, "--notty"}, args...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	return o, e
}

// WriteFile writes data into a scratch directory and returns the path.
func (r *RNP) WriteFile(name string, data []byte) string {
	return writeFile(r.t, r.scratchDir, name, data)
}

var rnpFpr = regexp.MustCompile(`(?m)^sec .*\n\s+([0-9a-f]{40})`)

// GenKey creates an EdDSA signing key with a Curve25519 ECDH subkey
// (rnpkeys --expert choice 22), without password, and returns its
// fingerprint (upper case).
func (r *RNP) GenKey(uid string) string {
	r.t.Helper()
	o, _ := r.RunKeys([]byte("22\n"), "--generate-key", "--expert", "--userid", uid, "--password", "")
	m := rnpFpr.FindSubmatch(o)
	if m == nil {
		r.t.Fatalf("pgptest: no fingerprint in rnpkeys output: %s", o)
	}
	return strings.ToUpper(string(m[1]))
}

// Import imports keys (armored or binary).
func (r *RNP) Import(key []byte) {
	r.t.Helper()
	r.RunKeys(nil, "--import", r.WriteFile(tmpName("import"), key))
}

// Export returns the armored public key.
func (r *RNP) Export(fpr string) []byte {
	r.t.Helper()
	o, _ := r.RunKeys(nil, "--export-key", fpr)
	return o
}

// SignEncrypt encrypts data (armored) to recipient, signed by signer if
// not empty.
func (r *RNP) SignEncrypt(data []byte, recipient, signer string) []byte {
	r.t.Helper()
	in := r.WriteFile(tmpName("plain"), data)
	args := []string{"--encrypt", "-r", recipient, "--armor", "--password", "", "--output", "-"}
	if signer != "" {
		args = append(args, "--sign", "-u", signer)
	}
	o, _ := r.Run(nil, append(args, in)...)
	return o
}

// Decrypt decrypts (and verifies, if signed) data; stderr carries rnp's
// signature report.
func (r *RNP) Decrypt(data []byte) (plaintext, stderr []byte) {
	r.t.Helper()
	in := r.WriteFile(tmpName("ct"), data)
	return r.Run(nil, "--decrypt", "--password", "", "--output", "-", in)
}
