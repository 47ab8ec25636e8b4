package workflow_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

// blockingMailer holds every submission until release is closed.
type blockingMailer struct {
	next    *wftest.Capture
	entered chan []byte
	release chan struct{}
}

func (b *blockingMailer) Send(ctx context.Context, from string, to []string, data []byte) error {
	b.entered <- data
	<-b.release
	return b.next.Send(ctx, from, to, data)
}

// A reply is submitted after its transaction committed: while the
// submission hangs (a slow MTA), every other writer of the database goes
// through, SQLite's only write lock included. What the outbox holds of
// a reply that quotes an encrypted command mail is already encrypted.
func TestReplySentWithoutLock(t *testing.T) {
	e := newEnv(t, nil)
	bob := e.site.AddMember(t, bobAddr)
	const canary = "key set NOT-A-TOKEN-outbox-canary"
	mailer := &blockingMailer{next: e.mail, entered: make(chan []byte, 1), release: make(chan struct{})}
	e.r.Mail = mailer
	done := make(chan error, 1)
	go func() {
		_, err := e.r.Handle(context.Background(), inlineMail(t, bobAddr, "x", canary, bob, e.site.ListKey), request)
		done <- err
	}()
	var data []byte
	select {
	case data = <-mailer.entered:
	case err := <-done:
		t.Fatalf("Handle returned before sending: %v", err)
	}
	// The bytes come from the outbox row (SendOutbox reads them back).
	if bytes.Contains(data, []byte("outbox-canary")) || !bytes.Contains(data, []byte("-----BEGIN PGP MESSAGE-----")) {
		t.Errorf("the stored reply to an encrypted command is not encrypted:\n%s", data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := e.r.Store.AddHold(ctx, store.Hold{List: list, Sender: "x@example.org", Reason: "r", Message: []byte("m")}); err != nil {
		t.Fatalf("a writer while a reply is being submitted: %v", err)
	}
	lim := store.ReplyLimit{List: list, Address: "y@example.org", Window: time.Hour, PerAddress: 5, PerList: 5}
	id, err := e.r.Store.QueueLimited(ctx, lim, store.OutboxMail{List: list, Sender: "b@example.org", Recipients: []string{"y@example.org"}, Message: []byte("m")})
	if err != nil {
		t.Fatalf("a reply slot while a reply is being submitted: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("writers waited %v for a submission", d)
	}
	close(mailer.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, _, text := e.opened(bobAddr, bob)
	if !strings.Contains(text, canary) {
		t.Errorf("the verified sender's line is not quoted:\n%s", text)
	}
	// The row queued meanwhile (as by a responder that died after its
	// commit) goes with the next run, once.
	e.r.Mail = e.mail
	e.send(wftest.Mail("z@example.org", request, "x", "help"))
	e.send(wftest.Mail("z@example.org", request, "x", "help"))
	if n, _ := e.r.Store.CountOutbox(context.Background(), list); n != 0 || len(e.mail.To("y@example.org")) != 1 {
		t.Errorf("outbox rows left %d, row %d sent %d times", n, id, len(e.mail.To("y@example.org")))
	}
}
