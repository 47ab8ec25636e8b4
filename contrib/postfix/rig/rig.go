// Package rig starts a private, real Postfix for tests, configured with
// the lines listcrypt ships in contrib/postfix (main.cf.snippet and
// master.cf.snippet), and a Sink that receives everything that Postfix
// delivers.
//
// Every rig instance has its own config, queue and data directories under
// a temporary folder, its own maillog file, an smtpd with the milter
// settings of the snippet on 127.0.0.1:<free port>, the reinjection smtpd
// of the snippet (milters off) on 127.0.0.1:<another free port>, and sends
// all mail, whatever the domain, by smtp to the Sink. DNS is off and queue
// retries are about a second apart.
//
// A real Postfix needs root and the Debian postfix package: call Require
// (Start does) so a developer machine without them skips and CI fails.
package rig

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/contrib/postfix"
)

// DefaultListDomain is the list domain when Options.ListDomain is empty.
const DefaultListDomain = "lists.example.org"

// Hostname is the rig Postfix's myhostname.
const Hostname = "postfix.rig.test"

// Options configure a rig Postfix.
type Options struct {
	// MilterAddr is the smtpd_milters value in Postfix syntax,
	// "unix:/path/to.sock" or "inet:127.0.0.1:port"; "" runs without a
	// milter. A unix socket must be reachable by the postfix user: see
	// ListenUnix and TempDir.
	MilterAddr string
	// ListDomain is relayed (relay_domains) along with example.org;
	// default DefaultListDomain.
	ListDomain string
	// MessageSizeLimit is message_size_limit in bytes; 0 keeps the
	// Postfix default (10240000).
	MessageSizeLimit int64
	// ExtraMain sets further main.cf parameters, applied last (they win
	// over the rig's and the snippet's values).
	ExtraMain map[string]string
	// ExtraMaster is appended to master.cf (e.g. a pipe transport).
	ExtraMaster string
	// Tables are lookup tables compiled with postmap into the config
	// directory before Postfix starts: file name -> text ("key value"
	// lines). Refer to one as "hash:$config_directory/NAME" in ExtraMain;
	// SetTable changes one while Postfix runs.
	Tables map[string]string
	// ListRoutes are list addresses routed as contrib/postfix tells
	// admins to (transport_maps = postfix.TransportTable): mail that
	// reaches a list address itself is bounced by the error transport,
	// LIST-request@ goes to the listcrypt-responder service (which
	// ExtraMaster must then define).
	ListRoutes []string
	// ReinjectRecipientAccess, when not nil, makes the reinjection
	// listener answer RCPT TO for these recipients with these replies
	// (check_recipient_access): address -> "550 5.1.1 User unknown",
	// "450 4.2.1 Try again later", ... Change it with
	// SetReinjectRecipientAccess.
	ReinjectRecipientAccess map[string]string
}

// Table names the rig uses itself.
const (
	transportTable      = "listcrypt-transport"
	reinjectAccessTable = "reinject-recipient-access"
)

// Postfix is a running rig instance. It is stopped at the end of the test.
type Postfix struct {
	t            testing.TB
	root         string
	configDir    string
	queueDir     string
	dataDir      string
	maillog      string
	smtpAddr     string
	reinjectAddr string
	sink         *Sink
}

// Require skips the test when a private Postfix cannot run here (not
// root, postfix not installed), or fails it when the environment variable
// CI is non-empty, so that CI can never pass by skipping.
func Require(t testing.TB) {
	t.Helper()
	why := unavailable()
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("rig: %s (CI is set, so this is a failure, not a skip)", why)
	}
	t.Skipf("rig: %s", why)
}

func unavailable() string {
	if os.Geteuid() != 0 {
		return "a private Postfix needs root"
	}
	for _, name := range []string{"postfix", "postqueue"} {
		if _, err := binary(name); err != nil {
			return err.Error()
		}
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return "no postfix user: " + err.Error()
	}
	return ""
}

// binary finds a Postfix command; /usr/sbin is often not in a test's PATH.
func binary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return p, nil
	}
	return "", fmt.Errorf("%s not found (install the postfix package)", name)
}

