package rig

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// SinkMaxMessageBytes is the largest message the Sink accepts (64 MiB);
// a larger one is refused with 552 5.3.4.
const SinkMaxMessageBytes = 64 << 20

// Delivered is one SMTP transaction received by a Sink.
type Delivered struct {
	From string   // envelope sender (MAIL FROM), "" for the null sender
	To   []string // envelope recipients (RCPT TO), in the order given
	Data []byte   // the message as transmitted, CRLF line ends, dot-unstuffed
	At   time.Time
}

// Sink is an SMTP server in the test process that accepts and records
// every message. A rig Postfix delivers all its mail to one.
type Sink struct {
	addr string
	srv  *smtp.Server

	mu      sync.Mutex
	msgs    []Delivered
	arrived chan struct{} // closed and replaced on every new message
	refuse  map[string]*smtp.SMTPError
	refused []string
}

// NewSink starts a Sink on 127.0.0.1 (a free port) and stops it at the end
// of the test.
func NewSink(t testing.TB) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("rig: sink listen: %v", err)
	}
	s := &Sink{addr: ln.Addr().String(), arrived: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: s}, nil
	}))
	srv.Domain = "sink.rig.test" // must differ from Postfix's myhostname (loop check)
	srv.MaxMessageBytes = SinkMaxMessageBytes
	srv.MaxRecipients = 0
	srv.MaxLineLength = 0 // no limit: the rig checks that long lines arrive unfolded
	srv.EnableSMTPUTF8 = true
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	logger := &testLogger{t: t}
	srv.ErrorLog = logger
	s.srv = srv
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("rig: sink: %v", err)
		}
	}()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("rig: sink close: %v", err)
		}
		<-done
		logger.stop()
	})
	return s
}

// Addr is the sink's host:port.
func (s *Sink) Addr() string { return s.addr }

// Messages returns a copy of what arrived so far, in arrival order.
func (s *Sink) Messages() []Delivered {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivered(nil), s.msgs...)
}

// Wait blocks until at least n messages have arrived and returns all of
// them, or returns ctx's error with what arrived so far.
func (s *Sink) Wait(ctx context.Context, n int) ([]Delivered, error) {
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			out := append([]Delivered(nil), s.msgs...)
			s.mu.Unlock()
			return out, nil
		}
		ch := s.arrived
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Messages(), ctx.Err()
		}
	}
}

func (s *Sink) add(d Delivered) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, d)
	close(s.arrived)
	s.arrived = make(chan struct{})
}

type sinkSession struct {
	sink *Sink
	from string
	to   []string
}

func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.from, ss.to = from, nil
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.sink.mu.Lock()
	refusal := ss.sink.refuse[strings.ToLower(to)]
	if refusal != nil {
		ss.sink.refused = append(ss.sink.refused, to)
	}
	ss.sink.mu.Unlock()
	if refusal != nil {
		return refusal
	}
	ss.to = append(ss.to, to)
	return nil
}

// Refuse makes the sink answer RCPT TO:<addr> (any case) with err from
// now on, as a mailbox that is gone does: e.g. &smtp.SMTPError{Code: 550,
// EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "mailbox gone"}. A
// nil err accepts addr again.
func (s *Sink) Refuse(addr string, err *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse == nil {
		s.refuse = map[string]*smtp.SMTPError{}
	}
	if err == nil {
		delete(s.refuse, strings.ToLower(addr))
		return
	}
	s.refuse[strings.ToLower(addr)] = err
}

// Refused returns the recipients refused so far (Refuse), in order.
func (s *Sink) Refused() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.refused...)
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r) // r enforces SinkMaxMessageBytes
	if err != nil {
		return err
	}
	ss.sink.add(Delivered{From: ss.from, To: append([]string(nil), ss.to...), Data: data, At: time.Now()})
	return nil
}

// testLogger sends go-smtp's server log to the test log until the test
// ends (connection goroutines may outlive Close; logging after the test
// has completed would panic).
type testLogger struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (l *testLogger) Printf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Logf("rig: sink: "+format, v...)
	}
}

func (l *testLogger) Println(v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Log(append([]any{"rig: sink:"}, v...)...)
	}
}

func (l *testLogger) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}
