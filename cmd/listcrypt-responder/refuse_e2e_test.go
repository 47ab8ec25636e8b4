package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix"
	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	smrig "github.com/listcrypt/listcrypt/contrib/sendmail/rig"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

// The Sendmail route of the list address (contrib/sendmail's alias
// "devs: :include:devs.include", whose program is listcrypt-responder
// --refuse), through the rig's real Sendmail with the milter:
//   - a member's post to devs@ through the public port is encrypted to
//     the members and never reaches the route (the milter takes the list
//     address out of the transaction before Sendmail expands the alias);
//   - mail to devs@ that goes around the milter (the reinjection port,
//     milters off) bounces to its sender with the 5.7.1 refusal, and
//     nothing of it reaches anyone else;
//   - mail to an alias of the list address passes the milter as ordinary
//     mail and bounces the same way.
func TestListAddressRefusedThroughSendmail(t *testing.T) {
	began := time.Now()
	const (
		alice   = "alice@example.org"
		bob     = "bob@example.org"
		mallory = "mallory@example.org"
	)
	var aliceKey *openpgp.Entity
	s := startRig(t, "sendmail", func(site *milterfix.Site) {
		aliceKey = site.AddMember(t, alice)
		site.AddMember(t, bob)
	})
	sm := s.pf.(*smrig.Sendmail)
	sink := sm.Sink()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	settle := func(stage string) {
		t.Helper()
		if err := sm.WaitQueueEmpty(ctx); err != nil {
			t.Fatalf("%s: queue not empty: %v\n%s", stage, err, sm.Maillog())
		}
	}
	// refusals are the runs of the route in the maillog (its prog
	// mailer's delivery lines name the command).
	refusals := func() int { return strings.Count(sm.Maillog(), " --refuse") }

	// (a) A real post: encrypted to both members, the route untouched.
	const postCanary = "post CANARY-4f0c"
	msg := milterfix.Build(t, milterfix.Post{From: alice, SignWith: aliceKey, EncryptTo: []*openpgp.Entity{s.site.ListKey}, Body: postCanary})
	if err := rig.Send(sm.SMTPAddr(), alice, []string{list}, msg); err != nil {
		t.Fatalf("post refused: %v", err)
	}
	if got, err := sink.Wait(ctx, 1); err != nil {
		t.Fatalf("members' copies: %v (%d delivered)", err, len(got))
	}
	settle("post")
	var members []string
	for _, m := range sink.Messages() {
		if m.From != "devs-bounces@lists.example.org" || !bytes.Contains(m.Data, []byte("-----BEGIN PGP MESSAGE-----")) || bytes.Contains(m.Data, []byte(postCanary)) {
			t.Fatalf("not the members' encrypted copy: from %q to %q\n%s", m.From, m.To, m.Data)
		}
		members = append(members, m.To...)
	}
	slices.Sort(members)
	if !slices.Equal(members, []string{alice, bob}) {
		t.Fatalf("copies to %q, want each member once", members)
	}
	if n := refusals(); n != 0 {
		t.Fatalf("the post reached the list address's route:\n%s", sm.Maillog())
	}

	// bounced sends a message from mallory to rcpt at addr and checks
	// that it bounces to mallory with the refusal, and that nobody else
	// gets anything of it.
	bounced := func(stage, addr, rcpt, canary string) {
		t.Helper()
		before := len(sink.Messages())
		msg := wftest.Mail(mallory, rcpt, "around the milter", canary)
		if err := rig.Send(addr, mallory, []string{rcpt}, msg); err != nil {
			t.Fatalf("%s: refused at SMTP (want a bounce after delivery): %v", stage, err)
		}
		if got, err := sink.Wait(ctx, before+1); err != nil {
			t.Fatalf("%s: no bounce: %v (%d delivered)\n%s", stage, err, len(got), sm.Maillog())
		}
		settle(stage)
		var dsn []rig.Delivered
		for _, m := range sink.Messages()[before:] {
			if len(m.To) != 1 || m.To[0] != mallory || m.From != "" {
				t.Fatalf("%s: delivered from %q to %q, want only a bounce to the sender:\n%s", stage, m.From, m.To, m.Data)
			}
			dsn = append(dsn, m)
		}
		if len(dsn) != 1 {
			t.Fatalf("%s: %d bounces", stage, len(dsn))
		}
		// Sendmail's DSN for a program's exit 77: what the program wrote
		// is the transcript, the status is its own (5.3.0, "Insufficient
		// permission"), the exit code the diagnostic.
		m := dsn[0]
		report, _, _ := bytes.Cut(m.Data, []byte("Content-Type: message/rfc822"))
		for _, want := range []string{
			"----- Transcript of session follows -----\r\n" + postfix.RefusalText + "\r\n",
			"Final-Recipient: RFC822; " + rcpt + "\r\n",
			"Action: failed\r\n",
			"Status: 5.",
			"Diagnostic-Code: X-Unix; 77\r\n",
		} {
			if !bytes.Contains(report, []byte(want)) {
				t.Fatalf("%s: the bounce lacks %q:\n%s", stage, want, m.Data)
			}
		}
	}

	// (b) Around the milter: the reinjection port has milters off.
	bounced("reinjection port", sm.ReinjectAddr(), list, "leak CANARY-8b21")
	if n := refusals(); n != 1 {
		t.Fatalf("%d runs of the route, want 1:\n%s", n, sm.Maillog())
	}
	// (c) An alias of the list address, through the public port.
	bounced("alias", sm.SMTPAddr(), listAlias+"@lists.example.org", "alias CANARY-27d5")
	if n := refusals(); n != 2 {
		t.Fatalf("%d runs of the route, want 2:\n%s", n, sm.Maillog())
	}
	t.Logf("through sendmail: a post to the list encrypted to 2 members without touching the list address's route; mail to the list address from the reinjection port and through an alias bounced with %q to the sender only (%v)",
		postfix.RefusalText, time.Since(began).Round(time.Millisecond))
}
