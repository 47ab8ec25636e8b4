package rig_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
)

// message builds a test message with every header Postfix would otherwise
// add (Date, Message-ID), so the sink must see it unchanged below Postfix's
// Received: header. The body exercises dot-stuffing, a line far over 998
// bytes (smtp_line_length_limit = 0), trailing white space and 8-bit text.
func message(id, to string) []byte {
	return []byte("From: Alice <alice@example.net>\r\n" +
		"To: " + to + "\r\n" +
		"Subject: rig " + id + "\r\n" +
		"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n" +
		"Message-ID: <" + id + "@example.net>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"Hello " + id + ".\r\n" +
		".a line that starts with a dot\r\n" +
		"..and one with two\r\n" +
		".\r\n" +
		strings.Repeat("0123456789", 300) + "\r\n" +
		"trailing blanks \t \r\n" +
		"Grüße, ☃\r\n")
}

// checkIntact asserts that got is want with only Received: header lines
// added in front, and that every line ends in CRLF.
func checkIntact(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.HasSuffix(got, want) {
		t.Errorf("delivered message does not end with the message sent\n got: %q\nwant suffix: %q", got, want)
		return
	}
	prefix := string(got[:len(got)-len(want)])
	if !strings.HasPrefix(prefix, "Received: ") || strings.Contains(prefix, "\r\n\r\n") {
		t.Errorf("Postfix added more than a Received: header: %q", prefix)
	}
	for i, c := range got {
		if c == '\n' && (i == 0 || got[i-1] != '\r') {
			t.Errorf("bare LF at byte %d of the delivered message", i)
			return
		}
	}
}

// waitRcpts waits until the sink has seen every recipient in want (Postfix
// may group or split recipients across deliveries) and returns, for each,
// the delivery that carried it.
func waitRcpts(t *testing.T, sink *rig.Sink, want ...string) map[string]rig.Delivered {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := map[string]rig.Delivered{}
	for n := 1; ; {
		ds, err := sink.Wait(ctx, n)
		for _, d := range ds {
			for _, rcpt := range d.To {
				got[rcpt] = d
			}
		}
		missing := slices.DeleteFunc(slices.Clone(want), func(r string) bool { _, ok := got[r]; return ok })
		if len(missing) == 0 {
			return got
		}
		if err != nil {
			t.Fatalf("waiting for %v at the sink: %v (got %d deliveries)", missing, err, len(ds))
		}
		n = len(ds) + 1
	}
}

