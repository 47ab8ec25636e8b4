package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// t0 is deliberately not UTC and has nanoseconds: the store returns UTC,
// truncated to microseconds.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))

func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

const listAddr = "crypt@lists.example.org"

func mkList(t *testing.T, s *store.Store, addr string) store.List {
	t.Helper()
	l := store.List{
		Address:        addr,
		KeyFingerprint: "0123456789ABCDEF0123456789ABCDEF01234567",
		PublicKey:      []byte("public " + addr),
		SecretKey:      []byte{0, 1, 2, 0xff},
		CreatedAt:      t0,
	}
	if err := s.CreateList(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{"", "mysql://x", "/var/lib/state.db", "sqlite:", "sqlite::memory:", "sqlite:/tmp/x.db?mode=ro"} {
		if s, err := store.Open(context.Background(), dsn); err == nil {
			s.Close()
			t.Errorf("Open(%q) = nil error", dsn)
		}
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	storetest.EachDSN(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		// Several processes migrating one fresh database at once.
		stores := make([]*store.Store, 4)
		for i := range stores {
			s, err := store.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			})
			stores[i] = s
		}
		var wg sync.WaitGroup
		errs := make([]error, len(stores))
		for i, s := range stores {
			wg.Go(func() { errs[i] = s.Migrate(ctx) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("concurrent Migrate %d: %v", i, err)
			}
		}
		// And again: nothing left to do.
		if err := stores[0].Migrate(ctx); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		if got, want := stores[0].Engine(), dsnEngine(dsn); got != want {
			t.Errorf("Engine() = %q, want %q", got, want)
		}
		mkList(t, stores[0], listAddr)
		if _, err := stores[1].GetList(ctx, listAddr); err != nil {
			t.Fatal(err)
		}
	})
}

func dsnEngine(dsn string) string {
	if len(dsn) >= 7 && dsn[:7] == "sqlite:" {
		return store.EngineSQLite
	}
	return store.EnginePostgres
}

func TestLists(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.GetList(ctx, listAddr); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetList(missing) = %v, want ErrNotFound", err)
		}
		want := mkList(t, s, listAddr)
		want.CreatedAt = stored(t0)
		mkList(t, s, "another@lists.example.org")
		if err := s.CreateList(ctx, want); !errors.Is(err, store.ErrExists) {
			t.Fatalf("CreateList(dup) = %v, want ErrExists", err)
		}
		got, err := s.GetList(ctx, listAddr)
		if err != nil {
			t.Fatal(err)
		}
		if !equalList(got, want) {
			t.Fatalf("GetList = %+v, want %+v", got, want)
		}
		all, err := s.Lists(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 || all[0].Address != "another@lists.example.org" || !equalList(all[1], want) {
			t.Fatalf("Lists = %+v", all)
		}

		v0, err := s.KeysVersion(ctx, listAddr)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateListKey(ctx, listAddr, "FEDCBA", []byte("pub2"), []byte("sec2")); err != nil {
			t.Fatal(err)
		}
		got, err = s.GetList(ctx, listAddr)
		if err != nil {
			t.Fatal(err)
		}
		if got.KeyFingerprint != "FEDCBA" || string(got.PublicKey) != "pub2" || string(got.SecretKey) != "sec2" {
			t.Fatalf("after UpdateListKey: %+v", got)
		}
		if v1, _ := s.KeysVersion(ctx, listAddr); v1 != v0+1 {
			t.Errorf("KeysVersion after UpdateListKey = %d, want %d", v1, v0+1)
		}
		if err := s.UpdateListKey(ctx, "nope@example.org", "X", nil, nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("UpdateListKey(missing) = %v, want ErrNotFound", err)
		}
		if _, err := s.KeysVersion(ctx, "nope@example.org"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("KeysVersion(missing) = %v, want ErrNotFound", err)
		}
	})
}

func equalList(a, b store.List) bool {
	return a.Address == b.Address && a.KeyFingerprint == b.KeyFingerprint &&
		bytes.Equal(a.PublicKey, b.PublicKey) && bytes.Equal(a.SecretKey, b.SecretKey) &&
		a.CreatedAt.Equal(b.CreatedAt) && a.CreatedAt.Location() == time.UTC
}

