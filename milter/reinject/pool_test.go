package reinject

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// counting is an SMTP listener that counts connections and QUITs and
// records each message; hook, when set, runs at each DATA with the
// connection and the transaction's number on it.
type counting struct {
	addr                string
	mu                  sync.Mutex
	conns, quits, datas int
	msgs                [][]byte
	hook                func(c *smtp.Conn, n int) error
	maxConcurrent, open int
}

func newCounting(t *testing.T) *counting {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &counting{addr: ln.Addr().String()}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns++
		s.open++
		s.maxConcurrent = max(s.maxConcurrent, s.open)
		s.mu.Unlock()
		return &countingSession{s: s, c: c}, nil
	}))
	srv.Domain = "test.invalid"
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *counting) stats() (conns, quits, datas, msgs, maxConcurrent int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, s.quits, s.datas, len(s.msgs), s.maxConcurrent
}

type countingSession struct {
	s *counting
	c *smtp.Conn
	n int
}

func (ss *countingSession) Reset() {}
func (ss *countingSession) Logout() error {
	ss.s.mu.Lock()
	ss.s.quits++
	ss.s.open--
	ss.s.mu.Unlock()
	return nil
}
func (ss *countingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (ss *countingSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss *countingSession) Data(r io.Reader) error {
	ss.n++
	ss.s.mu.Lock()
	ss.s.datas++
	hook := ss.s.hook
	ss.s.mu.Unlock()
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if hook != nil {
		if err := hook(ss.c, ss.n); err != nil {
			return err
		}
	}
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, b)
	ss.s.mu.Unlock()
	return nil
}

func message(i int) []byte {
	// A line starting with a dot and bare LFs: the client stuffs and
	// converts on the way.
	return fmt.Appendf(nil, "Subject: %d\n\n.dot line\r\nbody %d\n", i, i)
}

func TestPoolReusesConnections(t *testing.T) {
	s := newCounting(t)
	p := NewPool(s.addr, 2, time.Minute)
	defer p.CloseIdle()
	ctx := context.Background()
	for i := range 10 {
		res, err := p.SendEach(ctx, "l@x", []string{"a@x", "b@x"}, bytes.NewReader(message(i)))
		if err != nil || len(res.Accepted) != 2 {
			t.Fatalf("%d: %+v %v", i, res, err)
		}
	}
	if conns, _, _, msgs, _ := s.stats(); conns != 1 || msgs != 10 {
		t.Fatalf("10 messages one after another: %d connections, %d messages", conns, msgs)
	}
	want := "Subject: 3\r\n\r\n.dot line\r\nbody 3\r\n"
	s.mu.Lock()
	got := string(s.msgs[3])
	s.mu.Unlock()
	if got != want {
		t.Fatalf("message 3 = %q, want %q", got, want)
	}

	// Many callers at once: never more than Size connections.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.SendEach(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(i))); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	conns, _, _, msgs, most := s.stats()
	if conns > 2 || most > 2 || msgs != 50 {
		t.Fatalf("40 concurrent messages: %d connections (%d at once), %d messages", conns, most, msgs)
	}
}

func TestPoolClosesIdleConnections(t *testing.T) {
	s := newCounting(t)
	p := NewPool(s.addr, 2, 50*time.Millisecond)
	ctx := context.Background()
	if err := p.Send(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(0))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, quits, _, _, _ := s.stats(); quits == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle connection not closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Send(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(1))); err != nil {
		t.Fatal(err)
	}
	if conns, _, _, msgs, _ := s.stats(); conns != 2 || msgs != 2 || p.Dials() != 2 {
		t.Fatalf("%d connections, %d messages, %d dials", conns, msgs, p.Dials())
	}
}

