package workflow_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

const (
	bounces   = "devs-bounces@lists.example.org"
	ownerAddr = "owner@example.org"
)

// dsnMail is a Postfix-style delivery status notification to the
// bounce address to, reporting rcpt with status.
func dsnMail(to, rcpt, status string) []byte {
	action := "failed"
	if strings.HasPrefix(status, "4") {
		action = "delayed"
	}
	s := fmt.Sprintf(`From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: %s
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"
Message-Id: <dsn-%d@mx.example.org>

--B
Content-Type: text/plain

This is the mail system at host mx.example.org.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; %s
Action: %s
Status: %s
Diagnostic-Code: smtp; 550 %s mailbox gone

--B
Content-Type: text/rfc822-headers

From: devs@lists.example.org
Subject: ...

--B--
`, to, time.Now().UnixNano(), rcpt, action, status, status)
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// handleAt hands msg to the responder as delivered to rcpt.
func (e *env) handleAt(msg []byte, rcpt string) *workflow.Outcome {
	e.t.Helper()
	out, err := e.r.Handle(context.Background(), msg, rcpt)
	if err != nil {
		e.t.Fatalf("Handle: %v", err)
	}
	return out
}

func (e *env) bounceState(addr string) store.BounceState {
	e.t.Helper()
	states, err := e.r.Store.BounceStates(context.Background(), list)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range states {
		if s.Address == addr {
			return s
		}
	}
	return store.BounceState{}
}

func withBounces(rules string) func(string) string {
	return func(p string) string { return p + "\n[bounces]\n" + rules + "\n" }
}

// A member's address that bounces on two days is disabled at threshold
// 2 (VERP: the envelope names the member whatever the report says); the
// owner (no key: signed, in clear) and the member (encrypted to its key)
// are told once, with a null envelope sender; further bounces change
// nothing.
func TestBounceDisablesMember(t *testing.T) {
	e := newEnv(t, withBounces("score_threshold = 2"))
	bob := e.site.AddMember(t, bobAddr)
	verp := "devs-bounces+bob=example.org@lists.example.org"
	// The report names the address a forward expanded to: VERP decides.
	out := e.handleAt(dsnMail(verp, "bob@mailhost.example.net", "5.1.1"), verp)
	if out.Result != "counted" || out.Reason != bobAddr || out.Command != "bounce" {
		t.Fatalf("outcome %+v", out)
	}
	if st := e.bounceState(bobAddr); st.Score != 1 || st.Disabled() || st.LastStatus != "5.1.1" {
		t.Fatalf("after one bounce: %+v", st)
	}
	// The same day again: not counted.
	e.handleAt(dsnMail(verp, bobAddr, "5.1.1"), verp)
	if st := e.bounceState(bobAddr); st.Score != 1 || len(e.mail.Messages()) != 0 {
		t.Fatalf("same day: %+v, %d mails", st, len(e.mail.Messages()))
	}
	e.skew = 25 * time.Hour
	e.handleAt(dsnMail(verp, bobAddr, "5.1.1"), verp)
	st := e.bounceState(bobAddr)
	if st.Score != 2 || !st.Disabled() {
		t.Fatalf("after the second day: %+v", st)
	}
	dis, _ := e.r.Store.DeliveryDisabled(context.Background(), list)
	if !dis[bobAddr] {
		t.Fatal("delivery not disabled in the store")
	}
	toOwner, toBob := e.mail.To(ownerAddr), e.mail.To(bobAddr)
	if len(toOwner) != 1 || len(toBob) != 1 || len(e.mail.Messages()) != 2 {
		t.Fatalf("notices: %d to the owner, %d to bob, %d in all", len(toOwner), len(toBob), len(e.mail.Messages()))
	}
	for _, m := range e.mail.Messages() {
		if m.From != "" {
			t.Errorf("notice to %v has envelope sender %q, want <> (no bounce loops)", m.To, m.From)
		}
	}
	owner := wftest.Open(t, toOwner[0].Data, nil, e.site.ListKey)
	for _, want := range []string{bobAddr, "listcrypt member enable " + list + " " + bobAddr, "status 5.1.1", "mailbox gone"} {
		if !strings.Contains(owner, want) {
			t.Errorf("owner notice lacks %q:\n%s", want, owner)
		}
	}
	if !bytes.Contains(toBob[0].Data, []byte("-----BEGIN PGP MESSAGE-----")) {
		t.Error("the member's notice is not encrypted")
	}
	if text := wftest.Open(t, toBob[0].Data, bob, e.site.ListKey); !strings.Contains(text, "stopped sending") {
		t.Errorf("member notice:\n%s", text)
	}
	// Disabled: later bounces count nothing and tell nobody.
	e.skew = 50 * time.Hour
	e.handleAt(dsnMail(verp, bobAddr, "5.1.1"), verp)
	if st := e.bounceState(bobAddr); st.Score != 2 || len(e.mail.Messages()) != 2 {
		t.Fatalf("after disabling: %+v, %d mails", st, len(e.mail.Messages()))
	}
}

// Without VERP the report names the member; temporary failures count
// half; names that are no member's are left alone; action "notify" tells
// the owner and keeps delivering.
func TestBounceFromReport(t *testing.T) {
	e := newEnv(t, withBounces("score_threshold = 1\naction = \"notify\""))
	e.site.AddMember(t, bobAddr)
	out := e.handleAt(dsnMail(bounces, bobAddr, "4.2.2"), bounces)
	if out.Result != "counted" {
		t.Fatalf("outcome %+v", out)
	}
	if st := e.bounceState(bobAddr); st.Score != 0.5 || len(e.mail.Messages()) != 0 {
		t.Fatalf("temporary: %+v", st)
	}
	e.skew = 25 * time.Hour
	e.handleAt(dsnMail(bounces, bobAddr, "4.2.2"), bounces)
	st := e.bounceState(bobAddr)
	if st.Score != 1 || st.Disabled() {
		t.Fatalf("notify: %+v", st)
	}
	if len(e.mail.To(ownerAddr)) != 1 || len(e.mail.To(bobAddr)) != 0 {
		t.Fatalf("notify: %d to the owner, %d to bob", len(e.mail.To(ownerAddr)), len(e.mail.To(bobAddr)))
	}
	if text := wftest.Open(t, e.mail.To(ownerAddr)[0].Data, nil, e.site.ListKey); !strings.Contains(text, "Nothing was changed") {
		t.Errorf("owner notice:\n%s", text)
	}
	// A VERP extension naming a stranger, and a report naming one: no
	// record, the owner gets it as a bounce naming no member.
	stranger := "devs-bounces+eve=example.org@lists.example.org"
	if out := e.handleAt(dsnMail(stranger, "eve@example.org", "5.1.1"), stranger); out.Result != "forwarded" || out.Reason != workflow.BounceUnattributed {
		t.Fatalf("stranger via VERP: %+v", out)
	}
	if out := e.handleAt(dsnMail(bounces, "eve@example.org", "5.1.1"), bounces); out.Result != "forwarded" {
		t.Fatalf("stranger in the report: %+v", out)
	}
	if st := e.bounceState("eve@example.org"); st.Address != "" {
		t.Fatalf("a stranger got a record: %+v", st)
	}
	if len(e.mail.To(ownerAddr)) != 3 {
		t.Fatalf("%d mails to the owner, want 3", len(e.mail.To(ownerAddr)))
	}
}

// What is no member's bounce goes to the owners: encrypted with the mail
// attached to an owner with a key on the list, a header summary only to
// an owner without (an auto-reply may quote a post in clear). Anyone can
// write to the bounce address: forwards are rate limited per From.
func TestBounceAddressForwards(t *testing.T) {
	e := newEnv(t, func(p string) string {
		p = strings.Replace(p, `owners = ["owner@example.org"]`, `owners = ["owner@example.org", "keyed@example.org"]`, 1)
		return strings.Replace(p, "max_replies_per_address = 5", "max_replies_per_address = 2", 1)
	})
	keyed := e.site.AddMember(t, "keyed@example.org")
	const canary = "QUOTED-POST-CANARY"
	auto := []byte(strings.ReplaceAll("From: Bob <bob@example.org>\nTo: devs-bounces@lists.example.org\nSubject: Out of Office: "+canary+"\nAuto-Submitted: auto-replied\n\nI am away. > "+canary+"\n", "\n", "\r\n"))
	out := e.handleAt(auto, bounces)
	if out.Result != "forwarded" || out.Reason != workflow.BounceAutoReply {
		t.Fatalf("outcome %+v", out)
	}
	plain := e.mail.To(ownerAddr)
	enc := e.mail.To("keyed@example.org")
	if len(plain) != 1 || len(enc) != 1 {
		t.Fatalf("%d plain, %d encrypted forwards", len(plain), len(enc))
	}
	if bytes.Contains(plain[0].Data, []byte("I am away")) {
		t.Errorf("the forward to an owner without a key carries the text in clear:\n%s", plain[0].Data)
	}
	if text := wftest.Open(t, plain[0].Data, nil, e.site.ListKey); !strings.Contains(text, "automatic reply") || !strings.Contains(text, "bob@example.org") {
		t.Errorf("summary:\n%s", text)
	}
	if bytes.Contains(enc[0].Data, []byte(canary)) {
		t.Error("the encrypted forward shows the canary outside the encryption")
	}
	res := decrypted(t, enc[0].Data, keyed)
	if !bytes.Contains(res, []byte("message/rfc822")) || !bytes.Contains(res, []byte("I am away. > "+canary)) {
		t.Errorf("the encrypted forward lacks the attached mail:\n%s", res)
	}
	// Garbage and human mail go the same way; the third mail from one
	// From address within the window is not forwarded.
	e.handleAt([]byte("From: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n"), bounces)
	e.handleAt([]byte("From: bob@example.org\r\nSubject: hi again\r\n\r\nhello\r\n"), bounces)
	if n := len(e.mail.To(ownerAddr)); n != 2 {
		t.Errorf("%d forwards to one owner from one address, want 2 (max_replies_per_address)", n)
	}
	e.handleAt([]byte("\x00\x01 not a mail"), bounces)
	if n := len(e.mail.To(ownerAddr)); n != 3 {
		t.Errorf("garbage from another (no) address: %d forwards, want 3", n)
	}
	counts, _, err := e.r.Store.BounceCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, c := range counts {
		got[c.Kind] = c.N
	}
	if got[workflow.BounceAutoReply] != 1 || got[workflow.BounceOther] != 3 {
		t.Errorf("counters %v", got)
	}
}

// The request address is still the responder's; a bounce address with
// a "+" extension of another list's local part is not this list's.
func TestBounceAddressRouting(t *testing.T) {
	e := newEnv(t, nil)
	e.site.AddMember(t, bobAddr)
	if out := e.handleAt(wftest.Mail(bobAddr, request, "help", "help"), request); out.Command != "help" {
		t.Fatalf("request address: %+v", out)
	}
	for _, rcpt := range []string{"devs-bouncesx@lists.example.org", "devs-bounces@other.example.org", "devs-bounce+bob=example.org@lists.example.org"} {
		if _, err := e.r.Handle(context.Background(), dsnMail(rcpt, bobAddr, "5.1.1"), rcpt); err == nil {
			t.Errorf("%s taken for the bounce address", rcpt)
		}
	}
	if st := e.bounceState(bobAddr); st.Address != "" {
		t.Fatalf("record from a wrong address: %+v", st)
	}
	// Upper case and the headers (no recipient given) find it too.
	verp := "DEVS-Bounces+Bob=Example.org@Lists.Example.org"
	if out := e.handleAt(dsnMail(verp, bobAddr, "5.1.1"), verp); out.Result != "counted" || out.Reason != bobAddr {
		t.Fatalf("upper case: %+v", out)
	}
	msg := append([]byte("Delivered-To: devs-bounces+bob=example.org@lists.example.org\r\n"), dsnMail(bounces, "x@example.org", "5.1.1")...)
	e.skew = 25 * time.Hour
	if out, err := e.r.Handle(context.Background(), msg, ""); err != nil || out.Result != "counted" || out.Reason != bobAddr {
		t.Fatalf("from Delivered-To: %+v %v", out, err)
	}
}

// decrypted is the plaintext of an encrypted message to key.
func decrypted(t *testing.T, data []byte, key *openpgp.Entity) []byte {
	t.Helper()
	res, err := inbound.Examine(inbound.Input{Message: data, ListKey: key, Now: time.Now()})
	if err != nil || !res.Encrypted {
		t.Fatalf("decrypt: %v (encrypted %v)", err, res != nil && res.Encrypted)
	}
	return res.Plaintext
}

// An mbox envelope line before the header (Sendmail's prog mailer
// without F=n) is no header: the mail is read as if it were not there.
func TestEnvelopeLineBeforeHeader(t *testing.T) {
	e := newEnv(t, nil)
	e.site.AddMember(t, bobAddr)
	msg := append([]byte("From bob@example.org  Thu Dec  3 18:00:00 2026\n"), wftest.Mail(bobAddr, request, "help", "help")...)
	if out := e.handleAt(msg, request); out.Command != "help" || out.Result != "done" {
		t.Fatalf("command behind an envelope line: %+v", out)
	}
	verp := "devs-bounces+bob=example.org@lists.example.org"
	msg = append([]byte("From MAILER-DAEMON  Thu Dec  3 18:00:00 2026\r\n"), dsnMail(verp, bobAddr, "5.1.1")...)
	if out := e.handleAt(msg, verp); out.Result != "counted" {
		t.Fatalf("bounce behind an envelope line: %+v", out)
	}
}
