package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// CompletePost marks the post complete and records the envelope that
// completed it; CompletedFor tells that envelope from another. The
// envelope row goes with the post's digests (PruneReplay) and keeps the
// post from being released.
func TestCompletePostEnvelope(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		post, env, otherEnv := []byte("post-1"), []byte("envelope-1"), []byte("envelope-2")
		if replayOf, err := s.RecordPost(ctx, listAddr, post, [][]byte{[]byte("sig")}, t0); err != nil || replayOf != nil {
			t.Fatal(replayOf, err)
		}
		if done, same, err := s.CompletedFor(ctx, listAddr, post, env); err != nil || done || same {
			t.Fatalf("before completion: %v %v %v", done, same, err)
		}
		for range 2 { // completing twice is not an error
			if err := s.CompletePost(ctx, listAddr, post, env, t0); err != nil {
				t.Fatal(err)
			}
		}
		if done, same, err := s.CompletedFor(ctx, listAddr, post, env); err != nil || !done || !same {
			t.Fatalf("same envelope: %v %v %v", done, same, err)
		}
		if done, same, err := s.CompletedFor(ctx, listAddr, post, otherEnv); err != nil || !done || same {
			t.Fatalf("other envelope: %v %v %v", done, same, err)
		}
		// Another post cannot borrow the envelope row.
		if done, same, err := s.CompletedFor(ctx, listAddr, []byte("post-2"), env); err != nil || done || same {
			t.Fatalf("another post: %v %v %v", done, same, err)
		}
		if released, err := s.ReleasePost(ctx, listAddr, post); err != nil || released {
			t.Fatalf("a completed post was released: %v %v", released, err)
		}
		if err := s.CompletePost(ctx, listAddr, post, nil, t0); err == nil {
			t.Fatal("empty envelope accepted")
		}
		if _, err := s.PruneReplay(ctx, t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if done, same, err := s.CompletedFor(ctx, listAddr, post, env); err != nil || done || same {
			t.Fatalf("after pruning: %v %v %v", done, same, err)
		}
	})
}
