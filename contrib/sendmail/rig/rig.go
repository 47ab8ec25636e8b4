// Package rig starts a private, real Sendmail 8.17 for tests, configured
// with the lines listcrypt ships in contrib/sendmail/listcrypt.mc, and
// relays everything it delivers to a Sink (contrib/postfix/rig's). It has
// the surface of contrib/postfix/rig: Start, SMTPAddr, ReinjectAddr, Sink,
// Maillog, Require.
//
// Debian's sendmail and postfix packages conflict, so the rig never
// installs sendmail: as root it unpacks sendmail-bin, sendmail-base and
// sendmail-cf with dpkg-deb -x into Dir (apt-get download, cached), and
// installs m4 and sendmail-bin's two libraries with apt. Postfix, /etc/mail,
// /etc/hosts, /dev/log and the host name are left alone: each daemon runs
// in its own mount and UTS namespace (unshare), with a dotted host name
// (Sendmail sleeps 60 s at start on an unqualified one) and a private /dev
// whose log socket is read by the test process (the instance's maillog).
//
// Every instance has its own cf, queue and logs under a temporary folder,
// an MTA listener with the milter of listcrypt.mc on 127.0.0.1:<free port>,
// the reinjection listener of listcrypt.mc (InputMailFilters= , milters
// off) on 127.0.0.1:<another free port>, no DNS, and relays all mail,
// whatever the domain, to the Sink (SMART_HOST). Bounces go to the Sink
// too (postmaster is aliased to rig-postmaster@sink.rig.test).
package rig

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/contrib/sendmail"
)

// Hostname is the rig Sendmail's host name ($j) inside its namespace.
const Hostname = "sendmail.rig.test"

// Postmaster is where the rig Sendmail sends bounces and postmaster mail
// (through the Sink).
const Postmaster = "rig-postmaster@sink.rig.test"

// Options configure a rig Sendmail.
type Options struct {
	// MilterAddr is the milter socket, in Postfix syntax like
	// contrib/postfix/rig ("unix:/path/to.sock", "inet:127.0.0.1:port")
	// or in Sendmail syntax ("local:/path", "inet:port@127.0.0.1"); ""
	// runs without a milter. The daemon runs as root: any socket works
	// (one under a world-writable sticky folder such as /tmp too).
	MilterAddr string
	// ExtraMC is added to the rig's sendmail.mc after listcrypt.mc and
	// before the MAILER lines (LOCAL_DOMAIN for a domain whose addresses
	// are aliases, for instance).
	ExtraMC string
	// ResponderUser replaces the listcrypt user in listcrypt.mc's
	// confTRUSTED_USERS line ("": kept), for a test that runs the
	// responder as another user.
	ResponderUser string
	// Aliases are lines added to the rig's aliases file, such as
	// contrib/sendmail/aliases.snippet's (it is read as text at start:
	// no newaliases).
	Aliases string
}

// Sendmail is a running rig instance. It is stopped at the end of the test.
type Sendmail struct {
	t            testing.TB
	root         string
	maillog      string
	smtpAddr     string
	reinjectAddr string
	sink         *rig.Sink

	logMu  sync.Mutex // serialises maillog writes and reads
	logLn  *net.UnixConn
	logEnd chan struct{}
}

// Require skips the test when a private Sendmail cannot run here (not
// root, packages neither unpacked nor installable), or fails it when the
// environment variable CI is non-empty, so that CI can never pass by
// skipping. As root it installs what is missing (see the package doc).
func Require(t testing.TB) {
	t.Helper()
	why := unavailable()
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("sendmail rig: %s (CI is set, so this is a failure, not a skip)", why)
	}
	t.Skipf("sendmail rig: %s", why)
}

