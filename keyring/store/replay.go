package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
)

// RecordPost records the digests (signature and ciphertext digests) of a
// post identified by postID, in one transaction:
//
//   - if any digest is already recorded for another post, the post is a
//     replay: nothing is inserted and the earlier post's id is returned;
//   - otherwise (digests new, or recorded for this same postID by an
//     earlier attempt at the same transaction) the missing ones are
//     inserted and replayOf is nil.
//
// Two processes racing with a shared digest and different post ids settle
// in the database: exactly one gets nil, the other gets the winner's id.
func (s *Store) RecordPost(ctx context.Context, list string, postID []byte, digests [][]byte, at time.Time) (replayOf []byte, err error) {
	if len(postID) == 0 {
		return nil, fmt.Errorf("store: record post on %q: empty post id", list)
	}
	// Insert in one global order so that two transactions sharing several
	// digests cannot deadlock on PostgreSQL.
	ds := make([][]byte, 0, len(digests))
	for _, d := range digests {
		if len(d) == 0 {
			return nil, fmt.Errorf("store: record post on %q: empty digest", list)
		}
		ds = append(ds, d)
	}
	slices.SortFunc(ds, bytes.Compare)
	ds = slices.CompactFunc(ds, bytes.Equal)
	at = nowOr(at)

	err = s.tx(ctx, func(tx *sqlx.Tx) error {
		for _, d := range ds {
			prior, err := recordDigest(ctx, tx, list, postID, d, at)
			if err != nil {
				return err
			}
			if prior != nil {
				replayOf = prior
				return errReplay // roll back what this call inserted
			}
		}
		return nil
	})
	if errors.Is(err, errReplay) {
		return replayOf, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: record post on %q: %w", list, err)
	}
	return nil, nil
}

var errReplay = errors.New("replay")

// recordDigest inserts (list, digest) for postID unless present, and
// returns the post id that holds it if that is not postID.
func recordDigest(ctx context.Context, tx *sqlx.Tx, list string, postID, digest []byte, at time.Time) ([]byte, error) {
	// A row can vanish between the insert and the read when PruneReplay
	// runs concurrently; then try again.
	for range 3 {
		// On PostgreSQL the insert waits for a concurrent uncommitted
		// insert of the same key and then does nothing if that commits;
		// the read that follows, a new statement, sees the committed row.
		// On SQLite the transaction holds the write lock already.
		res, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO replay (list, digest, post_id, seen_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (list, digest) DO NOTHING`), list, digest, postID, at)
		if err != nil {
			return nil, fmt.Errorf("insert digest: %w", err)
		}
		n, err := affected(res)
		if err != nil {
			return nil, err
		}
		if n == 1 {
			return nil, nil
		}
		var prior []byte
		err = tx.GetContext(ctx, &prior, tx.Rebind(`SELECT post_id FROM replay WHERE list = ? AND digest = ?`), list, digest)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read digest: %w", err)
		}
		if bytes.Equal(prior, postID) {
			return nil, nil
		}
		return prior, nil
	}
	return nil, errors.New("digest row keeps vanishing (concurrent prune)")
}

// SeenDigest reports whether digest is recorded for the list, and for
// which post.
func (s *Store) SeenDigest(ctx context.Context, list string, digest []byte) (postID []byte, found bool, err error) {
	err = s.db.GetContext(ctx, &postID, s.q(`SELECT post_id FROM replay WHERE list = ? AND digest = ?`), list, digest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: seen digest on %q: %w", list, err)
	}
	return postID, true, nil
}

// PruneReplay deletes replay digests recorded before the cutoff and
// returns how many. Delivery records and completion marks older than the
// cutoff go in the same transaction: they only matter while a retry of
// the post can still arrive, which is what the replay window bounds; so do
// claims whose lease ended before the cutoff (their holder died).
func (s *Store) PruneReplay(ctx context.Context, before time.Time) (int64, error) {
	before = ts(before)
	var n int64
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM replay WHERE seen_at < ?`), before)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		if n, err = affected(res); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM deliveries WHERE delivered_at < ?`), before); err != nil {
			return fmt.Errorf("deliveries: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM delivered_recipients WHERE delivered_at < ?`), before); err != nil {
			return fmt.Errorf("delivered recipients: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM posts_complete WHERE completed_at < ?`), before); err != nil {
			return fmt.Errorf("completed posts: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM post_claims WHERE lease_until < ?`), before); err != nil {
			return fmt.Errorf("post claims: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune replay: %w", err)
	}
	return n, nil
}

// CompletePost marks the post complete (PostComplete reports it) and
// records envelope, a digest of the envelope of the transaction that
// completed it (the milter's: sender and list), in the replay table
// under the post's id, in one transaction. A later transaction of the
// same post with the same envelope digest is the sender's MTA retrying
// one that was completed (CompletedFor). The envelope row is pruned with
// the post's digests; a digest of the post id and the envelope cannot
// be another post's digest.
func (s *Store) CompletePost(ctx context.Context, list string, postID, envelope []byte, at time.Time) error {
	if len(postID) == 0 || len(envelope) == 0 {
		return fmt.Errorf("store: complete post on %q: empty post id or envelope", list)
	}
	at = nowOr(at)
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO replay (list, digest, post_id, seen_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (list, digest) DO NOTHING`), list, envelope, postID, at); err != nil {
			return fmt.Errorf("envelope: %w", err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO posts_complete (list, post_id, completed_at)
			VALUES (?, ?, ?) ON CONFLICT (list, post_id) DO NOTHING`), list, postID, at); err != nil {
			return fmt.Errorf("mark: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: complete post on %q: %w", list, err)
	}
	return nil
}

