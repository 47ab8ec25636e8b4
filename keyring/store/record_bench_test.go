package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// BenchmarkRecordBatch times the one write between the MTA's 250 for a
// batch of 50 and our record of it (the duplicate window,
// docs/outbound.md): RecordBatch as the delivery runs it, against the
// record as it was made until December 2026 (one INSERT per recipient,
// a commit synced to disk). SQLite on a file in the package folder's
// file system (not tmpfs); LISTCRYPT_BENCH_PG=postgres://... adds a
// PostgreSQL run.
func BenchmarkRecordBatch(b *testing.B) {
	dsns := map[string]string{}
	dir, err := os.MkdirTemp(".", "bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	dsns[EngineSQLite] = "sqlite:" + filepath.Join(dir, "state.db")
	if pg := os.Getenv("LISTCRYPT_BENCH_PG"); pg != "" {
		dsns[EnginePostgres] = pg
	}
	rcpts := make([]string, 50)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("member%02d@example.org", i)
	}
	for engine, dsn := range dsns {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Migrate(ctx); err != nil {
			b.Fatal(err)
		}
		list := fmt.Sprintf("bench-%d@lists.example.org", time.Now().UnixNano())
		if err := s.CreateList(ctx, List{Address: list, KeyFingerprint: "AA", PublicKey: []byte("k"), SecretKey: []byte("s")}); err != nil {
			b.Fatal(err)
		}
		post := 0
		b.Run(engine+"/RecordBatch", func(b *testing.B) {
			for b.Loop() {
				post++
				if _, err := s.RecordBatch(ctx, list, fmt.Append(nil, post), 1, rcpts, nil, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(engine+"/row-by-row-synced", func(b *testing.B) {
			for b.Loop() {
				post++
				err := s.tx(ctx, func(tx *sqlx.Tx) error {
					if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO deliveries (list, post_id, batch, delivered_at) VALUES (?, ?, ?, ?)`),
						list, fmt.Append(nil, post), 1, ts(time.Now())); err != nil {
						return err
					}
					for _, r := range rcpts {
						if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO delivered_recipients (list, post_id, address, batch, delivered_at)
							VALUES (?, ?, ?, ?, ?)`), list, fmt.Append(nil, post), r, 1, ts(time.Now())); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		s.Close()
	}
}