// Start starts a private Sendmail and its Sink; both stop at the end of
// the test. It fails the test if Sendmail does not come up.
func Start(t testing.TB, opts Options) *Sendmail {
	t.Helper()
	Require(t)
	began := time.Now()
	milter, err := milterSpec(opts.MilterAddr)
	if err != nil {
		t.Fatalf("sendmail rig: %v", err)
	}
	sink := rig.NewSink(t)
	root := tempDir(t)
	s := &Sendmail{t: t, root: root, maillog: filepath.Join(root, "maillog"), sink: sink}
	for _, d := range []string{"mqueue", "run"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			t.Fatalf("sendmail rig: %v", err)
		}
	}
	files := map[string]string{
		"sendmail.st":    "", // StatusFile must exist
		"service.switch": "hosts files\naliases files\n",
		"hosts":          "127.0.0.1 " + Hostname + " localhost\n",
		// Nothing is delivered locally (the local mailer, procmail, is
		// not installed): postmaster and bounces go to the Sink.
		"aliases": "postmaster: " + Postmaster + "\nMAILER-DAEMON: postmaster\nroot: postmaster\n" + opts.Aliases,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o644); err != nil {
			t.Fatalf("sendmail rig: %v", err)
		}
	}
	if err := s.startSyslog(); err != nil {
		t.Fatalf("sendmail rig: syslog socket: %v", err)
	}
	ports, err := rig.FreePorts(2)
	if err != nil {
		t.Fatalf("sendmail rig: %v", err)
	}
	s.smtpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	s.reinjectAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	_, sinkPort, _ := net.SplitHostPort(sink.Addr())
	listcryptMC, err := snippetMC(sendmail.MC, milter, ports[1])
	if err == nil && opts.ResponderUser != "" {
		listcryptMC, err = responderUserMC(listcryptMC, opts.ResponderUser)
	}
	if err != nil {
		t.Fatalf("sendmail rig: listcrypt.mc: %v", err)
	}
	mc := rigMC(root, ports[0], sinkPort, listcryptMC+opts.ExtraMC)
	mcPath := filepath.Join(root, "sendmail.mc")
	if err := os.WriteFile(mcPath, []byte(mc), 0o644); err != nil {
		t.Fatalf("sendmail rig: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cf, err := exec.CommandContext(ctx, "m4", mcPath).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("sendmail rig: m4 %s: %v\n%s", mcPath, err, stderr)
	}
	if err := os.WriteFile(s.CFFile(), cf, 0o644); err != nil {
		t.Fatalf("sendmail rig: %v", err)
	}

	t.Cleanup(s.stop)
	out, err := os.Create(filepath.Join(root, "start.log"))
	if err != nil {
		t.Fatalf("sendmail rig: %v", err)
	}
	defer out.Close()
	// In a private mount + UTS namespace: a dotted host name, and a
	// private /dev whose log is the rig's syslog socket. sendmail -bd
	// forks the daemon and returns; the namespace lives as long as it.
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--uts", "/bin/sh", "-ec", namespaceScript,
		"sm-rig", root, Hostname, sendmailBinary(), s.CFFile())
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		t.Fatalf("sendmail rig: starting sendmail: %v\n%s\nmaillog:\n%s", err, readFile(out.Name()), s.Maillog())
	}
	for _, addr := range []string{s.smtpAddr, s.reinjectAddr} {
		if err := rig.WaitGreeting(ctx, addr); err != nil {
			t.Fatalf("sendmail rig: listener %s: %v\n%s\nmaillog:\n%s", addr, err, readFile(out.Name()), s.Maillog())
		}
	}
	t.Logf("sendmail rig: up in %v: pid %d, smtp %s, reinjection %s, sink %s, cf %s",
		time.Since(began).Round(time.Millisecond), s.PID(), s.smtpAddr, s.reinjectAddr, sink.Addr(), s.CFFile())
	return s
}

// namespaceScript runs in the new namespaces: $1 root, $2 host name,
// $3 sendmail binary, $4 cf file.
const namespaceScript = `
mount --make-rprivate /
mount -t tmpfs -o mode=0755,size=64k sm-rig-dev /dev
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9
ln -s "$1/run/log.sock" /dev/log
hostname "$2"
exec "$3" -C "$4" -L sm-rig -bd -q5s
`

// rigMC is the instance's sendmail.mc: private paths, no DNS, everything
// relayed to the Sink, the MTA listener, then listcrypt.mc's lines.
func rigMC(root string, smtpPort int, sinkPort, listcrypt string) string {
	r := func(name string) string { return filepath.Join(root, name) }
	return "divert(-1)dnl\n# contrib/sendmail/rig: a private test instance\ndivert(0)dnl\n" +
		"include(`" + cfM4() + "')dnl\n" +
		"VERSIONID(`listcrypt sendmail rig')dnl\n" +
		"OSTYPE(`linux')dnl\n" +
		"define(`confEBINDIR', `" + filepath.Join(Dir, "usr/libexec/sendmail") + "')dnl\n" +
		"define(`confDOMAIN_NAME', `" + Hostname + "')dnl\n" +
		"define(`confDONT_PROBE_INTERFACES', `True')dnl\n" +
		"define(`QUEUE_DIR', `" + r("mqueue") + "')dnl\n" +
		"define(`STATUS_FILE', `" + r("sendmail.st") + "')dnl\n" +
		"define(`confPID_FILE', `" + r("sendmail.pid") + "')dnl\n" +
		"define(`ALIAS_FILE', `" + r("aliases") + "')dnl\n" +
		"define(`confSERVICE_SWITCH_FILE', `" + r("service.switch") + "')dnl\n" +
		"define(`confHOSTS_FILE', `" + r("hosts") + "')dnl\n" +
		"define(`confDEAD_LETTER_DROP', `" + r("dead.letter") + "')dnl\n" +
		"dnl sockets under /tmp (1777): trust the sticky bit\n" +
		"define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl\n" +
		"dnl no load-average throttling on a busy CI machine\n" +
		"define(`confQUEUE_LA', `100')dnl\n" +
		"define(`confREFUSE_LA', `200')dnl\n" +
		"define(`confTO_IDENT', `0s')dnl\n" +
		"define(`confTO_CONNECT', `5s')dnl\n" +
		"define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl\n" +
		"define(`confLOG_LEVEL', `14')dnl\n" +
		"define(`confMILTER_LOG_LEVEL', `14')dnl\n" +
		"define(`SMART_HOST', `relay:[127.0.0.1]')dnl\n" +
		"define(`RELAY_MAILER_ARGS', `TCP $h " + sinkPort + "')dnl\n" +
		"define(`ESMTP_MAILER_ARGS', `TCP $h " + sinkPort + "')dnl\n" +
		"FEATURE(`nocanonify')dnl\n" +
		"FEATURE(`accept_unresolvable_domains')dnl\n" +
		"FEATURE(`accept_unqualified_senders')dnl\n" +
		"FEATURE(`no_default_msa')dnl\n" +
		"DAEMON_OPTIONS(`Family=inet, Name=MTA-rig, Port=" + strconv.Itoa(smtpPort) + ", Addr=127.0.0.1')dnl\n" +
		"dnl ---- contrib/sendmail/listcrypt.mc (socket and port replaced)\n" +
		listcrypt +
		"dnl ---- end of listcrypt.mc\n" +
		"MAILER(`smtp')dnl\n"
}

