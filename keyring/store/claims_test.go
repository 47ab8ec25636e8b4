package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

const lease = 3 * time.Minute

// Many owners claim the same post at the same instant: the database lets
// exactly one have it, and every other learns who.
func TestClaimPostConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		for round := range 10 {
			post := []byte(fmt.Sprintf("post-%d", round))
			const n = 8
			var wg sync.WaitGroup
			start := make(chan struct{})
			type res struct {
				claimed bool
				holder  string
				err     error
			}
			got := make([]res, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					c, h, err := s.ClaimPost(ctx, listAddr, post, fmt.Sprintf("host-%d", i), lease, t0)
					got[i] = res{c, h, err}
				}()
			}
			close(start)
			wg.Wait()
			winner := ""
			for i, r := range got {
				if r.err != nil {
					t.Fatalf("round %d claimer %d: %v", round, i, r.err)
				}
				if r.claimed {
					if winner != "" {
						t.Fatalf("round %d: %s and host-%d both claimed", round, winner, i)
					}
					winner = fmt.Sprintf("host-%d", i)
					if r.holder != winner {
						t.Fatalf("round %d: winner %s sees holder %q", round, winner, r.holder)
					}
				}
			}
			if winner == "" {
				t.Fatalf("round %d: nobody claimed", round)
			}
			for i, r := range got {
				if !r.claimed && r.holder != winner {
					t.Fatalf("round %d claimer %d: holder %q, want %q", round, i, r.holder, winner)
				}
			}
		}
	})
}

// A live claim keeps others out, its owner renews it, an expired one is
// taken over, and a release frees it for the next claimer only when made
// by the holder.
func TestClaimPostLease(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		post := []byte("post-1")
		claim := func(owner string, at time.Time) (bool, string) {
			t.Helper()
			c, h, err := s.ClaimPost(ctx, listAddr, post, owner, lease, at)
			if err != nil {
				t.Fatal(err)
			}
			return c, h
		}
		if c, h := claim("a", t0); !c || h != "a" {
			t.Fatalf("first claim: %v %q", c, h)
		}
		if c, h := claim("b", t0.Add(time.Minute)); c || h != "a" {
			t.Fatalf("claim of a live claim: %v %q", c, h)
		}
		// The same post on another list, and another post, are apart.
		if c, _, err := s.ClaimPost(ctx, "other@lists.example.org", post, "b", lease, t0); err != nil || !c {
			t.Fatalf("other list: %v %v", c, err)
		}
		if c, _, err := s.ClaimPost(ctx, listAddr, []byte("post-2"), "b", lease, t0); err != nil || !c {
			t.Fatalf("other post: %v %v", c, err)
		}
		// The owner renews: the lease now runs to t0+2m+lease.
		if c, h := claim("a", t0.Add(2*time.Minute)); !c || h != "a" {
			t.Fatalf("renewal: %v %q", c, h)
		}
		if c, h := claim("b", t0.Add(lease+time.Minute)); c || h != "a" {
			t.Fatalf("claim before the renewed lease ran out: %v %q", c, h)
		}
		// Exactly at the end of the lease it still holds; after it, it
		// is taken over.
		if c, _ := claim("b", t0.Add(2*time.Minute+lease)); c {
			t.Fatal("claimed at the instant the lease ends")
		}
		if c, h := claim("b", t0.Add(2*time.Minute+lease+time.Microsecond)); !c || h != "b" {
			t.Fatalf("expired claim not taken over: %v %q", c, h)
		}
		// The dead holder comes back: its claim is gone.
		if c, h := claim("a", t0.Add(6*time.Minute)); c || h != "b" {
			t.Fatalf("old holder after take-over: %v %q", c, h)
		}
		if ok, err := s.ReleaseClaim(ctx, listAddr, post, "a"); err != nil || ok {
			t.Fatalf("release by a non-holder: %v %v", ok, err)
		}
		if ok, err := s.ReleaseClaim(ctx, listAddr, post, "b"); err != nil || !ok {
			t.Fatalf("release by the holder: %v %v", ok, err)
		}
		if c, h := claim("c", t0.Add(6*time.Minute)); !c || h != "c" {
			t.Fatalf("claim after release: %v %q", c, h)
		}
		if _, _, err := s.ClaimPost(ctx, listAddr, nil, "c", lease, t0); err == nil {
			t.Fatal("empty post id claimed")
		}
		// Pruning the replay window drops claims whose lease ended before
		// its cutoff.
		if _, err := s.PruneReplay(ctx, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if c, h := claim("d", t0); !c || h != "d" {
			t.Fatalf("pruned claim still there: %v %q", c, h)
		}
	})
}

