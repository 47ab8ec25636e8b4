package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/policy"
)

// A member whose delivery is disabled (bounces, or an admin) gets no
// copy and is no failure; enabled again, it gets the next post.
func TestDisabledMemberGetsNothing(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
	ctx := context.Background()
	p, keys := listOf(t, site)
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

// A panic in a batch's goroutine (a bug) is the delivery's error, with
// its stack, not the end of the process; the retry serves the members
// the failed attempt did not.
func TestBatchPanicIsAnError(t *testing.T) {
	site, alice := threeBatches(t)
	ctx := context.Background()
	p, keys := listOf(t, site)
	var logs bytes.Buffer
	d := deliver.New(deliver.Options{Store: site.Admin.Store, Keys: keys, Config: site.Config, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "panics once"})
	deliver.SetBatchHook(func(n int) {
		if n == 2 {
			panic("batch bug")
		}
	})
	_, err := d.Distribute(ctx, p, msg)
	deliver.SetBatchHook(nil)
	if err == nil || !strings.Contains(err.Error(), "panic while delivering batch 2: batch bug") {
		t.Fatalf("Distribute: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR msg=panic") || !strings.Contains(l, "batch=2") || !strings.Contains(l, "submitBatches") {
		t.Fatalf("the panic is not logged at Error with its stack:\n%s", l)
	}
	r, err := d.Distribute(ctx, p, msg)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, c := range site.Reinjected.Messages() {
		for _, a := range c.To {
			n[a]++
		}
	}
	if len(n) != 6 || r.Served == 0 {
		t.Fatalf("after the retry: copies %v, served %d", n, r.Served)
	}
	for a, c := range n {
		if c != 1 {
			t.Errorf("%s got %d copies", a, c)
		}
	}
}

// A fence that fails (the claim passed to another process) stops the
// delivery before the next batch: that batch and the later ones are not
// sent by this attempt, and the retry sends each of them once.
func TestFenceStopsBeforeTheBatch(t *testing.T) {
	site, alice := threeBatches(t)
	ctx := context.Background()
	p, keys := listOf(t, site)
	var calls atomic.Int32
	fence := func(context.Context) error {
		if calls.Add(1) > 1 {
			return errors.New("the claim passed to another host")
		}
		return nil
	}
	site.Config.Reinject.Connections = 1 // one batch at a time: the second meets the fence
	d := deliver.New(deliver.Options{Store: site.Admin.Store, Keys: keys, Config: site.Config, Fence: fence})
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "fenced"})
	_, err := d.Distribute(ctx, p, msg)
	if err == nil || !strings.Contains(err.Error(), "not sent: the claim passed to another host") {
		t.Fatalf("Distribute: %v", err)
	}
	if n := len(site.Reinjected.Messages()); n != 1 {
		t.Fatalf("%d batches sent past a failed fence, want 1", n)
	}
	d = deliver.New(deliver.Options{Store: site.Admin.Store, Keys: keys, Config: site.Config})
	if _, err := d.Distribute(ctx, p, msg); err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, c := range site.Reinjected.Messages() {
		for _, a := range c.To {
			n[a]++
		}
	}
	if len(n) != 6 {
		t.Fatalf("copies %v", n)
	}
	for a, c := range n {
		if c != 1 {
			t.Errorf("%s got %d copies", a, c)
		}
	}
}

// listOf returns the fixture list's policy and the site's keys.
func listOf(t *testing.T, site *milterfix.Site) (*policy.Policy, *keyring.Cache) {
	t.Helper()
	keys, err := site.Admin.Keys()
	if err != nil {
		t.Fatal(err)
	}
	set, err := site.Admin.Policies()
	if err != nil {
		t.Fatal(err)
	}
	return set.Lookup(milterfix.List), keys
}

// threeBatches is a site whose list has alice and five more members in
// batches of 2: a post goes out in three batches.
func threeBatches(t *testing.T) (*milterfix.Site, *openpgp.Entity) {
	t.Helper()
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	for i := range 5 {
		site.AddMember(t, fmt.Sprintf("m%d@example.org", i))
	}
	site.EditPolicy(t, "batch_size = 50", "batch_size = 2")
	return site, alice
}
