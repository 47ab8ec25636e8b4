package main

import (
	"context"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

// subscribeByMail takes addr through subscribe, key set and key confirm
// with the responder, so that it waits for a moderator.
func subscribeByMail(t *testing.T, r *workflow.Responder, mail *wftest.Capture, listKey *openpgp.Entity, addr string) *openpgp.Entity {
	t.Helper()
	const request = "devs-request@lists.example.org"
	ctx := context.Background()
	k := milterfix.NewKey(t, addr)
	last := func(key *openpgp.Entity) string {
		msgs := mail.To(addr)
		return wftest.Open(t, msgs[len(msgs)-1].Data, key, listKey)
	}
	handle := func(msg []byte) {
		if _, err := r.Handle(ctx, msg, request); err != nil {
			t.Fatal(err)
		}
	}
	handle(wftest.Mail(addr, request, "subscribe", "subscribe"))
	t1 := wftest.Token(t, last(nil))
	pub, err := keyring.ArmorPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	handle(wftest.Mail(addr, request, "key", "key set "+t1, []byte(pub)))
	handle(wftest.Clearsigned(t, addr, request, wftest.Statement(t, last(k)), k))
	return k
}

func TestMemberPendingApproveReject(t *testing.T) {
	sink := rig.NewSink(t)
	site := milterfix.New(t, milterfix.Options{Reinject: sink.Addr()})
	cfg := site.Config.File
	r, err := workflow.New(site.Config, site.Admin.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	mail := &wftest.Capture{}
	r.Mail = mail
	bob := subscribeByMail(t, r, mail, site.ListKey, "bob@example.org")
	subscribeByMail(t, r, mail, site.ListKey, "carol@example.org")

	out := mustCLI(t, cfg, "member", "pending", milterfix.List)
	fpr := keyring.Fingerprint(bob)
	if !strings.Contains(out, "bob@example.org\tsubscription\t"+fpr[:4]+" "+fpr[4:8]) || !strings.Contains(out, "carol@example.org\tsubscription") {
		t.Fatalf("member pending:\n%s", out)
	}
	out = mustCLI(t, cfg, "member", "approve", milterfix.List, "Bob@Example.org")
	if out != "subscription of bob@example.org on "+milterfix.List+" approved, key "+fpr+"\n" {
		t.Fatalf("approve: %q", out)
	}
	m, err := site.Admin.Store.GetMember(context.Background(), milterfix.List, "bob@example.org")
	if err != nil || m.State != store.MemberActive {
		t.Fatalf("bob: %+v %v", m, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := sink.Wait(ctx, 1)
	if err != nil || got[0].To[0] != "bob@example.org" {
		t.Fatalf("welcome mail: %v %+v", err, got)
	}
	if text := wftest.Open(t, got[0].Data, bob, site.ListKey); !strings.Contains(text, "approved your subscription") {
		t.Fatalf("welcome:\n%s", text)
	}

	out = mustCLI(t, cfg, "member", "reject", milterfix.List, "carol@example.org")
	if !strings.HasPrefix(out, "subscription of carol@example.org on "+milterfix.List+" rejected") {
		t.Fatalf("reject: %q", out)
	}
	if _, err := site.Admin.Store.GetMember(context.Background(), milterfix.List, "carol@example.org"); err == nil {
		t.Fatal("rejected subscriber still there")
	}
	if out := mustCLI(t, cfg, "member", "pending", milterfix.List); out != "" {
		t.Fatalf("pending after decisions: %q", out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"member", "approve", milterfix.List, "bob@example.org"}, "nothing waiting for a moderator"},
		{[]string{"member", "reject", milterfix.List, "nobody@example.org"}, "nothing waiting for a moderator"},
		{[]string{"member", "pending", "none@lists.example.org"}, "no list none@lists.example.org"},
		{[]string{"member", "approve", milterfix.List}, "member approve LIST ADDRESS"},
		{[]string{"member", "pending"}, "member pending LIST"},
	} {
		if _, err := cli(t, cfg, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("listcrypt %s: %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}

	// The subscriber cannot be told (the MTA is down): the approval
	// stands and the failure is reported.
	subscribeByMail(t, r, mail, site.ListKey, "dave@example.org")
	site.Config.Reinject.Address = "127.0.0.1:1"
	if e, err := site.Admin.ApproveMember(context.Background(), milterfix.List, "dave@example.org"); err != nil || e.NoticeErr == nil {
		t.Fatalf("approve with the MTA down: %v, notice error %v", err, e.NoticeErr)
	}
}
