package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

func TestKeySteps(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		const bob = "bob@example.org"
		v0, err := s.KeysVersion(ctx, listAddr)
		if err != nil {
			t.Fatal(err)
		}
		ch := func(h string) store.Challenge {
			return store.Challenge{TokenHash: []byte(h), Command: "key set", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		}
		// subscribe: a challenge only; the member does not change.
		if err := s.ApplyKeyStep(ctx, store.KeyStep{List: listAddr, Address: bob, Now: t0, AddChallenges: []store.Challenge{ch("t1")}}); err != nil {
			t.Fatal(err)
		}
		if c, err := s.PeekChallenge(ctx, []byte("t1")); err != nil || c.Address != bob || c.List != listAddr || !c.UsedAt.IsZero() {
			t.Fatalf("peek: %+v %v", c, err)
		}
		if _, err := s.PeekChallenge(ctx, []byte("nope")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("peek unknown: %v", err)
		}
		if v, _ := s.KeysVersion(ctx, listAddr); v != v0 {
			t.Fatalf("keys version moved without a member change")
		}
		// key set: uses t1, adds a pending key and t2, all at once.
		pk := &store.PendingKey{Fingerprint: "AAAA", PublicKey: []byte("key-a"), Purpose: store.PendingSet, State: store.PendingUnconfirmed}
		set := store.KeyStep{List: listAddr, Address: bob, Now: t0.Add(time.Minute), UseToken: []byte("t1"), PutPending: pk,
			AddChallenges: []store.Challenge{ch("t2")}}
		if err := s.ApplyKeyStep(ctx, set); err != nil {
			t.Fatal(err)
		}
		if err := s.ApplyKeyStep(ctx, set); !errors.Is(err, store.ErrUsed) {
			t.Fatalf("reused token: %v", err)
		}
		// A failing step changes nothing: the token of a failed step stays unused.
		bad := store.KeyStep{List: listAddr, Address: bob, Now: t0.Add(time.Minute), UseToken: []byte("t2"),
			ExpectMember: &store.MemberExpect{State: store.MemberActive, Fingerprint: "AAAA"}, DropPending: true}
		if err := s.ApplyKeyStep(ctx, bad); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("conflict: %v", err)
		}
		if c, _ := s.PeekChallenge(ctx, []byte("t2")); !c.UsedAt.IsZero() {
			t.Fatal("token used by a failed step")
		}
		pks, err := s.PendingKeys(ctx, listAddr, bob)
		if err != nil || len(pks) != 1 || pks[0].Fingerprint != "AAAA" || string(pks[0].PublicKey) != "key-a" || pks[0].Purpose != store.PendingSet {
			t.Fatalf("pending: %+v %v", pks, err)
		}
		if err := s.ApplyKeyStep(ctx, store.KeyStep{List: listAddr, Address: bob, Now: t0.Add(2 * time.Hour), UseToken: []byte("t2")}); !errors.Is(err, store.ErrExpired) {
			t.Fatalf("expired: %v", err)
		}
		// key confirm: member pending, pending keys dropped.
		confirm := store.KeyStep{List: listAddr, Address: bob, Now: t0.Add(2 * time.Minute), UseToken: []byte("t2"),
			ExpectMember: &store.MemberExpect{Absent: true}, DropPending: true,
			PutMember: &store.Member{State: store.MemberPending, Fingerprint: "AAAA", PublicKey: []byte("key-a"), KeyIDs: []uint64{7, 1 << 63}}}
		if err := s.ApplyKeyStep(ctx, confirm); err != nil {
			t.Fatal(err)
		}
		m, err := s.GetMember(ctx, listAddr, bob)
		if err != nil || m.State != store.MemberPending || len(m.KeyIDs) != 2 || !m.CreatedAt.Equal(stored(t0.Add(2*time.Minute))) {
			t.Fatalf("member: %+v %v", m, err)
		}
		if v, _ := s.KeysVersion(ctx, listAddr); v == v0 {
			t.Fatal("keys version did not move")
		}
		if pks, _ := s.PendingKeys(ctx, listAddr, ""); len(pks) != 0 {
			t.Fatalf("pending left: %+v", pks)
		}
		// Compare-and-set on a pending key; racing approvals: one wins.
		if err := s.ApplyKeyStep(ctx, store.KeyStep{List: listAddr, Address: bob, ExpectMember: &store.MemberExpect{State: store.MemberPending, Fingerprint: "AAAA"},
			PutMember: &store.Member{State: store.MemberActive, Fingerprint: "AAAA", PublicKey: []byte("key-a")}}); err != nil {
			t.Fatal(err)
		}
		change := &store.PendingKey{Fingerprint: "BBBB", PublicKey: []byte("key-b"), Purpose: store.PendingChange, State: store.PendingConfirmed}
		if err := s.ApplyKeyStep(ctx, store.KeyStep{List: listAddr, Address: bob, PutPending: change}); err != nil {
			t.Fatal(err)
		}
		approve := store.KeyStep{List: listAddr, Address: bob, ExpectPending: &store.PendingKey{Fingerprint: "BBBB", State: store.PendingConfirmed},
			ExpectMember: &store.MemberExpect{State: store.MemberActive, Fingerprint: "AAAA"}, DropPending: true,
			PutMember: &store.Member{State: store.MemberActive, Fingerprint: "BBBB", PublicKey: []byte("key-b")}}
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = s.ApplyKeyStep(ctx, approve) })
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("approve: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d approvals won", wins)
		}
		// Pruning and removal.
		old := &store.PendingKey{Fingerprint: "CCCC", PublicKey: []byte("c"), Purpose: store.PendingChange, State: store.PendingUnconfirmed}
		if err := s.ApplyKeyStep(ctx, store.KeyStep{List: listAddr, Address: bob, Now: t0, PutPending: old}); err != nil {
			t.Fatal(err)
		}
		if err := s.ApplyKeyStep(ctx, store.KeyStep{List: listAddr, Address: "x@example.org", Now: t0.Add(48 * time.Hour),
			PrunePendingBefore: t0.Add(time.Hour), PruneChallengesBefore: t0.Add(24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if pks, _ := s.PendingKeys(ctx, listAddr, ""); len(pks) != 0 {
			t.Fatalf("not pruned: %+v", pks)
		}
		if _, err := s.PeekChallenge(ctx, []byte("t1")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("challenge not pruned: %v", err)
		}
		if err := s.ApplyKeyStep(ctx, store.KeyStep{List: listAddr, Address: bob, RemoveMember: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetMember(ctx, listAddr, bob); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("removed: %v", err)
		}
		if err := s.ApplyKeyStep(ctx, store.KeyStep{List: "none@lists.example.org", Address: bob, RemoveMember: true}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing list: %v", err)
		}
	})
}