func TestMembers(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		version := func() int64 {
			t.Helper()
			v, err := s.KeysVersion(ctx, listAddr)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		const (
			topBit  = uint64(0x8000000000000001)
			allOnes = uint64(0xFFFFFFFFFFFFFFFF)
			shared  = uint64(0x0123456789ABCDEF)
		)
		alice := store.Member{
			List: listAddr, Address: "alice@example.org", State: store.MemberActive,
			Fingerprint: "AAAA", PublicKey: []byte("alice key"),
			KeyIDs:    []uint64{allOnes, topBit, shared, topBit},
			CreatedAt: t0, UpdatedAt: t0,
		}
		bob := store.Member{
			List: listAddr, Address: "bob@example.org", State: store.MemberPending,
			KeyIDs: []uint64{shared},
		}
		carol := store.Member{List: listAddr, Address: "carol@example.org", State: store.MemberNeedsKey}

		v := version()
		for _, m := range []store.Member{bob, carol, alice} {
			if err := s.PutMember(ctx, m); err != nil {
				t.Fatal(err)
			}
			v++
			if got := version(); got != v {
				t.Fatalf("KeysVersion after PutMember = %d, want %d", got, v)
			}
		}
		// The same address on another list is another member.
		other := alice
		other.List = "other@lists.example.org"
		other.KeyIDs = []uint64{42}
		if err := s.PutMember(ctx, other); err != nil {
			t.Fatal(err)
		}
		if got := version(); got != v {
			t.Fatalf("KeysVersion bumped by another list's member: %d, want %d", got, v)
		}

		got, err := s.GetMember(ctx, listAddr, "alice@example.org")
		if err != nil {
			t.Fatal(err)
		}
		wantIDs := []uint64{shared, topBit, allOnes}
		if !slices.Equal(got.KeyIDs, wantIDs) {
			t.Errorf("KeyIDs = %x, want %x", got.KeyIDs, wantIDs)
		}
		if got.State != store.MemberActive || got.Fingerprint != "AAAA" || string(got.PublicKey) != "alice key" ||
			!got.CreatedAt.Equal(stored(t0)) || !got.UpdatedAt.Equal(stored(t0)) || got.CreatedAt.Location() != time.UTC {
			t.Errorf("GetMember = %+v", got)
		}
		if c, err := s.GetMember(ctx, listAddr, "carol@example.org"); err != nil || c.PublicKey != nil || c.KeyIDs != nil || c.CreatedAt.IsZero() {
			t.Errorf("GetMember(carol) = %+v, %v", c, err)
		}

		ms, err := s.Members(ctx, listAddr)
		if err != nil {
			t.Fatal(err)
		}
		if addrs := addresses(ms); !slices.Equal(addrs, []string{"alice@example.org", "bob@example.org", "carol@example.org"}) {
			t.Fatalf("Members = %v", addrs)
		}
		if !slices.Equal(ms[0].KeyIDs, wantIDs) || !slices.Equal(ms[1].KeyIDs, []uint64{shared}) || ms[2].KeyIDs != nil {
			t.Errorf("Members key ids = %x %x %x", ms[0].KeyIDs, ms[1].KeyIDs, ms[2].KeyIDs)
		}

		for _, tc := range []struct {
			id   uint64
			want []string
		}{
			{topBit, []string{"alice@example.org"}},
			{allOnes, []string{"alice@example.org"}},
			{shared, []string{"alice@example.org", "bob@example.org"}},
			{42, nil}, // only on the other list
			{7, nil},
		} {
			ms, err := s.MembersByKeyID(ctx, listAddr, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if got := addresses(ms); !slices.Equal(got, tc.want) {
				t.Errorf("MembersByKeyID(%016X) = %v, want %v", tc.id, got, tc.want)
			}
			if len(ms) > 0 && ms[0].Address == "alice@example.org" && !slices.Equal(ms[0].KeyIDs, wantIDs) {
				t.Errorf("MembersByKeyID(%016X) key ids = %x, want all of alice's", tc.id, ms[0].KeyIDs)
			}
		}

		// Upsert: new key replaces the key ids, CreatedAt stays.
		alice2 := alice
		alice2.Fingerprint, alice2.PublicKey, alice2.KeyIDs = "BBBB", []byte("new key"), []uint64{9}
		alice2.CreatedAt, alice2.UpdatedAt = t0.Add(time.Hour), t0.Add(time.Hour)
		if err := s.PutMember(ctx, alice2); err != nil {
			t.Fatal(err)
		}
		got, err = s.GetMember(ctx, listAddr, "alice@example.org")
		if err != nil {
			t.Fatal(err)
		}
		if got.Fingerprint != "BBBB" || !slices.Equal(got.KeyIDs, []uint64{9}) ||
			!got.CreatedAt.Equal(stored(t0)) || !got.UpdatedAt.Equal(stored(t0.Add(time.Hour))) {
			t.Errorf("after upsert: %+v", got)
		}
		if ms, _ := s.MembersByKeyID(ctx, listAddr, topBit); len(ms) != 0 {
			t.Errorf("old key id still finds %v", addresses(ms))
		}

		v = version()
		if err := s.RemoveMember(ctx, listAddr, "bob@example.org"); err != nil {
			t.Fatal(err)
		}
		if got := version(); got != v+1 {
			t.Errorf("KeysVersion after RemoveMember = %d, want %d", got, v+1)
		}
		if _, err := s.GetMember(ctx, listAddr, "bob@example.org"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetMember(removed) = %v, want ErrNotFound", err)
		}
		if ms, _ := s.MembersByKeyID(ctx, listAddr, shared); len(ms) != 0 {
			t.Errorf("removed member's key id still finds %v", addresses(ms))
		}
		if err := s.RemoveMember(ctx, listAddr, "bob@example.org"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RemoveMember(absent) = %v, want ErrNotFound", err)
		}
		if got := version(); got != v+1 {
			t.Errorf("failed RemoveMember bumped KeysVersion to %d", got)
		}

		for name, m := range map[string]store.Member{
			"unknown list":  {List: "nope@example.org", Address: "x@example.org", State: store.MemberActive},
			"invalid state": {List: listAddr, Address: "x@example.org", State: "banned"},
			"empty address": {List: listAddr, State: store.MemberActive},
		} {
			if err := s.PutMember(ctx, m); err == nil {
				t.Errorf("PutMember(%s) = nil error", name)
			} else if name == "unknown list" && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("PutMember(%s) = %v, want ErrNotFound", name, err)
			}
		}
	})
}

