package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// ReplaceListKey: one transaction switches the key, keeps the old one
// with its retirement time, moves the keys version and queues the
// notices; a caller that read another key changes nothing; a key made
// current again leaves the old keys; the old keys go with the list.
func TestReplaceListKey(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		l := mkList(t, s, listAddr)
		v0, err := s.KeysVersion(ctx, listAddr)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		notice := store.OutboxMail{List: listAddr, Sender: "devs-bounces@lists.example.org", Recipients: []string{"a@example.org"}, Message: []byte("n")}
		if _, err := s.ReplaceListKey(ctx, listAddr, "OTHER", "NEW", []byte("pub"), []byte("sec"), at, []store.OutboxMail{notice}); !errors.Is(err, store.ErrKeyChanged) {
			t.Fatalf("stale fingerprint: %v", err)
		}
		if ids, _ := s.WaitingOutbox(ctx, listAddr, at, 10); len(ids) != 0 {
			t.Fatalf("a refused switch queued %v", ids)
		}
		ids, err := s.ReplaceListKey(ctx, listAddr, l.KeyFingerprint, "NEW", []byte("pub"), []byte("sec"), at, []store.OutboxMail{notice, notice})
		if err != nil || len(ids) != 2 {
			t.Fatalf("replace: %v %v", err, ids)
		}
		got, err := s.GetList(ctx, listAddr)
		if err != nil || got.KeyFingerprint != "NEW" || string(got.PublicKey) != "pub" || string(got.SecretKey) != "sec" {
			t.Fatalf("list after: %v %+v", err, got)
		}
		if v, _ := s.KeysVersion(ctx, listAddr); v != v0+1 {
			t.Fatalf("keys version %d, want %d", v, v0+1)
		}
		old, err := s.OldListKeys(ctx, listAddr)
		if err != nil || len(old) != 1 || old[0].Fingerprint != l.KeyFingerprint || string(old[0].PublicKey) != string(l.PublicKey) ||
			string(old[0].SecretKey) != string(l.SecretKey) || !old[0].RetiredAt.Equal(at) {
			t.Fatalf("old keys: %v %+v", err, old)
		}
		if w, _ := s.WaitingOutbox(ctx, listAddr, at, 10); len(w) != 2 {
			t.Fatalf("outbox %v", w)
		}
		// Back to the first key: it leaves the old keys, NEW joins them.
		if _, err := s.ReplaceListKey(ctx, listAddr, "NEW", l.KeyFingerprint, l.PublicKey, l.SecretKey, at.Add(time.Hour), nil); err != nil {
			t.Fatal(err)
		}
		if old, _ := s.OldListKeys(ctx, listAddr); len(old) != 1 || old[0].Fingerprint != "NEW" {
			t.Fatalf("old keys after going back: %+v", old)
		}
		if _, err := s.DeleteList(ctx, listAddr, true); err != nil {
			t.Fatal(err)
		}
		if old, err := s.OldListKeys(ctx, listAddr); err != nil || len(old) != 0 {
			t.Fatalf("old keys of a deleted list: %v %+v", err, old)
		}
	})
}
