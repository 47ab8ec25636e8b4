package store

import (
	"database/sql"
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
