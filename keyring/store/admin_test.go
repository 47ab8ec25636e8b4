package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

func TestListSummariesAndDeleteList(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "another@lists.example.org")
		for _, a := range []string{"a@example.org", "b@example.org"} {
			if err := s.PutMember(ctx, store.Member{List: listAddr, Address: a, State: store.MemberActive,
				Fingerprint: "F", PublicKey: []byte("k"), KeyIDs: []uint64{1, 2}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutMember(ctx, store.Member{List: "another@lists.example.org", Address: "c@example.org", State: store.MemberActive, Fingerprint: "F"}); err != nil {
			t.Fatal(err)
		}
		ls, err := s.ListSummaries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != 2 || ls[0].Address != "another@lists.example.org" || ls[0].Members != 1 ||
			ls[1].Address != listAddr || ls[1].Members != 2 || ls[1].KeyFingerprint != "0123456789ABCDEF0123456789ABCDEF01234567" {
			t.Fatalf("ListSummaries = %+v", ls)
		}

		// A waiting hold refuses the delete, and nothing changes.
		id, err := s.AddHold(ctx, store.Hold{List: listAddr, Sender: "x@example.org", Message: []byte("m")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Queue(ctx, store.OutboxMail{List: listAddr, Sender: "s@example.org", Recipients: []string{"r@example.org"}, Message: []byte("m")}); err != nil {
			t.Fatal(err)
		}
		_, err = s.DeleteList(ctx, listAddr, false)
		var hw *store.HoldsWaitingError
		if !errors.As(err, &hw) || hw.Waiting != 1 || hw.Delivering != 0 || !errors.Is(err, store.ErrConflict) {
			t.Fatalf("DeleteList with a waiting hold = %v", err)
		}
		// Approved and not delivered is still to decide too.
		if err := s.SetHoldState(ctx, id, store.HoldHeld, store.HoldApproved); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeleteList(ctx, listAddr, false); !errors.As(err, &hw) || hw.Delivering != 1 {
			t.Fatalf("DeleteList with a delivering hold = %v", err)
		}
		if ms, _ := s.Members(ctx, listAddr); len(ms) != 2 {
			t.Fatalf("members after a refused delete: %v", ms)
		}
		d, err := s.DeleteList(ctx, listAddr, true)
		if err != nil {
			t.Fatal(err)
		}
		if d.List.Address != listAddr || string(d.List.SecretKey) != "\x00\x01\x02\xff" || d.Members != 2 || d.Holds != 1 {
			t.Fatalf("DeleteList = %+v", d)
		}
		if _, err := s.GetList(ctx, listAddr); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetList after delete: %v", err)
		}
		if ms, _ := s.Members(ctx, listAddr); len(ms) != 0 {
			t.Fatalf("members after delete: %v", ms)
		}
		if n, err := s.CountOutbox(ctx, listAddr); err != nil || n != 0 {
			t.Fatalf("outbox after delete: %d %v", n, err)
		}
		if _, err := s.GetHold(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("hold after delete: %v", err)
		}
		if ms, _ := s.Members(ctx, "another@lists.example.org"); len(ms) != 1 {
			t.Fatalf("the other list lost members: %v", ms)
		}
		if _, err := s.DeleteList(ctx, listAddr, false); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second DeleteList = %v", err)
		}
		// The address can be used again.
		mkList(t, s, listAddr)
	})
}

func TestImportMembers(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		if err := s.PutMember(ctx, store.Member{List: listAddr, Address: "old@example.org", State: store.MemberActive, Fingerprint: "OLD"}); err != nil {
			t.Fatal(err)
		}
		v0, _ := s.KeysVersion(ctx, listAddr)
		m := func(addr, fpr string) store.Member {
			return store.Member{List: listAddr, Address: addr, State: store.MemberActive, Fingerprint: fpr, PublicKey: []byte(addr), KeyIDs: []uint64{7, 7, 1 << 63}}
		}
		// A conflict refuses everything.
		_, _, err := s.ImportMembers(ctx, listAddr, []store.Member{m("a@example.org", "A"), m("old@example.org", "NEW")})
		var ce *store.ImportConflictError
		if !errors.As(err, &ce) || len(ce.Addresses) != 1 || ce.Addresses[0] != "old@example.org" || !errors.Is(err, store.ErrExists) {
			t.Fatalf("conflicting import = %v", err)
		}
		if _, err := s.GetMember(ctx, listAddr, "a@example.org"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a refused import added a member: %v", err)
		}
		if _, _, err := s.ImportMembers(ctx, listAddr, []store.Member{m("a@example.org", "A"), m("a@example.org", "A")}); err == nil {
			t.Fatal("an address twice accepted")
		}
		if _, _, err := s.ImportMembers(ctx, "nope@lists.example.org", nil); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("import to a missing list = %v", err)
		}
		added, unchanged, err := s.ImportMembers(ctx, listAddr, []store.Member{m("a@example.org", "A"), m("b@example.org", "B"), m("old@example.org", "OLD")})
		if err != nil || added != 2 || unchanged != 1 {
			t.Fatalf("ImportMembers = %d %d %v", added, unchanged, err)
		}
		got, err := s.GetMember(ctx, listAddr, "a@example.org")
		if err != nil || got.Fingerprint != "A" || len(got.KeyIDs) != 2 || got.KeyIDs[1] != 1<<63 {
			t.Fatalf("imported member = %+v %v", got, err)
		}
		if v1, _ := s.KeysVersion(ctx, listAddr); v1 == v0 {
			t.Fatal("KeysVersion not bumped")
		}
		// The same import again changes nothing.
		if added, unchanged, err := s.ImportMembers(ctx, listAddr, []store.Member{m("a@example.org", "A"), m("b@example.org", "B")}); err != nil || added != 0 || unchanged != 2 {
			t.Fatalf("second import = %d %d %v", added, unchanged, err)
		}
	})
}