// CompletedFor reports whether the post was marked complete and, if so,
// whether envelope was recorded for it by CompletePost.
func (s *Store) CompletedFor(ctx context.Context, list string, postID, envelope []byte) (complete, sameEnvelope bool, err error) {
	if complete, err = s.PostComplete(ctx, list, postID); err != nil || !complete {
		return complete, false, err
	}
	var n int
	if err := s.db.GetContext(ctx, &n, s.q(`SELECT COUNT(*) FROM replay WHERE list = ? AND digest = ? AND post_id = ?`), list, envelope, postID); err != nil {
		return true, false, fmt.Errorf("store: completed post's envelope on %q: %w", list, err)
	}
	return true, n > 0, nil
}

// PostComplete reports whether the post was marked complete.
func (s *Store) PostComplete(ctx context.Context, list string, postID []byte) (bool, error) {
	var n int
	if err := s.db.GetContext(ctx, &n, s.q(`SELECT COUNT(*) FROM posts_complete WHERE list = ? AND post_id = ?`), list, postID); err != nil {
		return false, fmt.Errorf("store: post complete on %q: %w", list, err)
	}
	return n > 0, nil
}

// ReleasePost forgets the digests recorded for postID on list when the
// post went nowhere: not complete, no batch delivered, no recipient
// refused. The milter calls it when the transaction that recorded them
// is refused after all (another list of the same transaction rejected
// it), so that the author's corrected re-send is not taken for a replay.
// A post that reached anyone keeps its digests. It reports whether
// anything was forgotten.
func (s *Store) ReleasePost(ctx context.Context, list string, postID []byte) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM replay WHERE list = ? AND post_id = ?
		AND NOT EXISTS (SELECT 1 FROM posts_complete WHERE list = ? AND post_id = ?)
		AND NOT EXISTS (SELECT 1 FROM deliveries WHERE list = ? AND post_id = ?)
		AND NOT EXISTS (SELECT 1 FROM refused_recipients WHERE list = ? AND post_id = ?)`),
		list, postID, list, postID, list, postID, list, postID)
	if err != nil {
		return false, fmt.Errorf("store: release post on %q: %w", list, err)
	}
	n, err := affected(res)
	if err != nil {
		return false, fmt.Errorf("store: release post on %q: %w", list, err)
	}
	return n > 0, nil
}
