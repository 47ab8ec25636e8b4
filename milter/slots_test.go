package milter_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/policy/tomlx"
)

// logWatch collects log lines and lets a test wait for one (no polling).
type logWatch struct {
	mu sync.Mutex
	b  bytes.Buffer
	ch chan struct{} // closed and replaced on every write
}

func newLogWatch() *logWatch { return &logWatch{ch: make(chan struct{})} }

func (l *logWatch) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.ch)
	l.ch = make(chan struct{})
	return l.b.Write(p)
}

func (l *logWatch) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the log holds want, at most d.
func (l *logWatch) waitFor(t testing.TB, want string, d time.Duration) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		found, ch := strings.Contains(l.b.String(), want), l.ch
		l.mu.Unlock()
		if found {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no log line with %q after %v:\n%s", want, d, l.String())
		}
	}
}

// slotSite is a fixture site with a member alice and the milter
// connection settings set by tune, started in process.
func slotSite(t *testing.T, tune func(*milterfix.Site)) (*milterfix.Site, *milter.Daemon, *logWatch, *openpgp.Entity) {
	t.Helper()
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	m := &site.Config.Milter
	m.MaxConnections = 4
	m.HandshakeTimeout = tomlx.NewDuration("1m")
	m.IdleTimeout = tomlx.NewDuration("1m")
	m.Timeout = tomlx.NewDuration("1m")
	if tune != nil {
		tune(site)
	}
	logs := newLogWatch()
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := milter.Start(context.Background(), site.Config, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Shutdown(ctx)
		<-done
		if t.Failed() {
			t.Logf("milter log:\n%s", logs.String())
		}
	})
	return site, d, logs, alice
}

// dialer hands out connections and remembers them, so a test can see
// whether the milter closed them.
type dialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *dialer) last() net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[len(d.conns)-1]
}

// client plays an MTA whose every read and write must finish within
// timeout.
func client(addr net.Addr, timeout time.Duration, d *dialer) *gomilter.Client {
	opts := gomilter.ClientOptions{ReadTimeout: timeout, WriteTimeout: timeout,
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptRemoveRcpt | gomilter.OptAddRcpt | gomilter.OptChangeBody}
	if d != nil {
		opts.Dialer = d
	}
	return gomilter.NewClientWithOptions(addr.Network(), addr.String(), opts)
}

// silent opens a connection that never says anything.
func silent(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// idleSession opens a connection that negotiates and then does nothing.
func idleSession(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	d := &dialer{}
	if _, err := client(addr, 10*time.Second, d).Session(); err != nil {
		t.Fatal(err)
	}
	c := d.last()
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports whether the milter closed c within d (replies
// to what the test sent are read and dropped).
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

// Idle clients, silent or negotiated, as many as there are slots and
// more, cannot keep a real MTA transaction out: the MTA's connection
// evicts one of them and its post is served at once, long before any of
// the (one minute) timeouts could have freed a slot.
func TestIdleConnectionsDoNotStarveTheMTA(t *testing.T) {
	for _, tc := range []struct {
		name             string
		silent, sessions int
	}{
		{"max_connections silent", 4, 0},
		{"max_connections negotiated and idle", 0, 4},
		{"more than max_connections, mixed", 5, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			site, d, logs, alice := slotSite(t, nil)
			var idle []net.Conn
			for range tc.sessions {
				idle = append(idle, idleSession(t, d.Addr()))
			}
			for range tc.silent {
				idle = append(idle, silent(t, d.Addr()))
			}
			mta := &mta{t: t, client: client(d.Addr(), 5*time.Second, nil)}
			start := time.Now()
			for i := range 2 {
				post := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice,
					EncryptTo: []*openpgp.Entity{site.ListKey}, Body: fmt.Sprintf("through the crowd %d", i)})
				if r := mta.send("alice@example.org", []string{milterfix.List}, post); !r.delivered() {
					t.Fatalf("post %d: %+v", i, r.action)
				}
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("two posts took %v", took)
			}
			if !strings.Contains(logs.String(), "evicted a connection") {
				t.Fatal("no eviction logged")
			}
			closed := 0
			for _, c := range idle {
				if closedWithin(c, 10*time.Millisecond) {
					closed++
				}
			}
			if closed == 0 {
				t.Fatal("no idle connection was closed")
			}
		})
	}
}

// A transaction that is making progress is never evicted: a new
// connection waits until one goes idle, and then takes that one's slot.
// A transaction whose MTA stays silent for idle_timeout may be evicted.
func TestTransactionsKeepTheirSlots(t *testing.T) {
	_, d, logs, _ := slotSite(t, func(s *milterfix.Site) { s.Config.Milter.MaxConnections = 2 })
	var sessions []*gomilter.ClientSession
	for range 2 {
		s, err := client(d.Addr(), 10*time.Second, nil).Session()
		if err != nil {
			t.Fatal(err)
		}
		if a, err := s.Mail("x@example.net", nil); err != nil || a.Code != gomilter.ActContinue {
			t.Fatal(a, err)
		}
		sessions = append(sessions, s)
	}
	third := make(chan error, 1)
	go func() {
		s, err := client(d.Addr(), 10*time.Second, nil).Session()
		if err == nil {
			s.Close()
		}
		third <- err
	}()
	logs.waitFor(t, "every connection is in a transaction; waiting for a slot", 5*time.Second)
	select {
	case err := <-third:
		t.Fatalf("a third connection was served while both slots held transactions: %v", err)
	default:
	}
	// The first transaction ends: its connection is idle, and evicted.
	if err := sessions[0].Abort(); err != nil {
		t.Fatal(err)
	}
	if err := <-third; err != nil {
		t.Fatalf("third connection: %v", err)
	}
	// The second transaction goes on undisturbed.
	s := sessions[1]
	if a, err := s.Rcpt("bob@example.org", nil); err != nil || a.Code != gomilter.ActContinue {
		t.Fatal(a, err)
	}
	if a, err := s.HeaderField("From", "x@example.net"); err != nil || a.Code != gomilter.ActContinue {
		t.Fatal(a, err)
	}
	if a, err := s.HeaderEnd(); err != nil || a.Code != gomilter.ActAccept {
		t.Fatalf("end of headers: %+v %v", a, err)
	}
}

