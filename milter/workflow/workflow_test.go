package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

const (
	list    = milterfix.List
	request = "devs-request@lists.example.org"
	bobAddr = "bob@example.org"
	modAddr = "mod@example.org"
)

type env struct {
	t    *testing.T
	site *milterfix.Site
	r    *workflow.Responder
	mail *wftest.Capture
	skew time.Duration
	mod  *openpgp.Entity
}

// newEnv builds a site with one list whose moderator mod@example.org is
// a member; edit rewrites the policy file first.
func newEnv(t *testing.T, edit func(policy string) string) *env {
	t.Helper()
	return newEnvWith(t, milterfix.Options{}, edit)
}

// newEnvWith is newEnv on a site built with o (another database).
func newEnvWith(t *testing.T, o milterfix.Options, edit func(policy string) string) *env {
	t.Helper()
	site := milterfix.New(t, o)
	pfile := filepath.Join(site.Config.PolicyDir, list+".toml")
	src, err := os.ReadFile(pfile)
	if err != nil {
		t.Fatal(err)
	}
	pol := strings.Replace(string(src), "moderators = []", `moderators = ["`+modAddr+`"]`, 1)
	if edit != nil {
		pol = edit(pol)
	}
	if err := os.WriteFile(pfile, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, site: site, mail: &wftest.Capture{}}
	e.mod = site.AddMember(t, modAddr)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	r, err := workflow.New(site.Config, site.Admin.Store, log)
	if err != nil {
		t.Fatal(err)
	}
	r.Mail = e.mail
	r.Now = func() time.Time { return time.Now().Add(e.skew) }
	e.r = r
	return e
}

// send hands msg to the responder and returns the outcome.
func (e *env) send(msg []byte) *workflow.Outcome {
	e.t.Helper()
	out, err := e.r.Handle(context.Background(), msg, request)
	if err != nil {
		e.t.Fatalf("Handle: %v", err)
	}
	return out
}

// reply returns the text of the newest mail to addr, opened with key.
func (e *env) reply(addr string, key *openpgp.Entity) string {
	e.t.Helper()
	msgs := e.mail.To(addr)
	if len(msgs) == 0 {
		e.t.Fatalf("no mail to %s", addr)
	}
	return wftest.Open(e.t, msgs[len(msgs)-1].Data, key, e.site.ListKey)
}

// state is the list's membership and pending keys, for "nothing changed".
func (e *env) state() string {
	e.t.Helper()
	ctx := context.Background()
	ms, err := e.r.Store.Members(ctx, list)
	if err != nil {
		e.t.Fatal(err)
	}
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "member %s %s %s %x\n", m.Address, m.State, m.Fingerprint, m.PublicKey)
	}
	pks, err := e.r.Store.PendingKeys(ctx, list, "")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range pks {
		fmt.Fprintf(&b, "pending %s %s %s %s\n", p.Address, p.Fingerprint, p.Purpose, p.State)
	}
	return b.String()
}

