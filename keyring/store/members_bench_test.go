package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// BenchmarkMembers times reading a list of 10,000 members with their keys
// (1 KB each, two key IDs), as the milter does after every member change.
func BenchmarkMembers(b *testing.B) {
	for _, engine := range []string{"sqlite", "postgres"} {
		b.Run(engine, func(b *testing.B) {
			var s *store.Store
			if engine == "sqlite" {
				s = storetest.SQLite(b)
			} else {
				s = storetest.Postgres(b)
			}
			ctx := context.Background()
			if err := s.CreateList(ctx, store.List{Address: listAddr, KeyFingerprint: "F", PublicKey: []byte("p"), SecretKey: []byte("s"), CreatedAt: time.Now()}); err != nil {
				b.Fatal(err)
			}
			key := make([]byte, 1024)
			ms := make([]store.Member, 10000)
			for i := range ms {
				ms[i] = store.Member{List: listAddr, Address: fmt.Sprintf("m%05d@example.org", i), State: store.MemberActive,
					Fingerprint: fmt.Sprintf("%040d", i), PublicKey: key, KeyIDs: []uint64{uint64(2*i + 1), uint64(2*i + 2)}}
			}
			if _, _, err := s.ImportMembers(ctx, listAddr, ms); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				got, err := s.Members(ctx, listAddr)
				if err != nil || len(got) != len(ms) {
					b.Fatalf("%d members, %v", len(got), err)
				}
			}
		})
	}
}
