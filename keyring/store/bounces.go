package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Weights of a counted bounce (docs/bounces.md): a permanent failure
// (5.x.x) counts 1, a temporary one (4.x.x, a delay) half of that, as
// Mailman proposes for soft bounces.
const (
	PermanentBounce = 1.0
	TemporaryBounce = 0.5
)

// BounceSpacing is the least time between two counted bounces of one
// member: one counts per day, as in Mailman, but measured as 24 hours
// (not the calendar day, which would let two bounces a minute apart
// across midnight both count).
const BounceSpacing = 24 * time.Hour

// BounceRules are a list's [bounces] policy as the store applies it.
type BounceRules struct {
	Threshold  float64       // score at which the action is taken
	ResetAfter time.Duration // a score whose last counted bounce is older starts from 0
	Disable    bool          // at the threshold delivery is disabled (else only told)
	// MaxMembers, when positive, bounds the members one call of
	// RecordBounces counts against (anyone can write a report naming a
	// hundred members); later events of members are left alone
	// (Member true, nothing else set).
	MaxMembers int
	// OnReached, when set, is called inside the transaction with the
	// new states of the members whose bounce reached the threshold; the
	// mail it returns is written into the outbox in the same
	// transaction, so the notices are sent exactly when the members'
	// state changed, even if the process dies right after the commit
	// (see Store.SendOutbox).
	OnReached func([]BounceState) ([]OutboxMail, error)
}

// BounceEvent is one bounce naming a member.
type BounceEvent struct {
	Address   string // the member (RecordBounces)
	Permanent bool
	Status    string // enhanced status code ("5.1.1"), or ""
	At        time.Time
}

// BounceState is a member's bounce record.
type BounceState struct {
	List          string
	Address       string
	Score         float64
	Bounces       int       // bounces counted since the score last started from 0
	LastBounceAt  time.Time // zero: none
	LastCountedAt time.Time // zero: none
	LastStatus    string
	DisabledAt    time.Time // zero: delivery enabled
}

// Disabled reports whether delivery to the member is disabled.
func (b BounceState) Disabled() bool { return !b.DisabledAt.IsZero() }

// BounceOutcome is what RecordBounce did.
type BounceOutcome struct {
	// Member: the address is a member of the list; nothing else is set
	// when it is not.
	Member bool
	State  BounceState // after the bounce
	// Counted: the bounce added to the score. It does not when another
	// bounce was counted less than BounceSpacing before, or delivery is
	// disabled already.
	Counted bool
	// Reached: this bounce brought the score to the threshold (from
	// below). With BounceRules.Disable, delivery is now disabled.
	Reached bool
	// Outbox holds the ids of the mail BounceRules.OnReached queued
	// (RecordBounce).
	Outbox []int64
}

type bounceRow struct {
	List          string       `db:"list"`
	Address       string       `db:"address"`
	Score         float64      `db:"score"`
	Bounces       int          `db:"bounces"`
	LastBounceAt  sql.NullTime `db:"last_bounce_at"`
	LastCountedAt sql.NullTime `db:"last_counted_at"`
	LastStatus    string       `db:"last_status"`
	DisabledAt    sql.NullTime `db:"disabled_at"`
}

func (r bounceRow) state() BounceState {
	return BounceState{List: r.List, Address: r.Address, Score: r.Score, Bounces: r.Bounces,
		LastBounceAt: r.LastBounceAt.Time, LastCountedAt: r.LastCountedAt.Time,
		LastStatus: r.LastStatus, DisabledAt: r.DisabledAt.Time}
}

func nullTime(t time.Time) sql.NullTime {
	if t.IsZero() {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: ts(t), Valid: true}
}

const bounceColumns = `list, address, score, bounces, last_bounce_at, last_counted_at, last_status, disabled_at`

// RecordBounce is RecordBounces for one member; it returns an error
// wrapping ErrNotFound when addr is no member of list (in any state).
func (s *Store) RecordBounce(ctx context.Context, list, addr string, ev BounceEvent, r BounceRules) (BounceOutcome, error) {
	ev.Address = addr
	outs, ids, err := s.RecordBounces(ctx, list, []BounceEvent{ev}, r)
	if err != nil {
		return BounceOutcome{}, err
	}
	if !outs[0].Member {
		return BounceOutcome{}, fmt.Errorf("store: record bounce: %s is no member of %s: %w", addr, list, ErrNotFound)
	}
	outs[0].Outbox = ids
	return outs[0], nil
}

