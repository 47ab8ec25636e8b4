package deliver_test

import (
	"bytes"
	"context"
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
	keys, err := site.Admin.Keys()
	if err != nil {
		t.Fatal(err)
	}
	set, err := site.Admin.Policies()
	if err != nil {
		t.Fatal(err)
	}
	p := set.Lookup(milterfix.List)
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
