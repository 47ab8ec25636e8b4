package milter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-smtp"

	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// listener plays the MTA's reinjection listener: it records every
// message it takes and checks the delivery records against its replies.
// No batch is recorded before its 250 (checked at its DATA), and a
// batch is recorded before the sender moves on to the next: at every
// MAIL, at most workers-1 batches taken are not recorded yet (the
// other workers' last ones; the one sending this MAIL recorded its own).
type listener struct {
	t        *testing.T
	addr     string
	recorded func() map[string]bool // members the store records as delivered

	mu         sync.Mutex
	conns      int
	open, most int
	txPerConn  []int
	got        map[string]int // member -> copies taken
	datas      int
	dropAt     int // close the connection instead of answering this DATA (1-based, 0: never)
	workers    int // batches the milter sends at once
	taken      [][]string
	violations []string
}

func newListener(t *testing.T) *listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{t: t, addr: ln.Addr().String(), got: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.conns++
		l.open++
		l.most = max(l.most, l.open)
		l.txPerConn = append(l.txPerConn, 0)
		return &listenerSession{l: l, c: c, id: len(l.txPerConn) - 1}, nil
	}))
	srv.Domain = "reinject.test"
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return l
}

type listenerSession struct {
	l  *listener
	c  *smtp.Conn
	id int
	to []string
}

func (s *listenerSession) Reset() { s.to = nil }
func (s *listenerSession) Logout() error {
	s.l.mu.Lock()
	s.l.open--
	s.l.mu.Unlock()
	return nil
}

func (s *listenerSession) Mail(string, *smtp.MailOptions) error {
	l := s.l
	// The batches taken when this MAIL came, then the records: records
	// only grow, so a batch of the first not in the second was pending
	// at the MAIL. (Reading the records first and the batches after would
	// count batches taken while the records were being read.)
	l.mu.Lock()
	taken := append([][]string(nil), l.taken...)
	l.mu.Unlock()
	rec := l.recorded()
	l.mu.Lock()
	defer l.mu.Unlock()
	pending := 0
	for _, b := range taken {
		if !rec[b[0]] {
			pending++
		}
	}
	if pending > l.workers-1 {
		l.violations = append(l.violations, fmt.Sprintf("a new transaction while %d batches taken are not recorded", pending))
	}
	return nil
}

func (s *listenerSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *listenerSession) Data(r io.Reader) error {
	if _, err := io.ReadAll(r); err != nil {
		return err
	}
	l := s.l
	l.mu.Lock()
	l.datas++
	drop := l.datas == l.dropAt
	l.mu.Unlock()
	if drop {
		// The MTA dies after the message, before its 250: nothing queued.
		s.c.Close()
		return errors.New("dropped")
	}
	rec := l.recorded()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range s.to {
		if rec[a] {
			l.violations = append(l.violations, a+" recorded before the 250 for its batch")
		}
	}
	l.txPerConn[s.id]++
	for _, a := range s.to {
		l.got[a]++
	}
	l.taken = append(l.taken, s.to)
	return nil
}

// poolSite is a list of n members (batch size 3) whose reinjection
// listener is l, with c connections.
func poolSite(t *testing.T, n, c int) (*milterfix.Site, *listener, []string, map[string]*openpgp.Entity, *mta) {
	site := milterfix.New(t, milterfix.Options{})
	setBatchSize(t, site, 3)
	var members []string
	keys := map[string]*openpgp.Entity{}
	for i := range n {
		m := fmt.Sprintf("m%02d@example.org", i)
		keys[m] = site.AddMember(t, m)
		members = append(members, m)
	}
	l := newListener(t)
	l.workers = c
	site.Config.Reinject.Address = l.addr
	site.Config.Reinject.Connections = c
	d, _ := startDaemon(t, site)
	return site, l, members, keys, newMTA(t, d)
}

func recordedBy(t *testing.T, site *milterfix.Site, postID []byte) func() map[string]bool {
	return func() map[string]bool {
		addrs, _, err := site.Admin.Store.DeliveredRecipients(context.Background(), milterfix.List, postID)
		if err != nil {
			t.Error(err)
		}
		out := map[string]bool{}
		for _, a := range addrs {
			out[a] = true
		}
		return out
	}
}

// Batches go out in parallel over at most [reinject] connections
// persistent connections, several transactions on each, and each is
// recorded after its own 250, before its sender moves on.
func TestReinjectPoolParallelBatchesEachRecorded(t *testing.T) {
	site, l, members, keys, m := poolSite(t, 25, 2)
	msg := milterfix.Build(t, milterfix.Post{From: members[0], SignWith: keys[members[0]], EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "parallel"})
	id, err := deliver.PostID(msg)
	if err != nil {
		t.Fatal(err)
	}
	l.recorded = recordedBy(t, site, id)
	r := m.send(members[0], []string{milterfix.List}, msg)
	if !r.delivered() {
		t.Fatalf("post: %+v", r.action)
	}
	rec := l.recorded()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violations {
		t.Error(v)
	}
	// 25 members in batches of 3: 9 batches, every one reinjected.
	if l.datas != 9 {
		t.Fatalf("%d reinjected batches, want 9", l.datas)
	}
	if l.conns > 2 || l.most > 2 {
		t.Fatalf("%d connections (%d at once), want at most 2", l.conns, l.most)
	}
	if slices.Max(l.txPerConn) < 2 {
		t.Fatalf("transactions per connection %v: no connection reused", l.txPerConn)
	}
	for _, a := range members {
		if l.got[a] != 1 {
			t.Errorf("%s: %d reinjected copies, want 1", a, l.got[a])
		}
		if !rec[a] {
			t.Errorf("%s delivered but not recorded", a)
		}
	}
}

// The listener drops a connection after a batch's data, before its 250:
// the post is tempfailed, the pool replaces the connection, and the
// sender's retry reaches every member exactly once (the dropped batch
// was not queued, so it goes again).
func TestReinjectPoolDroppedConnection(t *testing.T) {
	site, l, members, keys, m := poolSite(t, 25, 2)
	msg := milterfix.Build(t, milterfix.Post{From: members[0], SignWith: keys[members[0]], EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "dropped"})
	id, err := deliver.PostID(msg)
	if err != nil {
		t.Fatal(err)
	}
	l.recorded = recordedBy(t, site, id)
	l.mu.Lock()
	l.dropAt = 3
	l.mu.Unlock()
	if r := m.send(members[0], []string{milterfix.List}, msg); r.code() != 451 {
		t.Fatalf("with a dropped connection: %+v, want 451", r.action)
	}
	r := m.send(members[0], []string{milterfix.List}, msg)
	if !r.delivered() {
		t.Fatalf("retry: %+v", r.action)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violations {
		t.Error(v)
	}
	for _, a := range members {
		if n := l.got[a]; n != 1 {
			t.Errorf("%s: %d copies, want 1", a, n)
		}
	}
	if l.conns < 2 {
		t.Errorf("%d connections: the dropped one was not replaced", l.conns)
	}
}
