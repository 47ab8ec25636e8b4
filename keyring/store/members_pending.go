package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
)

// Pending key purposes: what a pending key becomes once confirmed.
const (
	// PendingSet: the first key of a subscriber (or the new key of a
	// member in state needs-key), sent with "key set".
	PendingSet = "set"
	// PendingChange: an active member's replacement key ("key change").
	PendingChange = "change"
)

// Pending key states.
const (
	// PendingUnconfirmed: sent, its "key confirm" statement not yet back.
	PendingUnconfirmed = "unconfirmed"
	// PendingConfirmed: a confirmed key change waiting for a moderator.
	PendingConfirmed = "confirmed"
)

// PendingKey is a key the responder received for a list address that is
// not (yet) that member's registered key. Several may exist per address
// (one per fingerprint); a confirmation settles them all.
type PendingKey struct {
	List        string
	Address     string
	Fingerprint string // hex, upper case
	PublicKey   []byte // opaque (the pruned key)
	Purpose     string // PendingSet or PendingChange
	State       string // PendingUnconfirmed or PendingConfirmed
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

type pendingRow struct {
	List        string    `db:"list"`
	Address     string    `db:"address"`
	Fingerprint string    `db:"fingerprint"`
	PublicKey   []byte    `db:"public_key"`
	Purpose     string    `db:"purpose"`
	State       string    `db:"state"`
	CreatedAt   time.Time `db:"created_at"`
	UpdatedAt   time.Time `db:"updated_at"`
}

const pendingColumns = `list, address, fingerprint, public_key, purpose, state, created_at, updated_at`

func (r pendingRow) pending() PendingKey {
	return PendingKey{List: r.List, Address: r.Address, Fingerprint: r.Fingerprint, PublicKey: r.PublicKey,
		Purpose: r.Purpose, State: r.State, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
}

// PendingKeys returns the list's pending keys ordered by address and
// fingerprint; with addr non-empty only that address's.
func (s *Store) PendingKeys(ctx context.Context, list, addr string) ([]PendingKey, error) {
	where, args := `list = ?`, []any{list}
	if addr != "" {
		where, args = `list = ? AND address = ?`, []any{list, addr}
	}
	var rows []pendingRow
	if err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+pendingColumns+` FROM pending_keys WHERE `+where+
		` ORDER BY address, fingerprint`), args...); err != nil {
		return nil, fmt.Errorf("store: pending keys of %q: %w", list, err)
	}
	out := make([]PendingKey, len(rows))
	for i, r := range rows {
		out[i] = r.pending()
	}
	return out, nil
}

// PeekChallenge returns the challenge with this token hash without using
// it (used or expired ones too: the caller tells the subscriber which).
// An unknown hash is an error wrapping [ErrNotFound].
func (s *Store) PeekChallenge(ctx context.Context, tokenHash []byte) (Challenge, error) {
	var r challengeRow
	err := s.db.GetContext(ctx, &r, s.q(`SELECT `+challengeColumns+` FROM challenges WHERE token_hash = ?`), tokenHash)
	if errors.Is(err, sql.ErrNoRows) {
		return Challenge{}, fmt.Errorf("store: challenge: %w", ErrNotFound)
	}
	if err != nil {
		return Challenge{}, fmt.Errorf("store: peek challenge: %w", err)
	}
	return r.challenge(), nil
}

// MemberExpect is a compare-and-set condition on a member row.
type MemberExpect struct {
	// Absent: the member must not exist (State and Fingerprint ignored).
	Absent      bool
	State       string
	Fingerprint string
}

// KeyStep is one step of a key workflow, applied by [Store.ApplyKeyStep]
// in one transaction: all of it happens, or none.
type KeyStep struct {
	List    string
	Address string
	Now     time.Time // zero: time.Now()

	// UseToken, if set, is the hash of a challenge to use up first, in
	// one statement so that a token counts at most once even when two
	// processes race (unused and unexpired at Now, else an error
	// wrapping ErrUsed, ErrExpired or ErrNotFound).
	UseToken []byte
	// ExpectMember, if set, must hold for the member row (else
	// ErrConflict).
	ExpectMember *MemberExpect
	// ExpectPending, if set, must exist for (List, Address) with this
	// fingerprint and state (else ErrConflict).
	ExpectPending *PendingKey

	// DropPending deletes every pending key of (List, Address) before
	// PutPending is written.
	DropPending bool
	PutPending  *PendingKey
	// PutMember inserts or replaces the member as [Store.PutMember] does
	// (List and Address are taken from the step).
	PutMember *Member
	// RemoveMember deletes the member (if it exists) and its key IDs.
	RemoveMember bool
	// AddChallenges are new challenges (List and Address taken from the
	// step).
	AddChallenges []Challenge

	// PrunePendingBefore, if set, deletes the list's unconfirmed pending
	// keys last updated before it; PruneChallengesBefore the list's
	// challenges that expired before it.
	PrunePendingBefore    time.Time
	PruneChallengesBefore time.Time

	// LimitReply, if set, takes a reply slot as [Store.QueueLimited] does,
	// in this transaction: when a limit is reached nothing of the step
	// happens and the error wraps ErrRateLimited.
	LimitReply *ReplyLimit

	// Outbox, if set, is a mail (the responder's reply) written into the
	// outbox in this transaction, after every change above: the reply
	// exists exactly when the change is committed. It is sent after the
	// commit ([Store.SendOutbox]), never inside the transaction.
	// ApplyKeyStep sets Outbox.ID.
	Outbox *OutboxMail
}