// TempDir returns a new directory that the postfix user can reach (mode
// 0755, every folder above it searchable), removed at the end of the test.
// t.TempDir() is not usable for this: its folders are 0700 root.
func TempDir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if err := searchable(base); err != nil {
		if err2 := searchable("/tmp"); err2 != nil {
			t.Fatalf("rig: no folder the postfix user can reach: %v; %v", err, err2)
		}
		base = "/tmp"
	}
	return OwnedDir(t, base, dirPrefix, "rig", func(dir string, owner int) {
		p := &Postfix{t: t, root: dir, configDir: filepath.Join(dir, "etc"), queueDir: filepath.Join(dir, "spool")}
		if pid := p.masterPID(); pid > 0 && Alive(pid) {
			t.Logf("rig: stopping Postfix %d left by dead test process %d in %s", pid, owner, dir)
			p.stopMaster(pid)
		}
	})
}

const (
	dirPrefix = "listcrypt-rig-"
)

// searchable checks that dir and every folder above it can be traversed
// by other users.
func searchable(dir string) error {
	d, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by other users (mode %v)", d, fi.Mode().Perm())
		}
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		d = parent
	}
}

// ListenUnix listens on a unix socket laid out the way
// contrib/postfix/README.md tells admins to: a folder owned by group
// postfix with mode 2750 (setgid, so the socket inherits group postfix)
// and the socket at mode 0660. smtpd drops every supplementary group, so
// only its primary group (postfix) or the "other" bits can grant access.
// It returns the listener and the address in Postfix syntax
// ("unix:/path") for Options.MilterAddr. The listener is closed at the end
// of the test.
func ListenUnix(t testing.TB) (net.Listener, string) {
	t.Helper()
	Require(t)
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	gid, err := strconv.Atoi(pf.Gid)
	if err != nil {
		t.Fatalf("rig: postfix gid %q: %v", pf.Gid, err)
	}
	dir := filepath.Join(TempDir(t), "run")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatalf("rig: %v", err)
	}
	if err := os.Chown(dir, -1, gid); err != nil {
		t.Fatalf("rig: %v", err)
	}
	if err := os.Chmod(dir, 0o750|os.ModeSetgid); err != nil {
		t.Fatalf("rig: %v", err)
	}
	path := filepath.Join(dir, "milter.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() }) // the server under test may have closed it
	if err := os.Chmod(path, 0o660); err != nil {
		t.Fatalf("rig: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Gid) != gid {
		t.Fatalf("rig: %s has group %d, want postfix (%d) from the setgid folder", path, st.Gid, gid)
	}
	return ln, "unix:" + path
}

// Start starts a private Postfix and its Sink; both stop at the end of the
// test. It fails the test if Postfix does not come up.
func Start(t testing.TB, opts Options) *Postfix {
	t.Helper()
	Require(t)
	began := time.Now()
	if opts.ListDomain == "" {
		opts.ListDomain = DefaultListDomain
	}
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)

	sink := NewSink(t)
	root := TempDir(t)
	p := &Postfix{
		t:         t,
		root:      root,
		configDir: filepath.Join(root, "etc"),
		queueDir:  filepath.Join(root, "spool"),
		dataDir:   filepath.Join(root, "data"),
		maillog:   filepath.Join(root, "maillog"),
		sink:      sink,
	}
	for _, d := range []string{p.configDir, p.queueDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("rig: %v", err)
		}
	}
	// The master takes data_directory/master.lock as postfix.
	if err := os.Mkdir(p.dataDir, 0o700); err != nil {
		t.Fatalf("rig: %v", err)
	}
	if err := os.Chown(p.dataDir, uid, gid); err != nil {
		t.Fatalf("rig: %v", err)
	}

	ports, err := FreePorts(2)
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	p.smtpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	p.reinjectAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))

	tables := map[string]string{}
	for name, text := range opts.Tables {
		tables[name] = text
	}
	if len(opts.ListRoutes) > 0 {
		tables[transportTable] = postfix.TransportTable(opts.ListRoutes...)
		if opts.ExtraMain["transport_maps"] == "" {
			if opts.ExtraMain == nil {
				opts.ExtraMain = map[string]string{}
			}
			opts.ExtraMain["transport_maps"] = "hash:" + filepath.Join(p.configDir, transportTable)
		}
	}
	var reinjectExtra []string
	if opts.ReinjectRecipientAccess != nil {
		tables[reinjectAccessTable] = accessTable(opts.ReinjectRecipientAccess)
		// Commas, not spaces: a master.cf -o value is one word.
		reinjectExtra = append(reinjectExtra, "-o smtpd_recipient_restrictions=check_recipient_access,hash:"+
			filepath.Join(p.configDir, reinjectAccessTable)+",permit_mynetworks,reject")
	}
	mainCF, err := p.mainCF(opts)
	if err != nil {
		t.Fatalf("rig: main.cf: %v", err)
	}
	masterCF, err := masterCF(postfix.MasterCF, p.smtpAddr, p.reinjectAddr, reinjectExtra...)
	if err != nil {
		t.Fatalf("rig: master.cf.snippet: %v", err)
	}
	masterCF += opts.ExtraMaster
	if err := os.WriteFile(filepath.Join(p.configDir, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatalf("rig: %v", err)
	}
	if err := os.WriteFile(filepath.Join(p.configDir, "master.cf"), []byte(masterCF), 0o644); err != nil {
		t.Fatalf("rig: %v", err)
	}
	// Postfix re-reads a config file, 300ms apart, until its mtime is two
	// seconds in the past (so that it never reads a half-written file):
	// a fresh main.cf costs every Postfix command 1.5s. Backdate them.
	past := time.Now().Add(-time.Hour)
	for _, name := range []string{"main.cf", "master.cf"} {
		if err := os.Chtimes(filepath.Join(p.configDir, name), past, past); err != nil {
			t.Fatalf("rig: %v", err)
		}
	}

	names := make([]string, 0, len(tables))
	for name := range tables {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := p.writeTable(name, tables[name], past); err != nil {
			t.Fatalf("rig: %v", err)
		}
	}

	// Creating the queue folders here and touching quick-start skips the
	// postfix-script checks (hundreds of shell commands, seconds on a busy
	// machine); without postfix-files the full checks run.
	if err := p.prepareQueue(); err != nil {
		t.Logf("rig: %v; postfix start runs its full checks", err)
	}

	t.Cleanup(p.stop)
	if out, err := p.command("postfix", "-c", p.configDir, "start"); err != nil {
		t.Fatalf("rig: postfix start: %v\n%s\nmaillog:\n%s", err, out, p.Maillog())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, addr := range []string{p.smtpAddr, p.reinjectAddr} {
		if err := WaitGreeting(ctx, addr); err != nil {
			t.Fatalf("rig: postfix smtpd on %s: %v\nmaillog:\n%s", addr, err, p.Maillog())
		}
	}
	t.Logf("rig: postfix up in %v: smtpd %s, reinjection %s, sink %s, config %s",
		time.Since(began).Round(time.Millisecond), p.smtpAddr, p.reinjectAddr, sink.Addr(), p.configDir)
	return p
}

// accessTable writes an access(5) table of address -> reply.
func accessTable(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s\t%s\n", k, m[k])
	}
	return b.String()
}

