// Package debian_test builds the Debian package (build-deb.sh, what "make
// deb" runs), installs it on this machine with dpkg, checks what it made,
// runs it, reinstalls it over an edited config and purges it.
//
// It installs into the real system paths (/usr/bin, /etc/listcrypt,
// /var/lib/listcrypt, /run/listcrypt, the listcrypt user), so it runs only
// as root with dpkg, refuses to run when any of those exist already (it
// would purge them), purges at the end, also on failure, and never starts
// the systemd unit.
package debian_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

const (
	list    = "devs@lists.example.org"
	owner   = "alice@example.org"
	confDir = "/etc/listcrypt"
	conf    = "/etc/listcrypt/listcrypt.toml"
	state   = "/var/lib/listcrypt"
	runDir  = "/run/listcrypt"
	socket  = "/run/listcrypt/milter.sock"
)

// leftovers are every path the package or its scripts may create; none may
// exist before the test or after the purge.
var leftovers = []string{
	"/usr/bin/listcrypt", "/usr/bin/listcrypt-milter", "/usr/bin/listcrypt-responder",
	confDir, state, runDir,
	"/lib/systemd/system/listcrypt-milter.service",
	"/usr/lib/tmpfiles.d/listcrypt.conf", "/etc/tmpfiles.d/listcrypt.conf",
	"/usr/share/doc/listcrypt",
}

// require skips without root or dpkg; with CI set, a missing dpkg as root
// is a failure.
func require(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("installs a package: needs root")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing (CI is set, so this is a failure, not a skip)", tool)
			}
			t.Skipf("%s missing", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := command(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func command(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	cmd.Stdin = nil // a dpkg question (a conffile prompt) would read EOF and fail
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// asListcrypt runs a command as the listcrypt user, as the README tells
// admins to.
func asListcrypt(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "runuser", append([]string{"-u", "listcrypt", "--"}, args...)...)
}

func installed() bool {
	out, err := command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "listcrypt")
	return err == nil && strings.HasPrefix(out, "i")
}

func known(pkg string) bool {
	out, err := command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg)
	return err == nil && strings.TrimSpace(out) != "" && !strings.HasPrefix(out, "un")
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// checkOwner fails unless path has this owner and group.
func checkOwner(t *testing.T, path, owner, group string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	checkStat(t, path, fi.IsDir(), fi.Mode()&(fs.ModePerm|fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky), owner, group)
}

// checkStat fails unless path has this type and mode, owner and group.
func checkStat(t *testing.T, path string, dir bool, mode fs.FileMode, owner, group string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	if fi.IsDir() != dir {
		t.Errorf("%s: directory %v, want %v", path, fi.IsDir(), dir)
	}
	if got := fi.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSetuid | fs.ModeSticky); got != mode {
		t.Errorf("%s: mode %v, want %v", path, got, mode)
	}
	st := fi.Sys().(*syscall.Stat_t)
	u, _ := user.LookupId(strconv.Itoa(int(st.Uid)))
	g, _ := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
	var un, gn string
	if u != nil {
		un = u.Username
	}
	if g != nil {
		gn = g.Name
	}
	if un != owner || gn != group {
		t.Errorf("%s: owner %s:%s (%d:%d), want %s:%s", path, un, gn, st.Uid, st.Gid, owner, group)
	}
}

func digest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

