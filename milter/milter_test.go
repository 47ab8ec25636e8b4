package milter_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/outbound"
	"github.com/listcrypt/listcrypt/policy/tomlx"
)

// logBuf collects the daemon's log lines for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDaemon runs listcrypt-milter's daemon for site in process.
func startDaemon(t testing.TB, site *milterfix.Site) (*milter.Daemon, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := milter.Start(context.Background(), site.Config, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Shutdown(ctx)
		<-done
		if t.Failed() {
			t.Logf("milter log:\n%s", logs.String())
		}
	})
	return d, logs
}

// mta plays Postfix against the milter with go-milter's client.
type mta struct {
	t      testing.TB
	client *gomilter.Client
	// sink, when set, is the reinjection listener: each result carries
	// the copies that arrived there during its transaction.
	sink *rig.Sink
}

func newMTA(t testing.TB, d *milter.Daemon) *mta {
	addr := d.Addr()
	c := gomilter.NewClientWithOptions(addr.Network(), addr.String(), gomilter.ClientOptions{
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		// go-milter's server speaks v2: offering a v6-only action (ChangeFrom)
		// makes its client refuse to downgrade (LIBRARY-NOTES).
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptRemoveRcpt | gomilter.OptAddRcpt |
			gomilter.OptChangeBody,
	})
	t.Cleanup(func() { c.Close() })
	return &mta{t: t, client: c}
}

// result is what the MTA saw for one transaction.
type result struct {
	stage   string // where the milter gave its final answer
	action  *gomilter.Action
	modacts []gomilter.ModifyAction
	copies  []rig.Delivered // reinjected during the transaction (mta.sink)
	watched bool            // mta.sink was set: copies is what was reinjected
}

// delivered says whether the post went out: accepted, and (when the
// reinjection listener is watched) copies reinjected.
func (r result) delivered() bool {
	return r.accepted() && (!r.watched || len(r.copies) > 0)
}

// accepted says whether the MTA would answer the sender 250: the milter
// accepted, or discarded a transaction whose only recipients were lists
// (every copy reinjected, or a retry of a completed post).
func (r result) accepted() bool {
	return r.action.Code == gomilter.ActAccept || r.action.Code == gomilter.ActDiscard
}

// recipients is the sorted set of members the transaction's copies went
// to.
func (r result) recipients() []string {
	var out []string
	for _, c := range r.copies {
		for _, a := range c.To {
			out = append(out, strings.Trim(a, "<>"))
		}
	}
	slices.Sort(out)
	return out
}

// copyTo is the reinjected copy that went to addr (nil if none).
func (r result) copyTo(addr string) []byte {
	for _, c := range r.copies {
		for _, a := range c.To {
			if strings.EqualFold(strings.Trim(a, "<>"), addr) {
				return c.Data
			}
		}
	}
	return nil
}

func (r result) code() int {
	if r.action.Code == gomilter.ActReplyCode {
		return r.action.SMTPCode
	}
	return 0
}

func (r result) deleted() []string {
	var out []string
	for _, m := range r.modacts {
		if m.Code == gomilter.ActDelRcpt {
			out = append(out, m.Rcpt)
		}
	}
	return out
}

// send runs one transaction: MAIL, RCPTs, headers, body in 64 KiB chunks,
// end of message (with the queue id macro, as Postfix sends it).
func (m *mta) send(from string, rcpts []string, msg []byte) result {
	m.t.Helper()
	s, err := m.client.Session()
	if err != nil {
		m.t.Fatal(err)
	}
	defer s.Close()
	return m.sendOn(s, from, rcpts, msg)
}

