package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-smtp"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// A member whose mailbox is gone is disabled through the real MTA: its
// copy of a post is refused by the rig's sink (550 5.1.1), the MTA's
// bounce comes back to the list's bounce address and reaches the
// responder by the shipped route (Postfix: the transport table, with
// XVERP naming the member in the address; Sendmail: the alias and
// include file, the member read from the DSN), the score reaches the
// threshold (2: one bounce yesterday, this one today), the owner is told,
// and the next post goes to the others only.
func TestBounceDisablesMemberThroughMTAs(t *testing.T) {
	for _, mta := range mtas {
		t.Run(mta, func(t *testing.T) {
			n := bounceDisables(t, mta)
			t.Logf("through %s: a dead mailbox bounced by the MTA, counted to the threshold (2) and disabled, %d messages at the sink", mta, n)
		})
	}
}

func bounceDisables(t *testing.T, mta string) int {
	const (
		alice = "alice@example.org"
		bob   = "bob@example.org" // the mailbox that is gone
		carol = "carol@example.org"
		owner = "owner@example.org"
	)
	var aliceKey *openpgp.Entity
	s := startRig(t, mta, func(site *milterfix.Site) {
		aliceKey = site.AddMember(t, alice)
		site.AddMember(t, bob)
		site.AddMember(t, carol)
		pfile := filepath.Join(site.Config.PolicyDir, list+".toml")
		pol, err := os.ReadFile(pfile)
		if err != nil {
			t.Fatal(err)
		}
		// Threshold 2: bob's mailbox bounced a copy yesterday (recorded
		// here, as the responder would have; one bounce counts per 24
		// hours, so a real MTA cannot bounce twice in one test), and the
		// post below bounces through the real MTA.
		pol = append(pol, "\n[bounces]\nscore_threshold = 2\n"...)
		if mta == "postfix" {
			// Sendmail offers no XVERP: there the member is read from
			// the report at the plain bounce address.
			pol = append(pol, "verp = true\n"...)
		}
		if err := os.WriteFile(pfile, pol, 0o644); err != nil {
			t.Fatal(err)
		}
		yesterday := store.BounceEvent{Permanent: true, Status: "5.1.1", At: time.Now().Add(-25 * time.Hour)}
		if out, err := site.Admin.Store.RecordBounce(context.Background(), list, bob, yesterday,
			store.BounceRules{Threshold: 2, ResetAfter: 7 * 24 * time.Hour, Disable: true}); err != nil || !out.Counted || out.Reached {
			t.Fatalf("yesterday's bounce: %+v %v", out, err)
		}
	})
	sink := s.pf.Sink()
	sink.Refuse(bob, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "mailbox gone"})
	post := func(body string) {
		t.Helper()
		msg := milterfix.Build(t, milterfix.Post{From: alice, SignWith: aliceKey, EncryptTo: []*openpgp.Entity{s.site.ListKey}, Body: body})
		if err := rig.Send(s.pf.SMTPAddr(), alice, []string{list}, msg); err != nil {
			t.Fatalf("post: %v", err)
		}
	}
	post("first post")
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		dis, err := s.site.Admin.Store.DeliveryDisabled(ctx, list)
		if err != nil {
			t.Fatal(err)
		}
		if dis[bob] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob not disabled; refused %v\nmaillog:\n%s", sink.Refused(), s.pf.Maillog())
		}
		time.Sleep(20 * time.Millisecond) // polling the store: the bounce takes the MTA's path
	}
	states, err := s.site.Admin.Store.BounceStates(ctx, list)
	if err != nil || len(states) != 1 || states[0].Address != bob || states[0].LastStatus != "5.1.1" || states[0].Score != 2 || states[0].Bounces != 2 {
		t.Fatalf("bounce records %+v %v", states, err)
	}
	// The owner's notice names bob (the owner has no key: signed only).
	notice := s.next(owner)
	if !bytes.Contains(notice.Data, []byte("delivery to "+bob+" disabled")) || !bytes.Contains(notice.Data, []byte("listcrypt member enable")) {
		t.Fatalf("owner notice:\n%s", notice.Data)
	}
	if notice.From != "" {
		t.Errorf("owner notice envelope sender %q, want <>", notice.From)
	}
	copies := func() map[string]int {
		n := map[string]int{}
		for _, m := range sink.Messages() {
			if !strings.HasPrefix(m.From, "devs-bounces") {
				continue
			}
			for _, to := range m.To {
				n[to]++
			}
		}
		return n
	}
	first := copies()
	if first[alice] != 1 || first[carol] != 1 || first[bob] != 0 {
		t.Fatalf("first post: copies %v", first)
	}
	if mta == "postfix" {
		// XVERP: each member's copy has its own envelope sender.
		for _, m := range sink.Messages() {
			if slices.Contains(m.To, carol) && strings.HasPrefix(m.From, "devs-bounces") && m.From != "devs-bounces+carol=example.org@lists.example.org" {
				t.Errorf("carol's copy from %q, want the VERP address", m.From)
			}
		}
	}
	// The mailbox works again, but bob stays disabled until an admin
	// enables him: the second post must not reach him.
	sink.Refuse(bob, nil)
	post("second post")
	ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if c := copies(); c[alice] == 2 && c[carol] == 2 {
			break
		}
		if ctx2.Err() != nil {
			t.Fatalf("second post: copies %v\nmaillog:\n%s", copies(), s.pf.Maillog())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := copies(); c[bob] != 0 {
		t.Fatalf("the disabled member got a copy: copies %v", c)
	}
	return len(sink.Messages())
}
