package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	smrig "github.com/listcrypt/listcrypt/contrib/sendmail/rig"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

// envMain makes the test binary act as listcrypt-responder, so the
// Postfix pipe transport runs exactly this package's main code.
const envMain = "LISTCRYPT_RESPONDER_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envMain) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stderr))
	}
	os.Exit(m.Run())
}

const (
	list    = milterfix.List
	request = "devs-request@lists.example.org"
	// pipeUser runs the pipe transport: any user but root and postfix.
	pipeUser = "nobody"
)

// responderMTA is what the tests need of the real MTA in front of the
// responder: Postfix (contrib/postfix/rig) or Sendmail
// (contrib/sendmail/rig).
type responderMTA interface {
	SMTPAddr() string
	Sink() *rig.Sink
	Maillog() string
}

// listAlias is an alias of the Sendmail rig that points at the list
// address, as an admin might add: mail to it passes the milter as
// ordinary mail and must bounce at the list address's route.
const listAlias = "devs-alias"

// mtas are the MTAs the end-to-end tests run over.
var mtas = []string{"postfix", "sendmail"}

// rigSite is a listcrypt site behind a real MTA that delivers the
// request address to the responder as contrib says: Postfix through the
// pipe service of contrib/postfix, Sendmail through the prog mailer of
// the alias and :include: file of contrib/sendmail.
type rigSite struct {
	t    *testing.T
	mta  string
	site *milterfix.Site
	pf   responderMTA
	seen map[string]int // messages already taken, per recipient
}

// snippet reads a contrib file (contrib/DIR/NAME) and substitutes the
// deployment paths.
func snippet(t *testing.T, name string, repl ...string) string {
	t.Helper()
	if !strings.Contains(name, "/") {
		name = "postfix/" + name
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "contrib", name))
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer(repl...)
	out := r.Replace(string(b))
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(string(b), repl[i]) {
			t.Fatalf("contrib/%s lacks %q", name, repl[i])
		}
	}
	return out
}

// mainCF parses a main.cf snippet into parameters (no continuation lines
// in ours).
func mainCF(t *testing.T, text string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("main.cf snippet line %q", l)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out
}