func addresses(ms []store.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Address)
	}
	return out
}

func TestRecordPost(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		p1, p2 := []byte("post-1"), []byte("post-2")
		sig1, ct1, ct2 := []byte("sig-digest-1"), []byte("ct-digest-1"), []byte("ct-digest-2")

		steps := []struct {
			name    string
			list    string
			post    []byte
			digests [][]byte
			want    []byte // replayOf
		}{
			{"first post", listAddr, p1, [][]byte{sig1, ct1}, nil},
			{"retry of the same post", listAddr, p1, [][]byte{sig1, ct1}, nil},
			{"retry adding a digest", listAddr, p1, [][]byte{ct1}, nil},
			{"other post sharing the signature", listAddr, p2, [][]byte{ct2, sig1}, p1},
			{"same signature on another list", "other@lists.example.org", p2, [][]byte{sig1}, nil},
			{"no digests", listAddr, p2, nil, nil},
		}
		for _, st := range steps {
			got, err := s.RecordPost(ctx, st.list, st.post, st.digests, t0)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if !bytes.Equal(got, st.want) {
				t.Fatalf("%s: replayOf = %q, want %q", st.name, got, st.want)
			}
		}
		for _, tc := range []struct {
			digest []byte
			post   []byte
		}{{sig1, p1}, {ct1, p1}, {ct2, nil}} {
			post, found, err := s.SeenDigest(ctx, listAddr, tc.digest)
			if err != nil {
				t.Fatal(err)
			}
			if found != (tc.post != nil) || !bytes.Equal(post, tc.post) {
				t.Errorf("SeenDigest(%s) = %q, %v; want %q (a replay inserts none of its digests)", tc.digest, post, found, tc.post)
			}
		}
		if _, err := s.RecordPost(ctx, listAddr, nil, [][]byte{ct2}, t0); err == nil {
			t.Error("RecordPost with empty post id: nil error")
		}

		// Prune: rows at t0 stay with a cutoff at t0, go with one after.
		if _, err := s.RecordPost(ctx, listAddr, []byte("post-3"), [][]byte{[]byte("late")}, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if n, err := s.PruneReplay(ctx, t0); err != nil || n != 0 {
			t.Fatalf("PruneReplay(t0) = %d, %v; want 0", n, err)
		}
		if n, err := s.PruneReplay(ctx, t0.Add(time.Minute)); err != nil || n != 3 {
			t.Fatalf("PruneReplay(t0+1m) = %d, %v; want 3", n, err)
		}
		if _, found, _ := s.SeenDigest(ctx, listAddr, sig1); found {
			t.Error("pruned digest still seen")
		}
		if _, found, _ := s.SeenDigest(ctx, listAddr, []byte("late")); !found {
			t.Error("newer digest pruned")
		}
	})
}

