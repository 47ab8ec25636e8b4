package rig

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pfrig "github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/contrib/sendmail"
)

// The shipped listcrypt.mc carries the settings the design relies on.
// (No root needed: this runs on every machine.)
func TestListcryptMC(t *testing.T) {
	var filter, reinject string
	for _, line := range strings.Split(sendmail.MC, "\n") {
		switch {
		case strings.HasPrefix(line, "INPUT_MAIL_FILTER("):
			filter = line
		case strings.HasPrefix(line, "DAEMON_OPTIONS("):
			reinject = line
		}
	}
	for _, want := range []string{"S=" + sendmail.MilterSocket + ",", " F=T,", " T=C:", ";E:5m'"} {
		if !strings.Contains(filter, want) {
			t.Errorf("INPUT_MAIL_FILTER line %q lacks %q", filter, want)
		}
	}
	for _, want := range []string{fmt.Sprintf("Port=%d,", sendmail.ReinjectPort), "Addr=127.0.0.1,", "InputMailFilters=')"} {
		if !strings.Contains(reinject, want) {
			t.Errorf("DAEMON_OPTIONS line %q lacks %q", reinject, want)
		}
	}
	if !strings.Contains(sendmail.MC, "define(`confMILTER_MACROS_EOM', `{msg_id}, i')dnl\n") {
		t.Error("listcrypt.mc does not send the queue id i at end of message")
	}
	for _, ll := range []string{"SMTP_MAILER_LL", "RELAY_MAILER_LL"} {
		if !strings.Contains(sendmail.MC, "define(`"+ll+"', `0')dnl\n") {
			t.Errorf("listcrypt.mc does not set %s to 0", ll)
		}
	}
	// The responder's prog delivery (aliases.snippet): its user is
	// trusted (its nologin shell would bounce the mail) and the prog
	// mailer writes no From_ line before the header.
	for _, want := range []string{"define(`confTRUSTED_USERS', `" + sendmail.ResponderUser + "')dnl\n", "MODIFY_MAILER_FLAGS(`SHELL', `+n')dnl\n"} {
		if !strings.Contains(sendmail.MC, want) {
			t.Errorf("listcrypt.mc lacks %q", want)
		}
	}
	if got, err := responderUserMC(sendmail.MC, "nobody"); err != nil || !strings.Contains(got, "define(`confTRUSTED_USERS', `nobody')dnl\n") {
		t.Errorf("responderUserMC: %v\n%s", err, got)
	}
	got, err := snippetMC(sendmail.MC, "inet:1234@127.0.0.1", 4321)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "S=inet:1234@127.0.0.1, F=T") || !strings.Contains(got, "Port=4321, Addr=127.0.0.1, InputMailFilters=')") {
		t.Fatalf("substituted:\n%s", got)
	}
	if got, _ := snippetMC(sendmail.MC, "", 4321); strings.Contains(got, "INPUT_MAIL_FILTER(") {
		t.Fatal("no milter, but an INPUT_MAIL_FILTER line")
	}
	for in, want := range map[string]string{
		"unix:/run/x.sock":    "local:/run/x.sock",
		"local:/run/x.sock":   "local:/run/x.sock",
		"inet:127.0.0.1:9000": "inet:9000@127.0.0.1",
		"inet:9000@127.0.0.1": "inet:9000@127.0.0.1",
	} {
		if got, err := milterSpec(in); err != nil || got != want {
			t.Errorf("milterSpec(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func message(subject, to, body string) []byte {
	return []byte(fmt.Sprintf("From: alice@example.net\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%d@example.net>\r\n\r\n%s\r\n",
		to, subject, time.Now().UnixNano(), body))
}

// A real Sendmail without a milter relays mail from both listeners to
// the Sink, long lines unfolded; with a milter that is down (F=T) it
// answers 4xx and delivers nothing.
func TestSendmailRig(t *testing.T) {
	sm := Start(t, Options{})
	long := strings.Repeat("L", 5000)
	if err := pfrig.Send(sm.SMTPAddr(), "alice@example.net", []string{"bob@example.org"}, message("one", "bob@example.org", long)); err != nil {
		t.Fatalf("MTA listener: %v", err)
	}
	if err := pfrig.Send(sm.ReinjectAddr(), "alice@example.net", []string{"carol@example.com", "dave@example.org"}, message("two", "carol@example.com", "hi")); err != nil {
		t.Fatalf("reinjection listener: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := sm.Sink().Wait(ctx, 2)
	if err != nil {
		t.Fatalf("%v: %d delivered", err, len(got))
	}
	if err := sm.WaitQueueEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	got = sm.Sink().Messages()
	if len(got) != 2 {
		t.Fatalf("%d messages at the sink, want 2", len(got))
	}
	rcpts := map[string]bool{}
	for _, m := range got {
		for _, r := range m.To {
			rcpts[r] = true
		}
		if strings.Contains(string(m.Data), "Subject: one") && !strings.Contains(string(m.Data), "\r\n"+long+"\r\n") {
			t.Error("the 5000-character line was folded")
		}
	}
	if !rcpts["bob@example.org"] || !rcpts["carol@example.com"] || !rcpts["dave@example.org"] {
		t.Errorf("recipients %v", rcpts)
	}
	if !strings.Contains(sm.Maillog(), "stat=Sent") {
		t.Errorf("maillog lacks stat=Sent:\n%s", sm.Maillog())
	}

	// A milter that is not there: fail closed.
	down := Start(t, Options{MilterAddr: "unix:" + t.TempDir() + "/absent.sock"})
	err = pfrig.Send(down.SMTPAddr(), "alice@example.net", []string{"bob@example.org"}, message("three", "bob@example.org", "x"))
	var se *pfrig.SMTPError
	if !errors.As(err, &se) || !se.Temporary() {
		t.Fatalf("milter down: %v, want a 4xx", err)
	}
	t.Logf("milter down: %v", err)
	// The reinjection listener has no milter: it still takes mail.
	if err := pfrig.Send(down.ReinjectAddr(), "alice@example.net", []string{"bob@example.org"}, message("four", "bob@example.org", "x")); err != nil {
		t.Fatalf("reinjection with the milter down: %v", err)
	}
	if _, err := down.Sink().Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
}
