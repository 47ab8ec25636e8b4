package storetest

import (
	"context"
	"os"
	"testing"
	"time"
)

// Server is a private PostgreSQL server for one test, which the test may
// stop and start again (on the same port, with the same data) to see what
// its code does when the database goes away and comes back. The shared
// server of [PostgresDSN] is never stopped by a test.
type Server struct {
	s *server
}

// PrivatePostgres starts a PostgreSQL server for t alone and removes it
// when the test ends. It needs the server binaries even when
// LISTCRYPT_TEST_POSTGRES is set (an external server cannot be stopped):
// without them the test is skipped, or fails when CI is set. Starting
// one takes about a second.
func PrivatePostgres(t testing.TB) *Server {
	t.Helper()
	s := &server{}
	bin, err := findBinaries()
	if err != nil {
		s.missing, err = err.Error(), nil
	} else {
		err = s.launch(bin)
		t.Cleanup(func() {
			if err := s.stop(); err != nil {
				t.Errorf("storetest: %v", err)
			}
		})
	}
	if s.missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("storetest: %s (CI is set, so this fails instead of skipping)", s.missing)
		}
		t.Skipf("storetest: %s", s.missing)
	}
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return &Server{s: s}
}

// DSN returns the DSN of a new, empty database on the server (its
// postgres://... URL with sslmode=disable).
func (p *Server) DSN(t testing.TB) string {
	t.Helper()
	if p.s.admin == nil {
		t.Fatal("storetest: the private server is stopped")
	}
	name := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.s.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("storetest: create database %s: %v", name, err)
	}
	u := *p.s.base
	u.Path = "/" + name
	return u.String()
}

// Stop shuts the server down the way an administrator's restart does
// (pg_ctl stop -m fast: open sessions are terminated) and waits until it
// is gone; nothing listens on its port afterwards.
func (p *Server) Stop(t testing.TB) {
	t.Helper()
	if err := p.s.halt(); err != nil {
		t.Fatalf("storetest: stop: %v", err)
	}
}

// Start starts a stopped server again on the same port with the same
// data, and waits until it accepts connections.
func (p *Server) Start(t testing.TB) {
	t.Helper()
	if p.s.cmd != nil {
		t.Fatal("storetest: the private server is running")
	}
	if _, err := p.s.startPostgres(p.s.port); err != nil {
		t.Fatalf("storetest: restart on port %d: %v", p.s.port, err)
	}
}