func TestRecordPostRace(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		const n = 8
		shared := []byte("the same signature")
		replayOf := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				post := fmt.Appendf(nil, "post-%d", i)
				own := fmt.Appendf(nil, "ciphertext-%d", i)
				replayOf[i], errs[i] = s.RecordPost(ctx, listAddr, post, [][]byte{own, shared}, t0)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("goroutine %d: %v", i, errs[i])
			}
			if replayOf[i] == nil {
				if winner >= 0 {
					t.Fatalf("goroutines %d and %d both won", winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatal("no goroutine won")
		}
		wantPost := fmt.Appendf(nil, "post-%d", winner)
		for i := range n {
			if i != winner && !bytes.Equal(replayOf[i], wantPost) {
				t.Errorf("goroutine %d: replayOf = %q, want %q", i, replayOf[i], wantPost)
			}
			_, found, err := s.SeenDigest(ctx, listAddr, fmt.Appendf(nil, "ciphertext-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if found != (i == winner) {
				t.Errorf("goroutine %d's own digest recorded = %v", i, found)
			}
		}
	})
}

func TestDeliveries(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		post := []byte{0xde, 0xad, 0, 0xbe, 0xef}
		if b, err := s.DeliveredBatches(ctx, listAddr, post); err != nil || len(b) != 0 {
			t.Fatalf("DeliveredBatches(new) = %v, %v", b, err)
		}
		for _, tc := range []struct {
			batch   int
			already bool
		}{{2, false}, {1, false}, {2, true}, {3, false}, {1, true}} {
			already, err := s.MarkBatchDelivered(ctx, listAddr, post, tc.batch, t0)
			if err != nil {
				t.Fatal(err)
			}
			if already != tc.already {
				t.Errorf("MarkBatchDelivered(%d) already = %v, want %v", tc.batch, already, tc.already)
			}
		}
		if b, err := s.DeliveredBatches(ctx, listAddr, post); err != nil || !slices.Equal(b, []int{1, 2, 3}) {
			t.Errorf("DeliveredBatches = %v, %v; want [1 2 3]", b, err)
		}
		if b, _ := s.DeliveredBatches(ctx, listAddr, []byte("other")); len(b) != 0 {
			t.Errorf("another post's batches = %v", b)
		}
		if done, err := s.PostComplete(ctx, listAddr, post); err != nil || done {
			t.Fatalf("PostComplete before = %v, %v", done, err)
		}
		for range 2 {
			if err := s.MarkPostComplete(ctx, listAddr, post, t0); err != nil {
				t.Fatal(err)
			}
		}
		if done, err := s.PostComplete(ctx, listAddr, post); err != nil || !done {
			t.Fatalf("PostComplete after = %v, %v", done, err)
		}
		if _, err := s.PruneReplay(ctx, t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if done, _ := s.PostComplete(ctx, listAddr, post); done {
			t.Error("PruneReplay kept an old completion mark")
		}
		if b, _ := s.DeliveredBatches(ctx, listAddr, post); len(b) != 0 {
			t.Errorf("PruneReplay kept old delivery records %v", b)
		}
	})
}