// writeTable writes the table NAME in the config directory and compiles
// it with postmap, then sets its modification times to mtime. Postfix
// notices a changed table by its mtime, in whole seconds: tables written
// at start are dated in the past so that a change made by SetTable
// during the test is always seen.
func (p *Postfix) writeTable(name, text string, mtime time.Time) error {
	if name == "" || strings.ContainsAny(name, "/ ") {
		return fmt.Errorf("table name %q", name)
	}
	path := filepath.Join(p.configDir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return err
	}
	if out, err := p.command("postmap", "-c", p.configDir, "hash:"+path); err != nil {
		return fmt.Errorf("postmap %s: %v\n%s", name, err, out)
	}
	for _, f := range []string{path, path + ".db"} {
		if err := os.Chtimes(f, mtime, mtime); err != nil {
			return err
		}
	}
	return nil
}

// SetTable replaces the text of table NAME (see Options.Tables) while
// Postfix runs. Its processes reopen a changed table before they accept
// their next connection.
func (p *Postfix) SetTable(name, text string) {
	p.t.Helper()
	if err := p.writeTable(name, text, time.Now()); err != nil {
		p.t.Fatalf("rig: %v", err)
	}
}

// SetReinjectRecipientAccess replaces the replies of the reinjection
// listener (Options.ReinjectRecipientAccess, which must have been set).
func (p *Postfix) SetReinjectRecipientAccess(m map[string]string) {
	p.t.Helper()
	p.SetTable(reinjectAccessTable, accessTable(m))
}

