package store_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// Holds older than the cutoff expire once, on both engines; an expired
// hold cannot be approved, and a restore makes it wait again.
func TestExpireHolds(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		add := func(list string, age time.Duration) int64 {
			t.Helper()
			id, err := s.AddHold(ctx, store.Hold{List: list, Sender: "x@example.org", Reason: "non-member",
				Message: []byte("sealed"), CreatedAt: t0.Add(-age)})
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		old1 := add(listAddr, 15*24*time.Hour)
		old2 := add(listAddr, 14*24*time.Hour+time.Second)
		young := add(listAddr, 13*24*time.Hour)
		decided := add(listAddr, 20*24*time.Hour)
		otherList := add("other@lists.example.org", 30*24*time.Hour)
		if err := s.SetHoldState(ctx, decided, store.HoldHeld, store.HoldApproved); err != nil {
			t.Fatal(err)
		}

		cutoff := t0.Add(-14 * 24 * time.Hour)
		got, err := s.ExpireHolds(ctx, listAddr, cutoff, t0)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, h := range got {
			ids = append(ids, h.ID)
			if h.State != store.HoldRejected || !h.ExpiredAt.Equal(stored(t0)) || !h.Expired() || h.Message != nil || h.Sender != "x@example.org" {
				t.Errorf("expired hold %+v", h)
			}
		}
		if !slices.Equal(ids, []int64{old1, old2}) {
			t.Fatalf("expired %v, want %v", ids, []int64{old1, old2})
		}
		if again, err := s.ExpireHolds(ctx, listAddr, cutoff, t0); err != nil || len(again) != 0 {
			t.Fatalf("second run expired %v, %v", again, err)
		}
		for id, state := range map[int64]string{young: store.HoldHeld, decided: store.HoldApproved, otherList: store.HoldHeld} {
			if h, err := s.GetHold(ctx, id); err != nil || h.State != state || h.Expired() {
				t.Errorf("hold %d: %+v %v, want %s and not expired", id, h, err, state)
			}
		}
		if err := s.SetHoldState(ctx, old1, store.HoldHeld, store.HoldApproved); !errors.Is(err, store.ErrConflict) {
			t.Errorf("approving an expired hold: %v, want ErrConflict", err)
		}

		// Restore (the owners could not be told): waiting again.
		if err := s.RestoreExpiredHolds(ctx, []int64{old1, decided}); err != nil {
			t.Fatal(err)
		}
		if h, _ := s.GetHold(ctx, old1); h.State != store.HoldHeld || h.Expired() {
			t.Errorf("restored hold %+v", h)
		}
		if h, _ := s.GetHold(ctx, decided); h.State != store.HoldApproved {
			t.Errorf("restore touched a decided hold: %+v", h)
		}

		// Hosts racing: every hold is expired by exactly one.
		for range 6 {
			add(listAddr, 40*24*time.Hour)
		}
		const n = 4
		counts := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				hs, err := s.ExpireHolds(ctx, listAddr, cutoff, t0)
				if err != nil {
					t.Error(err)
				}
				counts[i] = len(hs)
			})
		}
		wg.Wait()
		if total := counts[0] + counts[1] + counts[2] + counts[3]; total != 7 { // 6 new and old1
			t.Errorf("racing expiries returned %v holds, want 7 in all", counts)
		}
	})
}

func TestHoldNoticeClaims(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		id, err := s.AddHold(ctx, store.Hold{List: listAddr, Sender: "x@example.org", Reason: "non-member", Message: []byte("m"), CreatedAt: t0})
		if err != nil {
			t.Fatal(err)
		}
		id2, err := s.AddHold(ctx, store.Hold{List: listAddr, Sender: "y@example.org", Reason: "non-member", Message: []byte("m"), CreatedAt: t0})
		if err != nil {
			t.Fatal(err)
		}
		if h, err := s.HoldMeta(ctx, id); err != nil || h.ID != id || h.Sender != "x@example.org" || h.Message != nil || !h.NotifiedAt.IsZero() {
			t.Fatalf("HoldMeta = %+v, %v", h, err)
		}
		if _, err := s.HoldMeta(ctx, id2+100); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("HoldMeta(missing) = %v", err)
		}
		if hs, err := s.UnnotifiedHolds(ctx, listAddr); err != nil || len(hs) != 2 {
			t.Fatalf("UnnotifiedHolds = %+v, %v", hs, err)
		}
		// Claimers racing: exactly one sends the notice.
		const n = 6
		wins := make([]bool, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				ok, err := s.ClaimHoldNotice(ctx, id, t0.Add(time.Minute))
				if err != nil {
					t.Error(err)
				}
				wins[i] = ok
			})
		}
		wg.Wait()
		if c := len(slices.DeleteFunc(wins, func(b bool) bool { return !b })); c != 1 {
			t.Fatalf("%d claims won, want 1", c)
		}
		if h, _ := s.GetHold(ctx, id); !h.NotifiedAt.Equal(stored(t0.Add(time.Minute))) {
			t.Errorf("NotifiedAt = %v", h.NotifiedAt)
		}
		if hs, _ := s.UnnotifiedHolds(ctx, listAddr); len(hs) != 1 || hs[0].ID != id2 {
			t.Fatalf("UnnotifiedHolds after a claim = %+v", hs)
		}
		// A failed notice is released and due again.
		if err := s.ReleaseHoldNotice(ctx, id); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.ClaimHoldNotice(ctx, id, t0); err != nil || !ok {
			t.Fatalf("claim after release: %v %v", ok, err)
		}
		// A decided hold needs no notice.
		if err := s.SetHoldState(ctx, id2, store.HoldHeld, store.HoldRejected); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.ClaimHoldNotice(ctx, id2, t0); err != nil || ok {
			t.Fatalf("claim of a decided hold: %v %v", ok, err)
		}
		if hs, _ := s.UnnotifiedHolds(ctx, listAddr); len(hs) != 0 {
			t.Fatalf("UnnotifiedHolds = %+v", hs)
		}
	})
}

