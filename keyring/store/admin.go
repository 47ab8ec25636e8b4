package store

// Store methods for the admin CLI's list and bulk member verbs
// (listcrypt list ls, list delete, member import).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// ListSummary is a list with its member count (any state), for listing.
type ListSummary struct {
	Address        string
	KeyFingerprint string
	Members        int
	CreatedAt      time.Time
}

// ListSummaries returns every list ordered by address, with how many
// members (in any state) it has.
func (s *Store) ListSummaries(ctx context.Context) ([]ListSummary, error) {
	var rows []struct {
		Address        string    `db:"address"`
		KeyFingerprint string    `db:"key_fingerprint"`
		CreatedAt      time.Time `db:"created_at"`
		Members        int       `db:"members"`
	}
	if err := s.db.SelectContext(ctx, &rows, `SELECT l.address, l.key_fingerprint, l.created_at,
		(SELECT COUNT(*) FROM members m WHERE m.list = l.address) AS members
		FROM lists l ORDER BY l.address`); err != nil {
		return nil, fmt.Errorf("store: lists: %w", err)
	}
	out := make([]ListSummary, len(rows))
	for i, r := range rows {
		out[i] = ListSummary{Address: r.Address, KeyFingerprint: r.KeyFingerprint, Members: r.Members, CreatedAt: r.CreatedAt.UTC()}
	}
	return out, nil
}

// HoldsWaitingError is DeleteList's refusal of a list with holds still
// to decide: waiting for a moderator, or approved with a delivery that
// stopped half-way.
type HoldsWaitingError struct {
	List       string
	Waiting    int // held, not expired
	Delivering int // approved, not delivered
}

func (e *HoldsWaitingError) Error() string {
	var parts []string
	if e.Waiting > 0 {
		parts = append(parts, fmt.Sprintf("%d held posts waiting for a moderator", e.Waiting))
	}
	if e.Delivering > 0 {
		parts = append(parts, fmt.Sprintf("%d approved posts whose delivery stopped half-way", e.Delivering))
	}
	return fmt.Sprintf("list %s has %s", e.List, strings.Join(parts, " and "))
}

// Is makes a HoldsWaitingError match [ErrConflict].
func (e *HoldsWaitingError) Is(target error) bool { return target == ErrConflict }

// DeletedList is what DeleteList removed.
type DeletedList struct {
	List    List // the list's row, keys included, as it was
	Members int
	Holds   int // every hold, whatever its state
}

