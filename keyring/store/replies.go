package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jmoiron/sqlx"
)

// ErrRateLimited: a reply limit ([ReplyLimit]) is reached; nothing was
// sent or recorded. The error is a *[RateLimitError].
var ErrRateLimited = errors.New("reply limit reached")

// Scopes of a [RateLimitError].
const (
	LimitAddress = "address" // ReplyLimit.PerAddress
	LimitList    = "list"    // ReplyLimit.PerList
)

// RateLimitError says which reply limit was reached.
type RateLimitError struct {
	Scope string // LimitAddress or LimitList
	Limit int
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("reply limit per %s (%d) reached", e.Scope, e.Limit)
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// ReplyLimit bounds the responder's replies to senders it could not
// verify (table responder_replies): at most PerAddress to Address and at
// most PerList to all addresses of List together within Window before
// Now. A limit of 0 allows no reply at all.
type ReplyLimit struct {
	List       string
	Address    string
	Now        time.Time // zero: time.Now()
	Window     time.Duration
	PerAddress int
	PerList    int
}

// replyLockClass is the first key of the pg_advisory_xact_lock(int, int)
// that serialises reply slots per list on PostgreSQL ("lcrp" in ASCII);
// the second is a hash of the list address.
const replyLockClass = 0x6c637270

// takeReplySlot locks the list's reply counters, prunes the rows that
// left the window, counts, and records one reply if both limits allow it.
// ApplyKeyStep calls it after the keys version bump, which keeps the lock
// order (list row, then reply lock) the same in every transaction.
func (s *Store) takeReplySlot(ctx context.Context, tx *sqlx.Tx, lim ReplyLimit) error {
	if lim.List == "" || lim.Address == "" {
		return errors.New("reply limit: empty list or address")
	}
	if lim.Window <= 0 {
		return errors.New("reply limit: no window")
	}
	now := nowOr(lim.Now)
	cutoff := ts(now.Add(-lim.Window))
	if s.engine == EnginePostgres {
		h := fnv.New32a()
		h.Write([]byte(lim.List))
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, int32(replyLockClass), int32(h.Sum32())); err != nil {
			return fmt.Errorf("reply lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM responder_replies WHERE list = ? AND sent_at <= ?`), lim.List, cutoff); err != nil {
		return fmt.Errorf("prune replies: %w", err)
	}
	var perList, perAddr int
	if err := tx.GetContext(ctx, &perList, s.q(`SELECT COUNT(*) FROM responder_replies WHERE list = ? AND sent_at > ?`),
		lim.List, cutoff); err != nil {
		return fmt.Errorf("count replies: %w", err)
	}
	if err := tx.GetContext(ctx, &perAddr, s.q(`SELECT COUNT(*) FROM responder_replies WHERE list = ? AND address = ? AND sent_at > ?`),
		lim.List, lim.Address, cutoff); err != nil {
		return fmt.Errorf("count replies: %w", err)
	}
	switch {
	case perAddr >= lim.PerAddress:
		return &RateLimitError{Scope: LimitAddress, Limit: lim.PerAddress}
	case perList >= lim.PerList:
		return &RateLimitError{Scope: LimitList, Limit: lim.PerList}
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO responder_replies (list, address, sent_at) VALUES (?, ?, ?)`),
		lim.List, lim.Address, now); err != nil {
		return fmt.Errorf("record reply: %w", err)
	}
	return nil
}

// CountReplies counts the recorded replies to unverified senders of the
// list sent after since (zero: all rows), to address only when it is not
// empty.
func (s *Store) CountReplies(ctx context.Context, list, address string, since time.Time) (int, error) {
	query, args := `SELECT COUNT(*) FROM responder_replies WHERE list = ?`, []any{list}
	if address != "" {
		query, args = query+` AND address = ?`, append(args, address)
	}
	if !since.IsZero() {
		query, args = query+` AND sent_at > ?`, append(args, ts(since))
	}
	var n int
	if err := s.db.GetContext(ctx, &n, s.q(query), args...); err != nil {
		return 0, fmt.Errorf("store: count replies of %q: %w", list, err)
	}
	return n, nil
}