// sendOn runs one transaction on an open session (one MTA connection),
// which Postfix reuses for every message of an SMTP connection.
func (m *mta) sendOn(s *gomilter.ClientSession, from string, rcpts []string, msg []byte) result {
	t := m.t
	t.Helper()
	final := func(stage string, a *gomilter.Action, err error) (result, bool) {
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if a.Code != gomilter.ActContinue {
			return result{stage: stage, action: a}, true
		}
		return result{}, false
	}
	a, err := s.Mail(from, nil)
	if r, done := final("mail", a, err); done {
		return r
	}
	for _, rc := range rcpts {
		a, err = s.Rcpt(rc, nil)
		if r, done := final("rcpt", a, err); done {
			return r
		}
	}
	hdr, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, line := range unfold(string(hdr)) {
		k, v, _ := strings.Cut(line, ":")
		a, err = s.HeaderField(k, strings.TrimPrefix(v, " "))
		if r, done := final("header", a, err); done {
			return r
		}
	}
	a, err = s.HeaderEnd()
	if r, done := final("eoh", a, err); done {
		return r
	}
	for len(body) > 0 {
		n := min(len(body), 65535)
		a, err = s.BodyChunk(body[:n])
		if r, done := final("body", a, err); done {
			return r
		}
		body = body[n:]
	}
	if err := s.Macros(gomilter.CodeEOB, "i", "QID123"); err != nil {
		t.Fatal(err)
	}
	before := 0
	if m.sink != nil {
		before = len(m.sink.Messages())
	}
	acts, a, err := s.End()
	if err != nil {
		t.Fatalf("end: %v", err)
	}
	r := result{stage: "eom", action: a, modacts: acts}
	if m.sink != nil {
		r.copies, r.watched = m.sink.Messages()[before:], true
	}
	return r
}

func unfold(h string) []string {
	var out []string
	for _, l := range strings.Split(h, "\r\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(out) > 0 {
			out[len(out)-1] += "\n" + l
			continue
		}
		out = append(out, l)
	}
	return out
}

type fixture struct {
	site                *milterfix.Site
	d                   *milter.Daemon
	logs                *logBuf
	mta                 *mta
	alice, bob, mallory *openpgp.Entity
}

func newFixture(t *testing.T, policy string) *fixture {
	site := milterfix.New(t, milterfix.Options{Policy: policy})
	f := &fixture{site: site}
	f.alice = site.AddMember(t, "alice@example.org")
	f.bob = site.AddMember(t, "bob@example.org")
	f.mallory = milterfix.NewKey(t, "mallory@evil.example")
	f.d, f.logs = startDaemon(t, site)
	f.mta = newMTA(t, f.d)
	f.mta.sink = site.Reinjected
	return f
}

func (f *fixture) post(p milterfix.Post, rcpts ...string) result {
	if len(rcpts) == 0 {
		rcpts = []string{milterfix.List}
	}
	return f.mta.send(p.From, rcpts, milterfix.Build(f.mta.t, p))
}

func TestNonListTransactionAcceptedAtEndOfHeaders(t *testing.T) {
	f := newFixture(t, "")
	r := f.mta.send("x@example.net", []string{"bob@example.org"}, []byte("From: x@example.net\r\nSubject: hi\r\n\r\nhello\r\n"))
	if r.stage != "eoh" || r.action.Code != gomilter.ActAccept {
		t.Fatalf("got %s %+v, want accept at end of headers", r.stage, r.action)
	}
}

// Every inbound finding gets the policy's action, with the reply text the
// sender reads.
func TestInboundDecisions(t *testing.T) {
	f := newFixture(t, "")
	list := []*openpgp.Entity{f.site.ListKey}
	other := milterfix.NewKey(t, "other@lists.example.org")
	for _, tc := range []struct {
		name   string
		post   milterfix.Post
		code   int
		text   string
		reason string
	}{
		{"member post, signed and encrypted", milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: list}, 0, "", "reason=ok"},
		{"plain post", milterfix.Post{From: "alice@example.org"}, 550, `5.7.1 devs@lists.example.org accepts only posts encrypted to the list key; send "key get" to devs-request@lists.example.org`, "reason=not-encrypted"},
		{"signed, not encrypted", milterfix.Post{From: "alice@example.org", SignWith: f.alice}, 550, "accepts only posts encrypted", "reason=not-encrypted"},
		{"unsigned", milterfix.Post{From: "alice@example.org", EncryptTo: list}, 550, "accepts only posts signed", "reason=not-signed"},
		{"non-member", milterfix.Post{From: "mallory@evil.example", SignWith: f.mallory, EncryptTo: list}, 550, "not a member", "reason=non-member"},
		{"signed by member B, From member A", milterfix.Post{From: "alice@example.org", SignWith: f.bob, EncryptTo: list}, 550, "5.7.7", "reason=signer-not-from"},
		{"signed by an unknown key, From a member", milterfix.Post{From: "alice@example.org", SignWith: f.mallory, EncryptTo: list}, 550, "not registered for the From address", "reason=unknown-signer"},
		{"encrypted to another key", milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: []*openpgp.Entity{other}}, 550, "not encrypted to the list key", "reason=not-for-list-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.logs.String())
			r := f.post(tc.post)
			if r.stage != "eom" {
				t.Fatalf("final answer at %s, want end of message", r.stage)
			}
			if tc.code == 0 {
				if !r.delivered() {
					t.Fatalf("got %+v, want accept", r.action)
				}
			} else if r.code() != tc.code || !strings.Contains(r.action.SMTPText, tc.text) {
				t.Fatalf("got %d %q, want %d ...%q", r.code(), r.action.SMTPText, tc.code, tc.text)
			}
			if line := f.logs.String()[before:]; !strings.Contains(line, tc.reason) {
				t.Fatalf("log line lacks %s: %s", tc.reason, line)
			}
		})
	}
}

