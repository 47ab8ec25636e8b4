package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// The outbox (table outbox) holds mail that a transaction decided to send
// (the responder's replies): the row is written inside the transaction
// that makes the decision (the reply slot, the token, the state change),
// and the mail is submitted only after the commit, so that no SMTP
// conversation ever runs while a transaction (SQLite's only write lock)
// is open. A row is claimed before it is submitted (sent_at is the time
// of the claim) and deleted once the MTA took it; a claim older than
// [OutboxLease] belongs to a process that died, and the row waits again.
// The only instant that can send a row twice is the MTA's 250 before the
// row's deletion (microseconds); a crash anywhere else loses nothing and
// repeats nothing.

// OutboxLease is how long a claim on an outbox row keeps other senders
// away: longer than one submission may take (reinject.Timeout, 2 min).
const OutboxLease = 10 * time.Minute

// OutboxMail is one mail waiting in the outbox.
type OutboxMail struct {
	ID         int64 // set by the store
	List       string
	Sender     string // envelope sender
	Recipients []string
	Message    []byte
	CreatedAt  time.Time // zero: now
}

type outboxRow struct {
	ID         int64     `db:"id"`
	List       string    `db:"list"`
	Sender     string    `db:"sender"`
	Recipients string    `db:"recipients"`
	Message    []byte    `db:"message"`
	CreatedAt  time.Time `db:"created_at"`
}

func (r outboxRow) mail() (OutboxMail, error) {
	m := OutboxMail{ID: r.ID, List: r.List, Sender: r.Sender, Message: r.Message, CreatedAt: r.CreatedAt.UTC()}
	if err := json.Unmarshal([]byte(r.Recipients), &m.Recipients); err != nil {
		return OutboxMail{}, fmt.Errorf("outbox row %d: recipients: %w", r.ID, err)
	}
	return m, nil
}

// queueTx writes m into the outbox inside tx and sets m.ID.
func (s *Store) queueTx(ctx context.Context, tx *sqlx.Tx, m *OutboxMail) error {
	if m.List == "" || len(m.Recipients) == 0 || len(m.Message) == 0 {
		return errors.New("outbox: empty list, recipients or message")
	}
	rj, err := json.Marshal(m.Recipients)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if err := tx.GetContext(ctx, &m.ID, s.q(`INSERT INTO outbox (list, sender, recipients, message, created_at)
		VALUES (?, ?, ?, ?, ?) RETURNING id`), m.List, m.Sender, string(rj), m.Message, nowOr(m.CreatedAt)); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// Queue writes m into the outbox and returns its id.
func (s *Store) Queue(ctx context.Context, m OutboxMail) (int64, error) {
	err := s.tx(ctx, func(tx *sqlx.Tx) error { return s.queueTx(ctx, tx, &m) })
	if err != nil {
		return 0, fmt.Errorf("store: queue mail on %q: %w", m.List, err)
	}
	return m.ID, nil
}

// QueueLimited takes a reply slot under lim and writes m into the
// outbox, in one transaction, and returns the row's id. When a limit is
// reached nothing is written and the error wraps [ErrRateLimited]. Rows
// of the list older than the window are deleted on the way. Concurrent
// calls, from any process or host, never exceed a limit: the transaction
// holds the list's reply lock (SQLite: the write lock taken at BEGIN
// IMMEDIATE; PostgreSQL: an advisory lock per list) while it counts and
// inserts. The mail is sent after the commit ([Store.SendOutbox]).
func (s *Store) QueueLimited(ctx context.Context, lim ReplyLimit, m OutboxMail) (int64, error) {
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if err := s.takeReplySlot(ctx, tx, lim); err != nil {
			return err
		}
		return s.queueTx(ctx, tx, &m)
	})
	if err != nil {
		return 0, fmt.Errorf("store: reply to %q on %q: %w", lim.Address, lim.List, err)
	}
	return m.ID, nil
}

// QueueLimitedAll is QueueLimited for mail that goes out together (one
// message per recipient, each encrypted to its own key): one reply slot
// for all of ms, written in one transaction. It returns the rows' ids.
func (s *Store) QueueLimitedAll(ctx context.Context, lim ReplyLimit, ms []OutboxMail) ([]int64, error) {
	var ids []int64
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		ids = ids[:0]
		if err := s.takeReplySlot(ctx, tx, lim); err != nil {
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
		return nil, fmt.Errorf("store: mail for %q on %q: %w", lim.Address, lim.List, err)
	}
	return ids, nil
}