func TestHolds(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		h := store.Hold{
			List: listAddr, Sender: "mallory@example.org",
			Recipients: []string{listAddr, "cc@example.org"},
			Reason:     "not a member", Message: []byte{1, 2, 3, 0}, CreatedAt: t0,
		}
		id1, err := s.AddHold(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		id2, err := s.AddHold(ctx, store.Hold{List: listAddr, Sender: "x@example.org", Message: []byte("m")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddHold(ctx, store.Hold{List: "other@lists.example.org", Sender: "y@example.org", Message: []byte("m")}); err != nil {
			t.Fatal(err)
		}
		// Foreign keys are on: no rows for a list that does not exist.
		if _, err := s.AddHold(ctx, store.Hold{List: "nope@example.org", Sender: "y@example.org"}); err == nil {
			t.Error("AddHold on an unknown list: nil error")
		}
		if _, err := s.RecordPost(ctx, "nope@example.org", []byte("p"), [][]byte{[]byte("d")}, t0); err == nil {
			t.Error("RecordPost on an unknown list: nil error")
		}
		if id2 <= id1 {
			t.Fatalf("ids %d then %d", id1, id2)
		}
		got, err := s.GetHold(ctx, id1)
		if err != nil {
			t.Fatal(err)
		}
		want := h
		want.ID, want.State, want.CreatedAt = id1, store.HoldHeld, stored(t0)
		if got.ID != want.ID || got.List != want.List || got.Sender != want.Sender || got.Reason != want.Reason ||
			!slices.Equal(got.Recipients, want.Recipients) || !bytes.Equal(got.Message, want.Message) ||
			got.State != want.State || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("GetHold = %+v, want %+v", got, want)
		}
		if _, err := s.GetHold(ctx, id2+100); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetHold(missing) = %v, want ErrNotFound", err)
		}

		steps := []struct {
			id       int64
			from, to string
			want     error
		}{
			{id1, store.HoldHeld, store.HoldApproved, nil},
			{id1, store.HoldHeld, store.HoldRejected, store.ErrConflict},
			{id2 + 100, store.HoldHeld, store.HoldApproved, store.ErrNotFound},
		}
		for _, st := range steps {
			if err := s.SetHoldState(ctx, st.id, st.from, st.to); !errors.Is(err, st.want) || (err == nil) != (st.want == nil) {
				t.Errorf("SetHoldState(%d, %s, %s) = %v, want %v", st.id, st.from, st.to, err, st.want)
			}
		}
		if err := s.SetHoldState(ctx, id2, store.HoldHeld, "deleted"); err == nil {
			t.Error("SetHoldState to an invalid state: nil error")
		}
		hs, err := s.Holds(ctx, listAddr)
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) != 1 || hs[0].ID != id2 || hs[0].Recipients == nil {
			t.Fatalf("Holds = %+v, want only hold %d", hs, id2)
		}

		// Moderators racing on one hold: exactly one wins.
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			to := store.HoldApproved
			if i%2 == 1 {
				to = store.HoldRejected
			}
			wg.Go(func() { errs[i] = s.SetHoldState(ctx, id2, store.HoldHeld, to) })
		}
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("moderator %d: %v", i, err)
			}
		}
		if wins != 1 {
			t.Errorf("%d moderators won, want 1", wins)
		}
		if hs, _ := s.Holds(ctx, listAddr); len(hs) != 0 {
			t.Errorf("Holds after decisions = %+v", hs)
		}
	})
}

func TestChallenges(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		c := store.Challenge{
			TokenHash: []byte("hash-1"), List: listAddr, Address: "alice@example.org",
			Command: "key confirm", Fingerprint: "AAAA", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour),
		}
		if err := s.AddChallenge(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := s.AddChallenge(ctx, c); !errors.Is(err, store.ErrExists) {
			t.Errorf("AddChallenge(dup) = %v, want ErrExists", err)
		}
		expired := c
		expired.TokenHash = []byte("hash-2")
		if err := s.AddChallenge(ctx, expired); err != nil {
			t.Fatal(err)
		}

		now := t0.Add(30 * time.Minute)
		got, err := s.UseChallenge(ctx, c.TokenHash, now)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.TokenHash, c.TokenHash) || got.List != c.List || got.Address != c.Address ||
			got.Command != c.Command || got.Fingerprint != c.Fingerprint || !got.CreatedAt.Equal(stored(t0)) ||
			!got.ExpiresAt.Equal(stored(c.ExpiresAt)) || !got.UsedAt.Equal(stored(now)) {
			t.Errorf("UseChallenge = %+v", got)
		}
		for _, tc := range []struct {
			name string
			hash []byte
			now  time.Time
			want error
		}{
			{"used", c.TokenHash, now, store.ErrUsed},
			{"used and expired", c.TokenHash, t0.Add(2 * time.Hour), store.ErrUsed},
			{"expired", expired.TokenHash, t0.Add(2 * time.Hour), store.ErrExpired},
			{"at the expiry time", expired.TokenHash, t0.Add(time.Hour), store.ErrExpired},
			{"unknown", []byte("nope"), now, store.ErrNotFound},
		} {
			if _, err := s.UseChallenge(ctx, tc.hash, tc.now); !errors.Is(err, tc.want) {
				t.Errorf("UseChallenge(%s) = %v, want %v", tc.name, err, tc.want)
			}
		}

		// Racing uses of one token: exactly one succeeds.
		raced := c
		raced.TokenHash = []byte("hash-3")
		if err := s.AddChallenge(ctx, raced); err != nil {
			t.Fatal(err)
		}
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, errs[i] = s.UseChallenge(ctx, raced.TokenHash, now) })
		}
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrUsed):
				t.Errorf("use %d: %v", i, err)
			}
		}
		if wins != 1 {
			t.Errorf("%d uses succeeded, want 1", wins)
		}
	})
}