func TestReplayRefused(t *testing.T) {
	f := newFixture(t, "")
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: []*openpgp.Entity{f.site.ListKey}, Body: "once"})
	if r := f.mta.send("alice@example.org", []string{milterfix.List}, msg); !r.delivered() {
		t.Fatalf("first: %+v", r.action)
	}
	// The same post again from another envelope sender: a replay. (From
	// the same one, a retry of a completed post: retry_test.go.)
	if r := f.mta.send("mallory@evil.example", []string{milterfix.List}, msg); r.code() != 550 || !strings.Contains(r.action.SMTPText, "already sent") {
		t.Fatalf("replay: %d %q", r.code(), r.action.SMTPText)
	}
	// The same ciphertext under new headers (another Message-ID, Subject).
	hdrEnd := bytes.Index(msg, []byte("Content-Type: multipart/encrypted"))
	rewrapped := append([]byte("From: alice@example.org\r\nTo: devs@lists.example.org\r\nSubject: re-sent\r\nMessage-ID: <other@x>\r\nMIME-Version: 1.0\r\n"), msg[hdrEnd:]...)
	if r := f.mta.send("alice@example.org", []string{milterfix.List}, rewrapped); r.code() != 550 || !strings.Contains(r.action.SMTPText, "already sent") {
		t.Fatalf("rewrapped replay: %d %q", r.code(), r.action.SMTPText)
	}
}

// A retry of a transaction that never completed (the milter tempfailed,
// crashed or timed out after recording the post) is not a replay.
func TestRetryOfUnfinishedPostIsNotReplay(t *testing.T) {
	f := newFixture(t, "")
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: []*openpgp.Entity{f.site.ListKey}, Body: "retry"})
	// A first attempt that recorded the post and then died before the
	// answer: its post id is in the replay table, not marked complete.
	ctx := context.Background()
	id, err := deliver.PostID(msg)
	if err != nil {
		t.Fatal(err)
	}
	if replayOf, err := f.site.Admin.Store.RecordPost(ctx, milterfix.List, id, [][]byte{[]byte("first-attempt-digest")}, time.Now()); err != nil || replayOf != nil {
		t.Fatal(replayOf, err)
	}
	if r := f.mta.send("alice@example.org", []string{milterfix.List}, msg); !r.delivered() {
		t.Fatalf("retry of an unfinished post: %+v", r.action)
	}
	if r := f.mta.send("alice@example.org", []string{milterfix.List}, msg); r.action.Code != gomilter.ActDiscard || !strings.Contains(f.logs.String(), "reason=retry-of-completed") {
		t.Fatalf("a completed post sent again in its envelope must be a retry of it: %+v", r.action)
	}
}

func TestHoldIsStoredEncrypted(t *testing.T) {
	f := newFixture(t, `signed = "hold"`)
	const canary = "CANARY-held-post-7f3a"
	r := f.post(milterfix.Post{From: "alice@example.org", EncryptTo: []*openpgp.Entity{f.site.ListKey}, Body: canary}, milterfix.List, "carol@example.net")
	if r.action.Code != gomilter.ActAccept || len(r.deleted()) != 1 || r.deleted()[0] != "<"+milterfix.List+">" {
		t.Fatalf("got %+v deleted %v, want the list recipient removed and the rest accepted", r.action, r.deleted())
	}
	ctx := context.Background()
	holds, err := f.site.Admin.Holds(ctx, milterfix.List)
	if err != nil || len(holds) != 1 {
		t.Fatalf("holds %v %v", holds, err)
	}
	if bytes.Contains(holds[0].Message, []byte(canary)) || bytes.Contains(holds[0].Message, []byte("alice@example.org")) {
		t.Fatal("held post stored in clear")
	}
	hp, err := f.site.Admin.ShowHold(ctx, holds[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(hp.Plaintext, []byte(canary)) {
		t.Fatalf("hold show does not decrypt: %q", hp.Plaintext)
	}
	// Only the list recipient: the whole message is discarded after holding.
	r = f.post(milterfix.Post{From: "bob@example.org", EncryptTo: []*openpgp.Entity{f.site.ListKey}, Body: "second"})
	if r.action.Code != gomilter.ActDiscard {
		t.Fatalf("got %+v, want discard", r.action)
	}
	assertNoPlaintextOnDisk(t, f.site.Dir, canary)
}

func assertNoPlaintextOnDisk(t *testing.T, dir, canary string) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > 64<<20 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(canary)) {
			t.Errorf("plaintext canary found in %s", p)
		}
		return nil
	})
}

