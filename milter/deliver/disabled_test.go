package deliver_test

import (
	"context"
	"slices"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// A member whose delivery is disabled (bounces, or an admin) gets no
// copy and is no failure; enabled again, it gets the next post.
func TestDisabledMemberGetsNothing(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
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
	if _, err := site.Admin.Store.SetDelivery(ctx, milterfix.List, "bob@example.org", false, site.Admin.Now()); err != nil {
		t.Fatal(err)
	}
	post := func(body string) (deliver.Result, []string) {
		t.Helper()
		before := len(site.Reinjected.Messages())
		msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: body})
		r, err := d.Distribute(ctx, p, msg)
		if err != nil {
			t.Fatal(err)
		}
		var to []string
		for _, c := range site.Reinjected.Messages()[before:] {
			to = append(to, c.To...)
		}
		slices.Sort(to)
		return r, to
	}
	if r, to := post("while bob is disabled"); r.Served != 1 || r.Disabled != 1 || !slices.Equal(to, []string{"alice@example.org"}) {
		t.Fatalf("served %d, disabled %d, copies to %v", r.Served, r.Disabled, to)
	}
	if _, err := site.Admin.Store.SetDelivery(ctx, milterfix.List, "bob@example.org", true, site.Admin.Now()); err != nil {
		t.Fatal(err)
	}
	if r, to := post("bob is back"); r.Served != 2 || r.Disabled != 0 || !slices.Equal(to, []string{"alice@example.org", "bob@example.org"}) {
		t.Fatalf("served %d, disabled %d, copies to %v", r.Served, r.Disabled, to)
	}
}