// claimOutbox claims row id for sending at now, unless it is gone or
// another sender's claim is younger than [OutboxLease].
func (s *Store) claimOutbox(ctx context.Context, id int64, now time.Time) (OutboxMail, bool, error) {
	var r outboxRow
	err := s.db.GetContext(ctx, &r, s.q(`UPDATE outbox SET sent_at = ?
		WHERE id = ? AND (sent_at IS NULL OR sent_at < ?)
		RETURNING id, list, sender, recipients, message, created_at`), ts(now), id, ts(now.Add(-OutboxLease)))
	if errors.Is(err, sql.ErrNoRows) {
		return OutboxMail{}, false, nil
	}
	if err != nil {
		return OutboxMail{}, false, fmt.Errorf("store: claim outbox row %d: %w", id, err)
	}
	m, err := r.mail()
	if err != nil {
		return OutboxMail{}, false, fmt.Errorf("store: %w", err)
	}
	return m, true, nil
}

// WaitingOutbox returns the ids of the list's outbox rows that wait to be
// sent at now (never claimed, or claimed longer than [OutboxLease] ago),
// oldest first, at most limit of them; every list's when list is "".
func (s *Store) WaitingOutbox(ctx context.Context, list string, now time.Time, limit int) ([]int64, error) {
	query, args := `SELECT id FROM outbox WHERE (sent_at IS NULL OR sent_at < ?)`, []any{ts(now.Add(-OutboxLease))}
	if list != "" {
		query, args = query+` AND list = ?`, append(args, list)
	}
	query, args = query+` ORDER BY id LIMIT ?`, append(args, limit)
	var ids []int64
	if err := s.db.SelectContext(ctx, &ids, s.q(query), args...); err != nil {
		return nil, fmt.Errorf("store: outbox of %q: %w", list, err)
	}
	return ids, nil
}

// OutboxSend submits one outbox mail. An error that Permanent reports
// true for drops the row (it would never go); any other leaves it
// waiting.
type OutboxSend func(ctx context.Context, m OutboxMail) error

// OutboxResult says what SendOutbox did.
type OutboxResult struct {
	Sent    []int64 // rows the MTA took (deleted)
	Dropped []int64 // rows refused permanently (deleted)
	Waiting []int64 // rows that failed for now (still waiting)
	// FirstErr is the error of row first, nil when it was sent or was
	// not there to send (another sender has it or sent it).
	FirstErr error
}

// outboxBatch bounds how many older rows one SendOutbox resumes.
const outboxBatch = 100

// SendOutbox sends row first (0: none) and then the list's older rows
// still waiting (a process died between its commit and its send, or the
// MTA was unreachable): each is claimed (compare-and-set, so two senders
// never both submit a row), submitted by send outside any transaction,
// and deleted once the MTA took it. A failed row is released for the
// next run; a row refused permanently (permanent(err) true) is deleted.
// list "" resumes every list's rows. The error joins the failures of
// rows other than first, and the database errors.
func (s *Store) SendOutbox(ctx context.Context, list string, first int64, now func() time.Time,
	send OutboxSend, permanent func(error) bool) (OutboxResult, error) {
	var res OutboxResult
	ids := []int64{}
	if first != 0 {
		ids = append(ids, first)
	}
	older, err := s.WaitingOutbox(ctx, list, now(), outboxBatch)
	if err != nil && first == 0 {
		return res, err
	}
	for _, id := range older {
		if id != first {
			ids = append(ids, id)
		}
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range ids {
		m, ok, err := s.claimOutbox(ctx, id, now())
		if err != nil {
			if id == first {
				res.FirstErr = err
			}
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		serr := send(ctx, m)
		drop := serr != nil && permanent != nil && permanent(serr)
		switch {
		case serr == nil:
			res.Sent = append(res.Sent, id)
		case drop:
			res.Dropped = append(res.Dropped, id)
		default:
			res.Waiting = append(res.Waiting, id)
		}
		if serr != nil {
			serr = fmt.Errorf("outbox row %d to %v: %w", id, m.Recipients, serr)
			if id == first {
				res.FirstErr = serr
			} else {
				errs = append(errs, serr)
			}
		}
		if serr != nil && !drop {
			if _, err := s.db.ExecContext(context.WithoutCancel(ctx), s.q(`UPDATE outbox SET sent_at = NULL WHERE id = ?`), id); err != nil {
				errs = append(errs, fmt.Errorf("store: release outbox row %d: %w", id, err))
			}
			continue
		}
		// Sent or refused for good: the row (a token, a reply) leaves
		// the disk.
		if _, err := s.db.ExecContext(context.WithoutCancel(ctx), s.q(`DELETE FROM outbox WHERE id = ?`), id); err != nil {
			errs = append(errs, fmt.Errorf("store: delete outbox row %d: %w", id, err))
		}
	}
	return res, errors.Join(errs...)
}

// CountOutbox counts the list's outbox rows (every list's when list is
// ""), claimed or not.
func (s *Store) CountOutbox(ctx context.Context, list string) (int, error) {
	query, args := `SELECT COUNT(*) FROM outbox`, []any{}
	if list != "" {
		query, args = query+` WHERE list = ?`, append(args, list)
	}
	var n int
	if err := s.db.GetContext(ctx, &n, s.q(query), args...); err != nil {
		return 0, fmt.Errorf("store: count outbox: %w", err)
	}
	return n, nil
}