// milterSpec turns Options.MilterAddr into Sendmail's S= syntax.
func milterSpec(addr string) (string, error) {
	switch {
	case addr == "":
		return "", nil
	case strings.HasPrefix(addr, "unix:/"):
		return "local:" + strings.TrimPrefix(addr, "unix:"), nil
	case strings.HasPrefix(addr, "local:/"):
		return addr, nil
	case strings.HasPrefix(addr, "inet:"):
		rest := strings.TrimPrefix(addr, "inet:")
		if strings.Contains(rest, "@") {
			return addr, nil
		}
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return "", fmt.Errorf("milter address %q: %v", addr, err)
		}
		return "inet:" + port + "@" + host, nil
	}
	return "", fmt.Errorf("milter address %q: want unix:/path, local:/path or inet:host:port", addr)
}

// snippetMC returns listcrypt.mc with the milter socket replaced by
// milter (the INPUT_MAIL_FILTER line dropped when it is "") and the
// reinjection port by port. Each must occur exactly once, so that the
// rig tests the shipped lines, not its own.
func snippetMC(mc, milter string, port int) (string, error) {
	if n := strings.Count(mc, "S="+sendmail.MilterSocket+","); n != 1 {
		return "", fmt.Errorf("%d INPUT_MAIL_FILTER lines with S=%s, want 1", n, sendmail.MilterSocket)
	}
	reinject := fmt.Sprintf("Port=%d, Addr=127.0.0.1, InputMailFilters=')", sendmail.ReinjectPort)
	if n := strings.Count(mc, reinject); n != 1 {
		return "", fmt.Errorf("%d reinjection DAEMON_OPTIONS with %q, want 1", n, reinject)
	}
	mc = strings.Replace(mc, reinject, fmt.Sprintf("Port=%d, Addr=127.0.0.1, InputMailFilters=')", port), 1)
	if milter != "" {
		return strings.Replace(mc, "S="+sendmail.MilterSocket+",", "S="+milter+",", 1), nil
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(mc, "\n") {
		if !strings.HasPrefix(line, "INPUT_MAIL_FILTER(") {
			b.WriteString(line)
		}
	}
	return b.String(), nil
}

// responderUserMC returns listcrypt.mc with the user of its
// confTRUSTED_USERS line replaced by user; the line must occur once.
func responderUserMC(mc, user string) (string, error) {
	line := "define(`confTRUSTED_USERS', `" + sendmail.ResponderUser + "')dnl\n"
	if n := strings.Count(mc, line); n != 1 {
		return "", fmt.Errorf("%d lines %q, want 1", n, strings.TrimSpace(line))
	}
	return strings.Replace(mc, line, "define(`confTRUSTED_USERS', `"+user+"')dnl\n", 1), nil
}

// SMTPAddr is the host:port of the MTA listener with the milter.
func (s *Sendmail) SMTPAddr() string { return s.smtpAddr }

// ReinjectAddr is the host:port of the reinjection listener (milters off).
func (s *Sendmail) ReinjectAddr() string { return s.reinjectAddr }

// Sink is where this Sendmail delivers all mail.
func (s *Sendmail) Sink() *rig.Sink { return s.sink }

// CFFile is the instance's sendmail.cf.
func (s *Sendmail) CFFile() string { return filepath.Join(s.root, "sendmail.cf") }

// QueueDir is the instance's queue folder.
func (s *Sendmail) QueueDir() string { return filepath.Join(s.root, "mqueue") }

// PID is the daemon's pid (0 when it does not run).
func (s *Sendmail) PID() int {
	pid := pidFile(filepath.Join(s.root, "sendmail.pid"))
	if pid > 0 && !rig.Alive(pid) {
		return 0
	}
	return pid
}

// Maillog returns what the instance logged so far (syslog lines without
// their priority; "" if nothing yet).
func (s *Sendmail) Maillog() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return readFile(s.maillog)
}