func TestDeliveryWithoutMilter(t *testing.T) {
	t.Parallel()
	pf := rig.Start(t, rig.Options{})

	list := message("list-and-bob", "devs@lists.example.org, bob@example.org")
	if err := rig.Send(pf.SMTPAddr(), "alice@example.net", []string{"devs@lists.example.org", "bob@example.org"}, list); err != nil {
		t.Fatalf("send to list and bob: %v", err)
	}
	// LF line ends on the wire side of Send become CRLF; the sink must see CRLF.
	other := message("other-domain", "carol@elsewhere.test")
	lf := bytes.ReplaceAll(other, []byte("\r\n"), []byte("\n"))
	if err := rig.Send(pf.SMTPAddr(), "alice@example.net", []string{"carol@elsewhere.test"}, lf); err != nil {
		t.Fatalf("send to another domain: %v", err)
	}

	got := waitRcpts(t, pf.Sink(), "devs@lists.example.org", "bob@example.org", "carol@elsewhere.test")
	for _, rcpt := range []string{"devs@lists.example.org", "bob@example.org"} {
		d := got[rcpt]
		if d.From != "alice@example.net" {
			t.Errorf("%s: envelope sender %q", rcpt, d.From)
		}
		checkIntact(t, d.Data, list)
	}
	d := got["carol@elsewhere.test"]
	if d.From != "alice@example.net" {
		t.Errorf("carol: envelope sender %q", d.From)
	}
	checkIntact(t, d.Data, other)
	// postlogd writes the log after the delivery happened: wait for it.
	for i := 0; !strings.Contains(pf.Maillog(), "status=sent"); i++ {
		if i > 200 {
			t.Fatalf("maillog has no delivery line:\n%s", pf.Maillog())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func TestDeadMilterFailsClosed(t *testing.T) {
	t.Parallel()
	nobody := "unix:" + filepath.Join(rig.TempDir(t), "nobody-listens.sock")
	pf := rig.Start(t, rig.Options{MilterAddr: nobody})

	msg := message("dead-milter", "devs@lists.example.org")
	err := rig.Send(pf.SMTPAddr(), "alice@example.net", []string{"devs@lists.example.org"}, msg)
	var se *rig.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("send with the milter down: got %v, want an SMTP refusal", err)
	}
	if se.Stage != "MAIL" || se.Code/100 != 4 {
		t.Errorf("send with the milter down: got %v, want 4xx at MAIL (milter_default_action = tempfail)", se)
	}
	t.Logf("milter down: %v", se)

	// The reinjection listener has milters off: the same message goes through.
	if err := rig.Send(pf.ReinjectAddr(), "devs-bounces@lists.example.org", []string{"devs@lists.example.org"}, msg); err != nil {
		t.Fatalf("send via reinjection: %v", err)
	}
	got := waitRcpts(t, pf.Sink(), "devs@lists.example.org")
	d := got["devs@lists.example.org"]
	if d.From != "devs-bounces@lists.example.org" {
		t.Errorf("envelope sender %q", d.From)
	}
	checkIntact(t, d.Data, msg)
}

// refuser refuses every message at end of message with a reply-code
// response and reports the queue id macro it saw there.
type refuser struct {
	milter.NoOpMilter
	queueIDs chan<- string
}

func (r refuser) Body(m *milter.Modifier) (milter.Response, error) {
	r.queueIDs <- m.Macros["i"]
	return milter.NewResponseStr('y', "550 5.7.1 test refusal"), nil
}

func TestMilterRefusalReachesClient(t *testing.T) {
	t.Parallel()
	ln, addr := rig.ListenUnix(t)
	queueIDs := make(chan string, 10)
	srv := &milter.Server{NewMilter: func() milter.Milter { return refuser{queueIDs: queueIDs} }}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		// Close the listener rather than srv.Close: go-milter v0.5.0's
		// closed flag is an unsynchronised bool (a data race under -race).
		if err := ln.Close(); err != nil {
			t.Errorf("milter listener close: %v", err)
		}
		if err := <-served; !errors.Is(err, net.ErrClosed) {
			t.Errorf("milter serve: %v", err)
		}
	})
	pf := rig.Start(t, rig.Options{MilterAddr: addr})

	err := rig.Send(pf.SMTPAddr(), "alice@example.net", []string{"devs@lists.example.org"}, message("refused", "devs@lists.example.org"))
	var se *rig.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("send: got %v, want an SMTP refusal", err)
	}
	if se.Stage != "DATA" || se.Code != 550 || se.Enhanced != "5.7.1" || se.Message != "test refusal" {
		t.Errorf("got %+v, want DATA 550 5.7.1 \"test refusal\"", *se)
	}
	select {
	case id := <-queueIDs:
		if id == "" {
			t.Error("milter saw no queue id (macro i) at end of message")
		}
	default:
		t.Error("the milter's Body was not called")
	}
	if n := len(pf.Sink().Messages()); n != 0 {
		t.Errorf("a refused message reached the sink (%d messages)", n)
	}
}

// The shipped lines hold no typo Postfix would only warn about (an unknown
// parameter is ignored with "unused parameter"), and the rig passes
// Postfix's own installation checks that Start skips for speed.
func TestPostfixCheckIsClean(t *testing.T) {
	t.Parallel()
	pf := rig.Start(t, rig.Options{})
	for _, args := range [][]string{
		{"postconf", "-c", pf.ConfigDir(), "-n"},
		{"postconf", "-c", pf.ConfigDir(), "-M"},
		{"postconf", "-c", pf.ConfigDir(), "-P"},
		{"postfix", "-c", pf.ConfigDir(), "check"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
		if bytes.Contains(out, []byte("warning")) || bytes.Contains(out, []byte("fatal")) {
			t.Errorf("%v:\n%s", args, out)
		}
	}
	if log := pf.Maillog(); strings.Contains(log, "warning:") {
		t.Errorf("maillog has warnings:\n%s", log)
	}
}
