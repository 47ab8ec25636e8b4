// Package milter is listcrypt's MTA-facing pipeline: it speaks the milter
// protocol (go-milter) with Postfix or Sendmail, marks transactions that
// address a list, and at end-of-message runs a post through the inbound
// examination (milter/inbound), the replay table and the list policy
// (post.go: where a post is decided), then carries out the decision.
package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/holds"
	"github.com/listcrypt/listcrypt/milter/reinject"
	"github.com/listcrypt/listcrypt/policy"
)

// Options wire a Server: the site's store, keys and config, the log and
// the clock, as for its Deliverer.
type Options = deliver.Options

// Server serves milter connections. Policies can be swapped at any time
// (SIGHUP): each transaction uses the set current at its RCPT TO.
type Server struct {
	opts     Options
	policies atomic.Pointer[policy.Set]
	mil      *gomilter.Server
	// deliverer distributes accepted posts (milter/deliver).
	deliverer *deliver.Deliverer
	// holds tells moderators about held posts and expires them
	// (milter/holds).
	holds *holds.Notifier

	// listLocks serialise the OpenPGP work on one list's keys: go-crypto
	// writes into shared key objects while it verifies and selects keys
	// (caught by -race), and a list's keys are shared by its sessions.
	// Exactly-once delivery does not rest on them: a claim in the store
	// (deliver.Claimer) settles which attempt, on this host or another,
	// delivers a post; the lock only saves a second session on this host
	// from racing the first to the database.
	listLocks sync.Map // list address -> chan struct{} (capacity 1: a lock)

	// claimer names each attempt at a post in its claim, so two sessions
	// of one process are two owners too (deliver.Claimer).
	claimer *deliver.Claimer

	// Connection slots (slots.go).
	mu        sync.Mutex
	conns     map[*trackedConn]struct{} // connections holding a slot
	changed   chan struct{}             // wakes an Accept waiting for a slot
	done      chan struct{}             // closed by Shutdown
	connSeq   atomic.Uint64
	listeners []net.Listener // being served; Shutdown closes them
	wg        sync.WaitGroup // session goroutines
	closed    bool
}

// Actions the milter may perform; Sendmail drops a milter that asks for
// more than it uses (LIBRARY-NOTES), so this is exactly what we use: the
// list recipients leave a transaction whose post was reinjected batch by
// batch, held or taken for a retry. The milter never changes a message.
const actions = gomilter.OptRemoveRcpt

// NewServer returns a server for the given policies.
func NewServer(opts Options, policies *policy.Set) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{opts: opts, conns: map[*trackedConn]struct{}{}, changed: make(chan struct{}, 1), done: make(chan struct{}),
		deliverer: deliver.New(opts)}
	s.holds = holds.New(holds.Options{Options: opts, Lock: s.lockLists})
	s.claimer = deliver.NewClaimer()
	s.policies.Store(policies)
	s.mil = &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &session{srv: s} },
		Actions:   actions,
		// No no-reply flags: every callback answers (LIBRARY-NOTES).
		Protocol: gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoUnknown | gomilter.OptNoData,
	}
	return s
}

// SetPolicies swaps in a new, fully validated policy set.
func (s *Server) SetPolicies(p *policy.Set) { s.policies.Store(p) }

// Policies returns the current policy set.
func (s *Server) Policies() *policy.Set { return s.policies.Load() }

// Serve accepts MTA connections on ln until Shutdown, each in one of
// milter.max_connections slots with the deadlines and the eviction order
// of slots.go (documented in docs/config.md).
func (s *Server) Serve(ln net.Listener) error {
	// Shutdown closes the listener itself: go-milter's Close races with
	// its Serve (it appends the listener unguarded).
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.mil.Serve(&slotListener{Listener: ln, srv: s})
	if errors.Is(err, gomilter.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, waits for running sessions until ctx ends,
// then closes the rest (the MTA applies milter_default_action =
// tempfail to those, so nothing is lost).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	var err error
	for _, ln := range s.listeners {
		if cerr := ln.Close(); err == nil {
			err = cerr
		}
	}
	s.listeners = nil
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Conn.Close()
		}
		s.mu.Unlock()
		<-done
	}
	return err
}

// lockLists locks the lists in address order (no deadlock between two
// transactions addressing the same lists), waiting at most until ctx
// ends, and returns the unlock function.
func (s *Server) lockLists(ctx context.Context, lists []*policy.Policy) (func(), error) {
	addrs := make([]string, 0, len(lists))
	for _, p := range lists {
		addrs = append(addrs, p.Address)
	}
	sort.Strings(addrs)
	var held []chan struct{}
	unlock := func() {
		for i := len(held) - 1; i >= 0; i-- {
			<-held[i]
		}
	}
	for _, a := range addrs {
		l, _ := s.listLocks.LoadOrStore(a, make(chan struct{}, 1))
		ch := l.(chan struct{})
		select {
		case ch <- struct{}{}:
			held = append(held, ch)
		case <-ctx.Done():
			unlock()
			return nil, fmt.Errorf("waiting for list %s: %w", a, ctx.Err())
		}
	}
	return unlock, nil
}

// reinjectPool is the process's pool of SMTP connections to the
// reinjection listener.
func (srv *Server) reinjectPool() *reinject.Pool { return srv.deliverer.Pool() }

// ExpireHolds is the daemon's hourly run over the current lists
// (holds.Notifier.ExpireHolds).
func (srv *Server) ExpireHolds(ctx context.Context, now time.Time) (int, error) {
	return srv.holds.ExpireHolds(ctx, srv.Policies(), now)
}
