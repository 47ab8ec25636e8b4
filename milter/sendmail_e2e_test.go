package milter_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	smrig "github.com/listcrypt/listcrypt/contrib/sendmail/rig"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// A real Sendmail 8.17 (contrib/sendmail/listcrypt.mc: F=T, the queue id
// at end of message, the reinjection listener without milters) with
// listcrypt-milter on a unix socket: a member's signed, encrypted post
// reaches every member exactly once, encrypted to the member; a plain
// post is refused with listcrypt's reply during the SMTP dialogue; each
// decision line carries Sendmail's queue id; with the milter stopped
// Sendmail answers 4xx (fail closed).
func TestEndToEndThroughSendmail(t *testing.T) {
	smrig.Require(t)
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	bob := site.AddMember(t, "bob@example.org")
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	sm := smrig.Start(t, smrig.Options{MilterAddr: "unix:" + sock})
	site.Config.Reinject.Address = sm.ReinjectAddr()
	d, logs := startDaemon(t, site)
	list := []*openpgp.Entity{site.ListKey}
	send := func(from string, msg []byte) error {
		t.Helper()
		return rig.Send(sm.SMTPAddr(), from, []string{milterfix.List}, msg)
	}

	good := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: "hello through sendmail"})
	if err := send("alice@example.org", good); err != nil {
		t.Fatalf("good post refused: %v", err)
	}
	err := send("alice@example.org", milterfix.Build(t, milterfix.Post{From: "alice@example.org", Body: "plain"}))
	var se *rig.SMTPError
	const text = `5.7.1 devs@lists.example.org accepts only posts encrypted to the list key; send "key get" to devs-request@lists.example.org`
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Error(), text) {
		t.Fatalf("plain post: got %v, want 550 %s", err, text)
	}

	// Exactly once: when the queue is empty again, each member has had
	// one copy, from the list's bounce address, that decrypts with the
	// member's key.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sm.Sink().Wait(ctx, 1); err != nil {
		t.Fatalf("no copy delivered: %v", err)
	}
	if err := sm.WaitQueueEmpty(ctx); err != nil {
		t.Fatalf("queue: %v", err)
	}
	copies := smCopies(t, sm.Sink().Messages())
	for _, m := range []struct {
		addr string
		key  *openpgp.Entity
	}{{"alice@example.org", alice}, {"bob@example.org", bob}} {
		got := copies[m.addr]
		if len(got) != 1 {
			t.Fatalf("%s got %d copies, want 1", m.addr, len(got))
		}
		if bytes.Contains(got[0], []byte("hello through sendmail")) {
			t.Fatal("a member copy carries the post in clear")
		}
		if pt := milterfix.DecryptCopy(t, got[0], m.key, site.ListKey); !bytes.Contains(pt, []byte("hello through sendmail")) {
			t.Fatalf("%s's copy decrypts to %q", m.addr, pt)
		}
	}
	if len(copies) != 2 {
		t.Fatalf("copies for %d addresses, want alice and bob only", len(copies))
	}
	t.Logf("%d deliveries at the sink, one copy for each member", len(sm.Sink().Messages()))

	// Both decisions are logged with the queue id Sendmail gave the
	// transaction (macro i).
	maillog := sm.Maillog()
	for _, want := range []string{"action=accept", "action=reject reason=not-encrypted"} {
		id := smDecisionQueueID(t, logs.String(), want)
		t.Logf("%s: Sendmail queue id %s", want, id)
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(id) + `: from=<alice@example\.org>`).MatchString(maillog) {
			t.Errorf("decision %q has queue_id=%s, which Sendmail's log does not give to alice's transaction:\n%s", want, id, maillog)
		}
	}

	// Fail closed: with the milter stopped, Sendmail answers 4xx.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := d.Shutdown(sctx); err != nil {
		t.Logf("shutdown: %v", err)
	}
	err = send("alice@example.org", milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list}))
	if !errors.As(err, &se) || !se.Temporary() {
		t.Fatalf("milter down: got %v, want a 4xx", err)
	}
	t.Logf("milter down: %v", err)
}

// smCopies maps each member address to the list copies (mail from the
// list's bounce address) delivered to it.
func smCopies(t *testing.T, msgs []rig.Delivered) map[string][][]byte {
	t.Helper()
	out := map[string][][]byte{}
	for _, m := range msgs {
		if m.From != "devs-bounces@lists.example.org" {
			t.Fatalf("unexpected delivery from <%s> to %v:\n%s", m.From, m.To, m.Data)
		}
		for _, r := range m.To {
			out[r] = append(out[r], m.Data)
		}
	}
	return out
}

// smDecisionQueueID returns the queue_id of the one decision line of the
// milter log that contains want.
func smDecisionQueueID(t *testing.T, log, want string) string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, want) {
			continue
		}
		m := regexp.MustCompile(`\bqueue_id=(\S+)`).FindStringSubmatch(line)
		if m == nil || m[1] == `""` {
			t.Fatalf("decision line without a queue id: %s", line)
		}
		ids = append(ids, m[1])
	}
	if len(ids) != 1 {
		t.Fatalf("%d decision lines with %q, want 1:\n%s", len(ids), want, log)
	}
	return ids[0]
}
