package milter_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// A panic while deciding a post is a bug: logged at Error with its
// stack, the transaction tempfailed, and the connection serves the next
// post.
func TestPanicLoggedAtErrorAndTempfailed(t *testing.T) {
	f := newFixture(t, "")
	milter.PanicAtEndOfMessage(t, "panic@example.org")
	s, err := f.mta.client.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list := []*openpgp.Entity{f.site.ListKey}
	r := f.mta.sendOn(s, "panic@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: list}))
	if r.code() != 451 {
		t.Fatalf("after a panic: %+v, want 451", r.action)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "level=ERROR msg=panic") || !strings.Contains(logs, "queue_id=QID123") || !strings.Contains(logs, "goroutine") {
		t.Fatalf("panic not logged at Error with its stack:\n%s", logs)
	}
	s.Abort()
	if r := f.mta.sendOn(s, "alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: list})); !r.delivered() {
		t.Fatalf("the next post on the same connection: %+v", r.action)
	}
}

// go-milter's own recovered panics reach the log at Error with their
// stack; its other messages stay at Debug.
func TestLibraryLog(t *testing.T) {
	var b bytes.Buffer
	w := milter.LibraryLog(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})))
	w.Write([]byte("panic handling command: boom\ngoroutine 7 [running]:\nmain.f()\n"))
	w.Write([]byte("Error reading milter command: EOF\n"))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "goroutine 7") ||
		!strings.Contains(lines[1], "level=DEBUG") {
		t.Fatalf("log:\n%s", b.String())
	}
}

// Sendmail sends the queue id with MAIL FROM (Milter.macros.envfrom), not
// at end of message: the decision line carries it all the same.
func TestQueueIDFromMailStage(t *testing.T) {
	f := newFixture(t, "")
	s, err := f.mta.client.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Macros(gomilter.CodeMail, "i", "4B3kSm012345"); err != nil {
		t.Fatal(err)
	}
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: []*openpgp.Entity{f.site.ListKey}})
	if _, err := s.Mail("alice@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rcpt(milterfix.List, nil); err != nil {
		t.Fatal(err)
	}
	hdr, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, line := range unfold(string(hdr)) {
		k, v, _ := strings.Cut(line, ":")
		if _, err := s.HeaderField(k, strings.TrimPrefix(v, " ")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BodyChunk(body); err != nil {
		t.Fatal(err)
	}
	if _, a, err := s.End(); err != nil || a.Code != gomilter.ActDiscard {
		t.Fatalf("end: %+v %v", a, err)
	}
	if !strings.Contains(f.logs.String(), "msg=post list=devs@lists.example.org queue_id=4B3kSm012345") {
		t.Fatalf("decision line without the queue id from MAIL FROM:\n%s", f.logs.String())
	}
}
