package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jmoiron/sqlx"
)

// Hold states (the holds.state column).
const (
	HoldHeld     = "held"
	HoldApproved = "approved"
	HoldRejected = "rejected"
)

// What a hold is, as moderators see it ([Hold.Status]): an approved hold
// is delivering until its delivery completed (delivered_at set), and a
// rejected one that nobody decided expired.
const (
	HoldDelivering = "delivering"
	HoldDelivered  = "delivered"
	HoldExpired    = "expired"
)

// Hold is a post held for a moderator.
type Hold struct {
	ID         int64
	List       string
	Sender     string
	Recipients []string
	Reason     string
	Message    []byte // opaque, already encrypted by the caller
	// PostID is the post's id (deliver.PostID), or nil: AddHold keeps one
	// hold per list and post id.
	PostID    []byte
	State     string // HoldHeld, HoldApproved or HoldRejected
	CreatedAt time.Time
	// ExpiredAt is when the hold expired (post.hold_expiry); an expired
	// hold is HoldRejected. Zero: it did not expire.
	ExpiredAt time.Time
	// NotifiedAt is when the moderators were told about the hold (or
	// when a notice was claimed and is being sent). Zero: not yet.
	NotifiedAt time.Time
	// DeliveredAt is when the delivery of an approved hold completed.
	// Zero for an approved hold: it is being delivered, or its delivery
	// stopped half-way and "hold approve" resumes it.
	DeliveredAt time.Time
}

// Status is what the hold is: HoldHeld, HoldDelivering, HoldDelivered,
// HoldRejected or HoldExpired.
func (h Hold) Status() string {
	switch {
	case h.State == HoldApproved && h.DeliveredAt.IsZero():
		return HoldDelivering
	case h.State == HoldApproved:
		return HoldDelivered
	case h.Expired():
		return HoldExpired
	}
	return h.State
}

// Expired reports whether the hold expired rather than being decided.
func (h Hold) Expired() bool { return !h.ExpiredAt.IsZero() }

type holdRow struct {
	ID          int64        `db:"id"`
	List        string       `db:"list"`
	Sender      string       `db:"sender"`
	Recipients  string       `db:"recipients"`
	Reason      string       `db:"reason"`
	Message     []byte       `db:"message"`
	State       string       `db:"state"`
	CreatedAt   time.Time    `db:"created_at"`
	ExpiredAt   sql.NullTime `db:"expired_at"`
	NotifiedAt  sql.NullTime `db:"notified_at"`
	DeliveredAt sql.NullTime `db:"delivered_at"`
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
	if r.ExpiredAt.Valid {
		h.ExpiredAt = r.ExpiredAt.Time.UTC()
	}
	if r.NotifiedAt.Valid {
		h.NotifiedAt = r.NotifiedAt.Time.UTC()
	}
	if r.DeliveredAt.Valid {
		h.DeliveredAt = r.DeliveredAt.Time.UTC()
	}
	if err := json.Unmarshal([]byte(r.Recipients), &h.Recipients); err != nil {
		return Hold{}, fmt.Errorf("hold %d: recipients: %w", r.ID, err)
	}
	return h, nil
}

const holdColumns = `id, list, sender, recipients, reason, message, state, created_at, expired_at, notified_at, delivered_at`

// holdMetaColumns are holdColumns without the (large) message.
const holdMetaColumns = `id, list, sender, recipients, reason, state, created_at, expired_at, notified_at, delivered_at`

func validHoldState(s string) bool {
	return s == HoldHeld || s == HoldApproved || s == HoldRejected
}

