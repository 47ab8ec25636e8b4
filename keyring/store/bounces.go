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

// BounceRules are a list's [bounces] policy as the store applies it.
type BounceRules struct {
	Threshold  float64       // score at which the action is taken
	ResetAfter time.Duration // a score whose last counted bounce is older starts from 0
	Disable    bool          // at the threshold delivery is disabled (else only told)
	// OnReached, when set, is called inside the transaction when a
	// bounce reaches the threshold, with the member's new state; the
	// mail it returns is written into the outbox in the same
	// transaction, so the notices are sent exactly when the member's
	// state changed, even if the process dies right after the commit
	// (the ids are in BounceOutcome.Outbox; see Store.SendOutbox).
	OnReached func(BounceState) ([]OutboxMail, error)
}

// BounceEvent is one bounce naming a member.
type BounceEvent struct {
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
	State BounceState // after the bounce
	// Counted: the bounce added to the score. It does not when another
	// bounce was counted the same day (UTC) or delivery is disabled
	// already.
	Counted bool
	// Reached: this bounce brought the score to the threshold (from
	// below). With BounceRules.Disable, delivery is now disabled.
	Reached bool
	// Outbox holds the ids of the mail BounceRules.OnReached queued.
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

// RecordBounce counts one bounce against the member addr of list, in one
// transaction (two bounces for one member at the same instant, from two
// responder processes or hosts, are counted one after the other):
//
//   - a score whose last counted bounce is older than r.ResetAfter starts
//     again from 0;
//   - at most one bounce counts per member per day (UTC), and none while
//     delivery is disabled;
//   - a counted bounce adds PermanentBounce or TemporaryBounce;
//   - the bounce that brings the score to r.Threshold is Reached, and
//     with r.Disable it disables delivery to the member.
//
// It returns an error wrapping ErrNotFound when addr is no member of
// list (in any state).
func (s *Store) RecordBounce(ctx context.Context, list, addr string, ev BounceEvent, r BounceRules) (BounceOutcome, error) {
	at := nowOr(ev.At)
	var out BounceOutcome
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		out = BounceOutcome{} // a failed attempt leaves nothing behind
		// The insert takes the row's lock (PostgreSQL) or the database's
		// write lock (SQLite) before the read, so the read-modify-write
		// below is not interleaved; the foreign key refuses a non-member.
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO member_bounces (list, address) VALUES (?, ?)
			ON CONFLICT (list, address) DO NOTHING`), list, addr); err != nil {
			if isForeignKey(err) {
				return fmt.Errorf("%s is no member of %s: %w", addr, list, ErrNotFound)
			}
			return err
		}
		lock := ""
		if s.engine == EnginePostgres {
			lock = " FOR UPDATE"
		}
		var row bounceRow
		if err := tx.GetContext(ctx, &row, s.q(`SELECT `+bounceColumns+` FROM member_bounces WHERE list = ? AND address = ?`+lock), list, addr); err != nil {
			return err
		}
		st := row.state()
		if !st.LastCountedAt.IsZero() && at.Sub(st.LastCountedAt) > r.ResetAfter {
			st.Score, st.Bounces, st.LastCountedAt = 0, 0, time.Time{}
		}
		st.LastBounceAt, st.LastStatus = at, ev.Status
		sameDay := !st.LastCountedAt.IsZero() && st.LastCountedAt.UTC().Format(time.DateOnly) == at.UTC().Format(time.DateOnly)
		if !st.Disabled() && !sameDay {
			before := st.Score
			if ev.Permanent {
				st.Score += PermanentBounce
			} else {
				st.Score += TemporaryBounce
			}
			st.Bounces++
			st.LastCountedAt = at
			out.Counted = true
			if before < r.Threshold && st.Score >= r.Threshold {
				out.Reached = true
				if r.Disable {
					st.DisabledAt = at
				}
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE member_bounces SET score = ?, bounces = ?, last_bounce_at = ?,
			last_counted_at = ?, last_status = ?, disabled_at = ? WHERE list = ? AND address = ?`),
			st.Score, st.Bounces, nullTime(st.LastBounceAt), nullTime(st.LastCountedAt), st.LastStatus,
			nullTime(st.DisabledAt), list, addr); err != nil {
			return err
		}
		out.State = st
		if out.Reached && r.OnReached != nil {
			ms, err := r.OnReached(st)
			if err != nil {
				return err
			}
			for i := range ms {
				if err := s.queueTx(ctx, tx, &ms[i]); err != nil {
					return err
				}
				out.Outbox = append(out.Outbox, ms[i].ID)
			}
		}
		return nil
	})
	if err != nil {
		return BounceOutcome{}, fmt.Errorf("store: record bounce of %s on %s: %w", addr, list, err)
	}
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