// ApplyKeyStep applies st in one transaction. Member changes bump the
// list's keys version (the milter's cache sees them on its next post).
// A missing list is an error wrapping ErrNotFound.
func (s *Store) ApplyKeyStep(ctx context.Context, st KeyStep) error {
	if st.List == "" || st.Address == "" {
		return errors.New("store: key step: empty list or address")
	}
	now := nowOr(st.Now)
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		// Bump first (it locks the list row on PostgreSQL, so steps of one
		// list queue in one order) when the member may change.
		if st.PutMember != nil || st.RemoveMember {
			if err := bumpKeysVersion(ctx, tx, st.List); err != nil {
				return err
			}
		}
		if st.LimitReply != nil {
			if err := s.takeReplySlot(ctx, tx, *st.LimitReply); err != nil {
				return err
			}
		}
		if st.UseToken != nil {
			if err := useChallengeTx(ctx, tx, s, st, now); err != nil {
				return err
			}
		}
		if e := st.ExpectMember; e != nil {
			var r memberRow
			err := tx.GetContext(ctx, &r, s.q(`SELECT list, address, state, fingerprint, public_key, created_at, updated_at
				FROM members WHERE list = ? AND address = ?`), st.List, st.Address)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				if !e.Absent {
					return fmt.Errorf("member %q: %w", st.Address, ErrConflict)
				}
			case err != nil:
				return fmt.Errorf("read member: %w", err)
			case e.Absent || r.State != e.State || r.Fingerprint != e.Fingerprint:
				return fmt.Errorf("member %q is %s %s: %w", st.Address, r.State, r.Fingerprint, ErrConflict)
			}
		}
		if e := st.ExpectPending; e != nil {
			var n int
			if err := tx.GetContext(ctx, &n, s.q(`SELECT COUNT(*) FROM pending_keys
				WHERE list = ? AND address = ? AND fingerprint = ? AND state = ?`),
				st.List, st.Address, e.Fingerprint, e.State); err != nil {
				return fmt.Errorf("read pending key: %w", err)
			}
			if n == 0 {
				return fmt.Errorf("pending key %s of %q: %w", e.Fingerprint, st.Address, ErrConflict)
			}
		}
		if st.DropPending {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM pending_keys WHERE list = ? AND address = ?`),
				st.List, st.Address); err != nil {
				return fmt.Errorf("drop pending keys: %w", err)
			}
		}
		if p := st.PutPending; p != nil {
			if err := putPendingTx(ctx, tx, s, st, *p, now); err != nil {
				return err
			}
		}
		if st.RemoveMember {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM `+s.keyIDsByMember("")+` WHERE list = ? AND address = ?`), st.List, st.Address); err != nil {
				return fmt.Errorf("delete key ids: %w", err)
			}
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM members WHERE list = ? AND address = ?`), st.List, st.Address); err != nil {
				return fmt.Errorf("delete member: %w", err)
			}
		}
		if m := st.PutMember; m != nil {
			mm := *m
			mm.List, mm.Address = st.List, st.Address
			if err := putMemberTx(ctx, tx, s, mm, now); err != nil {
				return err
			}
		}
		for _, c := range st.AddChallenges {
			if len(c.TokenHash) == 0 || c.ExpiresAt.IsZero() {
				return errors.New("add challenge: empty token hash or no expiry")
			}
			res, err := tx.ExecContext(ctx, s.q(`INSERT INTO challenges
				(token_hash, list, address, command, fingerprint, created_at, expires_at)
				VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING`),
				c.TokenHash, st.List, st.Address, c.Command, c.Fingerprint, nowOr(c.CreatedAt), ts(c.ExpiresAt))
			if err != nil {
				return fmt.Errorf("add challenge: %w", err)
			}
			if n, err := affected(res); err != nil {
				return err
			} else if n == 0 {
				return fmt.Errorf("add challenge: %w", ErrExists)
			}
		}
		if !st.PrunePendingBefore.IsZero() {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM pending_keys WHERE list = ? AND state = ? AND updated_at < ?`),
				st.List, PendingUnconfirmed, ts(st.PrunePendingBefore)); err != nil {
				return fmt.Errorf("prune pending keys: %w", err)
			}
		}
		if !st.PruneChallengesBefore.IsZero() {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM challenges WHERE list = ? AND expires_at < ?`),
				st.List, ts(st.PruneChallengesBefore)); err != nil {
				return fmt.Errorf("prune challenges: %w", err)
			}
		}
		if st.Outbox != nil {
			return s.queueTx(ctx, tx, st.Outbox)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: key step for %q on %q: %w", st.Address, st.List, err)
	}
	return nil
}

// useChallengeTx uses up the challenge st.UseToken inside the step's
// transaction (see KeyStep.UseToken).
func useChallengeTx(ctx context.Context, tx *sqlx.Tx, s *Store, st KeyStep, now time.Time) error {
	res, err := tx.ExecContext(ctx, s.q(`UPDATE challenges SET used_at = ?
		WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?`), now, st.UseToken, now)
	if err != nil {
		return fmt.Errorf("use challenge: %w", err)
	}
	n, err := affected(res)
	if err != nil {
		return err
	}
	if n == 1 {
		return nil
	}
	var r challengeRow
	err = tx.GetContext(ctx, &r, s.q(`SELECT `+challengeColumns+` FROM challenges WHERE token_hash = ?`), st.UseToken)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("challenge: %w", ErrNotFound)
	case err != nil:
		return fmt.Errorf("use challenge: %w", err)
	case r.UsedAt.Valid:
		return fmt.Errorf("challenge: %w", ErrUsed)
	}
	return fmt.Errorf("challenge: %w", ErrExpired)
}

func putPendingTx(ctx context.Context, tx *sqlx.Tx, s *Store, st KeyStep, p PendingKey, now time.Time) error {
	if p.Purpose != PendingSet && p.Purpose != PendingChange {
		return fmt.Errorf("put pending key: invalid purpose %q", p.Purpose)
	}
	if p.State != PendingUnconfirmed && p.State != PendingConfirmed {
		return fmt.Errorf("put pending key: invalid state %q", p.State)
	}
	if p.Fingerprint == "" || len(p.PublicKey) == 0 {
		return errors.New("put pending key: no key")
	}
	created := now
	if !p.CreatedAt.IsZero() {
		created = ts(p.CreatedAt)
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO pending_keys
		(list, address, fingerprint, public_key, purpose, state, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (list, address, fingerprint) DO UPDATE SET
			public_key = excluded.public_key,
			purpose = excluded.purpose,
			state = excluded.state,
			updated_at = excluded.updated_at`),
		st.List, st.Address, p.Fingerprint, p.PublicKey, p.Purpose, p.State, created, now); err != nil {
		return fmt.Errorf("put pending key: %w", err)
	}
	return nil
}

// putMemberTx is PutMember's upsert inside a transaction (the caller has
// bumped the keys version).
func putMemberTx(ctx context.Context, tx *sqlx.Tx, s *Store, m Member, now time.Time) error {
	if !validMemberState(m.State) {
		return fmt.Errorf("put member: invalid state %q", m.State)
	}
	created := now
	if !m.CreatedAt.IsZero() {
		created = ts(m.CreatedAt)
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO members
		(list, address, state, fingerprint, public_key, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (list, address) DO UPDATE SET
			state = excluded.state,
			fingerprint = excluded.fingerprint,
			public_key = excluded.public_key,
			updated_at = excluded.updated_at`),
		m.List, m.Address, m.State, m.Fingerprint, m.PublicKey, created, now); err != nil {
		return fmt.Errorf("put member: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM `+s.keyIDsByMember("")+` WHERE list = ? AND address = ?`), m.List, m.Address); err != nil {
		return fmt.Errorf("clear key ids: %w", err)
	}
	ids := slices.Clone(m.KeyIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO member_key_ids (list, key_id, address) VALUES (?, ?, ?)`),
			m.List, int64(id), m.Address); err != nil {
			return fmt.Errorf("add key id %016X: %w", id, err)
		}
	}
	return nil
}