// AddHold stores a held post and returns its id. ID is ignored; an empty
// State means HoldHeld and a zero CreatedAt means now. A post id held
// before on the list returns that hold's id and stores nothing.
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
	var postID any // NULL without one
	if len(h.PostID) > 0 {
		postID = h.PostID
	}
	var id int64
	err = s.db.GetContext(ctx, &id, s.q(`INSERT INTO holds
		(list, sender, recipients, reason, message, state, created_at, post_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (list, post_id) DO NOTHING RETURNING id`),
		h.List, h.Sender, string(rj), h.Reason, nonNil(h.Message), h.State, nowOr(h.CreatedAt), postID)
	if errors.Is(err, sql.ErrNoRows) && postID != nil {
		// Held before (a retried transaction): that hold, whatever
		// became of it since.
		err = s.db.GetContext(ctx, &id, s.q(`SELECT id FROM holds WHERE list = ? AND post_id = ?`), h.List, h.PostID)
	}
	if err != nil {
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

// HoldMeta returns the hold with this id without its message.
func (s *Store) HoldMeta(ctx context.Context, id int64) (Hold, error) {
	var r holdRow
	err := s.db.GetContext(ctx, &r, s.q(`SELECT `+holdMetaColumns+` FROM holds WHERE id = ?`), id)
	if errors.Is(err, sql.ErrNoRows) {
		return Hold{}, fmt.Errorf("store: hold %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Hold{}, fmt.Errorf("store: get hold %d: %w", id, err)
	}
	return r.hold()
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

// AllHolds returns every hold of the list, whatever its state, ordered
// by id, without the message.
func (s *Store) AllHolds(ctx context.Context, list string) ([]Hold, error) {
	var rows []holdRow
	if err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+holdMetaColumns+` FROM holds
		WHERE list = ? ORDER BY id`), list); err != nil {
		return nil, fmt.Errorf("store: holds of %q: %w", list, err)
	}
	return holdsOf(rows, list)
}

// MarkHoldDelivered records that the delivery of approved hold id
// completed at now: it is no longer delivering. It reports false when the
// hold was marked already or is not approved.
func (s *Store) MarkHoldDelivered(ctx context.Context, id int64, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE holds SET delivered_at = ?
		WHERE id = ? AND state = ? AND delivered_at IS NULL`), ts(now), id, HoldApproved)
	if err != nil {
		return false, fmt.Errorf("store: mark hold %d delivered: %w", id, err)
	}
	n, err := affected(res)
	if err != nil {
		return false, fmt.Errorf("store: mark hold %d delivered: %w", id, err)
	}
	return n == 1, nil
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

// ClaimHoldNotice marks that the moderators are being told about hold id,
// if nobody has done so: it reports false when the hold was notified (or
// claimed) already or is no longer waiting. Two processes (a milter and
// the periodic retry, or two hosts) never both send the notice; a claim
// whose notice could not be sent is undone with [Store.ReleaseHoldNotice].
func (s *Store) ClaimHoldNotice(ctx context.Context, id int64, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE holds SET notified_at = ?
		WHERE id = ? AND state = ? AND notified_at IS NULL`), ts(now), id, HoldHeld)
	if err != nil {
		return false, fmt.Errorf("store: claim notice of hold %d: %w", id, err)
	}
	n, err := affected(res)
	if err != nil {
		return false, fmt.Errorf("store: claim notice of hold %d: %w", id, err)
	}
	return n == 1, nil
}

// ReleaseHoldNotice undoes a claim: the notice is due again.
func (s *Store) ReleaseHoldNotice(ctx context.Context, id int64) error {
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE holds SET notified_at = NULL WHERE id = ?`), id); err != nil {
		return fmt.Errorf("store: release notice of hold %d: %w", id, err)
	}
	return nil
}

// UnnotifiedHolds returns the list's waiting holds whose moderators were
// not told yet (their notice failed), ordered by id, without the message.
func (s *Store) UnnotifiedHolds(ctx context.Context, list string) ([]Hold, error) {
	var rows []holdRow
	if err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+holdMetaColumns+` FROM holds
		WHERE list = ? AND state = ? AND notified_at IS NULL ORDER BY id`), list, HoldHeld); err != nil {
		return nil, fmt.Errorf("store: unnotified holds of %q: %w", list, err)
	}
	return holdsOf(rows, list)
}

// ExpireHolds expires the list's holds that are still waiting and were
// made before heldBefore: they become HoldRejected with ExpiredAt = now.
// It returns the holds this call expired (without the message), ordered
// by id. Only waiting holds expire: an approved hold whose delivery
// stopped half-way (delivering) never does, so that "hold approve" can
// always resume it. One UPDATE decides: when several processes expire at once, each
// hold is returned to exactly one of them, and a moderator's approval
// racing with it either wins (the hold is not expired) or gets
// [ErrConflict].
func (s *Store) ExpireHolds(ctx context.Context, list string, heldBefore, now time.Time) ([]Hold, error) {
	var rows []holdRow
	if err := s.db.SelectContext(ctx, &rows, s.q(`UPDATE holds SET state = ?, expired_at = ?
		WHERE list = ? AND state = ? AND created_at < ?
		RETURNING `+holdMetaColumns), HoldRejected, ts(now), list, HoldHeld, ts(heldBefore)); err != nil {
		return nil, fmt.Errorf("store: expire holds of %q: %w", list, err)
	}
	hs, err := holdsOf(rows, list)
	if err != nil {
		return nil, err
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].ID < hs[j].ID })
	return hs, nil
}

// RestoreExpiredHolds undoes ExpireHolds for the holds ids (for when the
// owners could not be told: the next run expires them again). Holds that
// are not expired are left alone.
func (s *Store) RestoreExpiredHolds(ctx context.Context, ids []int64) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE holds SET state = ?, expired_at = NULL
				WHERE id = ? AND state = ? AND expired_at IS NOT NULL`), HoldHeld, id, HoldRejected); err != nil {
				return fmt.Errorf("store: restore expired hold %d: %w", id, err)
			}
		}
		return nil
	})
}

func holdsOf(rows []holdRow, list string) ([]Hold, error) {
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