// SMTPAddr is the host:port of the smtpd with the milter (the public port).
func (p *Postfix) SMTPAddr() string { return p.smtpAddr }

// ReinjectAddr is the host:port of the reinjection smtpd (milters off).
func (p *Postfix) ReinjectAddr() string { return p.reinjectAddr }

// Sink is where this Postfix delivers all mail.
func (p *Postfix) Sink() *Sink { return p.sink }

// ConfigDir is the instance's config_directory (for postconf -c & co.).
func (p *Postfix) ConfigDir() string { return p.configDir }

// QueueDir is the instance's queue_directory.
func (p *Postfix) QueueDir() string { return p.queueDir }

// Maillog returns the instance's log so far ("" if there is none yet).
func (p *Postfix) Maillog() string {
	b, err := os.ReadFile(p.maillog)
	if err != nil {
		return ""
	}
	return string(b)
}

// Flush asks Postfix to attempt delivery of all queued mail now
// (postqueue -f).
func (p *Postfix) Flush() {
	p.t.Helper()
	if out, err := p.command("postqueue", "-c", p.configDir, "-f"); err != nil {
		p.t.Errorf("rig: postqueue -f: %v\n%s", err, out)
	}
}

func (p *Postfix) command(name string, args ...string) ([]byte, error) {
	bin, err := binary(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "MAIL_CONFIG="+p.configDir)
	return cmd.CombinedOutput()
}

// stop runs "postfix stop", makes sure the master and its children are
// gone, and logs the maillog if the test failed.
func (p *Postfix) stop() {
	t := p.t
	if pid := p.masterPID(); pid > 0 {
		p.stopMaster(pid)
	}
	if t.Failed() {
		t.Logf("rig: maillog of the failed test (%s):\n%s", p.maillog, p.Maillog())
	}
}

// postfixFiles is Postfix's own list of the files and folders it needs,
// with owners and modes (meta_directory on Debian).
const postfixFiles = "/etc/postfix/postfix-files"

// prepareQueue creates the queue_directory folders listed in postfix-files
// with their owners and modes (what "post-install create-missing" would
// do) and touches quick-start, which tells postfix-script to skip its
// checks at start.
func (p *Postfix) prepareQueue() error {
	text, err := os.ReadFile(postfixFiles)
	if err != nil {
		return err
	}
	ids := map[string]int{"-": 0, "root": 0}
	for _, name := range []string{"postfix", "postdrop"} {
		g, err := user.LookupGroup(name)
		if err != nil {
			return err
		}
		ids[name+"/g"], _ = strconv.Atoi(g.Gid)
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		return err
	}
	ids["postfix"], _ = strconv.Atoi(pf.Uid)
	owners := map[string]string{"$mail_owner": "postfix", "root": "root"}
	groups := map[string]string{"$setgid_group": "postdrop/g", "-": "-"}
	n := 0
	for _, line := range strings.Split(string(text), "\n") {
		// $queue_directory/active:d:$mail_owner:-:700:ucr
		f := strings.Split(line, ":")
		rest, ok := strings.CutPrefix(f[0], "$queue_directory/")
		if !ok || len(f) < 5 || f[1] != "d" || strings.Contains(rest, "/") {
			continue
		}
		owner, okO := owners[f[2]]
		group, okG := groups[f[3]]
		mode, err := strconv.ParseUint(f[4], 8, 32)
		if !okO || !okG || err != nil {
			return fmt.Errorf("%s: unexpected line %q", postfixFiles, line)
		}
		dir := filepath.Join(p.queueDir, rest)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if err := os.Chown(dir, ids[owner], ids[group]); err != nil {
			return err
		}
		if err := os.Chmod(dir, os.FileMode(mode)); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s lists no queue folders", postfixFiles)
	}
	return os.WriteFile(filepath.Join(p.queueDir, "quick-start"), nil, 0o644)
}