// A claim whose holder is known dead is taken over before its lease ends,
// by exactly one of the attempts that try, and only from that holder.
func TestTakeOverClaim(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		post := []byte("post-1")
		if c, _, err := s.ClaimPost(ctx, listAddr, post, "dead", lease, t0); err != nil || !c {
			t.Fatal(c, err)
		}
		if ok, err := s.TakeOverClaim(ctx, listAddr, post, "someone-else", "x", lease, t0); err != nil || ok {
			t.Fatalf("take-over from a non-holder: %v %v", ok, err)
		}
		var wg sync.WaitGroup
		wins := make([]bool, 6)
		for i := range wins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.TakeOverClaim(ctx, listAddr, post, "dead", fmt.Sprintf("new-%d", i), lease, t0.Add(time.Second))
				if err != nil {
					t.Error(err)
				}
				wins[i] = ok
			}()
		}
		wg.Wait()
		winner := -1
		for i, w := range wins {
			if w {
				if winner >= 0 {
					t.Fatalf("new-%d and new-%d both took over", winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatal("nobody took over")
		}
		if c, h, err := s.ClaimPost(ctx, listAddr, post, "dead", lease, t0.Add(time.Minute)); err != nil || c || h != fmt.Sprintf("new-%d", winner) {
			t.Fatalf("after take-over: %v %q %v", c, h, err)
		}
		if ok, err := s.TakeOverClaim(ctx, listAddr, []byte("no-such-post"), "dead", "x", lease, t0); err != nil || ok {
			t.Fatalf("take-over of no claim: %v %v", ok, err)
		}
	})
}

// RenewClaim extends only a claim its owner still holds: never one taken
// over, never one released (it is not created again).
func TestRenewClaim(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		id := []byte("post")
		if ok, _, err := s.ClaimPost(ctx, listAddr, id, "a", time.Minute, t0); err != nil || !ok {
			t.Fatalf("claim: %v %v", ok, err)
		}
		// Lapsed but nobody took it: still a's.
		if ok, err := s.RenewClaim(ctx, listAddr, id, "a", time.Minute, t0.Add(5*time.Minute)); err != nil || !ok {
			t.Fatalf("renew a lapsed own claim: %v %v", ok, err)
		}
		if ok, _, err := s.ClaimPost(ctx, listAddr, id, "b", time.Minute, t0.Add(10*time.Minute)); err != nil || !ok {
			t.Fatalf("b takes over: %v %v", ok, err)
		}
		if ok, err := s.RenewClaim(ctx, listAddr, id, "a", time.Minute, t0.Add(10*time.Minute)); err != nil || ok {
			t.Fatalf("a renews b's claim: %v %v", ok, err)
		}
		if _, err := s.ReleaseClaim(ctx, listAddr, id, "b"); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.RenewClaim(ctx, listAddr, id, "a", time.Minute, t0.Add(11*time.Minute)); err != nil || ok {
			t.Fatalf("a renews a released claim: %v %v", ok, err)
		}
		if ok, holder, err := s.ClaimPost(ctx, listAddr, id, "c", time.Minute, t0.Add(11*time.Minute)); err != nil || !ok || holder != "c" {
			t.Fatalf("the released claim was created again by a renewal: %v %q %v", ok, holder, err)
		}
	})
}