// A hold goes held → delivering (approved) → delivered; a delivering
// hold never expires, and it is marked delivered once.
func TestHoldDelivery(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		id, err := s.AddHold(ctx, store.Hold{List: listAddr, Sender: "x@example.org", Reason: "non-member",
			Message: []byte("sealed"), CreatedAt: t0.Add(-30 * 24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		status := func() string {
			t.Helper()
			h, err := s.HoldMeta(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return h.Status()
		}
		if st := status(); st != store.HoldHeld {
			t.Fatalf("new hold: %s", st)
		}
		if ok, err := s.MarkHoldDelivered(ctx, id, t0); err != nil || ok {
			t.Fatalf("marked a waiting hold delivered: %v %v", ok, err)
		}
		if err := s.SetHoldState(ctx, id, store.HoldHeld, store.HoldApproved); err != nil {
			t.Fatal(err)
		}
		if st := status(); st != store.HoldDelivering {
			t.Fatalf("approved hold: %s", st)
		}
		if hs, err := s.ExpireHolds(ctx, listAddr, t0, t0); err != nil || len(hs) != 0 {
			t.Fatalf("a delivering hold expired: %v %v", hs, err)
		}
		if ok, err := s.MarkHoldDelivered(ctx, id, t0); err != nil || !ok {
			t.Fatalf("mark delivered: %v %v", ok, err)
		}
		if ok, _ := s.MarkHoldDelivered(ctx, id, t0.Add(time.Hour)); ok {
			t.Fatal("marked delivered twice")
		}
		h, err := s.HoldMeta(ctx, id)
		if err != nil || h.Status() != store.HoldDelivered || !h.DeliveredAt.Equal(t0.UTC().Truncate(time.Microsecond)) {
			t.Fatalf("delivered hold: %+v %v", h, err)
		}
		all, err := s.AllHolds(ctx, listAddr)
		if err != nil || len(all) != 1 || all[0].Status() != store.HoldDelivered || all[0].Message != nil {
			t.Fatalf("all holds: %+v %v", all, err)
		}
		if waiting, _ := s.Holds(ctx, listAddr); len(waiting) != 0 {
			t.Fatalf("waiting holds: %+v", waiting)
		}
	})
}

// One hold per list and post id: adding it again returns the first
// hold's id, whatever its state; holds without a post id never clash.
func TestAddHoldOncePerPost(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		h := store.Hold{List: listAddr, Sender: "m@example.org", Reason: "non-member", Message: []byte("sealed"), PostID: []byte("post-1")}
		first, err := s.AddHold(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetHoldState(ctx, first, store.HoldHeld, store.HoldRejected); err != nil {
			t.Fatal(err)
		}
		again, err := s.AddHold(ctx, h)
		if err != nil || again != first {
			t.Fatalf("again: %d %v, want %d", again, err, first)
		}
		h2 := h
		h2.List = "other@lists.example.org"
		if other, err := s.AddHold(ctx, h2); err != nil || other == first {
			t.Fatalf("the same post on another list: %d %v", other, err)
		}
		h3 := h
		h3.PostID = nil
		a, err1 := s.AddHold(ctx, h3)
		b, err2 := s.AddHold(ctx, h3)
		if err1 != nil || err2 != nil || a == b {
			t.Fatalf("holds without a post id: %d %d %v %v", a, b, err1, err2)
		}
	})
}