// RecordBounces counts the bounces one bounce mail reports, each against
// its member of list, in one transaction (two bounce mails for one
// member at the same instant, from two responder processes or hosts,
// are counted one after the other). Events of addresses that are no
// member of list (in any state) change nothing (Member false). For each
// member:
//
//   - a score whose last counted bounce is older than r.ResetAfter starts
//     again from 0;
//   - at most one bounce counts per member per BounceSpacing (24 hours),
//     and none while delivery is disabled;
//   - a counted bounce adds PermanentBounce or TemporaryBounce;
//   - the counted bounce that brings the score to r.Threshold is
//     Reached, and with r.Disable it disables delivery to the member
//     (with r.Disable, so is any counted bounce that leaves an enabled
//     member's score at or above the threshold).
//
// r.OnReached is called once, inside the transaction, with the states of
// every member that Reached; the mail it returns is queued in the same
// transaction (its ids are returned).
func (s *Store) RecordBounces(ctx context.Context, list string, evs []BounceEvent, r BounceRules) ([]BounceOutcome, []int64, error) {
	var outs []BounceOutcome
	var ids []int64
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		outs, ids = make([]BounceOutcome, len(evs)), nil // a failed attempt leaves nothing behind
		// The list's row lock (PostgreSQL) or the write lock (SQLite,
		// BEGIN IMMEDIATE) first: the read-modify-write below is not
		// interleaved with another bounce of the list.
		if s.engine == EnginePostgres {
			var one int
			if err := tx.GetContext(ctx, &one, s.q(`SELECT 1 FROM lists WHERE address = ? FOR UPDATE`), list); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("list %s: %w", list, ErrNotFound)
				}
				return err
			}
		}
		var reached []BounceState
		members := 0
		for i, ev := range evs {
			var n int
			if err := tx.GetContext(ctx, &n, s.q(`SELECT COUNT(*) FROM members WHERE list = ? AND address = ?`), list, ev.Address); err != nil {
				return err
			}
			if n == 0 {
				continue
			}
			if members++; r.MaxMembers > 0 && members > r.MaxMembers {
				outs[i].Member = true
				continue
			}
			out, err := s.recordBounceTx(ctx, tx, list, ev, r)
			if err != nil {
				return err
			}
			outs[i] = out
			if out.Reached {
				reached = append(reached, out.State)
			}
		}
		if len(reached) == 0 || r.OnReached == nil {
			return nil
		}
		ms, err := r.OnReached(reached)
		if err != nil {
			return err
		}
		for i := range ms {
			if err := s.queueTx(ctx, tx, &ms[i]); err != nil {
				return err
			}
			ids = append(ids, ms[i].ID)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: record bounces on %s: %w", list, err)
	}
	return outs, ids, nil
}

// recordBounceTx applies one event of a member (RecordBounces).
func (s *Store) recordBounceTx(ctx context.Context, tx *sqlx.Tx, list string, ev BounceEvent, r BounceRules) (BounceOutcome, error) {
	at := nowOr(ev.At)
	out := BounceOutcome{Member: true}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO member_bounces (list, address) VALUES (?, ?)
		ON CONFLICT (list, address) DO NOTHING`), list, ev.Address); err != nil {
		return out, err
	}
	var row bounceRow
	if err := tx.GetContext(ctx, &row, s.q(`SELECT `+bounceColumns+` FROM member_bounces WHERE list = ? AND address = ?`), list, ev.Address); err != nil {
		return out, err
	}
	st := row.state()
	if !st.LastCountedAt.IsZero() && at.Sub(st.LastCountedAt) > r.ResetAfter {
		st.Score, st.Bounces, st.LastCountedAt = 0, 0, time.Time{}
	}
	st.LastBounceAt, st.LastStatus = at, ev.Status
	recent := !st.LastCountedAt.IsZero() && at.Sub(st.LastCountedAt) < BounceSpacing
	if !st.Disabled() && !recent {
		before := st.Score
		if ev.Permanent {
			st.Score += PermanentBounce
		} else {
			st.Score += TemporaryBounce
		}
		st.Bounces++
		st.LastCountedAt = at
		out.Counted = true
		// Reached from below; or, when disabling, at or above the
		// threshold at all (the policy was "notify" then, or the
		// threshold was lowered since): a dead address is disabled on
		// its next counted bounce.
		if st.Score >= r.Threshold && (before < r.Threshold || r.Disable) {
			out.Reached = true
			if r.Disable {
				st.DisabledAt = at
			}
		}
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE member_bounces SET score = ?, bounces = ?, last_bounce_at = ?,
		last_counted_at = ?, last_status = ?, disabled_at = ? WHERE list = ? AND address = ?`),
		st.Score, st.Bounces, nullTime(st.LastBounceAt), nullTime(st.LastCountedAt), st.LastStatus,
		nullTime(st.DisabledAt), list, ev.Address); err != nil {
		return out, err
	}
	out.State = st
	return out, nil
}

