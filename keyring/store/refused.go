package store

import (
	"context"
	"fmt"
	"time"
)

// RefusedRecipient is a member the MTA refused permanently (5xx at RCPT
// TO) when a post was reinjected: taken out of that post's delivery, not
// tried again on a retry of the same post, and named to the owners.
type RefusedRecipient struct {
	Address   string    `db:"address"`
	Reply     string    `db:"reply"` // the MTA's reply, e.g. "550 5.1.1 ... User unknown"
	RefusedAt time.Time `db:"refused_at"`
}

// RefusedRecipients returns the recipients refused for the post, in
// address order.
func (s *Store) RefusedRecipients(ctx context.Context, list string, postID []byte) ([]RefusedRecipient, error) {
	var out []RefusedRecipient
	if err := s.db.SelectContext(ctx, &out, s.q(`SELECT address, reply, refused_at FROM refused_recipients
		WHERE list = ? AND post_id = ? ORDER BY address`), list, postID); err != nil {
		return nil, fmt.Errorf("store: refused recipients on %q: %w", list, err)
	}
	for i := range out {
		out[i].RefusedAt = out[i].RefusedAt.UTC()
	}
	return out, nil
}

// PruneRefused deletes the refusals recorded before the cutoff (the
// retry window of a post is over by then, as for delivery records).
func (s *Store) PruneRefused(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM refused_recipients WHERE refused_at < ?`), ts(before))
	if err != nil {
		return 0, fmt.Errorf("store: prune refused recipients: %w", err)
	}
	n, err := affected(res)
	if err != nil {
		return 0, fmt.Errorf("store: prune refused recipients: %w", err)
	}
	return n, nil
}
