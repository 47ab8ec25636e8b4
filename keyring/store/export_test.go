package store

// Store methods only the tests use: production code takes other paths
// (challenges through ApplyKeyStep, delivery records through
// MarkDelivered and CompletePost), so they live here, compiled only
// into this package's tests.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AddChallenge stores a new, unused challenge. A zero CreatedAt means now;
// UsedAt is ignored. A token hash already stored is [ErrExists].
func (s *Store) AddChallenge(ctx context.Context, c Challenge) error {
	if len(c.TokenHash) == 0 {
		return fmt.Errorf("store: add challenge on %q: empty token hash", c.List)
	}
	if c.ExpiresAt.IsZero() {
		return fmt.Errorf("store: add challenge on %q: no expiry time", c.List)
	}
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO challenges
		(token_hash, list, address, command, fingerprint, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING`),
		c.TokenHash, c.List, c.Address, c.Command, c.Fingerprint, nowOr(c.CreatedAt), ts(c.ExpiresAt))
	if err != nil {
		return fmt.Errorf("store: add challenge on %q: %w", c.List, err)
	}
	n, err := affected(res)
	if err != nil {
		return fmt.Errorf("store: add challenge on %q: %w", c.List, err)
	}
	if n == 0 {
		return fmt.Errorf("store: add challenge on %q: %w", c.List, ErrExists)
	}
	return nil
}

// UseChallenge marks the challenge used and returns it, in one statement
// that succeeds only if it is unused and now is before its expiry time, so
// a token is accepted at most once even when two processes race. Otherwise
// the error wraps [ErrNotFound], [ErrUsed] or [ErrExpired] (used wins over
// expired).
func (s *Store) UseChallenge(ctx context.Context, tokenHash []byte, now time.Time) (Challenge, error) {
	now = nowOr(now)
	var r challengeRow
	err := s.db.GetContext(ctx, &r, s.q(`UPDATE challenges SET used_at = ?
		WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?
		RETURNING `+challengeColumns), now, tokenHash, now)
	if err == nil {
		return r.challenge(), nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Challenge{}, fmt.Errorf("store: use challenge: %w", err)
	}
	err = s.db.GetContext(ctx, &r, s.q(`SELECT `+challengeColumns+` FROM challenges WHERE token_hash = ?`), tokenHash)
	if errors.Is(err, sql.ErrNoRows) {
		return Challenge{}, fmt.Errorf("store: challenge: %w", ErrNotFound)
	}
	if err != nil {
		return Challenge{}, fmt.Errorf("store: use challenge: %w", err)
	}
	if r.UsedAt.Valid {
		return Challenge{}, fmt.Errorf("store: challenge: %w", ErrUsed)
	}
	return Challenge{}, fmt.Errorf("store: challenge: %w", ErrExpired)
}

// MarkBatchDelivered records that outbound batch number batch of the post
// was handed to the MTA. already reports that it had been recorded before
// (by this or another process), in which case nothing changes.
func (s *Store) MarkBatchDelivered(ctx context.Context, list string, postID []byte, batch int, at time.Time) (already bool, err error) {
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO deliveries (list, post_id, batch, delivered_at)
		VALUES (?, ?, ?, ?) ON CONFLICT (list, post_id, batch) DO NOTHING`), list, postID, batch, nowOr(at))
	if err != nil {
		return false, fmt.Errorf("store: mark batch %d delivered on %q: %w", batch, list, err)
	}
	n, err := affected(res)
	if err != nil {
		return false, fmt.Errorf("store: mark batch %d delivered on %q: %w", batch, list, err)
	}
	return n == 0, nil
}

// DeliveredBatches returns the batch numbers recorded for the post, in
// ascending order.
func (s *Store) DeliveredBatches(ctx context.Context, list string, postID []byte) ([]int, error) {
	var batches []int
	if err := s.db.SelectContext(ctx, &batches, s.q(`SELECT batch FROM deliveries
		WHERE list = ? AND post_id = ? ORDER BY batch`), list, postID); err != nil {
		return nil, fmt.Errorf("store: delivered batches on %q: %w", list, err)
	}
	return batches, nil
}

// MarkPostComplete records that every batch of the post was delivered.
// Marking a post twice is not an error.
func (s *Store) MarkPostComplete(ctx context.Context, list string, postID []byte, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.q(`INSERT INTO posts_complete (list, post_id, completed_at)
		VALUES (?, ?, ?) ON CONFLICT (list, post_id) DO NOTHING`), list, postID, nowOr(at)); err != nil {
		return fmt.Errorf("store: mark post complete on %q: %w", list, err)
	}
	return nil
}

// Lists returns every list, ordered by address.
func (s *Store) Lists(ctx context.Context) ([]List, error) {
	var rows []listRow
	if err := s.db.SelectContext(ctx, &rows, `SELECT `+listColumns+` FROM lists ORDER BY address`); err != nil {
		return nil, fmt.Errorf("store: lists: %w", err)
	}
	out := make([]List, len(rows))
	for i, r := range rows {
		out[i] = r.list()
	}
	return out, nil
}

// MembersByKeyID returns the list's members that hold a key (primary or
// subkey) with this key ID, ordered by address. A key ID is not unique:
// expect zero, one or (rarely) several.
func (s *Store) MembersByKeyID(ctx context.Context, list string, keyID uint64) ([]Member, error) {
	ms, err := s.selectMembers(ctx, `m.list = ? AND m.address IN
		(SELECT address FROM member_key_ids WHERE list = ? AND key_id = ?)`, list, list, int64(keyID))
	if err != nil {
		return nil, fmt.Errorf("store: members of %q by key id %016X: %w", list, keyID, err)
	}
	return ms, nil
}

// OneConnection keeps the store on one database connection, so that a
// test reads the session settings the store's own statements ran with.
func (s *Store) OneConnection() { s.db.SetMaxOpenConns(1) }

// Durability is the commit durability of the store's connection:
// SQLite's synchronous ("2" is FULL), PostgreSQL's synchronous_commit.
func (s *Store) Durability(ctx context.Context) (string, error) {
	var v string
	q := `PRAGMA synchronous`
	if s.engine == EnginePostgres {
		q = `SHOW synchronous_commit`
	}
	err := s.db.GetContext(ctx, &v, q)
	return v, err
}
