package milter_test

import (
	"context"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/keyring/store/storetest"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

func TestMain(m *testing.M) { storetest.Main(m, removeMilterBin) }

// Two milter hosts on one real PostgreSQL: a replay seen by one is refused
// by the other (settled by the database), and a member removed through
// the CLI's store connection is seen by both on their next post (the
// member cache follows the keys version).
func TestTwoHostsOnePostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	site := milterfix.New(t, milterfix.Options{Database: dsn})
	alice := site.AddMember(t, "alice@example.org")
	bob := site.AddMember(t, "bob@example.org")
	hostA, _ := startDaemon(t, site)
	// Host B: same config and database, its own socket and process state.
	cfgB := *site.Config
	cfgB.Milter.Listen = "unix:" + site.Dir + "/run/milter-b.sock"
	siteB := *site
	siteB.Config = &cfgB
	hostB, _ := startDaemon(t, &siteB)
	a, b := newMTA(t, hostA), newMTA(t, hostB)
	a.sink, b.sink = site.Reinjected, site.Reinjected
	list := []*openpgp.Entity{site.ListKey}

	post := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: "once, on host A"})
	if r := a.send("alice@example.org", []string{milterfix.List}, post); !r.delivered() {
		t.Fatalf("host A: %+v", r.action)
	}
	if r := b.send("mallory@evil.example", []string{milterfix.List}, post); r.code() != 550 || !strings.Contains(r.action.SMTPText, "already sent") {
		t.Fatalf("host B accepted a replay: %d %q", r.code(), r.action.SMTPText)
	}
	// The same envelope on host B: the sender's MTA retrying, discarded.
	if r := b.send("alice@example.org", []string{milterfix.List}, post); r.action.Code != gomilter.ActDiscard || len(r.modacts) != 1 || len(r.copies) != 0 {
		t.Fatalf("host B, retry of the completed post: %+v %+v", r.action, r.modacts)
	}

	// Warm both hosts' member caches with bob as a member.
	for _, h := range []*mta{a, b} {
		p := milterfix.Build(t, milterfix.Post{From: "bob@example.org", SignWith: bob, EncryptTo: list})
		if r := h.send("bob@example.org", []string{milterfix.List}, p); !r.delivered() {
			t.Fatalf("bob before removal: %+v", r.action)
		}
	}
	if err := site.Admin.RemoveMember(context.Background(), milterfix.List, "bob@example.org"); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]*mta{"A": a, "B": b} {
		p := milterfix.Build(t, milterfix.Post{From: "bob@example.org", SignWith: bob, EncryptTo: list})
		if r := h.send("bob@example.org", []string{milterfix.List}, p); r.code() != 550 || !strings.Contains(r.action.SMTPText, "not a member") {
			t.Fatalf("host %s still takes bob's post: %d %q", name, r.code(), r.action.SMTPText)
		}
	}
}