func TestCheckSchema(t *testing.T) {
	storetest.EachDSN(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.CheckSchema(ctx); err == nil || !strings.Contains(err.Error(), "listcrypt init") {
			t.Fatalf("unmigrated: %v", err)
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.CheckSchema(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDeliveredRecipients(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if err := s.CreateList(ctx, store.List{Address: "d@l.example", KeyFingerprint: "F", PublicKey: []byte{1}, SecretKey: []byte{2}, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		post := []byte("post-1")
		got, last, err := s.DeliveredRecipients(ctx, "d@l.example", post)
		if err != nil || len(got) != 0 || last != 0 {
			t.Fatalf("fresh: %v %d %v", got, last, err)
		}
		if already, err := s.MarkDelivered(ctx, "d@l.example", post, 2, []string{"b@x", "a@x"}, time.Now()); err != nil || already {
			t.Fatal(already, err)
		}
		// The same batch number again (an attempt racing another one):
		// reported, and the member the MTA took this time is recorded too.
		if already, err := s.MarkDelivered(ctx, "d@l.example", post, 2, []string{"c@x", "a@x"}, time.Now()); err != nil || !already {
			t.Fatal(already, err)
		}
		got, last, err = s.DeliveredRecipients(ctx, "d@l.example", post)
		if err != nil || strings.Join(got, ",") != "a@x,b@x,c@x" || last != 2 {
			t.Fatalf("got %v %d %v", got, last, err)
		}
		if _, err := s.PruneReplay(ctx, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := s.DeliveredRecipients(ctx, "d@l.example", post); len(got) != 0 {
			t.Fatalf("not pruned: %v", got)
		}
	})
}

// ReleasePost forgets the digests of a post that went nowhere, and keeps
// those of a post that reached anyone.
func TestReleasePost(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		record := func(post, digest string) {
			t.Helper()
			if prior, err := s.RecordPost(ctx, listAddr, []byte(post), [][]byte{[]byte(digest)}, t0); err != nil || prior != nil {
				t.Fatalf("record %s: %q %v", post, prior, err)
			}
		}
		record("refused", "d-refused")
		record("delivered", "d-delivered")
		record("complete", "d-complete")
		record("bounced", "d-bounced")
		if _, err := s.MarkDelivered(ctx, listAddr, []byte("delivered"), 2, []string{"a@example.org"}, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkPostComplete(ctx, listAddr, []byte("complete"), t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordBatch(ctx, listAddr, []byte("bounced"), 0, nil, []store.RefusedRecipient{{Address: "b@example.org", Reply: "550 5.1.1 no such user"}}, t0); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			post, digest string
			released     bool
		}{{"refused", "d-refused", true}, {"delivered", "d-delivered", false}, {"complete", "d-complete", false}, {"bounced", "d-bounced", false}, {"never", "d-never", false}} {
			got, err := s.ReleasePost(ctx, listAddr, []byte(tc.post))
			if err != nil || got != tc.released {
				t.Errorf("ReleasePost(%s) = %v, %v; want %v", tc.post, got, err, tc.released)
			}
			if _, found, _ := s.SeenDigest(ctx, listAddr, []byte(tc.digest)); found == tc.released && tc.post != "never" {
				t.Errorf("%s: digest seen = %v after release = %v", tc.post, found, tc.released)
			}
		}
		// A re-send under another post id is then a new post.
		record("corrected", "d-refused")
	})
}
