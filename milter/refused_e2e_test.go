package milter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/reinject"
)

// setBatchSize sets the fixture list's distribute.batch_size.
func setBatchSize(t *testing.T, site *milterfix.Site, n int) {
	t.Helper()
	site.EditPolicy(t, "batch_size = 50", fmt.Sprintf("batch_size = %d", n))
}

// The reinjection listener refuses single members: a 550 takes only that
// member out of the post (recorded, the owners told, not tried again on a
// retry); the rest of its batch and the other batches are delivered; a
// batch whose every member is refused is not sent at all; a 450 still
// tempfails the transaction.
func TestRefusedRecipientStaysPerRecipient(t *testing.T) {
	rig.Require(t)
	site := milterfix.New(t, milterfix.Options{})
	setBatchSize(t, site, 3)
	// Ten members, in address order: batches [m0 m1 m2], [m3 m4 m5],
	// [m6 m7 m8], [m9], every one reinjected.
	var members []string
	keys := map[string]*openpgp.Entity{}
	for i := range 10 {
		m := fmt.Sprintf("m%d@example.org", i)
		keys[m] = site.AddMember(t, m)
		members = append(members, m)
	}
	access := map[string]string{
		"m4@example.org": "550 5.1.1 User unknown here",   // part of a batch
		"m9@example.org": "550 5.1.1 No such mailbox",     // a whole batch
		"m7@example.org": "450 4.2.1 Mailbox busy, later", // temporary
	}
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := rig.Start(t, rig.Options{MilterAddr: "unix:" + sock, ReinjectRecipientAccess: access})
	site.Config.Reinject.Address = pf.ReinjectAddr()
	_, logs := startDaemon(t, site)

	const canary = "REFUSED-CANARY-post-text"
	author := members[0]
	msg := milterfix.Build(t, milterfix.Post{From: author, SignWith: keys[author], EncryptTo: []*openpgp.Entity{site.ListKey}, Body: canary})
	bounce := "devs-bounces@lists.example.org"

	// First attempt: [m0 m1 m2] goes out, [m3 m4 m5] goes out without
	// m4; batch [m6 m7 m8] meets the 450 and the transaction is
	// tempfailed ([m9], if it started beside it, is refused whole and
	// sends nothing).
	err := rig.Send(pf.SMTPAddr(), author, []string{milterfix.List}, msg)
	var se *rig.SMTPError
	if !errors.As(err, &se) || !se.Temporary() {
		t.Fatalf("with a 450 at reinjection: %v, want a 4xx", err)
	}
	got := waitCopies(t, pf.Sink(), bounce, 5)
	for _, m := range []string{"m0", "m1", "m2", "m3", "m5"} {
		if got[m+"@example.org"] != 1 {
			t.Fatalf("after the tempfailed attempt: %v, want m0, m1, m2, m3 and m5 once", got)
		}
	}
	if len(got) != 5 {
		t.Fatalf("after the tempfailed attempt: %v, want m0, m1, m2, m3 and m5 once", got)
	}

	// The member's mailbox is free again; the sender's MTA retries.
	delete(access, "m7@example.org")
	pf.SetReinjectRecipientAccess(access)
	// Postfix's smtpd reads a changed table only for a new connection:
	// the milter's idle ones would keep the old one until idle_timeout.
	reinject.CloseIdle()
	if err := rig.Send(pf.SMTPAddr(), author, []string{milterfix.List}, msg); err != nil {
		t.Fatalf("retry: %v", err)
	}
	// 8 members get their copy, and the owner a notice.
	got = waitCopies(t, pf.Sink(), bounce, 9)
	for _, m := range members {
		want := 1
		if m == "m4@example.org" || m == "m9@example.org" {
			want = 0
		}
		if got[m] != want {
			t.Errorf("%s got %d copies, want %d (all: %v)", m, got[m], want, got)
		}
	}
	if got["owner@example.org"] != 1 {
		t.Fatalf("owner notices: %d, want 1 (all: %v)", got["owner@example.org"], got)
	}
	for _, m := range pf.Sink().Messages() {
		if bytes.Contains(m.Data, []byte(canary)) {
			t.Fatalf("post in clear to %v", m.To)
		}
		if len(m.To) != 1 || m.To[0] != "owner@example.org" {
			continue
		}
		for _, want := range []string{"m4@example.org", "550 5.1.1", "User unknown here", "m9@example.org", "No such mailbox"} {
			if !bytes.Contains(m.Data, []byte(want)) {
				t.Errorf("owner notice lacks %q:\n%s", want, m.Data)
			}
		}
		if bytes.Contains(m.Data, []byte("m7@example.org")) {
			t.Errorf("owner notice names the temporarily refused m7:\n%s", m.Data)
		}
	}

	// Recorded: m4 and m9, with the MTA's replies.
	id, err := deliver.PostID(msg)
	if err != nil {
		t.Fatal(err)
	}
	refused, err := site.Admin.Store.RefusedRecipients(context.Background(), milterfix.List, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(refused) != 2 || refused[0].Address != "m4@example.org" || refused[1].Address != "m9@example.org" ||
		!strings.HasPrefix(refused[0].Reply, "550 5.1.1") || !strings.Contains(refused[1].Reply, "No such mailbox") {
		t.Fatalf("recorded refusals: %+v", refused)
	}

	// The retry did not try m4 again, and no DATA went out for the batch
	// of m9 alone (Postfix would have answered "no valid recipients").
	ml := pf.Maillog()
	if n := strings.Count(ml, "<m4@example.org>: Recipient address rejected"); n != 1 {
		t.Errorf("m4 refused %d times at reinjection, want 1", n)
	}
	if strings.Contains(ml, "no valid recipients") {
		t.Error("DATA sent for a batch without recipients")
	}
	if !strings.Contains(logs.String(), "recipient refused") {
		t.Error("refusal not logged")
	}
	if strings.Contains(logs.String(), canary) {
		t.Error("post text in the milter log")
	}

	// A completed post sent again by someone else is a replay.
	if err := rig.Send(pf.SMTPAddr(), "someone@example.net", []string{milterfix.List}, msg); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("resend after completion: %v", err)
	}
	t.Logf("through postfix: members refused at reinjection (5xx) left out per recipient, the others served once, the owners told")
}