func TestPackageInstallRunReinstallPurge(t *testing.T) {
	require(t)
	began := time.Now()

	// Nothing of a real installation may be here: the purge would take it.
	if installed() || known("listcrypt") {
		t.Fatalf("a listcrypt package is known to dpkg on this machine; this test would purge it")
	}
	for _, p := range leftovers {
		if exists(p) {
			t.Fatalf("%s exists; this test installs and purges the package there, refusing", p)
		}
	}
	if _, err := user.Lookup("listcrypt"); err == nil {
		t.Fatalf("a listcrypt user exists; this test would delete it on purge, refusing")
	}
	_, postfixErr := user.LookupGroup("postfix")
	havePostfix := postfixErr == nil

	// Build, as "make deb" does, into a temporary folder.
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("sh", filepath.Join(repo, "contrib/debian/build-deb.sh"))
	cmd.Env = append(os.Environ(), "OUT="+out, "VERSION=")
	cmd.Dir = repo
	built, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("build-deb.sh: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("build-deb.sh: %v", err)
	}
	deb := strings.TrimSpace(string(built))
	if filepath.Dir(deb) != out || !strings.HasPrefix(filepath.Base(deb), "listcrypt_0~git") || !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("build-deb.sh made %q, want %s/listcrypt_0~gitDATE.HASH_ARCH.deb", deb, out)
	}
	t.Logf("built %s in %v", filepath.Base(deb), time.Since(began).Round(time.Millisecond))
	checkContents(t, repo, deb)

	// From here on the machine holds the package: purge it whatever happens.
	t.Cleanup(func() {
		if installed() || known("listcrypt") {
			if o, err := command("dpkg", "--purge", "listcrypt"); err != nil {
				t.Errorf("cleanup: dpkg --purge listcrypt: %v\n%s", err, o)
			}
		}
		// Only what this test made (none of it existed before).
		for _, p := range leftovers {
			if exists(p) {
				t.Errorf("cleanup: %s left after the purge; removing it", p)
				_ = os.RemoveAll(p)
			}
		}
		if _, err := user.Lookup("listcrypt"); err == nil {
			t.Errorf("cleanup: listcrypt user left after the purge; removing it")
			_, _ = command("userdel", "listcrypt")
		}
		if _, err := user.LookupGroup("listcrypt"); err == nil {
			_, _ = command("groupdel", "listcrypt")
		}
	})

	run(t, "dpkg", "-i", deb)
	checkInstalled(t, repo, havePostfix)

	// What an admin does next, as the listcrypt user: init, a list, -n.
	initOut := asListcrypt(t, "listcrypt", "-c", conf, "init")
	if !strings.Contains(initOut, "ready:") {
		t.Errorf("listcrypt init said %q, want ready: lines", initOut)
	}
	checkStat(t, filepath.Join(confDir, "passphrase"), false, 0o600, "listcrypt", "listcrypt")
	// The database's mode follows the caller's umask (the unit's is 0077);
	// the folder (0750) keeps others out either way.
	checkOwner(t, filepath.Join(state, "state.db"), "listcrypt", "listcrypt")
	asListcrypt(t, "listcrypt", "-c", conf, "list", "create", list, "--owner", owner)
	if o := asListcrypt(t, "listcrypt", "-c", conf, "policy", "check"); !strings.Contains(o, "1 list policies OK") {
		t.Errorf("policy check: %q", o)
	}
	if havePostfix {
		asListcrypt(t, "listcrypt-milter", "-c", conf, "-n")
	} else {
		t.Log("no postfix group: listcrypt-milter -n not run (socket_group = \"postfix\" in the shipped config)")
	}

	// The admin edits the config: a comment here; the Postfix subtest also
	// points the reinjection address at its Postfix.
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("# edited by the admin (package test)\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	t.Run("PostThroughPostfix", func(t *testing.T) { postThroughPostfix(t) })

	// Reinstalling the same version keeps the admin's config, the
	// passphrase, the policies and the state.
	kept := []string{conf, filepath.Join(confDir, "passphrase"), filepath.Join(confDir, "lists.d", list+".toml"), filepath.Join(state, "state.db")}
	before := map[string]string{}
	for _, p := range kept {
		before[p] = digest(t, p)
	}
	run(t, "dpkg", "-i", deb)
	for _, p := range kept {
		if got := digest(t, p); got != before[p] {
			t.Errorf("%s changed by reinstalling the package", p)
		}
	}
	if b, _ := os.ReadFile(conf); !bytes.Contains(b, []byte("# edited by the admin (package test)")) {
		t.Errorf("the admin's edit of %s is gone after reinstalling", conf)
	}
	checkInstalled(t, repo, havePostfix)
	checkStat(t, filepath.Join(confDir, "passphrase"), false, 0o600, "listcrypt", "listcrypt")
	if o := asListcrypt(t, "listcrypt", "-c", conf, "policy", "check"); !strings.Contains(o, "1 list policies OK") {
		t.Errorf("policy check after reinstall: %q", o)
	}
	if havePostfix {
		asListcrypt(t, "listcrypt-milter", "-c", conf, "-n")
	}

	// Purge: nothing is left.
	run(t, "dpkg", "--purge", "listcrypt")
	if installed() || known("listcrypt") {
		o, _ := command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "listcrypt")
		t.Errorf("dpkg still knows listcrypt after the purge: %q", o)
	}
	for _, p := range leftovers {
		if exists(p) {
			t.Errorf("%s left after dpkg --purge", p)
		}
	}
	if _, err := user.Lookup("listcrypt"); err == nil {
		t.Errorf("listcrypt user left after dpkg --purge")
	}
	if _, err := user.LookupGroup("listcrypt"); err == nil {
		t.Errorf("listcrypt group left after dpkg --purge")
	}
	if g, err := user.LookupGroup("postfix"); err == nil {
		if o, _ := command("getent", "group", g.Name); strings.Contains(o, "listcrypt") {
			t.Errorf("group postfix still names listcrypt: %q", o)
		}
	}
	t.Logf("whole test %v", time.Since(began).Round(time.Millisecond))
}

