package reinject

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// server is an SMTP listener that refuses recipients as told and records
// what it took.
type server struct {
	addr   string
	refuse map[string]*smtp.SMTPError
	mu     sync.Mutex
	got    [][]string // recipients of each message taken
	datas  int        // DATA commands seen
}

func newServer(t *testing.T, refuse map[string]*smtp.SMTPError) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String(), refuse: refuse}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{s: s}, nil }))
	srv.Domain = "test.invalid"
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

type session struct {
	s  *server
	to []string
}

func (ss *session) Reset()                               { ss.to = nil }
func (ss *session) Logout() error                        { return nil }
func (ss *session) Mail(string, *smtp.MailOptions) error { return nil }
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if e := ss.s.refuse[to]; e != nil {
		return e
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	ss.s.mu.Lock()
	ss.s.datas++
	ss.s.mu.Unlock()
	if _, err := io.ReadAll(r); err != nil {
		return err
	}
	if e := ss.s.refuse["DATA"]; e != nil {
		return e
	}
	ss.s.mu.Lock()
	ss.s.got = append(ss.s.got, append([]string(nil), ss.to...))
	ss.s.mu.Unlock()
	return nil
}

func (s *server) taken() ([][]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.got...), s.datas
}

var (
	unknown = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	busy    = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy"}
)

func TestSendEach(t *testing.T) {
	ctx := context.Background()
	msg := []byte("Subject: x\n\nbody\n")
	t.Run("permanent refusals are per recipient", func(t *testing.T) {
		s := newServer(t, map[string]*smtp.SMTPError{"b@x": unknown, "d@x": {Code: 553, Message: "no\r\nreally"}})
		res, err := SendEach(ctx, s.addr, "l-bounces@x", []string{"a@x", "b@x", "c@x", "d@x"}, msg)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(res.Accepted, ",") != "a@x,c@x" || len(res.Refused) != 2 {
			t.Fatalf("%+v", res)
		}
		if r := res.Refused[0]; r.Address != "b@x" || r.Code != 550 || r.Reply != "550 5.1.1 User unknown" {
			t.Errorf("refused[0] = %+v", r)
		}
		if r := res.Refused[1]; r.Address != "d@x" || r.Code != 553 || strings.ContainsAny(r.Reply, "\r\n") || !strings.HasPrefix(r.Reply, "553 ") {
			t.Errorf("refused[1] = %+v", r)
		}
		if got, _ := s.taken(); len(got) != 1 || strings.Join(got[0], ",") != "a@x,c@x" {
			t.Errorf("server took %v", got)
		}
	})
	t.Run("every recipient refused: no DATA", func(t *testing.T) {
		s := newServer(t, map[string]*smtp.SMTPError{"a@x": unknown, "b@x": unknown})
		res, err := SendEach(ctx, s.addr, "l-bounces@x", []string{"a@x", "b@x"}, msg)
		if err != nil || len(res.Accepted) != 0 || len(res.Refused) != 2 {
			t.Fatalf("%+v %v", res, err)
		}
		if _, datas := s.taken(); datas != 0 {
			t.Errorf("%d DATA commands", datas)
		}
	})
	t.Run("a temporary refusal fails the whole batch", func(t *testing.T) {
		s := newServer(t, map[string]*smtp.SMTPError{"a@x": unknown, "b@x": busy})
		res, err := SendEach(ctx, s.addr, "l-bounces@x", []string{"a@x", "b@x", "c@x"}, msg)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 450 || len(res.Accepted)+len(res.Refused) != 0 {
			t.Fatalf("%+v %v", res, err)
		}
		if got, datas := s.taken(); len(got) != 0 || datas != 0 {
			t.Errorf("server took %v (%d DATA)", got, datas)
		}
	})
	t.Run("a refusal at DATA fails the whole batch", func(t *testing.T) {
		s := newServer(t, map[string]*smtp.SMTPError{"DATA": {Code: 554, Message: "no"}, "b@x": unknown})
		res, err := SendEach(ctx, s.addr, "l-bounces@x", []string{"a@x", "b@x"}, msg)
		if err == nil || len(res.Accepted)+len(res.Refused) != 0 || !strings.Contains(err.Error(), "DATA") {
			t.Fatalf("%+v %v", res, err)
		}
	})
	t.Run("Send: any refusal is an error", func(t *testing.T) {
		s := newServer(t, map[string]*smtp.SMTPError{"b@x": unknown})
		err := Send(ctx, s.addr, "l-bounces@x", []string{"a@x", "b@x"}, msg)
		if err == nil || !strings.Contains(err.Error(), "RCPT TO:<b@x>") {
			t.Fatalf("%v", err)
		}
		if got, datas := s.taken(); len(got) != 0 || datas != 0 {
			t.Errorf("server took %v (%d DATA)", got, datas)
		}
	})
}
