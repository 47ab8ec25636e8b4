package milter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// waitSink waits until ok holds for what the sink received, or fails.
func waitSink(t *testing.T, sink *rig.Sink, what string, ok func([]rig.Delivered) bool) []rig.Delivered {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msgs := sink.Messages()
		if ok(msgs) {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: the sink has %d messages", what, len(msgs))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		sink.Wait(ctx, len(msgs)+1)
		cancel()
	}
}

// No way around the milter. Through a real Postfix routed as
// contrib/postfix says (recipient_delimiter "+", a domain of its own for
// the % hack and bang paths, the list address on the error transport):
// every spelling Postfix delivers to the list address is handled as a
// list post by the milter, and what the milter cannot see (a virtual
// alias, the reinjection port) is refused by Postfix, never delivered in
// clear. The request and bounce addresses keep their routes.
func TestNoWayAroundTheMilter(t *testing.T) {
	rig.Require(t)
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	bob := site.AddMember(t, "bob@example.org")
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := rig.Start(t, rig.Options{
		MilterAddr: "unix:" + sock,
		ListRoutes: []string{milterfix.List},
		Tables: map[string]string{"virtual": "alias@lists.example.org\tdevs@lists.example.org\n" +
			"team@example.org\tdevs@lists.example.org, carol@example.net\n"},
		ExtraMain: map[string]string{
			"recipient_delimiter": "+",
			"mydestination":       "$myhostname",
			"virtual_alias_maps":  "hash:$config_directory/virtual",
		},
		// The responder's route, played by discard(8) under its name.
		ExtraMaster: "\nlistcrypt-responder unix - - n - - discard\n  -o syslog_name=postfix/listcrypt-responder\n",
	})
	site.Config.Reinject.Address = pf.ReinjectAddr()
	startDaemon(t, site)
	sink := pf.Sink()
	own := "@" + rig.Hostname // a domain of Postfix's own (mydestination)

	// 1. Plain posts to every spelling of the list: the milter takes each
	// for the list, whose policy refuses what is not encrypted.
	const canary = "ESCAPE-CANARY"
	spellings := []string{
		"devs+x@lists.example.org",
		"DEVS@LISTS.EXAMPLE.ORG",
		"Devs+Tag@Lists.Example.Org",
		`"devs"@lists.example.org`,
		`"d\evs"@lists.example.org`,
		`"devs+x"@lists.example.org`,
		"devs@lists.example.org.",
		"@relay.example.net:devs@lists.example.org",
		"devs%lists.example.org" + own,
		"devs+x%lists.example.org" + own,
		"lists.example.org!devs" + own,
		`"devs@lists.example.org"` + own,
	}
	for i, rcpt := range spellings {
		msg := milterfix.Build(t, milterfix.Post{From: "mallory@example.net", Body: fmt.Sprintf("%s %d", canary, i)})
		err := rig.Send(pf.SMTPAddr(), "mallory@example.net", []string{rcpt}, msg)
		var se *rig.SMTPError
		if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Message, "accepts only posts encrypted") {
			t.Errorf("plain post to <%s>: %v, want the list's 550 refusal", rcpt, err)
		}
	}
	// Also with another recipient in the transaction.
	msg := milterfix.Build(t, milterfix.Post{From: "mallory@example.net", Body: canary + " mixed"})
	if err := rig.Send(pf.SMTPAddr(), "mallory@example.net", []string{"carol@example.net", "devs+y@lists.example.org"}, msg); err == nil {
		t.Error("plain post to carol and devs+y@: accepted")
	}

	// 2. Encrypted posts to other spellings reach the members encrypted,
	// and nothing bounces.
	posts := []string{"devs+x@lists.example.org", `"devs"@lists.example.org`, "devs%lists.example.org" + own}
	for _, rcpt := range posts {
		msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice,
			EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "posted to " + rcpt})
		if err := rig.Send(pf.SMTPAddr(), "alice@example.org", []string{rcpt}, msg); err != nil {
			t.Fatalf("encrypted post to <%s>: %v", rcpt, err)
		}
	}
	got := waitCopies(t, sink, "devs-bounces@lists.example.org", 2*len(posts))
	if got["alice@example.org"] != len(posts) || got["bob@example.org"] != len(posts) || len(got) != 2 {
		t.Fatalf("list copies: %v", got)
	}
	for _, m := range sink.Messages() {
		if m.From == "devs-bounces@lists.example.org" {
			if pt := milterfix.DecryptCopy(t, m.Data, bob, site.ListKey); !bytes.Contains(pt, []byte("posted to ")) {
				t.Fatalf("list copy decrypts to %q", pt)
			}
		}
	}

	// 3. What the milter cannot see: a virtual alias of the list (alone
	// and with another target), and the reinjection port, which has no
	// milter. Postfix refuses the list address itself.
	before := len(sink.Messages())
	attacks := []struct {
		addr string
		rcpt []string
	}{
		{pf.SMTPAddr(), []string{"alias@lists.example.org"}},
		{pf.SMTPAddr(), []string{"team@example.org"}},
		{pf.SMTPAddr(), []string{"alias+z@lists.example.org"}},
		{pf.ReinjectAddr(), []string{"devs@lists.example.org"}},
		{pf.ReinjectAddr(), []string{"devs+z@lists.example.org"}},
		{pf.ReinjectAddr(), []string{"DEVS@lists.example.org"}},
	}
	for i, a := range attacks {
		msg := milterfix.Build(t, milterfix.Post{From: "mallory@example.net", Body: fmt.Sprintf("%s alias %d", canary, i)})
		if err := rig.Send(a.addr, "mallory@example.net", a.rcpt, msg); err != nil {
			t.Logf("%v refused at SMTP: %v", a.rcpt, err) // refusing is fine too
		}
	}
	// Each attack comes back to its sender as a bounce; carol, a real
	// target of team@, gets hers.
	msgs := waitSink(t, sink, "the bounces", func(ms []rig.Delivered) bool {
		n := 0
		for _, m := range ms[before:] {
			if m.From == "" {
				n++
			}
		}
		return n >= len(attacks)
	})
	for _, m := range msgs {
		if !bytes.Contains(m.Data, []byte(canary)) {
			continue
		}
		switch {
		case m.From == "" && len(m.To) == 1 && m.To[0] == "mallory@example.net":
			// The sender's own text back to the sender.
		case m.From == "mallory@example.net" && strings.Join(m.To, ",") == "carol@example.net":
			// team@'s other target.
		default:
			t.Errorf("a plain post escaped the list: from <%s> to %v", m.From, m.To)
		}
	}
	ml := pf.Maillog()
	if n := strings.Count(ml, "status=bounced (this list takes mail only at its own address"); n < len(attacks) {
		t.Errorf("%d bounces by the list's error transport in the maillog, want %d", n, len(attacks))
	}
	for _, line := range strings.Split(ml, "\n") {
		if strings.Contains(line, "to=<devs") && strings.Contains(line, "status=sent") && !strings.Contains(line, "to=<devs-") {
			t.Errorf("delivered to the list address: %s", line)
		}
	}

	// 4. The request address (with an extension) still reaches the
	// responder, and the bounce address its own route: neither is taken
	// for the list.
	req := []byte("From: dora@example.net\r\nTo: devs-request@lists.example.org\r\nSubject: help\r\nMessage-ID: <req@x>\r\n\r\nhelp\r\n")
	if err := rig.Send(pf.SMTPAddr(), "dora@example.net", []string{"devs-request+x@lists.example.org"}, req); err != nil {
		t.Fatalf("request mail: %v", err)
	}
	dsn := []byte("From: MAILER-DAEMON@example.net\r\nTo: devs-bounces@lists.example.org\r\nSubject: Undelivered\r\nMessage-ID: <dsn@x>\r\n\r\nno such user\r\n")
	if err := rig.Send(pf.SMTPAddr(), "", []string{"devs-bounces@lists.example.org"}, dsn); err != nil {
		t.Fatalf("bounce to the bounce address: %v", err)
	}
	// Both reach the responder's transport (a discard service here): the
	// request address for commands, the bounce address for bounces
	// (docs/bounces.md).
	want := []string{"to=<devs-request+x@lists.example.org>", "to=<devs-bounces@lists.example.org>"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, line := range strings.Split(pf.Maillog(), "\n") {
			if strings.Contains(line, "postfix/listcrypt-responder/discard") && strings.Contains(line, "status=sent") {
				for _, w := range want {
					if strings.Contains(line, w) {
						n++
					}
				}
			}
		}
		if n == len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request and bounce mail did not both go to the responder's transport (%d of %d)", n, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, line := range strings.Split(pf.Maillog(), "\n") {
		if strings.Contains(line, "postfix/listcrypt-responder/discard") &&
			!(strings.Contains(line, want[0]) || strings.Contains(line, want[1])) {
			t.Errorf("responder transport: %s", line)
		}
	}
	t.Logf("through postfix: %d spellings of the list taken for it, %d ways around the milter bounced, request and bounce addresses routed to the responder", len(spellings), len(attacks))
}
