package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ClaimPost claims the delivery of a post for owner, until now+lease, in
// one statement: the claim row is inserted, or taken over when its lease
// ran out (the holder died) or when owner already holds it (a renewal).
// While another owner holds a live claim, claimed is false and holder
// names that owner. The database settles the race: of any number of
// owners claiming the same post at the same instant, on any number of
// hosts, exactly one gets claimed = true (PostgreSQL makes a concurrent
// upsert on the same key wait for the first to commit and then evaluates
// the WHERE on the committed row; SQLite has one writer).
//
// Leases are compared in the claimers' clocks (now): hosts sharing a
// database must keep their clocks within the margin the lease leaves
// over the holder's own deadline.
func (s *Store) ClaimPost(ctx context.Context, list string, postID []byte, owner string, lease time.Duration, now time.Time) (claimed bool, holder string, err error) {
	if len(postID) == 0 || owner == "" || lease <= 0 {
		return false, "", fmt.Errorf("store: claim post on %q: empty post id or owner, or no lease", list)
	}
	now = nowOr(now)
	until := ts(now.Add(lease))
	// The holder read after a refused claim may have released it in
	// between; then claim again.
	for range 3 {
		var got string
		err = s.db.GetContext(ctx, &got, s.q(`INSERT INTO post_claims (list, post_id, owner, lease_until, claimed_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (list, post_id) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until, claimed_at = excluded.claimed_at
			WHERE post_claims.lease_until < excluded.claimed_at OR post_claims.owner = excluded.owner
			RETURNING owner`), list, postID, owner, until, now)
		if err == nil {
			return got == owner, got, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, "", fmt.Errorf("store: claim post on %q: %w", list, err)
		}
		err = s.db.GetContext(ctx, &got, s.q(`SELECT owner FROM post_claims WHERE list = ? AND post_id = ?`), list, postID)
		if err == nil {
			return false, got, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, "", fmt.Errorf("store: claim post on %q: read holder: %w", list, err)
		}
	}
	return false, "", fmt.Errorf("store: claim post on %q: the claim keeps changing hands", list)
}

// ReleaseClaim ends owner's claim on the post (after the post was
// completed, or the attempt refused). A claim held by another owner (ours
// expired and was taken over) is left alone. It reports whether a claim
// was released.
func (s *Store) ReleaseClaim(ctx context.Context, list string, postID []byte, owner string) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM post_claims WHERE list = ? AND post_id = ? AND owner = ?`), list, postID, owner)
	if err != nil {
		return false, fmt.Errorf("store: release claim on %q: %w", list, err)
	}
	n, err := affected(res)
	if err != nil {
		return false, fmt.Errorf("store: release claim on %q: %w", list, err)
	}
	return n > 0, nil
}

// RenewClaim extends owner's claim on the post to now+lease, only while
// owner still holds it: a claim taken over by another, or released (the
// other finished), is not created again. It reports whether owner holds
// the claim. A holder checks it before each step that must not be done
// twice ("hold approve" before each batch): ClaimPost would insert a
// fresh claim where the row is gone, and a process stopped past its lease
// would then repeat what the other holder finished.
func (s *Store) RenewClaim(ctx context.Context, list string, postID []byte, owner string, lease time.Duration, now time.Time) (bool, error) {
	if len(postID) == 0 || owner == "" || lease <= 0 {
		return false, fmt.Errorf("store: renew claim on %q: empty post id or owner, or no lease", list)
	}
	now = nowOr(now)
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE post_claims SET lease_until = ?
		WHERE list = ? AND post_id = ? AND owner = ?`), ts(now.Add(lease)), list, postID, owner)
	if err != nil {
		return false, fmt.Errorf("store: renew claim on %q: %w", list, err)
	}
	n, err := affected(res)
	if err != nil {
		return false, fmt.Errorf("store: renew claim on %q: %w", list, err)
	}
	return n == 1, nil
}

// TakeOverClaim moves the claim on the post from a holder known to be
// dead (a process of this machine that no longer runs) to owner before
// its lease ends, in one statement: nothing changes unless from still
// holds it, so of several attempts taking over from the same dead holder
// exactly one succeeds.
func (s *Store) TakeOverClaim(ctx context.Context, list string, postID []byte, from, owner string, lease time.Duration, now time.Time) (bool, error) {
	if len(postID) == 0 || from == "" || owner == "" || lease <= 0 {
		return false, fmt.Errorf("store: take over claim on %q: empty post id or owner, or no lease", list)
	}
	now = nowOr(now)
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE post_claims SET owner = ?, lease_until = ?, claimed_at = ?
		WHERE list = ? AND post_id = ? AND owner = ?`), owner, ts(now.Add(lease)), now, list, postID, from)
	if err != nil {
		return false, fmt.Errorf("store: take over claim on %q: %w", list, err)
	}
	n, err := affected(res)
	if err != nil {
		return false, fmt.Errorf("store: take over claim on %q: %w", list, err)
	}
	return n == 1, nil
}
