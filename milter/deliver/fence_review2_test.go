package deliver_test

import (
	"context"
	"sync"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// Found in review (it failed before the fix): "hold approve" A is stopped (Ctrl-Z) between two batches longer
// than its lease. Approve B takes the lapsed claim over, resumes from the
// records, serves every remaining member, marks the hold delivered and
// releases the claim (the row is deleted). When A wakes, its fence is
// ClaimPost, which simply inserts a fresh claim row for A (nobody holds
// one): the fence passes and A sends every remaining batch again, to
// members B already served. docs/outbound.md says only a batch already
// past the fence when A stopped can go twice; here none was.
func TestReview2FenceReclaimsAfterTheNewHolderReleased(t *testing.T) {
	site, alice := threeBatches(t)
	site.Config.Reinject.Connections = 1 // one batch at a time
	ctx := context.Background()

	t0 := time.Now().UTC()
	raw := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "held, approved twice"})
	sealed, err := keyring.EncryptTo(raw, []*openpgp.Entity{site.ListKey}, keyring.DefaultLimits, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := site.Admin.Store.AddHold(ctx, store.Hold{List: milterfix.List, Sender: "alice@example.org",
		Recipients: []string{milterfix.List}, Reason: "moderated", Message: sealed, CreatedAt: t0})
	if err != nil {
		t.Fatal(err)
	}

	// A: its clock stays at t0; it is "stopped" right before its
	// second batch (before the fence of that batch).
	a := site.Admin
	a.Now = func() time.Time { return t0 }
	stopped := make(chan struct{})
	wake := make(chan struct{})
	var once sync.Once
	deliver.SetBatchHook(func(n int) {
		if n == 2 {
			first := false
			once.Do(func() { first = true })
			if first {
				close(stopped)
				<-wake
			}
		}
	})
	defer deliver.SetBatchHook(nil)
	type result struct {
		delivered int
		err       error
	}
	aDone := make(chan result, 1)
	go func() {
		ap, err := a.ApproveHold(ctx, id)
		aDone <- result{ap.Delivered, err}
	}()
	select {
	case <-stopped:
	case r := <-aDone:
		t.Fatalf("A ended before its second batch: %+v", r)
	case <-time.After(60 * time.Second):
		t.Fatal("A never reached its second batch")
	}

	// B: 3 minutes later (A's 2-minute lease ran out), another moderator
	// approves again; it resumes and completes the delivery.
	b := *site.Admin
	b.Now = func() time.Time { return t0.Add(3 * time.Minute) }
	apB, err := b.ApproveHold(ctx, id)
	if err != nil {
		t.Fatalf("B: %v", err)
	}
	if !apB.Resumed {
		t.Fatalf("B did not resume: %+v", apB)
	}
	h, err := site.Admin.Store.HoldMeta(ctx, id)
	if err != nil || h.Status() != store.HoldDelivered {
		t.Fatalf("after B: %v %v", h.Status(), err)
	}

	// A wakes up.
	close(wake)
	var ra result
	select {
	case ra = <-aDone:
	case <-time.After(60 * time.Second):
		t.Fatal("A never finished")
	}
	t.Logf("A after waking: delivered %d, err %v", ra.delivered, ra.err)

	n := map[string]int{}
	for _, c := range site.Reinjected.Messages() {
		for _, rcpt := range c.To {
			n[rcpt]++
		}
	}
	if len(n) != 6 {
		t.Errorf("members served: %v", n)
	}
	for rcpt, c := range n {
		if c != 1 {
			t.Errorf("%s got %d copies (A's fence passed after B released the claim)", rcpt, c)
		}
	}
}
