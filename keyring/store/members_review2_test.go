package store_test

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// Checked in review: one row per member with aggregated key IDs keeps members
// without key IDs, key IDs with the high bit set (stored signed), the
// order by address, and the same answer on both engines.
func TestReview2MembersAggregatedKeyIDs(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		want := map[string][]uint64{
			"c@example.org": {0xFFFFFFFFFFFFFFFF, 0x8000000000000000, 1, 0x7FFFFFFFFFFFFFFF},
			"a@example.org": nil,
			"b@example.org": {0x8000000000000001},
			"d@example.org": {42},
		}
		for addr, ids := range want {
			st := store.MemberActive
			if ids == nil {
				st = store.MemberNeedsKey
			}
			if err := s.PutMember(ctx, store.Member{List: listAddr, Address: addr, State: st, Fingerprint: "F", PublicKey: []byte("k"), KeyIDs: ids}); err != nil {
				t.Fatal(err)
			}
		}
		// The same address on another list, other key IDs: not mixed in.
		if err := s.PutMember(ctx, store.Member{List: "other@lists.example.org", Address: "b@example.org", State: store.MemberActive, Fingerprint: "F", PublicKey: []byte("k"), KeyIDs: []uint64{7}}); err != nil {
			t.Fatal(err)
		}
		ms, err := s.Members(ctx, listAddr)
		if err != nil {
			t.Fatal(err)
		}
		var addrs []string
		for _, m := range ms {
			addrs = append(addrs, m.Address)
			w := slices.Clone(want[m.Address])
			slices.Sort(w)
			if !slices.Equal(m.KeyIDs, w) {
				t.Errorf("%s: key ids %x, want %x", m.Address, m.KeyIDs, w)
			}
		}
		if !slices.IsSorted(addrs) || len(addrs) != 4 {
			t.Errorf("members %v", addrs)
		}
		for _, id := range []uint64{0xFFFFFFFFFFFFFFFF, 0x8000000000000001} {
			got, err := s.MembersByKeyID(ctx, listAddr, id)
			if err != nil || len(got) != 1 {
				t.Errorf("by key id %X: %v %v", id, got, err)
			}
		}
	})
}

// Checked in review: migration 10 on a database at version 9 that holds
// holds (no post_id column yet): the column and the unique index come in,
// the old holds keep NULL post ids and never clash, new holds dedupe.
func TestReview2Migration10OnOldHolds(t *testing.T) {
	storetest.EachDSN(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		mkList(t, s, listAddr)
		driver, source := "postgres", dsn
		if strings.HasPrefix(dsn, "sqlite:") {
			driver, source = "sqlite", strings.TrimPrefix(dsn, "sqlite:")
		}
		db, err := sql.Open(driver, source)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// Back to version 9 (11 and 10 undone), then two holds as version 9 stored them.
		for _, q := range []string{`DROP TABLE old_list_keys`, `DELETE FROM schema_migrations WHERE version = 11`, `DROP INDEX holds_post`, `ALTER TABLE holds DROP COLUMN post_id`, `DELETE FROM schema_migrations WHERE version = 10`} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		ins := `INSERT INTO holds (list, sender, recipients, reason, message, state, created_at) VALUES ($1, 'x@example.org', '[]', 'r', $2, 'held', $3)`
		if driver == "sqlite" {
			ins = strings.NewReplacer("$1", "?", "$2", "?", "$3", "?").Replace(ins)
		}
		for range 2 {
			if _, err := db.ExecContext(ctx, ins, listAddr, []byte("m"), time.Now().UTC()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("migration 10 on old holds: %v", err)
		}
		if err := s.CheckSchema(ctx); err != nil {
			t.Fatal(err)
		}
		h := store.Hold{List: listAddr, Sender: "m@example.org", Reason: "r", Message: []byte("m"), PostID: []byte("p")}
		a, err1 := s.AddHold(ctx, h)
		b, err2 := s.AddHold(ctx, h)
		if err1 != nil || err2 != nil || a != b {
			t.Fatalf("after migration: %d %v, %d %v", a, err1, b, err2)
		}
		hs, err := s.Holds(ctx, listAddr)
		if err != nil || len(hs) != 3 {
			t.Fatalf("holds %d %v, want 3", len(hs), err)
		}
	})
}
