package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// MarkDelivered records, in one transaction, that batch number batch of
// the post was handed to the MTA for recipients (RecordBatch with no
// refusals).
func (s *Store) MarkDelivered(ctx context.Context, list string, postID []byte, batch int, recipients []string, at time.Time) (already bool, err error) {
	return s.RecordBatch(ctx, list, postID, batch, recipients, nil, at)
}

// RecordBatch records what the MTA did with batch number batch of the
// post, in one transaction: the recipients it took (accepted: the batch
// row and one row per recipient) and those it refused permanently at
// RCPT TO. already reports that the batch number had been recorded
// before (by this or another process); the members are recorded in any
// case, a member recorded before keeping its first record. The delivery
// calls it right after the MTA's reply to the batch's DATA: the time
// between that reply and this commit is the one window in which a crash
// repeats the batch on retry (docs/outbound.md), so the commit is made
// as short as the engines allow. Each table gets one multi-row statement,
// and the commit has relaxed durability (relaxedTx): a crash of the
// milter after it returned keeps it; a crash of the machine (or of the
// PostgreSQL server) before the next durable commit may lose it, which
// repeats the batch, and never loses it.
func (s *Store) RecordBatch(ctx context.Context, list string, postID []byte, batch int, accepted []string, refused []RefusedRecipient, at time.Time) (already bool, err error) {
	if len(accepted) == 0 && len(refused) == 0 {
		return false, nil
	}
	at = nowOr(at)
	err = s.relaxedTx(ctx, func(tx *sqlx.Tx) error {
		if len(refused) > 0 {
			rows := make([][]any, len(refused))
			for i, r := range refused {
				rows[i] = []any{list, postID, r.Address, r.Reply, at}
			}
			if err := s.insertRows(ctx, tx, `INSERT INTO refused_recipients (list, post_id, address, reply, refused_at) VALUES `,
				` ON CONFLICT (list, post_id, address) DO NOTHING`, rows); err != nil {
				return err
			}
		}
		if len(accepted) == 0 {
			return nil
		}
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO deliveries (list, post_id, batch, delivered_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (list, post_id, batch) DO NOTHING`), list, postID, batch, at)
		if err != nil {
			return err
		}
		n, err := affected(res)
		if err != nil {
			return err
		}
		// A batch number recorded before (a retry, or another attempt
		// that raced on the post with the same numbering): its members
		// are recorded all the same; those recorded already stay as they
		// were (ON CONFLICT DO NOTHING).
		already = n == 0
		rows := make([][]any, len(accepted))
		for i, r := range accepted {
			rows[i] = []any{list, postID, r, batch, at}
		}
		return s.insertRows(ctx, tx, `INSERT INTO delivered_recipients (list, post_id, address, batch, delivered_at) VALUES `,
			` ON CONFLICT (list, post_id, address) DO NOTHING`, rows)
	})
	if err != nil {
		return false, fmt.Errorf("store: record batch %d on %q: %w", batch, list, err)
	}
	return already, nil
}

// insertRows runs head + "(?, ...), (?, ...)" + tail for rows, as few
// statements as the engines' parameter limits allow (SQLite's 32,766,
// PostgreSQL's 65,535).
func (s *Store) insertRows(ctx context.Context, tx *sqlx.Tx, head, tail string, rows [][]any) error {
	const perStatement = 500
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), perStatement)]
		rows = rows[len(chunk):]
		var q strings.Builder
		q.WriteString(head)
		args := make([]any, 0, len(chunk)*len(chunk[0]))
		for i, r := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?" + strings.Repeat(", ?", len(r)-1) + ")")
			args = append(args, r...)
		}
		q.WriteString(tail)
		if _, err := tx.ExecContext(ctx, s.q(q.String()), args...); err != nil {
			return err
		}
	}
	return nil
}

// DeliveredRecipients returns the recipients the post was delivered to
// (batches recorded by MarkDelivered), in address order, and the highest
// batch number recorded (0 when none).
func (s *Store) DeliveredRecipients(ctx context.Context, list string, postID []byte) (addrs []string, lastBatch int, err error) {
	if err := s.db.SelectContext(ctx, &addrs, s.q(`SELECT address FROM delivered_recipients
		WHERE list = ? AND post_id = ? ORDER BY address`), list, postID); err != nil {
		return nil, 0, fmt.Errorf("store: delivered recipients on %q: %w", list, err)
	}
	if err := s.db.GetContext(ctx, &lastBatch, s.q(`SELECT COALESCE(MAX(batch), 0) FROM deliveries
		WHERE list = ? AND post_id = ?`), list, postID); err != nil {
		return nil, 0, fmt.Errorf("store: delivered batches on %q: %w", list, err)
	}
	return addrs, lastBatch, nil
}