// checkContents looks into the .deb: owners, modes, conffiles, the unit.
func checkContents(t *testing.T, repo, deb string) {
	t.Helper()
	list := run(t, "dpkg-deb", "-c", deb)
	want := map[string]string{
		"./usr/bin/listcrypt":                                 "-rwxr-xr-x",
		"./usr/bin/listcrypt-milter":                          "-rwxr-xr-x",
		"./usr/bin/listcrypt-responder":                       "-rwxr-xr-x",
		"./etc/listcrypt/listcrypt.toml":                      "-rw-r--r--",
		"./lib/systemd/system/listcrypt-milter.service":       "-rw-r--r--",
		"./usr/lib/tmpfiles.d/listcrypt.conf":                 "-rw-r--r--",
		"./usr/share/doc/listcrypt/copyright":                 "-rw-r--r--",
		"./usr/share/doc/listcrypt/README.md":                 "-rw-r--r--",
		"./usr/share/doc/listcrypt/postfix/main.cf.snippet":   "-rw-r--r--",
		"./usr/share/doc/listcrypt/postfix/master.cf.snippet": "-rw-r--r--",
	}
	mans, _ := filepath.Glob(filepath.Join(repo, "contrib/man/*.[158]"))
	for _, m := range mans {
		sec := m[len(m)-1:]
		want["./usr/share/man/man"+sec+"/"+filepath.Base(m)+".gz"] = "-rw-r--r--"
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 {
			t.Errorf("dpkg-deb -c line %q", line)
			continue
		}
		mode, owner, path := fields[0], fields[1], fields[len(fields)-1]
		if owner != "root/root" {
			t.Errorf("%s owned by %s in the package, want root/root", path, owner)
		}
		if strings.HasPrefix(mode, "d") && mode != "drwxr-xr-x" {
			t.Errorf("folder %s has mode %s in the package", path, mode)
		}
		if w, ok := want[path]; ok {
			seen[path] = true
			if mode != w {
				t.Errorf("%s has mode %s in the package, want %s", path, mode, w)
			}
		}
	}
	for p := range want {
		if !seen[p] {
			t.Errorf("%s missing from the package", p)
		}
	}
	if c := run(t, "dpkg-deb", "-f", deb, "Package", "Architecture"); !strings.Contains(c, "Package: listcrypt") {
		t.Errorf("control: %q", c)
	}
	dir := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, dir)
	if b, err := os.ReadFile(filepath.Join(dir, "conffiles")); err != nil || string(b) != conf+"\n" {
		t.Errorf("conffiles = %q, %v; want %s", b, err, conf)
	}
}

