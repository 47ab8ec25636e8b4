package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// List is a mailing list and its OpenPGP key.
type List struct {
	Address        string // normalised list address
	KeyFingerprint string // hex, upper case
	PublicKey      []byte // binary or armored; opaque here
	SecretKey      []byte // opaque, already protected by the caller
	CreatedAt      time.Time
}

type listRow struct {
	Address        string    `db:"address"`
	KeyFingerprint string    `db:"key_fingerprint"`
	PublicKey      []byte    `db:"public_key"`
	SecretKey      []byte    `db:"secret_key"`
	CreatedAt      time.Time `db:"created_at"`
}

func (r listRow) list() List {
	return List{
		Address:        r.Address,
		KeyFingerprint: r.KeyFingerprint,
		PublicKey:      r.PublicKey,
		SecretKey:      r.SecretKey,
		CreatedAt:      r.CreatedAt.UTC(),
	}
}

const listColumns = `address, key_fingerprint, public_key, secret_key, created_at`

// CreateList adds a list. A zero CreatedAt means now. It returns an error
// wrapping [ErrExists] if the address is taken.
func (s *Store) CreateList(ctx context.Context, l List) error {
	if l.Address == "" {
		return errors.New("store: create list: empty address")
	}
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO lists (`+listColumns+`)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (address) DO NOTHING`),
		l.Address, l.KeyFingerprint, nonNil(l.PublicKey), nonNil(l.SecretKey), nowOr(l.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: create list %q: %w", l.Address, err)
	}
	n, err := affected(res)
	if err != nil {
		return fmt.Errorf("store: create list %q: %w", l.Address, err)
	}
	if n == 0 {
		return fmt.Errorf("store: create list %q: %w", l.Address, ErrExists)
	}
	return nil
}

// GetList returns the list with address addr.
func (s *Store) GetList(ctx context.Context, addr string) (List, error) {
	var r listRow
	err := s.db.GetContext(ctx, &r, s.q(`SELECT `+listColumns+` FROM lists WHERE address = ?`), addr)
	if errors.Is(err, sql.ErrNoRows) {
		return List{}, fmt.Errorf("store: list %q: %w", addr, ErrNotFound)
	}
	if err != nil {
		return List{}, fmt.Errorf("store: get list %q: %w", addr, err)
	}
	return r.list(), nil
}

// UpdateListKey replaces the list's key. It bumps the list's
// [Store.KeysVersion], since a cached list key is as stale as a cached
// member key.
func (s *Store) UpdateListKey(ctx context.Context, addr, fpr string, pub, sec []byte) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE lists
		SET key_fingerprint = ?, public_key = ?, secret_key = ?, keys_version = keys_version + 1
		WHERE address = ?`), fpr, nonNil(pub), nonNil(sec), addr)
	if err != nil {
		return fmt.Errorf("store: update key of list %q: %w", addr, err)
	}
	n, err := affected(res)
	if err != nil {
		return fmt.Errorf("store: update key of list %q: %w", addr, err)
	}
	if n == 0 {
		return fmt.Errorf("store: list %q: %w", addr, ErrNotFound)
	}
	return nil
}

// KeysVersion returns a counter that every change to the list's keys
// (PutMember, RemoveMember, UpdateListKey) bumps in the same transaction.
// A process caching keys compares it to tell whether its cache is stale.
func (s *Store) KeysVersion(ctx context.Context, list string) (int64, error) {
	var v int64
	err := s.db.GetContext(ctx, &v, s.q(`SELECT keys_version FROM lists WHERE address = ?`), list)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("store: list %q: %w", list, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("store: keys version of list %q: %w", list, err)
	}
	return v, nil
}

// nonNil turns nil into an empty slice, for NOT NULL byte columns.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
