package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// sentLog records what an OutboxSend was given.
type sentLog struct {
	mu   sync.Mutex
	rows map[int64]int
	to   []string
}

func (l *sentLog) send(_ context.Context, m store.OutboxMail) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rows == nil {
		l.rows = map[int64]int{}
	}
	l.rows[m.ID]++
	l.to = append(l.to, m.Recipients...)
	return nil
}

// A reply queued in a committed transaction whose process died before
// sending it is sent by the next run, exactly once, and leaves the disk;
// a failed send leaves it waiting, a permanent refusal drops it; a claim
// held by a dead sender expires after the lease.
func TestOutboxResume(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		now := time.Now()
		clock := func() time.Time { return now }
		lim := store.ReplyLimit{List: listAddr, Address: "a@example.org", Now: now, Window: time.Hour, PerAddress: 10, PerList: 10}
		// "Crash" after the commit: queued, never sent.
		crashed, err := s.QueueLimited(ctx, lim, reply("a@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		var log sentLog
		// The next run sends its own row, then the older one.
		own, err := s.Queue(ctx, reply("b@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.SendOutbox(ctx, listAddr, own, clock, log.send, nil)
		if err != nil || res.FirstErr != nil || len(res.Sent) != 2 || res.Sent[0] != own || res.Sent[1] != crashed {
			t.Fatalf("resume: %+v %v", res, err)
		}
		// Nothing twice: a third run finds nothing.
		if res, err := s.SendOutbox(ctx, listAddr, own, clock, log.send, nil); err != nil || len(res.Sent) != 0 {
			t.Fatalf("second run: %+v %v", res, err)
		}
		if log.rows[crashed] != 1 || log.rows[own] != 1 || len(log.to) != 2 {
			t.Fatalf("sent: %+v", log.rows)
		}
		if n, _ := s.CountOutbox(ctx, ""); n != 0 {
			t.Fatalf("%d rows left on disk after sending", n)
		}

		// A failed send leaves the row waiting; a permanent refusal drops it.
		down, perm := errors.New("connection refused"), errors.New("550 no such user")
		permanent := func(err error) bool { return errors.Is(err, perm) }
		id1, _ := s.Queue(ctx, reply("c@example.org"))
		res, err = s.SendOutbox(ctx, listAddr, id1, clock, func(context.Context, store.OutboxMail) error { return down }, permanent)
		if err != nil || !errors.Is(res.FirstErr, down) || len(res.Waiting) != 1 {
			t.Fatalf("failed send: %+v %v", res, err)
		}
		id2, _ := s.Queue(ctx, reply("d@example.org"))
		res, err = s.SendOutbox(ctx, listAddr, id2, clock, func(context.Context, store.OutboxMail) error { return perm }, permanent)
		if !errors.Is(res.FirstErr, perm) || !errors.Is(err, perm) || len(res.Dropped) != 2 {
			t.Fatalf("refused: %+v %v", res, err)
		}
		if n, _ := s.CountOutbox(ctx, ""); n != 0 {
			t.Fatalf("%d rows left after permanent refusals", n)
		}

		// A sender that claimed a row and died: the row waits for the
		// lease, then goes once.
		id3, _ := s.Queue(ctx, reply("e@example.org"))
		block := make(chan struct{})
		claimed, died := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(died)
			s.SendOutbox(context.Background(), listAddr, id3, clock, func(context.Context, store.OutboxMail) error {
				close(claimed)
				<-block // dies here
				return errors.New("killed")
			}, nil)
		}()
		<-claimed
		log = sentLog{}
		if res, _ := s.SendOutbox(ctx, listAddr, 0, clock, log.send, nil); len(res.Sent) != 0 {
			t.Fatalf("claimed row sent by another sender within the lease: %+v", res)
		}
		later := func() time.Time { return now.Add(store.OutboxLease + time.Minute) }
		if res, err := s.SendOutbox(ctx, listAddr, 0, later, log.send, nil); err != nil || len(res.Sent) != 1 || res.Sent[0] != id3 {
			t.Fatalf("after the lease: %+v %v", res, err)
		}
		close(block)
		<-died
	})
}

// Concurrent senders resuming the same rows send each exactly once.
func TestOutboxConcurrentSenders(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		const rows = 30
		for i := range rows {
			if _, err := s.Queue(ctx, reply(fmt.Sprintf("r%d@example.org", i))); err != nil {
				t.Fatal(err)
			}
		}
		var log sentLog
		var wg sync.WaitGroup
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.SendOutbox(ctx, listAddr, 0, time.Now, log.send, nil); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if len(log.rows) != rows || len(log.to) != rows {
			t.Fatalf("%d rows sent, %d copies, want %d each", len(log.rows), len(log.to), rows)
		}
	})
}

// No transaction is open while a mail is submitted: a send that blocks
// does not block another writer (on SQLite, the only write lock).
func TestOutboxSendHoldsNoLock(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		lim := store.ReplyLimit{List: listAddr, Address: "a@example.org", Now: time.Now(), Window: time.Hour, PerAddress: 10, PerList: 10}
		id, err := s.QueueLimited(ctx, lim, reply("a@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		inSend, release := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := s.SendOutbox(ctx, listAddr, id, time.Now, func(context.Context, store.OutboxMail) error {
				close(inSend)
				<-release
				return nil
			}, nil)
			done <- err
		}()
		<-inSend
		// While the first reply is being "submitted", other writers go
		// through: a reply slot with its outbox row, a key step with its
		// reply, a held post.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		lim.Address = "b@example.org"
		if _, err := s.QueueLimited(wctx, lim, reply("b@example.org")); err != nil {
			t.Fatalf("queue while a send runs: %v", err)
		}
		m := reply("c@example.org")
		if err := s.ApplyKeyStep(wctx, store.KeyStep{List: listAddr, Address: "c@example.org", LimitReply: &lim, Outbox: &m}); err != nil || m.ID == 0 {
			t.Fatalf("key step while a send runs: %v (id %d)", err, m.ID)
		}
		if _, err := s.AddHold(wctx, store.Hold{List: listAddr, Sender: "x@example.org", Reason: "r", Message: []byte("m")}); err != nil {
			t.Fatalf("hold while a send runs: %v", err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
