package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

func TestRefusedRecipients(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		post, other := []byte("post-1"), []byte("post-2")
		got, err := s.RefusedRecipients(ctx, listAddr, post)
		if err != nil || len(got) != 0 {
			t.Fatalf("fresh: %v %v", got, err)
		}
		if _, err := s.RecordBatch(ctx, listAddr, post, 0, nil, nil, t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordBatch(ctx, listAddr, post, 0, nil, []store.RefusedRecipient{
			{Address: "b@x", Reply: "550 5.1.1 <b@x>: Recipient address rejected: User unknown"},
			{Address: "a@x", Reply: "553 5.7.1 no"},
		}, t0); err != nil {
			t.Fatal(err)
		}
		// The same recipient again (a retry racing another host) keeps the
		// first record.
		if _, err := s.RecordBatch(ctx, listAddr, post, 0, nil, []store.RefusedRecipient{
			{Address: "b@x", Reply: "551 later"}, {Address: "c@x", Reply: "550 c"},
		}, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordBatch(ctx, listAddr, other, 0, nil, []store.RefusedRecipient{{Address: "z@x", Reply: "550 z"}}, t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordBatch(ctx, "other@lists.example.org", post, 0, nil, []store.RefusedRecipient{{Address: "y@x", Reply: "550 y"}}, t0); err != nil {
			t.Fatal(err)
		}
		got, err = s.RefusedRecipients(ctx, listAddr, post)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.RefusedRecipient{
			{Address: "a@x", Reply: "553 5.7.1 no", RefusedAt: stored(t0)},
			{Address: "b@x", Reply: "550 5.1.1 <b@x>: Recipient address rejected: User unknown", RefusedAt: stored(t0)},
			{Address: "c@x", Reply: "550 c", RefusedAt: stored(t0.Add(time.Minute))},
		}
		if len(got) != len(want) {
			t.Fatalf("got %+v", got)
		}
		for i := range want {
			if got[i].Address != want[i].Address || got[i].Reply != want[i].Reply || !got[i].RefusedAt.Equal(want[i].RefusedAt) {
				t.Errorf("refused[%d] = %+v, want %+v", i, got[i], want[i])
			}
		}
		if n, err := s.PruneRefused(ctx, t0.Add(time.Second)); err != nil || n != 4 {
			t.Fatalf("PruneRefused = %d, %v; want 4", n, err)
		}
		got, _ = s.RefusedRecipients(ctx, listAddr, post)
		if len(got) != 1 || got[0].Address != "c@x" {
			t.Fatalf("after prune: %+v", got)
		}
	})
}

// A batch is recorded in one transaction, accepted and refused members
// together, with relaxed durability for that commit only: the connection
// goes back to durable commits for everything else.
func TestRecordBatch(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		s.OneConnection()
		mkList(t, s, listAddr)
		want, err := s.Durability(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// (The test PostgreSQL runs with synchronous_commit off for
		// speed: there the setting must only come back unchanged.)
		if s.Engine() == store.EngineSQLite && want != "2" {
			t.Fatalf("synchronous %q before any batch, want FULL (2)", want)
		}
		post := []byte("batched")
		accepted := make([]string, 1200) // more rows than one statement takes
		for i := range accepted {
			accepted[i] = fmt.Sprintf("m%04d@example.org", i)
		}
		refused := []store.RefusedRecipient{{Address: "gone@example.org", Reply: "550 5.1.1 gone"}}
		already, err := s.RecordBatch(ctx, listAddr, post, 1, accepted, refused, t0)
		if err != nil || already {
			t.Fatalf("record: %v %v", already, err)
		}
		if got, err := s.Durability(ctx); err != nil || got != want {
			t.Fatalf("durability after a batch record %q (%v), want %q", got, err, want)
		}
		got, last, err := s.DeliveredRecipients(ctx, listAddr, post)
		if err != nil || len(got) != len(accepted) || last != 1 {
			t.Fatalf("delivered %d, last batch %d, %v", len(got), last, err)
		}
		ref, err := s.RefusedRecipients(ctx, listAddr, post)
		if err != nil || len(ref) != 1 || ref[0].Address != "gone@example.org" {
			t.Fatalf("refused %v %v", ref, err)
		}
		if already, err := s.RecordBatch(ctx, listAddr, post, 1, accepted[:1], nil, t0); err != nil || !already {
			t.Fatalf("the same batch again: already=%v %v", already, err)
		}
	})
}