// QueueEmpty reports whether the queue holds no message (no qf file):
// once it is empty after the last SMTP reply, everything Sendmail took
// has reached the Sink or bounced.
func (s *Sendmail) QueueEmpty() (bool, error) {
	ents, err := os.ReadDir(s.QueueDir())
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "qf") {
			return false, nil
		}
	}
	return true, nil
}

// WaitQueueEmpty polls QueueEmpty until two scans in a row find the
// queue empty, or ctx ends.
func (s *Sendmail) WaitQueueEmpty(ctx context.Context) error { return rig.PollEmpty(ctx, s.QueueEmpty) }

// startSyslog listens on the socket the namespace's /dev/log points to
// and appends each datagram, without its <priority>, to the maillog.
func (s *Sendmail) startSyslog() error {
	path := filepath.Join(s.root, "run", "log.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return err
	}
	f, err := os.OpenFile(s.maillog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		ln.Close()
		return err
	}
	s.logLn, s.logEnd = ln, make(chan struct{})
	go func() {
		defer close(s.logEnd)
		defer f.Close()
		buf := make([]byte, 64<<10)
		for {
			n, _, err := ln.ReadFrom(buf)
			if err != nil {
				return
			}
			line := strings.TrimRight(string(buf[:n]), "\n\x00")
			if i := strings.IndexByte(line, '>'); strings.HasPrefix(line, "<") && i > 0 {
				line = line[i+1:]
			}
			s.logMu.Lock()
			_, _ = f.WriteString(line + "\n")
			s.logMu.Unlock()
		}
	}()
	return nil
}

// stop ends the daemon (SIGTERM, then SIGKILL) and every process of its
// session (SMTP children, deliveries, queue runners), then the syslog
// reader; it logs the maillog if the test failed.
func (s *Sendmail) stop() {
	t := s.t
	if pid := pidFile(filepath.Join(s.root, "sendmail.pid")); pid > 0 {
		if err := stopSession(pid); err != nil {
			t.Errorf("sendmail rig: %v", err)
		}
	}
	if s.logLn != nil {
		_ = s.logLn.Close()
		<-s.logEnd
	}
	if t.Failed() {
		t.Logf("sendmail rig: maillog of the failed test (%s):\n%s", s.maillog, s.Maillog())
	}
}

// stopSession sends SIGTERM to the daemon and waits up to 10 s for it
// to end, then kills it and what is left of its session by pid.
func stopSession(pid int) error {
	var err error
	if rig.Alive(pid) {
		if !isSendmail(pid) {
			return nil // the pid was reused: not ours
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(10 * time.Second)
		for rig.Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if rig.Alive(pid) {
			err = fmt.Errorf("sendmail %d still running 10 s after SIGTERM; killed", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// sendmail -bd calls setsid: its children share its session id.
	for i := 0; i < 50; i++ {
		left := sessionMembers(pid)
		if len(left) == 0 {
			break
		}
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

// isSendmail says whether pid is a sendmail process (it rewrites its
// argv: "sendmail: accepting connections", "sm-rig: ...").
func isSendmail(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && (bytes.Contains(b, []byte("sendmail")) || bytes.Contains(b, []byte("sm-")))
}

func pidFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// sessionMembers lists the live processes of session sid.
func sessionMembers(sid int) []int {
	return rig.LiveProcs(func(_, s int) bool { return s == sid })
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// dirPrefix names the folders of the rig's Sendmail instances.
const dirPrefix = "listcrypt-smrig-"

// tempDir returns a new 0755 folder under /tmp, removed at the end of the
// test. It first stops the Sendmail instances and removes the folders
// left by test processes that died without cleaning up.
func tempDir(t testing.TB) string {
	t.Helper()
	return rig.OwnedDir(t, "/tmp", dirPrefix, "sendmail rig", func(dir string, owner int) {
		if pid := pidFile(filepath.Join(dir, "sendmail.pid")); pid > 0 && rig.Alive(pid) {
			t.Logf("sendmail rig: stopping Sendmail %d left by dead test process %d in %s", pid, owner, dir)
			_ = stopSession(pid)
		}
	})
}