// BounceStates returns the bounce records of list's members that have
// one, by address.
func (s *Store) BounceStates(ctx context.Context, list string) ([]BounceState, error) {
	var rows []bounceRow
	if err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+bounceColumns+` FROM member_bounces WHERE list = ? ORDER BY address`), list); err != nil {
		return nil, fmt.Errorf("store: bounce records of %s: %w", list, err)
	}
	out := make([]BounceState, len(rows))
	for i, r := range rows {
		out[i] = r.state()
	}
	return out, nil
}

// DeliveryDisabled returns the members of list whose delivery is
// disabled (one short query; the delivery asks before every post).
func (s *Store) DeliveryDisabled(ctx context.Context, list string) (map[string]bool, error) {
	var addrs []string
	if err := s.db.SelectContext(ctx, &addrs, s.q(`SELECT address FROM member_bounces WHERE list = ? AND disabled_at IS NOT NULL`), list); err != nil {
		return nil, fmt.Errorf("store: disabled members of %s: %w", list, err)
	}
	out := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		out[a] = true
	}
	return out, nil
}

// SetDelivery enables or disables delivery to the member addr of list (an
// admin's decision). Enabling clears the bounce score, so the member
// starts again from 0. It reports whether anything changed, and returns
// an error wrapping ErrNotFound when addr is no member of list.
func (s *Store) SetDelivery(ctx context.Context, list, addr string, enabled bool, now time.Time) (changed bool, err error) {
	now = nowOr(now)
	err = s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO member_bounces (list, address) VALUES (?, ?)
			ON CONFLICT (list, address) DO NOTHING`), list, addr); err != nil {
			if isForeignKey(err) {
				return fmt.Errorf("%s is no member of %s: %w", addr, list, ErrNotFound)
			}
			return err
		}
		var res sql.Result
		var err error
		if enabled {
			res, err = tx.ExecContext(ctx, s.q(`UPDATE member_bounces SET disabled_at = NULL, score = 0, bounces = 0, last_counted_at = NULL
				WHERE list = ? AND address = ? AND (disabled_at IS NOT NULL OR score > 0)`), list, addr)
		} else {
			res, err = tx.ExecContext(ctx, s.q(`UPDATE member_bounces SET disabled_at = ?
				WHERE list = ? AND address = ? AND disabled_at IS NULL`), now, list, addr)
		}
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		changed = n > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: set delivery of %s on %s: %w", addr, list, err)
	}
	return changed, nil
}

// CountBounceMail adds one to the list's counter of mail at its bounce
// address of the given kind (the metrics read them with BounceCounts).
func (s *Store) CountBounceMail(ctx context.Context, list, kind string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`INSERT INTO bounce_counts (list, kind, n) VALUES (?, ?, 1)
		ON CONFLICT (list, kind) DO UPDATE SET n = bounce_counts.n + 1`), list, kind); err != nil {
		return fmt.Errorf("store: count bounce mail of %s: %w", list, err)
	}
	return nil
}

// BounceCount is one counter of CountBounceMail.
type BounceCount struct {
	List string `db:"list"`
	Kind string `db:"kind"`
	N    int64  `db:"n"`
}

// BounceCounts returns every list's counters, and the number of members
// whose delivery is disabled per list.
func (s *Store) BounceCounts(ctx context.Context) ([]BounceCount, map[string]int, error) {
	var counts []BounceCount
	if err := s.db.SelectContext(ctx, &counts, `SELECT list, kind, n FROM bounce_counts ORDER BY list, kind`); err != nil {
		return nil, nil, fmt.Errorf("store: bounce counters: %w", err)
	}
	var dis []struct {
		List string `db:"list"`
		N    int    `db:"n"`
	}
	if err := s.db.SelectContext(ctx, &dis, `SELECT list, COUNT(*) AS n FROM member_bounces WHERE disabled_at IS NOT NULL GROUP BY list`); err != nil {
		return nil, nil, fmt.Errorf("store: disabled members: %w", err)
	}
	disabled := make(map[string]int, len(dis))
	for _, d := range dis {
		disabled[d.List] = d.N
	}
	return counts, disabled, nil
}

// isForeignKey reports whether err is a foreign key violation
// (PostgreSQL SQLSTATE 23503; SQLite's "FOREIGN KEY constraint failed").
func isForeignKey(err error) bool {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return pe.Code == "23503"
	}
	return strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
}
