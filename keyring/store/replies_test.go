package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// reply is a reply to addr as the responder queues it.
func reply(addr string) store.OutboxMail {
	return store.OutboxMail{List: listAddr, Sender: "devs-bounces@lists.example.org", Recipients: []string{addr}, Message: []byte("reply\r\n")}
}

// The responder's reply limits for unverified senders: per address, per
// list, a zero limit, the window sliding with the (injected) clock,
// pruning, a failed send that takes no slot, and the same limit inside a
// key step.
func TestReplyLimits(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		lim := func(addr string, at time.Duration) store.ReplyLimit {
			return store.ReplyLimit{List: listAddr, Address: addr, Now: t0.Add(at), Window: time.Hour, PerAddress: 2, PerList: 3}
		}
		sent := 0
		try := func(l store.ReplyLimit, want string) {
			t.Helper()
			before := sent
			_, err := s.QueueLimited(ctx, l, reply(l.Address))
			if err == nil {
				sent++
			}
			var rl *store.RateLimitError
			switch {
			case want == "" && err != nil:
				t.Fatalf("%s at %v: %v", l.Address, l.Now, err)
			case want == "":
				if sent != before+1 {
					t.Fatalf("%s: send not called", l.Address)
				}
			case !errors.Is(err, store.ErrRateLimited) || !errors.As(err, &rl) || rl.Scope != want:
				t.Fatalf("%s at %v: %v, want the %s limit", l.Address, l.Now, err, want)
			case sent != before:
				t.Fatalf("%s: send called over the limit", l.Address)
			}
		}
		for _, c := range []struct {
			addr string
			at   time.Duration
			want string // "" sent, else the limit's scope
		}{
			{"a@example.org", 0, ""},
			{"a@example.org", time.Minute, ""},
			{"a@example.org", 2 * time.Minute, store.LimitAddress},
			{"b@example.org", 3 * time.Minute, ""},
			{"c@example.org", 4 * time.Minute, store.LimitList},
			{"b@example.org", 5 * time.Minute, store.LimitList},
			// The first reply leaves the window: one slot, for a or c.
			{"a@example.org", time.Hour + time.Second, ""},
			{"c@example.org", time.Hour + 2*time.Second, store.LimitList},
			// All but the newest left the window.
			{"c@example.org", time.Hour + 4*time.Minute, ""},
			{"c@example.org", time.Hour + 5*time.Minute, ""},
			{"c@example.org", time.Hour + 6*time.Minute, store.LimitAddress},
		} {
			try(lim(c.addr, c.at), c.want)
		}
		// Old rows were pruned on the way.
		if n, err := s.CountReplies(ctx, listAddr, "", time.Time{}); err != nil || n != 3 {
			t.Fatalf("rows after pruning: %d %v, want 3", n, err)
		}
		if n, _ := s.CountReplies(ctx, listAddr, "c@example.org", t0); n != 2 {
			t.Fatalf("rows of c: %d, want 2", n)
		}
		// A reply that cannot be queued takes no slot.
		if _, err := s.QueueLimited(ctx, lim("d@example.org", 2*time.Hour+10*time.Minute), store.OutboxMail{List: listAddr}); err == nil {
			t.Fatal("queued an empty mail")
		}
		if n, _ := s.CountReplies(ctx, listAddr, "d@example.org", time.Time{}); n != 0 {
			t.Fatalf("failed queue recorded: %d", n)
		}
		// Every reply that took a slot waits in the outbox.
		if n, err := s.CountOutbox(ctx, listAddr); err != nil || n != sent {
			t.Fatalf("outbox rows: %d %v, want %d", n, err, sent)
		}
		// A zero limit allows nothing.
		z := lim("e@example.org", 3*time.Hour)
		z.PerAddress = 0
		try(z, store.LimitAddress)
		z = lim("e@example.org", 3*time.Hour)
		z.PerList = 0
		try(z, store.LimitList)

		// In a key step: over the limit nothing of the step happens.
		const f = "f@example.org"
		ch := store.Challenge{TokenHash: []byte("rl-1"), Command: "key set", CreatedAt: t0, ExpiresAt: t0.Add(48 * time.Hour)}
		for i, want := range []error{nil, nil, store.ErrRateLimited} {
			l := lim(f, 4*time.Hour+time.Duration(i)*time.Minute)
			ch.TokenHash = []byte(fmt.Sprintf("rl-%d", i))
			err := s.ApplyKeyStep(ctx, store.KeyStep{List: listAddr, Address: f, Now: l.Now, LimitReply: &l, AddChallenges: []store.Challenge{ch}})
			if !errors.Is(err, want) || (want == nil) != (err == nil) {
				t.Fatalf("key step %d: %v, want %v", i, err, want)
			}
		}
		if _, err := s.PeekChallenge(ctx, []byte("rl-2")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("limited key step left its challenge: %v", err)
		}
	})
}

// Concurrent responders (separate connections, as separate processes or
// hosts are) never exceed a limit: the count and the insert are one
// transaction under the list's reply lock.
func TestReplyLimitsConcurrent(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		const workers = 16
		run := func(name string, lim func(i int) store.ReplyLimit, step bool, want int) {
			t.Helper()
			var sent atomic.Int32
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for i := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					l := lim(i)
					var err error
					if step && i%2 == 1 {
						m := reply(l.Address)
						err = s.ApplyKeyStep(ctx, store.KeyStep{List: l.List, Address: l.Address, Now: l.Now, LimitReply: &l, Outbox: &m})
					} else {
						_, err = s.QueueLimited(ctx, l, reply(l.Address))
					}
					if err == nil {
						sent.Add(1)
					}
					if err != nil && !errors.Is(err, store.ErrRateLimited) {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("%s: %v", name, err)
			}
			if int(sent.Load()) != want {
				t.Fatalf("%s: %d replies sent, want %d", name, sent.Load(), want)
			}
		}
		run("one address", func(i int) store.ReplyLimit {
			return store.ReplyLimit{List: listAddr, Address: "victim@example.org", Now: t0, Window: time.Hour, PerAddress: 3, PerList: 100}
		}, true, 3)
		run("many addresses", func(i int) store.ReplyLimit {
			return store.ReplyLimit{List: listAddr, Address: fmt.Sprintf("v%d@example.org", i), Now: t0.Add(2 * time.Hour), Window: time.Hour, PerAddress: 3, PerList: 5}
		}, true, 5)
	})
}