func TestSilentTransactionEvictedAfterIdleTimeout(t *testing.T) {
	_, d, logs, _ := slotSite(t, func(s *milterfix.Site) {
		s.Config.Milter.MaxConnections = 1
		s.Config.Milter.IdleTimeout = tomlx.NewDuration("200ms")
	})
	dl := &dialer{}
	s, err := client(d.Addr(), 10*time.Second, dl).Session()
	if err != nil {
		t.Fatal(err)
	}
	if a, err := s.Mail("x@example.net", nil); err != nil || a.Code != gomilter.ActContinue {
		t.Fatal(a, err)
	}
	s2, err := client(d.Addr(), 10*time.Second, nil).Session()
	if err != nil {
		t.Fatalf("new connection not served: %v", err)
	}
	defer s2.Close()
	logs.waitFor(t, "silent in a transaction for", time.Second)
	if !closedWithin(dl.last(), time.Second) {
		t.Fatal("the silent transaction's connection is still open")
	}
}

// Each phase has its deadline; a client cannot stretch the handshake by
// sending commands before negotiating.
func TestConnectionDeadlines(t *testing.T) {
	packet := func(code byte, data []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
		return append(append(b, code), data...)
	}
	for _, tc := range []struct {
		name  string
		tune  func(m *milterfix.Site)
		act   func(t *testing.T, addr net.Addr) net.Conn
		phase string
	}{
		{"silent before negotiation", func(s *milterfix.Site) { s.Config.Milter.HandshakeTimeout = tomlx.NewDuration("100ms") },
			func(t *testing.T, addr net.Addr) net.Conn { return silent(t, addr) }, "negotiating"},
		{"commands instead of negotiation", func(s *milterfix.Site) { s.Config.Milter.HandshakeTimeout = tomlx.NewDuration("300ms") },
			func(t *testing.T, addr net.Addr) net.Conn {
				c := silent(t, addr)
				// MAIL and macro packets without negotiating, then silence.
				c.Write(packet('D', []byte("Mi\x00Q1\x00")))
				c.Write(packet('M', []byte("<x@example.net>\x00")))
				return c
			}, "negotiating"},
		{"idle after negotiation", func(s *milterfix.Site) { s.Config.Milter.IdleTimeout = tomlx.NewDuration("100ms") },
			func(t *testing.T, addr net.Addr) net.Conn { return idleSession(t, addr) }, "idle"},
		{"silent in a transaction", func(s *milterfix.Site) { s.Config.Milter.Timeout = tomlx.NewDuration("100ms") },
			func(t *testing.T, addr net.Addr) net.Conn {
				dl := &dialer{}
				s, err := client(addr, 10*time.Second, dl).Session()
				if err != nil {
					t.Fatal(err)
				}
				if a, err := s.Mail("x@example.net", nil); err != nil || a.Code != gomilter.ActContinue {
					t.Fatal(a, err)
				}
				return dl.last()
			}, "transaction"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, d, logs, _ := slotSite(t, tc.tune)
			c := tc.act(t, d.Addr())
			if !closedWithin(c, 5*time.Second) {
				t.Fatal("connection not closed")
			}
			logs.waitFor(t, "milter connection timed out", time.Second)
			if want := "phase=" + tc.phase; !strings.Contains(logs.String(), want) {
				t.Fatalf("log lacks %s", want)
			}
		})
	}
}

// The unix socket gets socket_mode and socket_group; a group that does
// not exist stops the daemon at start with a clear error.
func TestSocketModeAndGroup(t *testing.T) {
	gid := os.Getegid()
	g, err := user.LookupGroupId(strconv.Itoa(gid))
	if err != nil {
		t.Fatal(err)
	}
	other := gid
	if os.Geteuid() == 0 {
		other = 65534 // any gid will do for root, named or not
	}
	for _, tc := range []struct {
		group   string
		mode    string
		wantGid int
		wantErr string
	}{
		{"", "0660", gid, ""},
		{g.Name, "0660", gid, ""},
		{strconv.Itoa(other), "0640", other, ""},
		{"no-such-group-listcrypt", "0660", 0, `socket_group "no-such-group-listcrypt": no such group`},
	} {
		t.Run(tc.group+"/"+tc.mode, func(t *testing.T) {
			site := milterfix.New(t, milterfix.Options{})
			site.Config.Milter.SocketGroup = tc.group
			site.Config.Milter.SocketMode = tc.mode
			d, err := milter.Start(context.Background(), site.Config, slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Start: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer d.Shutdown(context.Background())
			fi, err := os.Stat(d.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if m, _ := strconv.ParseUint(tc.mode, 8, 32); fi.Mode().Perm() != os.FileMode(m) || int(st.Gid) != tc.wantGid {
				t.Fatalf("socket %v group %d, want %s group %d", fi.Mode().Perm(), st.Gid, tc.mode, tc.wantGid)
			}
		})
	}
	// The default is 0660.
	site := milterfix.New(t, milterfix.Options{})
	d, err := milter.Start(context.Background(), site.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	if fi, err := os.Stat(filepath.Clean(d.Addr().String())); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("default socket mode: %v %v", fi.Mode().Perm(), err)
	}
}