// The server closes an idle connection (as smtpd_timeout does): the next
// message goes out on a fresh connection, without error.
func TestPoolReplacesConnectionClosedWhileIdle(t *testing.T) {
	s := newCounting(t)
	s.hook = func(c *smtp.Conn, n int) error {
		if n == 2 {
			// After the reply to this message, the server hangs up.
			go func() { time.Sleep(50 * time.Millisecond); c.Close() }()
		}
		return nil
	}
	p := NewPool(s.addr, 1, time.Minute)
	defer p.CloseIdle()
	ctx := context.Background()
	for i := range 2 {
		if err := p.Send(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if err := p.Send(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(2))); err != nil {
		t.Fatalf("after the server hung up: %v", err)
	}
	if conns, _, _, msgs, _ := s.stats(); conns != 2 || msgs != 3 {
		t.Fatalf("%d connections, %d messages", conns, msgs)
	}
}

// The server drops the connection during a transaction, before its
// reply to the end of DATA: that message is an error (the caller
// tempfails; the MTA may or may not have it), and the next one goes out
// on a fresh connection.
func TestPoolDropsConnectionOnError(t *testing.T) {
	s := newCounting(t)
	s.hook = func(c *smtp.Conn, n int) error {
		if n == 2 {
			c.Close()
			return io.ErrUnexpectedEOF
		}
		return nil
	}
	p := NewPool(s.addr, 1, time.Minute)
	defer p.CloseIdle()
	ctx := context.Background()
	if err := p.Send(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(0))); err != nil {
		t.Fatal(err)
	}
	err := p.Send(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(1)))
	if err == nil || !strings.Contains(err.Error(), "end of DATA") {
		t.Fatalf("dropped mid-transaction: %v", err)
	}
	if err := p.Send(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(2))); err != nil {
		t.Fatal(err)
	}
	if conns, _, _, msgs, _ := s.stats(); conns != 2 || msgs != 2 {
		t.Fatalf("%d connections, %d messages", conns, msgs)
	}
}

// A transaction with a refused recipient ends its connection (Postfix's
// smtpd counts refusals per connection until mail is delivered), and so
// does a temporary refusal; the next message goes out on a new one.
func TestPoolAfterRefusals(t *testing.T) {
	s := newServer(t, map[string]*smtp.SMTPError{"a@x": unknown, "b@x": busy})
	p := NewPool(s.addr, 1, time.Minute)
	defer p.CloseIdle()
	ctx := context.Background()
	res, err := p.SendEach(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(0)))
	if err != nil || len(res.Refused) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = p.SendEach(ctx, "l@x", []string{"a@x", "c@x"}, bytes.NewReader(message(1)))
	if err != nil || len(res.Refused) != 1 || len(res.Accepted) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := p.SendEach(ctx, "l@x", []string{"c@x", "b@x"}, bytes.NewReader(message(2))); err == nil {
		t.Fatal("4xx: no error")
	}
	res, err = p.SendEach(ctx, "l@x", []string{"c@x"}, bytes.NewReader(message(3)))
	if err != nil || len(res.Accepted) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if got, _ := s.taken(); len(got) != 2 || p.Dials() != 4 {
		t.Fatalf("server took %v, %d dials", got, p.Dials())
	}
}

// A caller's deadline ends a stalled transaction; the connection is not
// reused and the pool goes on.
func TestPoolDeadline(t *testing.T) {
	s := newCounting(t)
	s.hook = func(c *smtp.Conn, n int) error {
		if n == 1 {
			time.Sleep(500 * time.Millisecond)
		}
		return nil
	}
	p := NewPool(s.addr, 1, time.Minute)
	defer p.CloseIdle()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Send(ctx, "l@x", []string{"a@x"}, bytes.NewReader(message(0))); err == nil {
		t.Fatal("stalled transaction: no error")
	}
	if err := p.Send(context.Background(), "l@x", []string{"a@x"}, bytes.NewReader(message(1))); err != nil {
		t.Fatal(err)
	}
	if p.Dials() != 2 {
		t.Fatalf("%d dials", p.Dials())
	}
}

// A batch larger than one pipelined group (RFC 2920 §3.1: 4 KiB) goes
// out in several groups, replies matched to recipients in order.
func TestPoolManyRecipients(t *testing.T) {
	refuse := map[string]*smtp.SMTPError{}
	var to []string
	for i := range 600 {
		a := fmt.Sprintf("member-%04d@lists.example.org", i)
		if i%7 == 3 {
			refuse[a] = unknown
		}
		to = append(to, a)
	}
	s := newServer(t, refuse)
	p := NewPool(s.addr, 1, time.Minute)
	defer p.CloseIdle()
	res, err := p.SendEach(context.Background(), "l@x", to, bytes.NewReader(message(0)))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Refused) != len(refuse) || len(res.Accepted) != len(to)-len(refuse) {
		t.Fatalf("%d accepted, %d refused", len(res.Accepted), len(res.Refused))
	}
	for _, r := range res.Refused {
		if refuse[r.Address] == nil {
			t.Fatalf("%s reported refused", r.Address)
		}
	}
	if got, _ := s.taken(); len(got) != 1 || !slices.Equal(got[0], res.Accepted) {
		t.Fatal("server took other recipients")
	}
}
