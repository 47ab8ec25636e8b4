package store_test

import (
	"context"
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
		if err := s.MarkRefused(ctx, listAddr, post, nil, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkRefused(ctx, listAddr, post, []store.RefusedRecipient{
			{Address: "b@x", Reply: "550 5.1.1 <b@x>: Recipient address rejected: User unknown"},
			{Address: "a@x", Reply: "553 5.7.1 no"},
		}, t0); err != nil {
			t.Fatal(err)
		}
		// The same recipient again (a retry racing another host) keeps the
		// first record.
		if err := s.MarkRefused(ctx, listAddr, post, []store.RefusedRecipient{
			{Address: "b@x", Reply: "551 later"}, {Address: "c@x", Reply: "550 c"},
		}, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkRefused(ctx, listAddr, other, []store.RefusedRecipient{{Address: "z@x", Reply: "550 z"}}, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkRefused(ctx, "other@lists.example.org", post, []store.RefusedRecipient{{Address: "y@x", Reply: "550 y"}}, t0); err != nil {
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
