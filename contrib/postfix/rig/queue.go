package rig

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"time"
)

// messageQueues are the queue folders that hold messages, in the order a
// message moves through them (maildrop → incoming → active → deferred,
// and hold aside). Reading them in this order, a message that moves on
// during a scan is seen in the folder it moves to; only deferred → active
// (a retry) can slip between two reads, hence the two scans of
// WaitQueueEmpty.
var messageQueues = []string{"maildrop", "incoming", "active", "deferred", "hold"}

// QueueEmpty reports whether the instance's queue holds no message at
// all: nothing received and not yet delivered, deferred or held (a queue
// file cleanup never completed is no message). Once it
// is empty after the last SMTP reply, everything Postfix took has
// reached the Sink (the queue file goes after the Sink's 250).
func (p *Postfix) QueueEmpty() (bool, error) {
	for _, q := range messageQueues {
		found := false
		err := filepath.WalkDir(filepath.Join(p.queueDir, q), func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // a file or hashed folder that just went
				}
				return err
			}
			if d.IsDir() {
				return nil
			}
			if q == "incoming" {
				// cleanup marks a queue file complete by giving it the
				// owner's execute bit; one it never finished (cleanup
				// killed) is no message and is removed later by Postfix.
				fi, err := d.Info()
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				if err != nil {
					return err
				}
				if fi.Mode().Perm()&0o100 == 0 {
					return nil
				}
			}
			found = true
			return filepath.SkipAll
		})
		if err != nil {
			return false, err
		}
		if found {
			return false, nil
		}
	}
	return true, nil
}

// WaitQueueEmpty polls QueueEmpty (every 5 ms) until two scans in a row
// find the queue empty, or ctx ends.
func (p *Postfix) WaitQueueEmpty(ctx context.Context) error { return PollEmpty(ctx, p.QueueEmpty) }

// PollEmpty polls empty (every 5 ms) until it reports true twice in a
// row, or ctx ends: a message moving between two queue folders during
// one scan is seen by the next (the queues of both MTAs' rigs).
func PollEmpty(ctx context.Context, empty func() (bool, error)) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	empties := 0
	for {
		ok, err := empty()
		if err != nil {
			return err
		}
		if ok {
			empties++
			if empties == 2 {
				return nil
			}
		} else {
			empties = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
