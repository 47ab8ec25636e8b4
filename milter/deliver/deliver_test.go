package deliver_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// A delivery stands on its own (no milter server): resumed after an
// attempt that served one member, it serves the others once each, and
// run again it serves nobody. What each member decrypts is the post,
// signed by the list key.
func TestDeliverResumesAndServesEachMemberOnce(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
	carol := site.AddMember(t, "carol@example.org")
	member := map[string]*openpgp.Entity{"alice@example.org": alice, "carol@example.org": carol}
	ctx := context.Background()
	p, keys := listOf(t, site)
	d := deliver.New(deliver.Options{Store: site.Admin.Store, Keys: keys, Config: site.Config})

	const text = "delivered on its own"
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: text})
	id, err := deliver.PostID(msg)
	if err != nil {
		t.Fatal(err)
	}
	// An earlier attempt served bob, then died.
	if _, err := site.Admin.Store.MarkDelivered(ctx, milterfix.List, id, 1, []string{"bob@example.org"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	r, err := d.Distribute(ctx, p, msg)
	if err != nil {
		t.Fatal(err)
	}
	copies := site.Reinjected.Messages()
	var to []string
	for _, c := range copies {
		to = append(to, c.To...)
	}
	slices.Sort(to)
	if r.Served != 2 || !slices.Equal(to, []string{"alice@example.org", "carol@example.org"}) {
		t.Fatalf("served %d, copies to %v; want alice and carol once", r.Served, to)
	}
	for _, c := range copies {
		if c.From != p.BounceAddress() {
			t.Errorf("copy from %q, want the bounce address", c.From)
		}
		for _, a := range c.To {
			if pt := milterfix.DecryptCopy(t, c.Data, member[a], site.ListKey); !bytes.Contains(pt, []byte(text)) {
				t.Errorf("copy for %s lacks the post", a)
			}
		}
		if bytes.Contains(c.Data, []byte(text)) {
			t.Fatal("post in clear in a copy")
		}
	}
	// Again: every member is recorded, nobody is served twice.
	r, err = d.Distribute(ctx, p, msg)
	if err != nil || r.Served != 0 || len(site.Reinjected.Messages()) != len(copies) {
		t.Fatalf("second run: served %d, %d copies, %v", r.Served, len(site.Reinjected.Messages())-len(copies), err)
	}
}

// A delivery whose context ends between batches (its deadline, or a
// claim that passed to another attempt) is no success: Distribute
// returns an error, so "hold approve" never marks a half-delivered hold
// delivered, and the next run serves the members left.
func TestDeliverCancelledBetweenBatchesIsAnError(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	file := filepath.Join(site.Config.PolicyDir, milterfix.List+".toml")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte("batch_size = 50")) {
		t.Fatal("no batch_size in the fixture policy")
	}
	if err := os.WriteFile(file, bytes.Replace(src, []byte("batch_size = 50"), []byte("batch_size = 1"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	site.Config.Reinject.Connections = 1
	alice := site.AddMember(t, "alice@example.org")
	for _, m := range []string{"bob@example.org", "carol@example.org", "dave@example.org"} {
		site.AddMember(t, m)
	}
	p, keys := listOf(t, site)
	d := deliver.New(deliver.Options{Store: site.Admin.Store, Keys: keys, Config: site.Config})
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}})

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// The first batch reached the MTA: the context ends.
		site.Reinjected.Wait(context.Background(), 1)
		cancel()
	}()
	if r, err := d.Distribute(ctx, p, msg); err == nil {
		t.Fatalf("a delivery cut short reported success (%d served of 4)", r.Served)
	}
	cancel()
	if _, err := d.Distribute(context.Background(), p, msg); err != nil {
		t.Fatalf("resume: %v", err)
	}
	got := map[string]int{}
	for _, c := range site.Reinjected.Messages() {
		for _, a := range c.To {
			got[a]++
		}
	}
	for _, m := range []string{"alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org"} {
		if got[m] == 0 {
			t.Errorf("%s never served", m)
		}
	}
}
