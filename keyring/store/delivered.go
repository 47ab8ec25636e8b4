package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// MarkDelivered records, in one transaction, that batch number batch of
// the post was handed to the MTA for recipients. already reports that
// the batch had been recorded before (by this or another process), in
// which case nothing changes. The outbound stage calls it right after
// the MTA accepted the batch.
func (s *Store) MarkDelivered(ctx context.Context, list string, postID []byte, batch int, recipients []string, at time.Time) (already bool, err error) {
	at = nowOr(at)
	err = s.tx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO deliveries (list, post_id, batch, delivered_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (list, post_id, batch) DO NOTHING`), list, postID, batch, at)
		if err != nil {
			return err
		}
		n, err := affected(res)
		if err != nil {
			return err
		}
		if n == 0 {
			already = true
			return nil
		}
		for _, r := range recipients {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO delivered_recipients (list, post_id, address, batch, delivered_at)
				VALUES (?, ?, ?, ?, ?) ON CONFLICT (list, post_id, address) DO NOTHING`), list, postID, r, batch, at); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: mark batch %d delivered on %q: %w", batch, list, err)
	}
	return already, nil
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
