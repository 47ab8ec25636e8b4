package store_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// PostgreSQL restarted under an open store: while it is down every call
// fails promptly with an error that says the database is unreachable
// (errors.Is store.ErrUnavailable), and once it is back the very first
// call succeeds on the same *Store (database/sql drops the dead
// connections and dials again).
func TestPostgresRestart(t *testing.T) {
	pg := storetest.PrivatePostgres(t)
	ctx := context.Background()
	s, err := store.Open(ctx, pg.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	mkList(t, s, "l@example.org")
	// Several pooled connections, so stale ones are there to trip over.
	for i := range 4 {
		if _, err := s.RecordPost(ctx, "l@example.org", []byte{byte(i)}, [][]byte{{byte(i), 1}}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	pg.Stop(t)
	for i := range 3 {
		start := time.Now()
		_, err := s.RecordPost(ctx, "l@example.org", []byte{9, byte(i)}, [][]byte{{9, byte(i)}}, time.Now())
		took := time.Since(start)
		t.Logf("down, call %d: %v after %v", i, err, took)
		if err == nil {
			t.Fatal("a write succeeded with the database down")
		}
		if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "database unreachable") {
			t.Fatalf("call %d: error does not say the database is unreachable: %v", i, err)
		}
		if took > 5*time.Second {
			t.Fatalf("call %d took %v with the server down", i, took)
		}
	}

	pg.Start(t)
	start := time.Now()
	if _, err := s.RecordPost(ctx, "l@example.org", []byte{10}, [][]byte{{10}}, time.Now()); err != nil {
		t.Fatalf("first call after the restart: %v", err)
	}
	t.Logf("first call after the restart took %v", time.Since(start))
	if _, found, err := s.SeenDigest(ctx, "l@example.org", []byte{0, 1}); err != nil || !found {
		t.Fatalf("data before the restart: found %v, %v", found, err)
	}
}

// A PostgreSQL that accepts TCP connections and never answers (a hung
// server, a half-open path): a call fails after connect_timeout (the
// DSN's, or store.DefaultConnectTimeout when it has none), not after the
// caller's whole deadline.
func TestPostgresHungConnectTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn // accepted and never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t.Setenv("PGCONNECT_TIMEOUT", "") // restored when the test ends
	os.Unsetenv("PGCONNECT_TIMEOUT")
	for _, tc := range []struct {
		query string
		want  time.Duration
	}{
		{"sslmode=disable&connect_timeout=1", time.Second},
		{"sslmode=disable", store.DefaultConnectTimeout},
	} {
		start := time.Now()
		_, err = store.Open(ctx, "postgres://postgres@"+l.Addr().String()+"/x?"+tc.query)
		took := time.Since(start)
		t.Logf("hung server, %s: %v after %v", tc.query, err, took)
		if err == nil || !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("want an unreachable error, got %v", err)
		}
		if took < tc.want-100*time.Millisecond || took > tc.want+2*time.Second {
			t.Fatalf("%s: gave up after %v, want about %v", tc.query, took, tc.want)
		}
	}
}