// startRig starts the site and mta; setup runs on the site before its
// files are handed to the unprivileged user (members, policy edits).
func startRig(t *testing.T, mta string, setup ...func(*milterfix.Site)) *rigSite {
	t.Helper()
	if mta == "sendmail" {
		smrig.Require(t)
	} else {
		rig.Require(t)
	}
	u, err := user.Lookup(pipeUser)
	if err != nil {
		t.Skipf("no %s user: %v", pipeUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	site := milterfix.New(t, milterfix.Options{})
	pfile := filepath.Join(site.Config.PolicyDir, list+".toml")
	pol, err := os.ReadFile(pfile)
	if err != nil {
		t.Fatal(err)
	}
	pol = bytes.Replace(pol, []byte("moderators = []"), []byte(`moderators = ["mod@example.org"]`), 1)
	// The subscribers below send many unsigned (unverified) commands in a
	// row: more than the default reply limit per address allows.
	pol = bytes.Replace(pol, []byte("max_replies_per_address = 5"), []byte("max_replies_per_address = 50"), 1)
	if err := os.WriteFile(pfile, pol, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(site)
	}

	// The MTA runs a copy of this test binary as the unprivileged user,
	// with the config and state it owns (as the listcrypt user would).
	dir := rig.TempDir(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "listcrypt-responder")
	copyFile(t, self, bin, 0o755)
	var pf responderMTA
	var reinject string
	if mta == "sendmail" {
		sm := startSendmail(t, site, dir, bin, uid, gid)
		pf, reinject = sm, sm.ReinjectAddr()
	} else {
		p := startPostfix(t, site, dir, bin)
		pf, reinject = p, p.ReinjectAddr()
	}

	// Now that the reinjection port is known, point the site at it.
	src, err := os.ReadFile(site.Config.File)
	if err != nil {
		t.Fatal(err)
	}
	src = bytes.Replace(src, []byte(strconv.Quote(site.Config.Reinject.Address)), []byte(strconv.Quote(reinject)), 1)
	if err := os.WriteFile(site.Config.File, src, 0o644); err != nil {
		t.Fatal(err)
	}
	site.Config.Reinject.Address = reinject
	if err := chownR(site.Dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	// The milter, for the posts.
	d, err := milter.Start(context.Background(), site.Config, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
		<-done
	})
	if err := os.Chmod(strings.TrimPrefix(site.Config.Milter.Listen, "unix:"), 0o666); err != nil {
		t.Fatal(err)
	}
	return &rigSite{t: t, mta: mta, site: site, pf: pf, seen: map[string]int{}}
}

// startPostfix starts a Postfix whose transport table sends the request
// address to the pipe service of contrib/postfix running bin.
func startPostfix(t *testing.T, site *milterfix.Site, dir, bin string) *rig.Postfix {
	t.Helper()
	transport := filepath.Join(dir, "listcrypt-transport")
	if err := os.WriteFile(transport, []byte(snippet(t, "responder.transport")), 0o644); err != nil {
		t.Fatal(err)
	}
	postmap := "/usr/sbin/postmap"
	if p, err := exec.LookPath("postmap"); err == nil {
		postmap = p
	}
	// postmap wants a main.cf; an empty one gives the defaults.
	pmConf := t.TempDir()
	if err := os.WriteFile(filepath.Join(pmConf, "main.cf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(postmap, "-c", pmConf, "hash:"+transport).CombinedOutput(); err != nil {
		t.Fatalf("postmap: %v\n%s", err, out)
	}
	master := snippet(t, "responder.master.cf.snippet",
		"user=listcrypt", "user="+pipeUser,
		"argv=/usr/local/bin/listcrypt-responder", "argv=/usr/bin/env "+envMain+"=1 "+bin,
		"/etc/listcrypt/listcrypt.toml", site.Config.File)
	extra := mainCF(t, snippet(t, "responder.main.cf.snippet", "/etc/postfix/listcrypt-transport", transport))
	// As Debian's main.cf: VERP bounce addresses (LIST-bounces+MEMBER@)
	// then find the LIST-bounces@ line of the transport table.
	extra["recipient_delimiter"] = "+"
	return rig.Start(t, rig.Options{MilterAddr: site.Config.Milter.Listen, ExtraMain: extra, ExtraMaster: "\n" + master})
}

// startSendmail starts a Sendmail whose aliases file has the line of
// contrib/sendmail/aliases.snippet, pointing at contrib/sendmail's
// include file (owned by the unprivileged user uid, so that Sendmail
// runs bin as that user, trusted in listcrypt.mc's line in place of the
// listcrypt user) with the deployment paths replaced. The list
// domain is local (LOCAL_DOMAIN), as aliases need. The rig's prog mailer
// is /bin/sh, not smrsh: smrsh reads its programs from /etc/mail/smrsh,
// which the rig does not touch.
func startSendmail(t *testing.T, site *milterfix.Site, dir, bin string, uid, gid int) *smrig.Sendmail {
	t.Helper()
	var repl []string
	for _, name := range []string{"devs.include", "devs-request.include", "devs-bounces.include"} {
		include := filepath.Join(dir, name)
		paths := []string{"/usr/local/bin/listcrypt-responder", "/usr/bin/env " + envMain + "=1 " + bin}
		if name != "devs.include" { // --refuse reads no config
			paths = append(paths, "/etc/listcrypt/listcrypt.toml", site.Config.File)
		}
		text := snippet(t, "sendmail/"+name, paths...)
		if err := os.WriteFile(include, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(include, uid, gid); err != nil {
			t.Fatal(err)
		}
		repl = append(repl, "/etc/listcrypt/sendmail/"+name, include)
	}
	// The list address is an alias too (or Sendmail would refuse it at
	// RCPT TO, 550 User unknown, before the milter sees the post): its
	// include file runs bin --refuse, which bounces whatever reaches it.
	// Nothing must: the milter takes the list address out of every post.
	aliases := snippet(t, "sendmail/aliases.snippet", repl...)
	return smrig.Start(t, smrig.Options{
		MilterAddr:    site.Config.Milter.Listen,
		ExtraMC:       "LOCAL_DOMAIN(`lists.example.org')dnl\n",
		Aliases:       aliases + listAlias + ": devs\n",
		ResponderUser: pipeUser,
	})
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

func chownR(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// send submits a command mail over SMTP to the public smtpd.
func (s *rigSite) send(from string, msg []byte) {
	s.t.Helper()
	if err := rig.Send(s.pf.SMTPAddr(), from, []string{request}, msg); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

// next waits for the next message Postfix delivers to addr.
func (s *rigSite) next(addr string) rig.Delivered {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for n := 1; ; n++ {
		msgs, err := s.pf.Sink().Wait(ctx, n)
		if err != nil {
			s.t.Fatalf("no mail to %s: %v\nmaillog:\n%s", addr, err, s.pf.Maillog())
		}
		var mine []rig.Delivered
		for _, m := range msgs {
			for _, to := range m.To {
				if to == addr {
					mine = append(mine, m)
				}
			}
		}
		if len(mine) > s.seen[addr] {
			s.seen[addr]++
			return mine[s.seen[addr]-1]
		}
	}
}

// waitState waits until addr's state and fingerprint read want: the
// responder commits right after it submits its reply, so the reply can
// overtake the commit by a moment.
func (s *rigSite) waitState(addr, want string) {
	s.t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		got := s.state(addr)
		if got == want {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			s.t.Fatalf("%s: state %q, want %q", addr, got, want)
		}
	}
}

// notice waits for the next moderator notice (the moderator, a member,
// also gets the list's posts).
func (s *rigSite) notice() rig.Delivered {
	s.t.Helper()
	for {
		if m := s.next("mod@example.org"); bytes.Contains(m.Data, []byte("waits for approval")) {
			return m
		}
	}
}

func (s *rigSite) state(addr string) string {
	m, err := s.site.Admin.Store.GetMember(context.Background(), list, addr)
	if err != nil {
		return "none"
	}
	return m.State + " " + m.Fingerprint
}

var (
	pgpMessage = regexp.MustCompile(`(?s)-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----`)
	statement  = regexp.MustCompile(`(?s)-----\n(key confirm .*?)-----\n`)
)

// gpgRead opens a reply with GnuPG: decrypt and verify (encrypted), or
// verify the RFC 3156 §5 signature (signed only). It returns the text.
func gpgRead(t *testing.T, g *pgptest.GPG, m rig.Delivered) string {
	t.Helper()
	data := m.Data
	if ct := pgpMessage.Find(data); ct != nil {
		inner, stderr := g.Run(ct, "--decrypt")
		if !bytes.Contains(stderr, []byte(`Good signature from "devs <devs@lists.example.org>"`)) {
			t.Fatalf("gpg: reply not signed by the list:\n%s", stderr)
		}
		text, err := workflow.EntityText(inner)
		if err != nil {
			t.Fatal(err)
		}
		return text
	}
	signed, sig := splitSigned(t, data)
	dir := t.TempDir()
	df, sf := filepath.Join(dir, "data"), filepath.Join(dir, "sig.asc")
	if err := os.WriteFile(df, signed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sf, sig, 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr := g.Run(nil, "--verify", sf, df)
	if !bytes.Contains(stderr, []byte(`Good signature from "devs <devs@lists.example.org>"`)) {
		t.Fatalf("gpg --verify:\n%s", stderr)
	}
	text, err := workflow.EntityText(signed)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// splitSigned returns the signed part (as transmitted, CRLF) and the
// signature of a multipart/signed message.
func splitSigned(t *testing.T, data []byte) (signed, sig []byte) {
	t.Helper()
	hdrEnd := bytes.Index(data, []byte("\r\n\r\n"))
	ct := regexp.MustCompile(`(?i)Content-Type: (multipart/signed;[^\r\n]*)`).FindSubmatch(data[:hdrEnd])
	if ct == nil {
		t.Fatalf("not multipart/signed:\n%s", data)
	}
	_, params, err := mime.ParseMediaType(string(ct[1]))
	if err != nil {
		t.Fatal(err)
	}
	delim := []byte("--" + params["boundary"] + "\r\n")
	body := data[hdrEnd+4:]
	i := bytes.Index(body, delim)
	rest := body[i+len(delim):]
	j := bytes.Index(rest, []byte("\r\n--"+params["boundary"]+"\r\n"))
	signed = rest[:j]
	sigPart := rest[j:]
	k := bytes.Index(sigPart, []byte("-----BEGIN PGP SIGNATURE-----"))
	e := bytes.Index(sigPart, []byte("-----END PGP SIGNATURE-----"))
	return signed, sigPart[k : e+len("-----END PGP SIGNATURE-----")]
}

func expect(t *testing.T, text, want string) {
	t.Helper()
	if !strings.Contains(text, want) {
		t.Fatalf("reply lacks %q:\n%s", want, text)
	}
}

// TestEndToEndThroughMTAs: GnuPG and Sequoia subscribers go through
// every key workflow by mail through a real MTA, the responder run as
// contrib says (Postfix: the pipe transport of contrib/postfix;
// Sendmail: the prog mailer of contrib/sendmail's alias and :include:
// file), and an active member's post comes back encrypted.
func TestEndToEndThroughMTAs(t *testing.T) {
	for _, mta := range mtas {
		t.Run(mta, func(t *testing.T) { endToEnd(t, mta) })
	}
}

// endToEnd is TestEndToEndThroughMTAs through one MTA.
func endToEnd(t *testing.T, mta string) {
	pgptest.RequireTool(t, "gpg")
	s := startRig(t, mta)
	ctx := context.Background()
	s.site.AddMember(t, "mod@example.org")
	listKey, err := s.site.Admin.ExportListKey(ctx, list)
	if err != nil {
		t.Fatal(err)
	}

	// --- GnuPG: subscribe, key set, key confirm, moderator approve.
	const bob = "bob@example.org"
	g := pgptest.NewGPG(t)
	g.Import([]byte(listKey))
	fpr1 := g.GenKey("Bob <bob@example.org>")

	s.send(bob, wftest.Mail(bob, request, "subscribe", "subscribe"))
	text := gpgRead(t, g, s.next(bob))
	t1 := wftest.Token(t, text)
	// Replies come from the request address, with the bounce address as
	// envelope sender.
	s.send(bob, wftest.Mail(bob, request, "Re: key set "+t1, "key set "+t1, g.Export(fpr1)))
	m := s.next(bob)
	if m.From != "devs-bounces@lists.example.org" || !bytes.Contains(m.Data, []byte("From: \"devs@lists.example.org (listcrypt)\" <"+request+">")) {
		t.Fatalf("reply envelope %q / header:\n%s", m.From, m.Data[:400])
	}
	text = gpgRead(t, g, m)
	st := statement.FindStringSubmatch(text)
	if st == nil {
		t.Fatalf("no statement:\n%s", text)
	}
	signedSt, _ := g.Run([]byte(st[1]), "--clearsign", "--local-user", fpr1)
	s.send(bob, wftest.Mail(bob, request, "confirm", string(signedSt)))
	expect(t, gpgRead(t, g, s.next(bob)), "A moderator will now compare")
	s.waitState(bob, "pending "+fpr1)
	if m := s.notice(); !pgpMessage.Match(m.Data) || !bytes.Contains(m.Data, []byte("Subject: devs@lists.example.org: subscription waits")) {
		t.Fatalf("moderator notice not encrypted:\n%s", m.Data)
	}
	pending, err := s.site.Admin.PendingMembers(ctx, list)
	if err != nil || len(pending) != 1 || pending[0].Fingerprint != fpr1 {
		t.Fatalf("pending: %+v %v", pending, err)
	}
	if e, err := s.site.Admin.ApproveMember(ctx, list, bob); err != nil || e.NoticeErr != nil {
		t.Fatalf("approve: %v %+v", err, e)
	}
	expect(t, gpgRead(t, g, s.next(bob)), "approved your subscription")
	s.waitState(bob, "active "+fpr1)

	// Bob posts; the list's copy reaches him, readable with his key.
	inner := "Content-Type: text/plain; charset=utf-8\r\n\r\nfirst post\r\n"
	ct, _ := g.Run([]byte(inner), "--armor", "--sign", "--encrypt", "--local-user", fpr1, "--recipient", list)
	if err := rig.Send(s.pf.SMTPAddr(), bob, []string{list}, pgpMIME(bob, ct)); err != nil {
		t.Fatalf("post refused: %v", err)
	}
	if copyText := gpgRead(t, g, s.next(bob)); !strings.Contains(copyText, "first post") {
		t.Fatalf("list copy:\n%s", copyText)
	}

	// --- Key change: statement encrypted to the new key, signed by the old.
	fpr2 := g.GenKey("Bob New <bob@example.org>")
	s.send(bob, wftest.Mail(bob, request, "new key", "key change", g.Export(fpr2)))
	text = gpgRead(t, g, s.next(bob))
	st = statement.FindStringSubmatch(text)
	if st == nil || !strings.Contains(st[1], fpr2) {
		t.Fatalf("no statement for the new key:\n%s", text)
	}
	signedSt, _ = g.Run([]byte(st[1]), "--clearsign", "--local-user", fpr2)
	s.send(bob, wftest.Mail(bob, request, "confirm", string(signedSt)))
	expect(t, gpgRead(t, g, s.next(bob)), "signed by the NEW key")
	signedSt, _ = g.Run([]byte(st[1]), "--clearsign", "--local-user", fpr1)
	s.send(bob, wftest.Mail(bob, request, "confirm", string(signedSt)))
	expect(t, gpgRead(t, g, s.next(bob)), "Your key on devs@lists.example.org is now")
	s.waitState(bob, "active "+fpr2)

	// --- Key revoke: GnuPG's own revocation certificate for the key.
	rev, err := os.ReadFile(filepath.Join(g.Home, "openpgp-revocs.d", fpr2+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	rev = bytes.Replace(rev, []byte(":-----BEGIN PGP PUBLIC KEY BLOCK-----"), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----"), 1)
	s.send(bob, wftest.Mail(bob, request, "revoke", "key revoke", rev))
	text = gpgRead(t, g, s.next(bob))
	expect(t, text, "is revoked")
	s.waitState(bob, store.MemberNeedsKey+" ")
	t1 = wftest.Token(t, text)
	fpr3 := g.GenKey("Bob Third <bob@example.org>")
	s.send(bob, wftest.Mail(bob, request, "Re: key set "+t1, "key set "+t1, g.Export(fpr3)))
	st = statement.FindStringSubmatch(gpgRead(t, g, s.next(bob)))
	signedSt, _ = g.Run([]byte(st[1]), "--clearsign", "--local-user", fpr3)
	s.send(bob, wftest.Mail(bob, request, "confirm", string(signedSt)))
	expect(t, gpgRead(t, g, s.next(bob)), "A moderator will now compare")
	s.notice()
	if _, err := s.site.Admin.ApproveMember(ctx, list, bob); err != nil {
		t.Fatal(err)
	}
	gpgRead(t, g, s.next(bob))
	s.waitState(bob, "active "+fpr3)

	// --- Sequoia: the whole subscription with sq; the statement goes
	// back encrypted to the list key and signed (inline OpenPGP message).
	pgptest.RequireTool(t, "sq")
	const sara = "sara@example.org"
	q := pgptest.NewSQ(t)
	sk := q.GenKey("Sara <sara@example.org>")
	listCert := q.WriteFile("list.cert", []byte(listKey))
	sqRead := func(m rig.Delivered) string {
		t.Helper()
		if ct := pgpMessage.Find(m.Data); ct != nil {
			inner := q.Decrypt(ct, sk.KeyFile, listCert)
			text, err := workflow.EntityText(inner)
			if err != nil {
				t.Fatal(err)
			}
			return text
		}
		signed, sig := splitSigned(t, m.Data)
		if _, stderr, err := q.VerifyErr(signed, sig, listCert); err != nil {
			t.Fatalf("sq verify: %v\n%s", err, stderr)
		}
		text, err := workflow.EntityText(signed)
		if err != nil {
			t.Fatal(err)
		}
		return text
	}
	s.send(sara, wftest.Mail(sara, request, "subscribe", "SUBSCRIBE"))
	t1 = wftest.Token(t, sqRead(s.next(sara)))
	s.send(sara, wftest.Mail(sara, request, "key", "Key Set "+strings.ToLower(t1), q.Cert(sk)))
	st = statement.FindStringSubmatch(sqRead(s.next(sara)))
	if st == nil {
		t.Fatal("no statement for sara")
	}
	enc := q.Encrypt([]byte(st[1]), []string{listCert}, sk.KeyFile)
	s.send(sara, wftest.Mail(sara, request, "confirm", string(enc)))
	expect(t, sqRead(s.next(sara)), "A moderator will now compare")
	s.notice()
	if _, err := s.site.Admin.ApproveMember(ctx, list, sara); err != nil {
		t.Fatal(err)
	}
	expect(t, sqRead(s.next(sara)), "approved your subscription")
	s.waitState(sara, "active "+sk.Fingerprint)
	// key show and key get, encrypted to her now.
	s.send(sara, wftest.Mail(sara, request, "key show", ""))
	expect(t, sqRead(s.next(sara)), "State: active")

	// Negative cases through Postfix: each gets a reply, nothing changes.
	before := s.state(sara)
	for _, c := range []struct{ body, want string }{
		{"key set " + t1, "already been used"},
		{"key confirm AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not issued by this list"},
		{"what is this list?", "No command was found"},
	} {
		s.send(sara, wftest.Mail(sara, request, "x", c.body))
		expect(t, sqRead(s.next(sara)), c.want)
	}
	s.waitState(sara, before)
	// Nothing bounced or was deferred (Postfix: status=; Sendmail: stat=
	// and its DSN lines): no post reached the list address's route,
	// which bounces.
	for _, bad := range []string{"status=bounced", "status=deferred", "stat=Deferred", "DSN:", "return to sender"} {
		if strings.Contains(s.pf.Maillog(), bad) {
			t.Fatalf("bounced or deferred deliveries (%q):\n%s", bad, s.pf.Maillog())
		}
	}
	t.Logf("through %s: subscribe, key set, key confirm and approval (gpg and sq), a post, key change, key revoke and three refused commands", mta)
}

// pgpMIME wraps an armored OpenPGP message as RFC 3156 §4 multipart/encrypted.
func pgpMIME(from string, armored []byte) []byte {
	const b = "gpg-boundary"
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: post\r\nMessage-ID: <%d@example.org>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=%q\r\n\r\n"+
		"--%s\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"+
		"--%s\r\nContent-Type: application/octet-stream\r\n\r\n%s\r\n--%s--\r\n",
		from, list, time.Now().UnixNano(), b, b, b, strings.ReplaceAll(string(armored), "\n", "\r\n"), b))
}
