package milter_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// onlyDeletes reports whether the milter's modifications deleted the
// list recipient and did nothing else: no recipient added, no header,
// no body, no envelope sender (nothing delivered).
func onlyDeletes(r result, rcpt string) bool {
	return len(r.modacts) == 1 && r.modacts[0].Code == gomilter.ActDelRcpt && r.modacts[0].Rcpt == "<"+rcpt+">"
}

// The sender's MTA retrying a completed post (its answer was lost) is
// told 250 and the list copy is dropped: no bounce for a post the list
// distributed, nothing delivered twice. Another post with the same
// ciphertext, or the same post from another envelope sender, is a replay.
func TestRetryOfCompletedPost(t *testing.T) {
	f := newFixture(t, "")
	list := []*openpgp.Entity{f.site.ListKey}
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: list, Body: "retried"})
	first := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
	if !first.delivered() || len(first.recipients()) != 2 {
		t.Fatalf("first: %+v %v", first.action, first.modacts)
	}

	t.Run("same envelope", func(t *testing.T) {
		before := len(f.logs.String())
		// The MTA may spell the sender with other case; it is the same.
		r := f.mta.send("<Alice@Example.ORG>", []string{milterfix.List}, msg)
		if r.action.Code != gomilter.ActDiscard || !onlyDeletes(r, milterfix.List) {
			t.Fatalf("got %+v %+v, want discard after deleting the list recipient", r.action, r.modacts)
		}
		line := f.logs.String()[before:]
		if !strings.Contains(line, "action=discard reason=retry-of-completed") {
			t.Fatalf("log: %s", line)
		}
	})
	t.Run("same envelope with another recipient", func(t *testing.T) {
		r := f.mta.send("alice@example.org", []string{milterfix.List, "carol@example.net"}, msg)
		if r.action.Code != gomilter.ActAccept || !onlyDeletes(r, milterfix.List) {
			t.Fatalf("got %+v %+v, want accept for carol, the list recipient deleted", r.action, r.modacts)
		}
	})
	t.Run("another envelope sender", func(t *testing.T) {
		r := f.mta.send("mallory@evil.example", []string{milterfix.List}, msg)
		if r.code() != 550 || !strings.Contains(r.action.SMTPText, "already sent") || len(r.modacts) != 0 {
			t.Fatalf("got %d %q %v, want a 550 replay", r.code(), r.action.SMTPText, r.modacts)
		}
	})
	t.Run("null envelope sender", func(t *testing.T) {
		if r := f.mta.send("<>", []string{milterfix.List}, msg); r.code() != 550 {
			t.Fatalf("got %+v, want a 550 replay", r.action)
		}
	})
	t.Run("same ciphertext, another Message-ID", func(t *testing.T) {
		hdrEnd := bytes.Index(msg, []byte("Content-Type: multipart/encrypted"))
		rewrapped := append([]byte("From: alice@example.org\r\nTo: devs@lists.example.org\r\nSubject: re-sent\r\nMessage-ID: <other@x>\r\nMIME-Version: 1.0\r\n"), msg[hdrEnd:]...)
		r := f.mta.send("alice@example.org", []string{milterfix.List}, rewrapped)
		if r.code() != 550 || !strings.Contains(r.action.SMTPText, "already sent") || len(r.modacts) != 0 {
			t.Fatalf("got %d %q %v, want a 550 replay", r.code(), r.action.SMTPText, r.modacts)
		}
	})
	t.Run("claims released", func(t *testing.T) {
		// Every attempt above ended its claim: the next retry is answered
		// at once, not with 451.
		if r := f.mta.send("alice@example.org", []string{milterfix.List}, msg); r.action.Code != gomilter.ActDiscard {
			t.Fatalf("got %+v", r.action)
		}
	})
}

// A held post retried in its envelope is not held twice.
func TestRetryOfHeldPost(t *testing.T) {
	f := newFixture(t, `signed = "hold"`)
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", EncryptTo: []*openpgp.Entity{f.site.ListKey}, Body: "held once"})
	for i := range 2 {
		if r := f.mta.send("alice@example.org", []string{milterfix.List}, msg); r.action.Code != gomilter.ActDiscard {
			t.Fatalf("attempt %d: %+v", i, r.action)
		}
	}
	holds, err := f.site.Admin.Holds(context.Background(), milterfix.List)
	if err != nil || len(holds) != 1 {
		t.Fatalf("holds %d %v, want 1", len(holds), err)
	}
	if !strings.Contains(f.logs.String(), "reason=retry-of-completed") {
		t.Fatal("retry of the held post not logged as retry-of-completed")
	}
}
