package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Hold states.
const (
	HoldHeld     = "held"
	HoldApproved = "approved"
	HoldRejected = "rejected"
)

// Hold is a post held for a moderator.
type Hold struct {
	ID         int64
	List       string
	Sender     string
	Recipients []string
	Reason     string
	Message    []byte // opaque, already encrypted by the caller
	State      string // HoldHeld, HoldApproved or HoldRejected
	CreatedAt  time.Time
}

type holdRow struct {
	ID         int64     `db:"id"`
	List       string    `db:"list"`
	Sender     string    `db:"sender"`
	Recipients string    `db:"recipients"`
	Reason     string    `db:"reason"`
	Message    []byte    `db:"message"`
	State      string    `db:"state"`
	CreatedAt  time.Time `db:"created_at"`
}

func (r holdRow) hold() (Hold, error) {
	h := Hold{
		ID:        r.ID,
		List:      r.List,
		Sender:    r.Sender,
		Reason:    r.Reason,
		Message:   r.Message,
		State:     r.State,
		CreatedAt: r.CreatedAt.UTC(),
	}
	if err := json.Unmarshal([]byte(r.Recipients), &h.Recipients); err != nil {
		return Hold{}, fmt.Errorf("hold %d: recipients: %w", r.ID, err)
	}
	return h, nil
}

const holdColumns = `id, list, sender, recipients, reason, message, state, created_at`

func validHoldState(s string) bool {
	return s == HoldHeld || s == HoldApproved || s == HoldRejected
}

// AddHold stores a held post and returns its id. ID is ignored; an empty
// State means HoldHeld and a zero CreatedAt means now.
func (s *Store) AddHold(ctx context.Context, h Hold) (int64, error) {
	if h.State == "" {
		h.State = HoldHeld
	}
	if !validHoldState(h.State) {
		return 0, fmt.Errorf("store: add hold on %q: invalid state %q", h.List, h.State)
	}
	rcpts := h.Recipients
	if rcpts == nil {
		rcpts = []string{}
	}
	rj, err := json.Marshal(rcpts)
	if err != nil {
		return 0, fmt.Errorf("store: add hold on %q: %w", h.List, err)
	}
	var id int64
	if err := s.db.GetContext(ctx, &id, s.q(`INSERT INTO holds
		(list, sender, recipients, reason, message, state, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		h.List, h.Sender, string(rj), h.Reason, nonNil(h.Message), h.State, nowOr(h.CreatedAt)); err != nil {
		return 0, fmt.Errorf("store: add hold on %q: %w", h.List, err)
	}
	return id, nil
}

// GetHold returns the hold with this id, whatever its state.
func (s *Store) GetHold(ctx context.Context, id int64) (Hold, error) {
	var r holdRow
	err := s.db.GetContext(ctx, &r, s.q(`SELECT `+holdColumns+` FROM holds WHERE id = ?`), id)
	if errors.Is(err, sql.ErrNoRows) {
		return Hold{}, fmt.Errorf("store: hold %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Hold{}, fmt.Errorf("store: get hold %d: %w", id, err)
	}
	h, err := r.hold()
	if err != nil {
		return Hold{}, fmt.Errorf("store: get hold %d: %w", id, err)
	}
	return h, nil
}

// Holds returns the list's holds still waiting for a moderator (state
// HoldHeld), ordered by id.
func (s *Store) Holds(ctx context.Context, list string) ([]Hold, error) {
	var rows []holdRow
	if err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+holdColumns+` FROM holds
		WHERE list = ? AND state = ? ORDER BY id`), list, HoldHeld); err != nil {
		return nil, fmt.Errorf("store: holds of %q: %w", list, err)
	}
	out := make([]Hold, 0, len(rows))
	for _, r := range rows {
		h, err := r.hold()
		if err != nil {
			return nil, fmt.Errorf("store: holds of %q: %w", list, err)
		}
		out = append(out, h)
	}
	return out, nil
}

// SetHoldState moves the hold from state from to state to, only if it is
// in state from: when two moderators act at once exactly one succeeds, and
// the other gets an error wrapping [ErrConflict]. A missing hold is
// [ErrNotFound].
func (s *Store) SetHoldState(ctx context.Context, id int64, from, to string) error {
	if !validHoldState(from) || !validHoldState(to) {
		return fmt.Errorf("store: set hold %d state %q -> %q: invalid state", id, from, to)
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE holds SET state = ? WHERE id = ? AND state = ?`), to, id, from)
	if err != nil {
		return fmt.Errorf("store: set hold %d state: %w", id, err)
	}
	n, err := affected(res)
	if err != nil {
		return fmt.Errorf("store: set hold %d state: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	var cur string
	err = s.db.GetContext(ctx, &cur, s.q(`SELECT state FROM holds WHERE id = ?`), id)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: hold %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: set hold %d state: %w", id, err)
	}
	return fmt.Errorf("store: hold %d is %s, not %s: %w", id, cur, from, ErrConflict)
}