// DeleteList removes the list and every row that belongs to it (members
// and their key IDs, pending keys, challenges, holds, replay and
// delivery records, claims, responder reply counts and unsent outbox
// mail) in one transaction, and returns the list's row as it was. Unless
// force, a list with a hold still to decide (held and not expired, or
// approved and not delivered) is refused with a [*HoldsWaitingError] and
// nothing changes. A missing list is [ErrNotFound].
func (s *Store) DeleteList(ctx context.Context, addr string, force bool) (DeletedList, error) {
	var d DeletedList
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		// Lock the row first (PostgreSQL; SQLite's write lock is taken at
		// BEGIN), so no member or hold is added meanwhile.
		if err := bumpKeysVersion(ctx, tx, addr); err != nil {
			return err
		}
		var r listRow
		if err := tx.GetContext(ctx, &r, tx.Rebind(`SELECT `+listColumns+` FROM lists WHERE address = ?`), addr); err != nil {
			return err
		}
		d.List = r.list()
		if !force {
			var c struct {
				Waiting    sql.NullInt64 `db:"waiting"`
				Delivering sql.NullInt64 `db:"delivering"`
			}
			if err := tx.GetContext(ctx, &c, tx.Rebind(`SELECT
				SUM(CASE WHEN state = 'held' AND expired_at IS NULL THEN 1 ELSE 0 END) AS waiting,
				SUM(CASE WHEN state = 'approved' AND delivered_at IS NULL THEN 1 ELSE 0 END) AS delivering
				FROM holds WHERE list = ?`), addr); err != nil {
				return fmt.Errorf("count holds: %w", err)
			}
			if c.Waiting.Int64 > 0 || c.Delivering.Int64 > 0 {
				return &HoldsWaitingError{List: addr, Waiting: int(c.Waiting.Int64), Delivering: int(c.Delivering.Int64)}
			}
		}
		if err := tx.GetContext(ctx, &d.Members, tx.Rebind(`SELECT COUNT(*) FROM members WHERE list = ?`), addr); err != nil {
			return fmt.Errorf("count members: %w", err)
		}
		if err := tx.GetContext(ctx, &d.Holds, tx.Rebind(`SELECT COUNT(*) FROM holds WHERE list = ?`), addr); err != nil {
			return fmt.Errorf("count holds: %w", err)
		}
		// Explicitly, children first: the foreign keys cascade too, but
		// two tables carry the list without one.
		for _, table := range []string{"member_key_ids", "members", "pending_keys", "challenges", "holds",
			"replay", "deliveries", "delivered_recipients", "refused_recipients", "posts_complete",
			"post_claims", "responder_replies"} {
			if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM `+table+` WHERE list = ?`), addr); err != nil {
				return fmt.Errorf("delete from %s: %w", table, err)
			}
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM outbox WHERE list = ? AND sent_at IS NULL`), addr); err != nil {
			return fmt.Errorf("delete from outbox: %w", err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM lists WHERE address = ?`), addr); err != nil {
			return fmt.Errorf("delete list: %w", err)
		}
		return nil
	})
	if err != nil {
		var hw *HoldsWaitingError
		if errors.As(err, &hw) {
			return DeletedList{List: d.List}, err
		}
		return DeletedList{}, fmt.Errorf("store: delete list %q: %w", addr, err)
	}
	return d, nil
}

// ImportConflictError is ImportMembers' refusal: members already on the
// list with another key or state.
type ImportConflictError struct {
	List      string
	Addresses []string
}

func (e *ImportConflictError) Error() string {
	return fmt.Sprintf("already members of %s with another key or state: %s", e.List, strings.Join(e.Addresses, ", "))
}

// Is makes an ImportConflictError match [ErrExists].
func (e *ImportConflictError) Is(target error) bool { return target == ErrExists }

// ImportMembers adds the members (all of list, addresses distinct) in one
// transaction and bumps the list's KeysVersion once: all or nothing. A
// member already on the list with the same fingerprint and state is left
// as it is and counted in unchanged; one with another fingerprint or
// state refuses the whole import with an [*ImportConflictError]. A zero
// CreatedAt or UpdatedAt means now. A missing list is [ErrNotFound].
func (s *Store) ImportMembers(ctx context.Context, list string, ms []Member) (added, unchanged int, err error) {
	seen := map[string]bool{}
	for _, m := range ms {
		if m.List != list || m.Address == "" {
			return 0, 0, fmt.Errorf("store: import members of %q: member %q of list %q", list, m.Address, m.List)
		}
		if !validMemberState(m.State) {
			return 0, 0, fmt.Errorf("store: import members of %q: %q: invalid state %q", list, m.Address, m.State)
		}
		if seen[m.Address] {
			return 0, 0, fmt.Errorf("store: import members of %q: %q twice", list, m.Address)
		}
		seen[m.Address] = true
	}
	err = s.tx(ctx, func(tx *sqlx.Tx) error {
		added, unchanged = 0, 0
		if err := bumpKeysVersion(ctx, tx, list); err != nil {
			return err
		}
		var existing []struct {
			Address     string `db:"address"`
			State       string `db:"state"`
			Fingerprint string `db:"fingerprint"`
		}
		if err := tx.SelectContext(ctx, &existing, tx.Rebind(`SELECT address, state, fingerprint FROM members WHERE list = ?`), list); err != nil {
			return fmt.Errorf("members: %w", err)
		}
		type cur struct{ state, fpr string }
		have := map[string]cur{}
		for _, e := range existing {
			have[e.Address] = cur{e.State, e.Fingerprint}
		}
		var conflicts []string
		for _, m := range ms {
			if c, ok := have[m.Address]; ok && (c.state != m.State || c.fpr != m.Fingerprint) {
				conflicts = append(conflicts, m.Address)
			}
		}
		if len(conflicts) > 0 {
			return &ImportConflictError{List: list, Addresses: conflicts}
		}
		for _, m := range ms {
			if _, ok := have[m.Address]; ok {
				unchanged++
				continue
			}
			updated := nowOr(m.UpdatedAt)
			created := updated
			if !m.CreatedAt.IsZero() {
				created = ts(m.CreatedAt)
			}
			if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO members
				(list, address, state, fingerprint, public_key, created_at, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?)`),
				list, m.Address, m.State, m.Fingerprint, m.PublicKey, created, updated); err != nil {
				return fmt.Errorf("insert %q: %w", m.Address, err)
			}
			ids := slices.Clone(m.KeyIDs)
			slices.Sort(ids)
			ids = slices.Compact(ids)
			for _, id := range ids {
				if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO member_key_ids (list, key_id, address) VALUES (?, ?, ?)`),
					list, int64(id), m.Address); err != nil {
					return fmt.Errorf("add key id %016X of %q: %w", id, m.Address, err)
				}
			}
			added++
		}
		return nil
	})
	if err != nil {
		var ce *ImportConflictError
		if errors.As(err, &ce) {
			return 0, 0, err
		}
		return 0, 0, fmt.Errorf("store: import members of %q: %w", list, err)
	}
	return added, unchanged, nil
}
