package store_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// Found in review (it failed before the fix): on PostgreSQL (READ COMMITTED) two "list key rotate" runs
// at once (two admins, two hosts) both pass ReplaceListKey's check: the
// list row is read without FOR UPDATE and the UPDATE does not re-check
// key_fingerprint. Both commit: the second overwrites the first's new
// key, which is in neither lists nor old_list_keys (its secret is lost),
// and both sets of notices are queued (members are told of two "new"
// keys, one of which the list refuses). A third session holding the
// old_list_keys row for a moment makes the interleaving certain.
func TestReview3ConcurrentRotationsPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	ctx := context.Background()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	l := mkList(t, s, listAddr)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gate, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gate.ExecContext(ctx, `INSERT INTO old_list_keys (list, fingerprint, public_key, secret_key, retired_at) VALUES ($1, $2, 'x', 'y', now())`, listAddr, l.KeyFingerprint); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	errs := make(chan error, 2)
	for _, fpr := range []string{"NEWKEY2", "NEWKEY3"} {
		go func() {
			notice := store.OutboxMail{List: listAddr, Sender: "devs-bounces@lists.example.org", Recipients: []string{"a@example.org"}, Message: []byte("new key " + fpr)}
			_, err := s.ReplaceListKey(ctx, listAddr, l.KeyFingerprint, fpr, []byte("pub "+fpr), []byte("sec "+fpr), at, []store.OutboxMail{notice})
			errs <- err
		}()
	}
	// Both wait on the gate's row.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions waiting", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := gate.Rollback(); err != nil {
		t.Fatal(err)
	}
	var ok int
	for range 2 {
		if err := <-errs; err == nil {
			ok++
		} else {
			t.Logf("one rotation refused: %v", err)
		}
	}
	cur, err := s.GetList(ctx, listAddr)
	if err != nil {
		t.Fatal(err)
	}
	old, err := s.OldListKeys(ctx, listAddr)
	if err != nil {
		t.Fatal(err)
	}
	var oldFprs []string
	for _, o := range old {
		oldFprs = append(oldFprs, o.Fingerprint)
	}
	waiting, _ := s.WaitingOutbox(ctx, listAddr, at.Add(time.Hour), 10)
	if ok != 1 {
		t.Fatalf("both concurrent rotations committed: current key %s, retired %v, %d notices queued; the other new key is kept nowhere", cur.KeyFingerprint, oldFprs, len(waiting))
	}
}
