package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Challenge is a pending responder challenge. The token itself is never
// stored: TokenHash is its hash, computed by the caller.
type Challenge struct {
	TokenHash   []byte
	List        string
	Address     string
	Command     string // e.g. "key set", "key confirm"; opaque here
	Fingerprint string // the key the challenge is about, if any
	CreatedAt   time.Time
	ExpiresAt   time.Time
	UsedAt      time.Time // zero until used
}

type challengeRow struct {
	TokenHash   []byte       `db:"token_hash"`
	List        string       `db:"list"`
	Address     string       `db:"address"`
	Command     string       `db:"command"`
	Fingerprint string       `db:"fingerprint"`
	CreatedAt   time.Time    `db:"created_at"`
	ExpiresAt   time.Time    `db:"expires_at"`
	UsedAt      sql.NullTime `db:"used_at"`
}

func (r challengeRow) challenge() Challenge {
	c := Challenge{
		TokenHash:   r.TokenHash,
		List:        r.List,
		Address:     r.Address,
		Command:     r.Command,
		Fingerprint: r.Fingerprint,
		CreatedAt:   r.CreatedAt.UTC(),
		ExpiresAt:   r.ExpiresAt.UTC(),
	}
	if r.UsedAt.Valid {
		c.UsedAt = r.UsedAt.Time.UTC()
	}
	return c
}

const challengeColumns = `token_hash, list, address, command, fingerprint, created_at, expires_at, used_at`

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
