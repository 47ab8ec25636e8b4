package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// OldListKey is a list key retired by a rotation or an import: kept so
// that posts encrypted to it still open during the list's
// [keys] old_key_grace, and are told apart from posts for no key of the
// list after it.
type OldListKey struct {
	List        string
	Fingerprint string // hex, upper case
	PublicKey   []byte
	SecretKey   []byte // sealed by the site passphrase, as in lists
	RetiredAt   time.Time
}

type oldListKeyRow struct {
	List        string    `db:"list"`
	Fingerprint string    `db:"fingerprint"`
	PublicKey   []byte    `db:"public_key"`
	SecretKey   []byte    `db:"secret_key"`
	RetiredAt   time.Time `db:"retired_at"`
}

// ErrKeyChanged is returned (wrapped) by ReplaceListKey when the list's
// key is no longer the one the caller read: another rotation won.
var ErrKeyChanged = errors.New("the list key changed meanwhile")

// ReplaceListKey switches list to a new key in one transaction: the
// current key (which must still have fingerprint oldFpr) moves to the
// old keys with retired time at, the list row takes the new key and its
// keys version moves on, and every mail of notices is written into the
// outbox. A new key that is one of the list's old keys leaves the old
// keys without it.
func (s *Store) ReplaceListKey(ctx context.Context, list, oldFpr, newFpr string, pub, sec []byte, at time.Time, notices []OutboxMail) ([]int64, error) {
	var ids []int64
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		ids = ids[:0]
		var cur listRow
		err := tx.GetContext(ctx, &cur, s.q(`SELECT `+listColumns+` FROM lists WHERE address = ?`), list)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("list %q: %w", list, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if cur.KeyFingerprint != oldFpr {
			return ErrKeyChanged
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO old_list_keys (list, fingerprint, public_key, secret_key, retired_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (list, fingerprint) DO UPDATE SET retired_at = excluded.retired_at`),
			list, cur.KeyFingerprint, nonNil(cur.PublicKey), nonNil(cur.SecretKey), ts(at)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM old_list_keys WHERE list = ? AND fingerprint = ?`), list, newFpr); err != nil {
			return err
		}
		// The fingerprint read above must still be the list's: two
		// rotations at once on PostgreSQL both read it before either
		// commits, and the second must not overwrite the first's key
		// (whose secret would then be kept nowhere).
		res, err := tx.ExecContext(ctx, s.q(`UPDATE lists
			SET key_fingerprint = ?, public_key = ?, secret_key = ?, keys_version = keys_version + 1
			WHERE address = ? AND key_fingerprint = ?`), newFpr, nonNil(pub), nonNil(sec), list, oldFpr)
		if err != nil {
			return err
		}
		if n, err := affected(res); err != nil {
			return err
		} else if n != 1 {
			return ErrKeyChanged
		}
		for i := range notices {
			if err := s.queueTx(ctx, tx, &notices[i]); err != nil {
				return err
			}
			ids = append(ids, notices[i].ID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: replace key of list %q: %w", list, err)
	}
	return ids, nil
}

// ListsWithKey returns the lists whose current or a retired key has the
// fingerprint fpr.
func (s *Store) ListsWithKey(ctx context.Context, fpr string) ([]string, error) {
	var out []string
	if err := s.db.SelectContext(ctx, &out, s.q(`SELECT address FROM lists WHERE key_fingerprint = ?
		UNION SELECT list FROM old_list_keys WHERE fingerprint = ? ORDER BY 1`), fpr, fpr); err != nil {
		return nil, fmt.Errorf("store: lists with key %s: %w", fpr, err)
	}
	return out, nil
}

// OldListKeys returns the list's retired keys, most recently retired
// first.
func (s *Store) OldListKeys(ctx context.Context, list string) ([]OldListKey, error) {
	var rows []oldListKeyRow
	if err := s.db.SelectContext(ctx, &rows, s.q(`SELECT list, fingerprint, public_key, secret_key, retired_at
		FROM old_list_keys WHERE list = ? ORDER BY retired_at DESC, fingerprint`), list); err != nil {
		return nil, fmt.Errorf("store: old keys of list %q: %w", list, err)
	}
	out := make([]OldListKey, len(rows))
	for i, r := range rows {
		out[i] = OldListKey{List: r.List, Fingerprint: r.Fingerprint, PublicKey: r.PublicKey, SecretKey: r.SecretKey, RetiredAt: r.RetiredAt.UTC()}
	}
	return out, nil
}