// checkInstalled checks the files, the user and the folders after dpkg -i.
func checkInstalled(t *testing.T, repo string, havePostfix bool) {
	t.Helper()
	for _, b := range []string{"listcrypt", "listcrypt-milter", "listcrypt-responder"} {
		checkStat(t, "/usr/bin/"+b, false, 0o755, "root", "root")
	}
	checkStat(t, conf, false, 0o644, "root", "root")
	checkStat(t, confDir, true, 0o750, "listcrypt", "listcrypt")
	checkStat(t, filepath.Join(confDir, "lists.d"), true, 0o750, "listcrypt", "listcrypt")
	checkStat(t, state, true, 0o750, "listcrypt", "listcrypt")
	runGroup := "listcrypt"
	if havePostfix {
		runGroup = "postfix"
	}
	checkStat(t, runDir, true, 0o750, "listcrypt", runGroup)

	unit, err := os.ReadFile("/lib/systemd/system/listcrypt-milter.service")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("\nExecStart=/usr/bin/listcrypt-milter -c /etc/listcrypt/listcrypt.toml\n")) ||
		bytes.Contains(unit, []byte("/usr/local")) || bytes.Contains(unit, []byte("\nRuntimeDirectory=")) {
		t.Errorf("installed unit:\n%s", unit)
	}
	mans, _ := filepath.Glob(filepath.Join(repo, "contrib/man/*.[158]"))
	for _, m := range mans {
		p := "/usr/share/man/man" + m[len(m)-1:] + "/" + filepath.Base(m) + ".gz"
		checkStat(t, p, false, 0o644, "root", "root")
	}

	u, err := user.Lookup("listcrypt")
	if err != nil {
		t.Fatalf("no listcrypt user after dpkg -i: %v", err)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid >= 1000 || uid == 0 {
		t.Errorf("listcrypt uid %d: want a system user", uid)
	}
	if u.HomeDir != state {
		t.Errorf("listcrypt home %q, want %s", u.HomeDir, state)
	}
	pw := run(t, "getent", "passwd", "listcrypt")
	if !strings.HasSuffix(strings.TrimSpace(pw), ":/usr/sbin/nologin") {
		t.Errorf("listcrypt passwd entry %q: want shell /usr/sbin/nologin", pw)
	}
	g, err := user.LookupGroup("listcrypt")
	if err != nil || g.Gid != u.Gid {
		t.Errorf("listcrypt group %v (%v), want the user's primary group %s", g, err, u.Gid)
	}
	groups := strings.Fields(run(t, "id", "-nG", "listcrypt"))
	inPostfix := false
	for _, g := range groups {
		inPostfix = inPostfix || g == "postfix"
	}
	if inPostfix != havePostfix {
		t.Errorf("listcrypt groups %v: member of postfix %v, want %v", groups, inPostfix, havePostfix)
	}
}

