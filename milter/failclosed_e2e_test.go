package milter_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-smtp"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// Fail closed through a real MTA (Postfix: milter_default_action =
// tempfail; Sendmail: F=T in listcrypt.mc), with the real listcrypt-milter
// program: while it has not started, after it was killed (SIGKILL, its
// stale socket left behind) and when it is killed in the middle of a
// transaction, the sending client gets a 4xx and nothing is delivered;
// started, the same post is accepted and reaches the members, so the
// refusals are the milter's absence and nothing else.
func TestFailClosedThroughMTAs(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "listcrypt-milter")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "github.com/listcrypt/listcrypt/cmd/listcrypt-milter")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, mta := range mtas {
		t.Run(mta, func(t *testing.T) { failClosed(t, mta, bin) })
	}
}

// failClosed is TestFailClosedThroughMTAs through one MTA.
func failClosed(t *testing.T, mta, bin string) {
	requireMTA(t, mta)
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	m := startMTA(t, mta, sock)
	// The program reads the reinjection address from the config file.
	cfgSrc, err := os.ReadFile(site.Config.File)
	if err != nil {
		t.Fatal(err)
	}
	old := []byte("address = " + strconv.Quote(site.Config.Reinject.Address))
	if !bytes.Contains(cfgSrc, old) {
		t.Fatalf("site config lacks %s", old)
	}
	if err := os.WriteFile(site.Config.File, bytes.Replace(cfgSrc, old, []byte("address = "+strconv.Quote(m.ReinjectAddr())), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon := &chaosMilter{bin: bin, cfg: site.Config.File, sock: sock, logs: &logBuf{}}
	t.Cleanup(func() {
		daemon.kill()
		if t.Failed() {
			t.Logf("milter log:\n%s", daemon.logs.String())
		}
	})
	list := []*openpgp.Entity{site.ListKey}
	post := func(body string) []byte {
		return milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: body})
	}
	// The temporary failure each MTA documents for a milter that is down
	// (LIBRARY-NOTES, contrib/sendmail/README.md).
	enhanced := map[string]string{"postfix": "4.7.1", "sendmail": "4.3.2"}[mta]
	checks := 0
	// tempfailed asserts a 4xx and that the MTA kept and delivered
	// nothing: its queue empty, the sink as it was.
	tempfailed := func(what string, err error) {
		t.Helper()
		checks++
		var se *rig.SMTPError
		if !errors.As(err, &se) || se.Code != 451 || se.Enhanced != enhanced {
			t.Fatalf("%s: got %v, want 451 %s", what, err, enhanced)
		}
		t.Logf("%s: %v", what, err)
		before := len(m.Sink().Messages())
		if err := m.WaitQueueEmpty(ctxT(t)); err != nil {
			t.Fatalf("%s: queue: %v", what, err)
		}
		if n := len(m.Sink().Messages()); n != before {
			t.Fatalf("%s: %d deliveries after the 4xx", what, n-before)
		}
	}
	send := func(msg []byte) error {
		return rig.Send(m.SMTPAddr(), "alice@example.org", []string{milterfix.List}, msg)
	}

	// 1. Not started: no socket at all. A list post and ordinary mail
	// alike are tempfailed (the MTA cannot tell them apart without the
	// milter).
	tempfailed("not started: list post", send(post("FAILCLOSED-1")))
	tempfailed("not started: ordinary mail", rig.Send(m.SMTPAddr(), "x@example.net", []string{"bob@example.org"},
		[]byte("From: x@example.net\r\nTo: bob@example.org\r\nSubject: hi\r\nMessage-ID: <fc@x>\r\n\r\nhi\r\n")))
	if n := len(m.Sink().Messages()); n != 0 {
		t.Fatalf("%d deliveries with the milter not started", n)
	}

	// 2. Started: the same post goes through (the setup is sound).
	if err := daemon.start(); err != nil {
		t.Fatal(err)
	}
	checks++
	if err := send(post("FAILCLOSED-1")); err != nil {
		t.Fatalf("milter running: %v", err)
	}
	if got := waitCopies(t, m.Sink(), "devs-bounces@lists.example.org", 2); got["alice@example.org"] != 1 || got["bob@example.org"] != 1 {
		t.Fatalf("milter running: copies %v, want one each for alice and bob", got)
	}

	// 3. Killed in the middle of a transaction: after RCPT TO, before
	// the message.
	c, err := smtp.Dial(m.SMTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.rig.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(milterfix.List, nil); err != nil {
		t.Fatal(err)
	}
	daemon.kill()
	err = func() error {
		w, err := c.Data()
		if err != nil {
			return rig.StageError("DATA", err)
		}
		if _, err := w.Write(post("FAILCLOSED-2")); err != nil {
			return err
		}
		return rig.StageError("DATA", w.Close())
	}()
	tempfailed("killed mid-transaction", err)

	// 4. Killed (its socket file left behind): the next post is
	// tempfailed.
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the killed milter's socket: %v", err)
	}
	tempfailed("killed", send(post("FAILCLOSED-3")))
	for _, d := range m.Sink().Messages() {
		if bytes.Contains(d.Data, []byte("FAILCLOSED-")) {
			t.Fatalf("a post in clear to %v", d.To)
		}
	}
	t.Logf("through %s: %d fail-closed checks", mta, checks)
}