func (e *env) member(addr string) store.Member {
	e.t.Helper()
	m, err := e.r.Store.GetMember(context.Background(), list, addr)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func armored(t *testing.T, k *openpgp.Entity) []byte {
	t.Helper()
	a, err := keyring.ArmorPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(a)
}

// refused checks the outcome and the reply text, and that nothing changed.
func (e *env) refused(out *workflow.Outcome, before, addr string, key *openpgp.Entity, want string) {
	e.t.Helper()
	if out.Result != "refused" {
		e.t.Errorf("result %q (%s), want refused", out.Result, out.Reason)
	}
	if text := e.reply(addr, key); !strings.Contains(text, want) || !strings.Contains(text, "Nothing has changed") {
		e.t.Errorf("reply lacks %q / \"Nothing has changed\":\n%s", want, text)
	}
	if after := e.state(); after != before {
		e.t.Errorf("state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// subscribeAndSet runs subscribe and key set for addr with key k and
// returns the key confirm statement text.
func (e *env) subscribeAndSet(addr string, k *openpgp.Entity) (statement string) {
	e.t.Helper()
	e.send(wftest.Mail(addr, request, "subscribe", "subscribe"))
	t1 := wftest.Token(e.t, e.reply(addr, nil))
	e.send(wftest.Mail(addr, request, "my key", "key set "+t1, armored(e.t, k)))
	return wftest.Statement(e.t, e.reply(addr, k))
}

// TestSubscribe walks the whole subscription: subscribe, key set, key
// confirm, moderator told, approve, active.
func TestSubscribe(t *testing.T) {
	e := newEnv(t, nil)
	bob := milterfix.NewKey(t, bobAddr)

	out := e.send(wftest.Mail(bobAddr, request, "hello", "subscribe"))
	if out.Result != "done" || out.Command != "subscribe" || out.List != list || out.From != bobAddr {
		t.Fatalf("subscribe: %+v", out)
	}
	text := e.reply(bobAddr, nil)
	t1 := wftest.Token(t, text)
	if msgs := e.mail.To(bobAddr); !strings.Contains(string(msgs[0].Data), "Subject: key set "+t1) || msgs[0].From != "devs-bounces@lists.example.org" {
		t.Errorf("subscribe reply: envelope %s, want the token in the Subject of a plain reply", msgs[0].From)
	}
	if _, err := e.r.Store.GetMember(context.Background(), list, bobAddr); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("member after subscribe: %v", err)
	}

	// key set: the reply (the statement) is encrypted to the new key.
	e.send(wftest.Mail(bobAddr, request, "Re: key set "+t1, "Here is my key.", armored(t, bob)))
	msgs := e.mail.To(bobAddr)
	if _, err := wftest.OpenErr(msgs[len(msgs)-1].Data, nil, e.site.ListKey); err == nil {
		t.Fatal("the statement can be read without the subscriber's key")
	}
	st := wftest.Statement(t, e.reply(bobAddr, bob))
	fp := keyring.Fingerprint(bob)
	if !strings.Contains(st, "fingerprint: "+fp) || !strings.Contains(st, "address: "+bobAddr) {
		t.Fatalf("statement:\n%s", st)
	}

	// key confirm: the statement signed (cleartext signature) by the key.
	out = e.send(wftest.Clearsigned(t, bobAddr, request, st, bob))
	if out.Result != "done" {
		t.Fatalf("confirm: %+v\n%s", out, e.reply(bobAddr, bob))
	}
	if m := e.member(bobAddr); m.State != store.MemberPending || m.Fingerprint != fp {
		t.Fatalf("after confirm: %+v", m)
	}
	if text := e.reply(modAddr, e.mod); !strings.Contains(text, keyring.Fingerprint(bob)[:4]) || !strings.Contains(text, "listcrypt member approve "+list+" "+bobAddr) {
		t.Fatalf("moderator notice:\n%s", text)
	}
	// Replaying the confirmation changes nothing.
	before := e.state()
	e.refused(e.send(wftest.Clearsigned(t, bobAddr, request, st, bob)), before, bobAddr, bob, "already been used")

	pending, err := e.r.Pending(context.Background(), list)
	if err != nil || len(pending) != 1 || pending[0].Address != bobAddr || pending[0].Kind != workflow.KindSubscription {
		t.Fatalf("pending: %+v %v", pending, err)
	}
	ent, err := e.r.Approve(context.Background(), list, bobAddr)
	if err != nil || ent.NoticeErr != nil {
		t.Fatalf("approve: %v %v", err, ent.NoticeErr)
	}
	if m := e.member(bobAddr); m.State != store.MemberActive || m.Fingerprint != fp || len(m.KeyIDs) != 2 {
		t.Fatalf("after approve: %+v", m)
	}
	if text := e.reply(bobAddr, bob); !strings.Contains(text, "approved your subscription") {
		t.Fatalf("welcome:\n%s", text)
	}
	if _, err := e.r.Approve(context.Background(), list, bobAddr); !errors.Is(err, workflow.ErrNothingPending) {
		t.Fatalf("second approve: %v", err)
	}

	// A member's replies are encrypted to the member's key.
	e.send(wftest.Mail(bobAddr, request, "key show", ""))
	if text := e.reply(bobAddr, bob); !strings.Contains(text, "State: active") {
		t.Fatalf("key show:\n%s", text)
	}
	msgs = e.mail.To(bobAddr)
	if _, err := wftest.OpenErr(msgs[len(msgs)-1].Data, nil, e.site.ListKey); err == nil {
		t.Fatal("key show reply to a member is not encrypted")
	}
}

// Without moderation a confirmed key makes an active member; commands may
// come encrypted to the list key and signed (PGP/MIME).
func TestSubscribeUnmoderatedEncrypted(t *testing.T) {
	e := newEnv(t, func(p string) string { return strings.Replace(p, "moderate_new = true", "moderate_new = false", 1) })
	bob := milterfix.NewKey(t, bobAddr)
	st := e.subscribeAndSet(bobAddr, bob)
	msg := milterfix.Build(t, milterfix.Post{From: bobAddr, Subject: "x", Body: st, SignWith: bob, EncryptTo: []*openpgp.Entity{e.site.ListKey}})
	if out := e.send(msg); out.Result != "done" {
		t.Fatalf("confirm: %+v\n%s", out, e.reply(bobAddr, bob))
	}
	if m := e.member(bobAddr); m.State != store.MemberActive {
		t.Fatalf("state %s", m.State)
	}
	if len(e.mail.To(modAddr)) != 0 {
		t.Fatal("moderator told without moderation")
	}
	// key get, PGP/MIME signed: the list key comes back attached.
	e.send(milterfix.Build(t, milterfix.Post{From: bobAddr, Subject: "x", Body: "key get", SignWith: bob}))
	msgs := e.mail.To(bobAddr)
	last := string(msgs[len(msgs)-1].Data)
	if text := e.reply(bobAddr, bob); !strings.Contains(text, "public key of "+list) {
		t.Fatalf("key get:\n%s", text)
	}
	_ = last
}

func TestKeyChange(t *testing.T) {
	e := newEnv(t, func(p string) string {
		return strings.Replace(p, "moderate_change = false", "moderate_change = true", 1)
	})
	bob := e.site.AddMember(t, bobAddr)
	bob2 := milterfix.NewKey(t, bobAddr)
	oldFpr, newFpr := keyring.Fingerprint(bob), keyring.Fingerprint(bob2)

	e.send(wftest.Mail(bobAddr, request, "key change", "key change", armored(t, bob2)))
	// The statement is encrypted to the NEW key only.
	msgs := e.mail.To(bobAddr)
	if _, err := wftest.OpenErr(msgs[len(msgs)-1].Data, bob, e.site.ListKey); err == nil {
		t.Fatal("key change statement readable with the old key")
	}
	text := e.reply(bobAddr, bob2)
	if !strings.Contains(text, "CURRENT key") {
		t.Fatalf("statement:\n%s", text)
	}
	st := wftest.Statement(t, text)

	// Signed by the new key only: refused.
	before := e.state()
	e.refused(e.send(wftest.Clearsigned(t, bobAddr, request, st, bob2)), before, bobAddr, bob, "signed by the NEW key")

	// Signed by the old key: confirmed, waits for the moderator.
	if out := e.send(wftest.Clearsigned(t, bobAddr, request, st, bob)); out.Result != "done" {
		t.Fatalf("confirm: %+v\n%s", out, e.reply(bobAddr, bob2))
	}
	if m := e.member(bobAddr); m.State != store.MemberActive || m.Fingerprint != oldFpr {
		t.Fatalf("old key must stay until approval: %+v", m)
	}
	p, err := e.r.Pending(context.Background(), list)
	if err != nil || len(p) != 1 || p[0].Kind != workflow.KindKeyChange || p[0].OldFingerprint != oldFpr || p[0].Fingerprint != newFpr {
		t.Fatalf("pending: %+v %v", p, err)
	}
	if text := e.reply(modAddr, e.mod); !strings.Contains(text, "key change") && !strings.Contains(text, "new key") {
		t.Fatalf("moderator notice:\n%s", text)
	}
	if _, err := e.r.Approve(context.Background(), list, bobAddr); err != nil {
		t.Fatal(err)
	}
	if m := e.member(bobAddr); m.State != store.MemberActive || m.Fingerprint != newFpr {
		t.Fatalf("after approve: %+v", m)
	}
	if text := e.reply(bobAddr, bob2); !strings.Contains(text, "approved your new key") {
		t.Fatalf("notice:\n%s", text)
	}
}

func TestKeyChangeUnmoderatedAndReject(t *testing.T) {
	e := newEnv(t, nil) // moderate_change = false by default
	bob := e.site.AddMember(t, bobAddr)
	bob2 := milterfix.NewKey(t, bobAddr)
	e.send(wftest.Mail(bobAddr, request, "key change", "key change", armored(t, bob2)))
	st := wftest.Statement(t, e.reply(bobAddr, bob2))
	e.send(wftest.Clearsigned(t, bobAddr, request, st, bob))
	if m := e.member(bobAddr); m.Fingerprint != keyring.Fingerprint(bob2) || m.State != store.MemberActive {
		t.Fatalf("after unmoderated change: %+v", m)
	}

	// A moderated subscription rejected: the address is gone.
	carol := milterfix.NewKey(t, "carol@example.org")
	st = e.subscribeAndSet("carol@example.org", carol)
	e.send(wftest.Clearsigned(t, "carol@example.org", request, st, carol))
	if _, err := e.r.Reject(context.Background(), list, "carol@example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.Store.GetMember(context.Background(), list, "carol@example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rejected member: %v", err)
	}
	if text := e.reply("carol@example.org", carol); !strings.Contains(text, "did not approve") {
		t.Fatalf("notice:\n%s", text)
	}
}

func TestKeyRevoke(t *testing.T) {
	e := newEnv(t, nil)
	bob := e.site.AddMember(t, bobAddr)
	fp := keyring.Fingerprint(bob)

	// A revocation by another key is no revocation.
	mallory := milterfix.NewKey(t, bobAddr)
	if err := mallory.Revoke(packet.KeyCompromised, "", keyring.PacketConfig(keyring.DefaultLimits, nil)); err != nil {
		t.Fatal(err)
	}
	before := e.state()
	e.refused(e.send(wftest.Mail(bobAddr, request, "key revoke", "key revoke", armored(t, mallory))), before, bobAddr, bob, "No revocation certificate")

	if err := bob.Revoke(packet.KeyCompromised, "lost", keyring.PacketConfig(keyring.DefaultLimits, nil)); err != nil {
		t.Fatal(err)
	}
	if out := e.send(wftest.Mail(bobAddr, request, "key revoke", "key revoke", armored(t, bob))); out.Result != "done" {
		t.Fatalf("revoke: %+v", out)
	}
	m := e.member(bobAddr)
	if m.State != store.MemberNeedsKey || m.Fingerprint != "" || len(m.PublicKey) != 0 || len(m.KeyIDs) != 0 {
		t.Fatalf("after revoke: %+v", m)
	}
	// The reply is not encrypted (to a revoked key) and carries a key set token.
	text := e.reply(bobAddr, nil)
	if !strings.Contains(text, "is revoked") || !strings.Contains(text, fp[:4]) {
		t.Fatalf("revoke reply:\n%s", text)
	}
	t1 := wftest.Token(t, text)

	// The set + confirm + moderation path again.
	bob2 := milterfix.NewKey(t, bobAddr)
	e.send(wftest.Mail(bobAddr, request, "key", "key set "+t1, armored(t, bob2)))
	st := wftest.Statement(t, e.reply(bobAddr, bob2))
	e.send(wftest.Clearsigned(t, bobAddr, request, st, bob2))
	if m := e.member(bobAddr); m.State != store.MemberPending || m.Fingerprint != keyring.Fingerprint(bob2) {
		t.Fatalf("after new key: %+v", m)
	}
	if _, err := e.r.Approve(context.Background(), list, bobAddr); err != nil {
		t.Fatal(err)
	}
	if m := e.member(bobAddr); m.State != store.MemberActive {
		t.Fatalf("after approve: %+v", m)
	}
}

func TestUnsubscribe(t *testing.T) {
	e := newEnv(t, nil)
	bob := e.site.AddMember(t, bobAddr)
	e.send(wftest.Mail(bobAddr, request, "bye", "unsubscribe"))
	tok := wftest.Token(t, e.reply(bobAddr, bob))
	if e.member(bobAddr).State != store.MemberActive {
		t.Fatal("unsubscribed without confirmation")
	}
	e.send(wftest.Mail(bobAddr, request, "bye", "> unsubscribe "+strings.ToLower(tok)))
	if _, err := e.r.Store.GetMember(context.Background(), list, bobAddr); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after unsubscribe: %v", err)
	}
	if text := e.reply(bobAddr, bob); !strings.Contains(text, "has been unsubscribed") {
		t.Fatalf("reply:\n%s", text)
	}
}

// Every negative case of the issue: refused with a reply that says why,
// and nothing changes.
func TestRefusals(t *testing.T) {
	// Most of these mails are unsigned, so unverified: lift the limits.
	e := newEnv(t, func(p string) string {
		return limits(100, 1000, "24h")(strings.Replace(p, "moderate_change = false", "moderate_change = true", 1))
	})
	bob := milterfix.NewKey(t, bobAddr)
	mallory := milterfix.NewKey(t, "mallory@evil.example")
	ctx := context.Background()

	// Tokens: wrong, reused, for another command, expired.
	e.send(wftest.Mail(bobAddr, request, "subscribe", "subscribe"))
	t1 := wftest.Token(t, e.reply(bobAddr, nil))
	before := e.state()
	wrong, _ := workflow.NewToken(nil)
	e.refused(e.send(wftest.Mail(bobAddr, request, "k", "key set "+wrong, armored(t, bob))), before, bobAddr, nil, "not issued by this list")
	e.refused(e.send(wftest.Mail(bobAddr, request, "k", "key confirm "+t1)), before, bobAddr, nil, `belongs to the command "key set"`)
	e.refused(e.send(wftest.Mail("eve@example.org", request, "k", "key set "+t1, armored(t, bob))), before, "eve@example.org", nil, "not issued to eve@example.org")
	e.skew = 73 * time.Hour
	e.refused(e.send(wftest.Mail(bobAddr, request, "k", "key set "+t1, armored(t, bob))), before, bobAddr, nil, "expired")
	e.skew = 0

	// Keys: for another address, oversized, flooded, weak; then a good one.
	for _, c := range []struct {
		name string
		key  []byte
		want string
	}{
		{"other address", armored(t, mallory), "has no user ID for"},
		{"oversized", fixture(t, "huge.pub.asc"), "more than the 256 KiB"},
		{"flooded", fixture(t, "flood.pub.asc"), "more than 256 signatures"},
		{"weak", fixture(t, "weak-rsa1024.pub.asc"), "at least 2048 bits"},
		{"none", nil, "No OpenPGP public key"},
	} {
		var atts [][]byte
		if c.key != nil {
			atts = append(atts, c.key)
		}
		e.refused(e.send(wftest.Mail(bobAddr, request, "k", "key set "+t1, atts...)), before, bobAddr, nil, c.want)
	}
	// The token survived every refusal above.
	e.send(wftest.Mail(bobAddr, request, "k", "key set "+t1, armored(t, bob)))
	st := wftest.Statement(t, e.reply(bobAddr, bob))
	before = e.state()
	e.refused(e.send(wftest.Mail(bobAddr, request, "k", "key set "+t1, armored(t, bob))), before, bobAddr, nil, "already been used")

	// Confirmations: signed by another key, unsigned, naming another
	// fingerprint, in the Subject.
	e.refused(e.send(wftest.Clearsigned(t, bobAddr, request, st, mallory)), before, bobAddr, nil, "no valid signature")
	e.refused(e.send(wftest.Mail(bobAddr, request, "k", st)), before, bobAddr, nil, "no valid signature")
	other := strings.Replace(st, "fingerprint: "+keyring.Fingerprint(bob), "fingerprint: "+keyring.Fingerprint(mallory), 1)
	e.refused(e.send(wftest.Clearsigned(t, bobAddr, request, other, bob)), before, bobAddr, nil, "names the key")
	tok := wftest.Token(t, st)
	e.refused(e.send(wftest.Mail(bobAddr, request, "Re: key confirm "+tok, "")), before, bobAddr, nil, "not the Subject")
	// A statement whose unsigned part carries the command.
	e.refused(e.send(wftest.Mail(bobAddr, request, "k", "key confirm "+tok+"\n"+mustClearsign(t, st, bob))), before, bobAddr, nil, "no valid signature")

	// The right one still works (the token survived), and only once.
	if out := e.send(wftest.Clearsigned(t, bobAddr, request, st, bob)); out.Result != "done" {
		t.Fatalf("confirm: %+v", out)
	}
	if _, err := e.r.Approve(ctx, list, bobAddr); err != nil {
		t.Fatal(err)
	}

	// Key change confirmed by the new key only; and a statement for another list.
	bob2 := milterfix.NewKey(t, bobAddr)
	e.send(wftest.Mail(bobAddr, request, "k", "key change", armored(t, bob2)))
	st2 := wftest.Statement(t, e.reply(bobAddr, bob2))
	before = e.state()
	e.refused(e.send(wftest.Clearsigned(t, bobAddr, request, st2, bob2)), before, bobAddr, bob, "signed by the NEW key")
	e.refused(e.send(wftest.Clearsigned(t, bobAddr, request, strings.Replace(st2, "list: "+list, "list: other@lists.example.org", 1), bob)), before, bobAddr, bob, "list: "+list)
	e.refused(e.send(wftest.Mail(bobAddr, request, "k", "key change", armored(t, bob))), before, bobAddr, bob, "already your registered key")

	// Not commands at all.
	e.refused(e.send(wftest.Mail(bobAddr, request, "hello", "Hi, how do I join?")), before, bobAddr, bob, "No command was found")
	e.refused(e.send(wftest.Mail(bobAddr, request, "k", "key set 1234")), before, bobAddr, bob, "not a token")
}

func mustClearsign(t *testing.T, body string, k *openpgp.Entity) string {
	t.Helper()
	m := wftest.Clearsigned(t, "x@example.org", request, body, k)
	_, b, _ := strings.Cut(string(m), "\r\n\r\n")
	return b
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "keys", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Automatic mail gets no answer (RFC 3834); garbage and unknown lists map
// to the right exit codes.
func TestIgnoredAndExitCodes(t *testing.T) {
	e := newEnv(t, nil)
	for _, hdr := range []string{"Auto-Submitted: auto-replied\r\n", "Precedence: bulk\r\n", "Return-Path: <>\r\n"} {
		msg := []byte(hdr + string(wftest.Mail(bobAddr, request, "x", "help")))
		if out := e.send(msg); out.Result != "ignored" {
			t.Errorf("%q: %+v", hdr, out)
		}
	}
	if out := e.send(wftest.Mail(request, request, "x", "help")); out.Result != "ignored" {
		t.Errorf("from itself: %+v", out)
	}
	if len(e.mail.Messages()) != 0 {
		t.Fatalf("answered automatic mail: %d", len(e.mail.Messages()))
	}
	ctx := context.Background()
	_, err := e.r.Handle(ctx, []byte("no header at all\x00\r\n\r\n"), request)
	if workflow.ExitCode(err) != workflow.ExitDataErr {
		t.Errorf("garbage: %v -> %d", err, workflow.ExitCode(err))
	}
	_, err = e.r.Handle(ctx, []byte("Subject: x\r\n\r\nhelp\r\n"), request)
	if workflow.ExitCode(err) != workflow.ExitDataErr {
		t.Errorf("no From: %v -> %d", err, workflow.ExitCode(err))
	}
	_, err = e.r.Handle(ctx, wftest.Mail(bobAddr, request, "x", "help"), "nobody-request@lists.example.org")
	if workflow.ExitCode(err) != workflow.ExitNoUser {
		t.Errorf("unknown list: %v -> %d", err, workflow.ExitCode(err))
	}
	// The recipient may come from the headers.
	if out, err := e.r.Handle(ctx, wftest.Mail(bobAddr, request, "x", "help"), ""); err != nil || out.Result != "done" {
		t.Errorf("recipient from To: %+v %v", out, err)
	}
	// The reply cannot be submitted: the command is done (exit 0, the MTA
	// does not run it again) and its reply waits in the outbox; the next
	// run sends its own reply, then the waiting one, exactly once.
	before := len(e.mail.Messages())
	e.mail.Err = errors.New("connection refused")
	out, err := e.r.Handle(ctx, wftest.Mail(bobAddr, request, "x", "subscribe"), request)
	if workflow.ExitCode(err) != workflow.ExitOK || out.Result != "done" {
		t.Errorf("mailer down: %+v %v -> %d", out, err, workflow.ExitCode(err))
	}
	if n, _ := e.r.Store.CountOutbox(ctx, list); n != 1 {
		t.Errorf("outbox rows while the mailer is down: %d, want 1", n)
	}
	e.mail.Err = nil
	e.send(wftest.Mail("carol@example.org", request, "x", "help"))
	e.send(wftest.Mail("carol@example.org", request, "x", "help"))
	msgs := e.mail.Messages()[before:]
	if len(msgs) != 3 || msgs[0].To[0] != "carol@example.org" || msgs[1].To[0] != bobAddr || msgs[2].To[0] != "carol@example.org" {
		t.Fatalf("after the mailer came back: %d mails", len(msgs))
	}
	if text := e.reply(bobAddr, nil); wftest.Token(t, text) == "" {
		t.Errorf("the waiting reply:\n%s", text)
	}
	if n, _ := e.r.Store.CountOutbox(ctx, list); n != 0 {
		t.Errorf("outbox rows left: %d", n)
	}
}