func TestSizeLimitDuringData(t *testing.T) {
	f := newFixture(t, `max_size = "64KB"`)
	big := milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: []*openpgp.Entity{f.site.ListKey}, Body: strings.Repeat("x", 200<<10)}
	r := f.post(big)
	if r.stage != "body" || r.code() != 552 || !strings.Contains(r.action.SMTPText, "5.3.4") {
		t.Fatalf("got %s %d %q, want 552 5.3.4 during DATA", r.stage, r.code(), r.action.SMTPText)
	}
}

func TestInternalErrorTempfails(t *testing.T) {
	f := newFixture(t, "")
	// Break the list key under the running milter (a sealed key that does
	// not open): every post must tempfail, never be accepted.
	ctx := context.Background()
	l, err := f.site.Admin.Store.GetList(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.site.Admin.Store.UpdateListKey(ctx, milterfix.List, "0000", l.PublicKey, []byte("not a key")); err != nil {
		t.Fatal(err)
	}
	r := f.post(milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: []*openpgp.Entity{f.site.ListKey}})
	if r.code() != 451 || !strings.HasPrefix(r.action.SMTPText, "4.3.0") {
		t.Fatalf("got %d %q, want 451 4.3.0", r.code(), r.action.SMTPText)
	}
}

func TestReloadKeepsLastGoodPolicy(t *testing.T) {
	f := newFixture(t, "")
	pfile := filepath.Join(f.site.Config.PolicyDir, milterfix.List+".toml")
	good, _ := os.ReadFile(pfile)
	if err := os.WriteFile(pfile, append(good, []byte("bogus = 1\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.d.Reload(); err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("bad reload: %v", err)
	}
	if !strings.Contains(f.logs.String(), "keeping the last good policies") {
		t.Fatal("refused reload not logged")
	}
	r := f.post(milterfix.Post{From: "alice@example.org"})
	if r.code() != 550 {
		t.Fatalf("list lost after a bad reload: %+v", r.action)
	}
	lax := strings.Replace(string(good), `encrypted = "require"`, `encrypted = "allow"`, 1)
	lax = strings.Replace(lax, `signed = "require"`, `signed = "allow"`, 1)
	os.WriteFile(pfile, []byte(lax), 0o644)
	if err := f.d.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := f.post(milterfix.Post{From: "alice@example.org", Body: "plain ok now"}); !r.delivered() {
		t.Fatalf("after reload: %+v", r.action)
	}
}

// Posts on several MTA connections at once share the list's keys; with
// -race this proves the per-list serialisation of the OpenPGP work.
func TestConcurrentPosts(t *testing.T) {
	f := newFixture(t, "")
	list := []*openpgp.Entity{f.site.ListKey}
	var msgs [][]byte
	for i := range 16 {
		from, key := "alice@example.org", f.alice
		if i%2 == 1 {
			from, key = "bob@example.org", f.bob
		}
		msgs = append(msgs, milterfix.Build(t, milterfix.Post{From: from, SignWith: key, EncryptTo: list, Body: fmt.Sprintf("post %d", i)}))
	}
	var wg sync.WaitGroup
	errs := make(chan string, len(msgs))
	for i, msg := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := "alice@example.org"
			if i%2 == 1 {
				from = "bob@example.org"
			}
			if r := f.mta.send(from, []string{milterfix.List}, msg); !r.delivered() {
				errs <- fmt.Sprintf("post %d: %+v", i, r.action)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// Errors found after decryption never carry plaintext into the SMTP reply
// or the log: an encrypted post whose inner entity is malformed.
func TestNoPlaintextInRepliesOrLogs(t *testing.T) {
	f := newFixture(t, "")
	const secret = "TOPSECRET-launch-code-1234"
	var ct bytes.Buffer
	aw, _ := armor.Encode(&ct, "PGP MESSAGE", nil)
	w, err := openpgp.EncryptWithParams(aw, []*openpgp.Entity{f.site.ListKey}, nil,
		&openpgp.EncryptParams{Signers: []*openpgp.Entity{f.alice}, Config: keyring.PacketConfig(keyring.DefaultLimits, nil)})
	if err != nil {
		t.Fatal(err)
	}
	// An inner "entity" without a header/body separator: a malformed MIME
	// header line made of the secret.
	w.Write([]byte(secret + " in the body\r\nmore " + secret + "\r\n"))
	w.Close()
	aw.Close()
	msg := "From: alice@example.org\r\nTo: devs@lists.example.org\r\nSubject: x\r\nMessage-ID: <leak@x>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n" +
		strings.ReplaceAll(ct.String(), "\n", "\r\n") + "\r\n--b--\r\n"
	r := f.mta.send("alice@example.org", []string{milterfix.List}, []byte(msg))
	if r.accepted() {
		t.Fatal("the malformed inner entity was accepted")
	}
	if strings.Contains(r.action.SMTPText, secret) {
		t.Fatalf("plaintext in the SMTP reply: %q", r.action.SMTPText)
	}
	if strings.Contains(f.logs.String(), secret) {
		t.Fatalf("plaintext in the log:\n%s", f.logs.String())
	}
}

// keep_sender_signature: the author's signature (made inside the
// encryption, RFC 3156 §6.2) travels to the members, who verify it with
// the author's key over the inner entity.
func TestKeepSenderSignature(t *testing.T) {
	f := newFixture(t, "")
	f.site.EditPolicy(t, "keep_sender_signature = false", "keep_sender_signature = true")
	if err := f.d.Reload(); err != nil {
		t.Fatal(err)
	}
	r := f.post(milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: []*openpgp.Entity{f.site.ListKey}, Body: "signed by alice"})
	if !r.delivered() {
		t.Fatalf("%+v", r.action)
	}
	payload := milterfix.DecryptCopy(t, r.copyTo("bob@example.org"), f.bob, f.site.ListKey)
	_, _, inner, perr := outbound.PayloadParts(payload)
	if perr != nil {
		t.Fatal(perr)
	}
	first, ok := milterfix.FirstSignedPart(inner)
	if !ok {
		t.Fatalf("no multipart/signed inside:\n%s", inner)
	}
	i := bytes.Index(inner, []byte("-----BEGIN PGP SIGNATURE-----"))
	j := bytes.Index(inner, []byte("-----END PGP SIGNATURE-----"))
	if i < 0 || j < i {
		t.Fatalf("no signature part:\n%s", inner)
	}
	_, signer, err := openpgp.VerifyArmoredDetachedSignature(openpgp.EntityList{f.alice}, bytes.NewReader(first),
		bytes.NewReader(inner[i:j+len("-----END PGP SIGNATURE-----")]), keyring.PacketConfig(keyring.DefaultLimits, nil))
	if err != nil || signer == nil {
		t.Fatalf("alice's signature does not verify: %v", err)
	}
	if !bytes.Contains(first, []byte("signed by alice")) {
		t.Fatalf("signed part: %q", first)
	}
}

// The header block is limited (limits.max_header_size): 552 5.3.4 at the
// end of the headers, before any body is read.
func TestHeaderSizeLimit(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	site.Config.Limits.MaxHeaderSize = tomlx.NewSize("1KB")
	d, _ := startDaemon(t, site)
	m := newMTA(t, d)
	msg := []byte("From: alice@example.org\r\nTo: devs@lists.example.org\r\nX-Padding: " + strings.Repeat("x", 2000) + "\r\nSubject: big\r\n\r\nbody\r\n")
	r := m.send("alice@example.org", []string{milterfix.List}, msg)
	if r.stage != "eoh" || r.code() != 552 || !strings.Contains(r.action.SMTPText, "5.3.4") {
		t.Fatalf("got %s %d %q, want 552 5.3.4 at end of headers", r.stage, r.code(), r.action.SMTPText)
	}
	// Ordinary mail is not limited by the list's header limit.
	if r := m.send("x@example.net", []string{"bob@example.org"}, msg); r.action.Code != gomilter.ActAccept {
		t.Fatalf("non-list mail: %+v", r.action)
	}
}