// syncBuffer collects a subprocess's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// postThroughPostfix runs the installed listcrypt-milter as the listcrypt
// user with the installed config (its reinjection address pointed at a
// private rig Postfix, as an admin edits it), on the installed socket
// path /run/listcrypt/milter.sock, behind a rig Postfix built from
// contrib/postfix: a plain post to the list is refused during SMTP, mail
// to anyone else is delivered. The unit is not started: the process is the
// test's.
func postThroughPostfix(t *testing.T) {
	rig.Require(t)
	p := rig.Start(t, rig.Options{MilterAddr: "unix:" + socket})

	cfg, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	const shipped = `address = "127.0.0.1:10026"`
	if !bytes.Contains(cfg, []byte(shipped)) {
		t.Fatalf("%s has no line %s to edit", conf, shipped)
	}
	cfg = bytes.Replace(cfg, []byte(shipped), []byte(fmt.Sprintf("address = %q", p.ReinjectAddr())), 1)
	if err := os.WriteFile(conf, cfg, 0o644); err != nil {
		t.Fatal(err)
	}

	// Two members, added with the installed CLI as the listcrypt user; one
	// recipient per batch, so that the second copy goes through the
	// reinjection listener the admin's edit points at.
	keys := rig.TempDir(t)
	members := map[string]*openpgp.Entity{}
	for _, addr := range []string{"alice@example.org", "bob@example.org"} {
		e := milterfix.NewKey(t, addr)
		armored, err := keyring.ArmorPublicKey(e)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(keys, addr+".asc")
		if err := os.WriteFile(file, []byte(armored), 0o644); err != nil {
			t.Fatal(err)
		}
		asListcrypt(t, "listcrypt", "-c", conf, "member", "add", list, addr, "--key", file)
		members[addr] = e
	}
	listKeys, err := openpgp.ReadArmoredKeyRing(strings.NewReader(asListcrypt(t, "listcrypt", "-c", conf, "list", "key", "export", list)))
	if err != nil || len(listKeys) != 1 {
		t.Fatalf("list key export: %d keys, %v", len(listKeys), err)
	}
	listKey := listKeys[0]
	pfile := filepath.Join(confDir, "lists.d", list+".toml")
	pol, err := os.ReadFile(pfile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(pol, []byte("\nbatch_size = 50\n")) {
		t.Fatalf("%s has no batch_size = 50 line:\n%s", pfile, pol)
	}
	if err := os.WriteFile(pfile, bytes.Replace(pol, []byte("\nbatch_size = 50\n"), []byte("\nbatch_size = 1\n"), 1), 0o644); err != nil {
		t.Fatal(err)
	}

	u, err := user.Lookup("listcrypt")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := user.LookupGroup("postfix")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	pgid, _ := strconv.Atoi(pg.Gid)
	var logs syncBuffer
	m := exec.Command("/usr/bin/listcrypt-milter", "-c", conf)
	m.Dir = "/"
	m.Stdout, m.Stderr = &logs, &logs
	// What the unit does: User=listcrypt, SupplementaryGroups=postfix.
	m.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(pgid)},
	}}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	t.Cleanup(func() {
		_ = m.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = m.Process.Kill()
			<-done
		}
		t.Logf("listcrypt-milter output:\n%s", logs.String())
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if fi, err := os.Stat(socket); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("listcrypt-milter exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket %s after 15 s\n%s", socket, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkStat(t, socket, false, 0o660, "listcrypt", "postfix")

	// A plain post to the list: refused during SMTP (550).
	plain := []byte("From: Bob <bob@example.org>\r\nTo: " + list + "\r\nSubject: quick question\r\n" +
		"Message-ID: <package-test-plain@example.org>\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIs the release still on Friday?\r\n")
	err = rig.Send(p.SMTPAddr(), "bob@example.org", []string{list}, plain)
	var se *rig.SMTPError
	if !errors.As(err, &se) || se.Code != 550 {
		t.Errorf("plain post to %s: %v, want a 550 refusal from listcrypt\n%s", list, err, logs.String())
	}

	// Mail to anyone else passes the milter and is delivered.
	other := bytes.ReplaceAll(plain, []byte("To: "+list), []byte("To: carol@example.org"))
	other = bytes.ReplaceAll(other, []byte("package-test-plain@"), []byte("package-test-other@"))
	if err := rig.Send(p.SMTPAddr(), "bob@example.org", []string{"carol@example.org"}, other); err != nil {
		t.Fatalf("mail to carol@example.org: %v\n%s", err, logs.String())
	}

	// alice's signed post, encrypted to the list key: accepted, and each
	// member gets one copy (one rewritten in place, one reinjected) that
	// decrypts with that member's key alone, signed by the list key.
	post := milterfix.Build(t, milterfix.Post{From: "alice@example.org", MessageID: "<package-test-post@example.org>",
		SignWith: members["alice@example.org"], EncryptTo: []*openpgp.Entity{listKey}, Body: "installed and working"})
	if err := rig.Send(p.SMTPAddr(), "alice@example.org", []string{list}, post); err != nil {
		t.Fatalf("alice's encrypted post refused: %v\n%s", err, logs.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := p.Sink().Wait(ctx, 3)
	if err != nil {
		t.Fatalf("deliveries: %v (got %d)\n%s", err, len(p.Sink().Messages()), logs.String())
	}
	toCarol, copies := 0, map[string]int{}
	for _, m := range got {
		switch {
		case len(m.To) == 1 && m.To[0] == "carol@example.org":
			toCarol++
		case m.From == "devs-bounces@lists.example.org" && len(m.To) == 1 && members[m.To[0]] != nil:
			copies[m.To[0]]++
			if bytes.Contains(m.Data, []byte("installed and working")) {
				t.Errorf("the copy to %s carries the post in clear", m.To[0])
			}
			pt := milterfix.DecryptCopy(t, m.Data, members[m.To[0]], listKey)
			if !bytes.Contains(pt, []byte("installed and working")) {
				t.Errorf("the copy to %s decrypts to %q", m.To[0], pt)
			}
		default:
			t.Errorf("unexpected delivery from %s to %v", m.From, m.To)
		}
	}
	if toCarol != 1 || copies["alice@example.org"] != 1 || copies["bob@example.org"] != 1 {
		t.Errorf("deliveries: %d to carol, list copies %v; want 1, one each for alice and bob", toCarol, copies)
	}
	if !strings.Contains(logs.String(), list) {
		t.Errorf("listcrypt-milter logged no decision for %s:\n%s", list, logs.String())
	}
}