// stopMaster runs "postfix stop" and then kills, by pid, whatever of the
// instance is still running.
func (p *Postfix) stopMaster(pid int) {
	t := p.t
	if out, err := p.command("postfix", "-c", p.configDir, "stop"); err != nil {
		t.Logf("rig: postfix stop: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for Alive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if Alive(pid) {
		t.Errorf("rig: postfix master %d still running after postfix stop; killing it", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// The master runs in its own process group; its children share it.
	for _, child := range groupMembers(pid) {
		_ = syscall.Kill(child, syscall.SIGKILL)
	}
}

func (p *Postfix) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.queueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []int {
	return LiveProcs(func(pg, _ int) bool { return pg == pgid })
}

// FreePorts picks n distinct free TCP ports on 127.0.0.1 (the rigs of
// both MTAs use it).
func FreePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// WaitGreeting polls addr until an SMTP server there sends its 220
// greeting (the rigs of both MTAs wait for their daemons with it).
func WaitGreeting(ctx context.Context, addr string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = greeting(ctx, addr); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func greeting(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	_, _ = conn.Write([]byte("QUIT\r\n"))
	return nil
}

// param is one main.cf setting.
type param struct{ name, value string }

type params []param

func (ps *params) set(name, value string) {
	for i := range *ps {
		if (*ps)[i].name == name {
			(*ps)[i].value = value
			return
		}
	}
	*ps = append(*ps, param{name, value})
}

// parseMainCF reads "name = value" lines with main.cf rules: # comments,
// blank lines, and continuation lines that start with whitespace.
func parseMainCF(text string) (params, error) {
	var ps params
	for n, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(ps) == 0 {
				return nil, fmt.Errorf("line %d: continuation without a parameter", n+1)
			}
			ps[len(ps)-1].value += " " + trimmed
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: no '=' in %q", n+1, line)
		}
		ps = append(ps, param{strings.TrimSpace(name), strings.TrimSpace(value)})
	}
	return ps, nil
}

// mainCF builds the instance's main.cf: rig settings, then every line of
// main.cf.snippet, then the per-test milter address and short timeouts,
// then Options.ExtraMain.
func (p *Postfix) mainCF(opts Options) (string, error) {
	sinkNexthop := "[127.0.0.1]:" + portOf(p.sink.Addr())
	ps := params{
		{"compatibility_level", "3.6"},
		{"queue_directory", p.queueDir},
		{"data_directory", p.dataDir},
		// Logging without syslog: postlogd writes this file.
		{"maillog_file", p.maillog},
		{"maillog_file_prefixes", p.root},
		{"myhostname", Hostname},
		{"mydomain", "rig.test"},
		{"myorigin", "$myhostname"},
		// Nothing is local: every domain goes out by smtp to the sink.
		{"mydestination", ""},
		{"local_recipient_maps", ""},
		{"local_transport", "error:5.1.1 no local delivery in the rig"},
		{"alias_maps", ""},
		{"alias_database", ""},
		{"relay_domains", opts.ListDomain + ", example.org"},
		{"inet_interfaces", "loopback-only"},
		{"inet_protocols", "ipv4"},
		{"mynetworks", "127.0.0.0/8"},
		{"default_transport", "smtp:" + sinkNexthop},
		{"relay_transport", "relay:" + sinkNexthop},
		// No DNS at all (disable_dns_lookups is deprecated since 2.11).
		{"smtp_dns_support_level", "disabled"},
		{"smtp_host_lookup", "native"},
		{"smtp_tls_security_level", "none"},
		{"smtpd_tls_security_level", "none"},
		{"smtp_connect_timeout", "5s"},
		// Retry deferred mail about every second.
		{"queue_run_delay", "1s"},
		{"minimal_backoff_time", "1s"},
		{"maximal_backoff_time", "2s"},
		// No postmaster notices: they would land in the sink.
		{"notify_classes", ""},
		// No tarpitting of the test client after refusals.
		{"smtpd_error_sleep_time", "0"},
		{"smtpd_soft_error_limit", "100"},
		{"smtpd_hard_error_limit", "200"},
		{"in_flow_delay", "0"},
		{"biff", "no"},
		{"append_dot_mydomain", "no"},
		{"mailbox_size_limit", "0"},
		{"virtual_mailbox_limit", "0"},
	}
	if opts.MessageSizeLimit > 0 {
		ps.set("message_size_limit", strconv.FormatInt(opts.MessageSizeLimit, 10))
	}
	snippet, err := parseMainCF(postfix.MainCF)
	if err != nil {
		return "", fmt.Errorf("main.cf.snippet: %w", err)
	}
	for _, s := range snippet {
		ps.set(s.name, s.value)
	}
	ps.set("smtpd_milters", opts.MilterAddr)
	ps.set("milter_connect_timeout", "2s")
	ps.set("milter_command_timeout", "10s")
	names := make([]string, 0, len(opts.ExtraMain))
	for name := range opts.ExtraMain {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ps.set(name, opts.ExtraMain[name])
	}
	var b strings.Builder
	b.WriteString("# Generated by listcrypt contrib/postfix/rig from main.cf.snippet.\n")
	for _, s := range ps {
		fmt.Fprintf(&b, "%s = %s\n", s.name, s.value)
	}
	return b.String(), nil
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// rigServices are the master.cf services a Postfix needs besides the
// smtpd listeners from the snippet. Nothing is chrooted: the rig's paths
// and sockets live outside any chroot.
const rigServices = `
# --- rig services (not part of the shipped snippet) ---
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
  -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// masterCF takes master.cf.snippet as shipped and moves its two smtpd
// listeners to the rig's ports: "smtp inet" to smtpAddr, the reinjection
// service to reinjectAddr. Both must be unchrooted (column 5 "n").
// reinjectExtra lines ("-o name=value") are added at the end of the
// reinjection service, so they win over the snippet's.
func masterCF(snippet, smtpAddr, reinjectAddr string, reinjectExtra ...string) (string, error) {
	var out []string
	var sawSMTP, sawReinject bool
	// reinjectEnd is the index in out after the last line of the
	// reinjection service (its service line or last continuation line).
	reinjectEnd := -1
	for n, line := range strings.Split(snippet, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || trimmed[0] == '#':
		case line[0] == ' ' || line[0] == '\t':
			if reinjectEnd >= 0 && reinjectEnd == lastEntryEnd(out) {
				reinjectEnd = len(out) + 1
			}
		default:
			f := strings.Fields(line)
			if len(f) < 8 {
				return "", fmt.Errorf("line %d: want 8 columns: %q", n+1, line)
			}
			var addr string
			switch {
			case f[0] == "smtp" && f[1] == "inet":
				addr, sawSMTP = smtpAddr, true
			case f[0] == postfix.ReinjectService && f[1] == "inet":
				addr, sawReinject = reinjectAddr, true
				reinjectEnd = len(out) + 1
			}
			if addr != "" {
				if f[4] != "n" {
					return "", fmt.Errorf("line %d: %s must not be chrooted (column 5 %q)", n+1, f[0], f[4])
				}
				line = addr + line[len(f[0]):]
			}
		}
		out = append(out, line)
	}
	if !sawSMTP || !sawReinject {
		return "", fmt.Errorf("want an \"smtp inet\" and a %q service", postfix.ReinjectService)
	}
	if len(reinjectExtra) > 0 {
		extra := make([]string, len(reinjectExtra))
		for i, l := range reinjectExtra {
			extra[i] = "  " + l
		}
		out = append(out[:reinjectEnd], append(extra, out[reinjectEnd:]...)...)
	}
	return strings.Join(out, "\n") + "\n" + rigServices, nil
}

// lastEntryEnd is the index after the last line of out that is a service
// line or a continuation line (not blank, not a comment).
func lastEntryEnd(out []string) int {
	for i := len(out) - 1; i >= 0; i-- {
		if t := strings.TrimSpace(out[i]); t != "" && t[0] != '#' {
			return i + 1
		}
	}
	return 0
}
