// Package storetest gives tests migrated [store.Store]s on both engines:
// SQLite in t.TempDir(), and PostgreSQL on a real server.
//
// PostgreSQL: if the environment variable LISTCRYPT_TEST_POSTGRES holds a
// DSN (postgres://USER@HOST:PORT/DB?sslmode=disable; the user may create
// databases; PostgreSQL 13 or later), every test gets a fresh database
// created on that server and dropped afterwards. Otherwise the first test
// that asks starts a private server (initdb into a temporary directory,
// listening on 127.0.0.1 on a free port, run as user "postgres" when the
// test runs as root) and every test gets a fresh database on it. The
// binaries are found on PATH or in /usr/lib/postgresql/*/bin. When they
// are missing the test is skipped, or fails if the environment variable
// CI is set, so CI cannot pass by skipping.
//
// A package whose tests use [Postgres], [PostgresDSN], [Each] or [EachDSN]
// must stop that server when its tests end, from TestMain:
//
//	func TestMain(m *testing.M) { storetest.Main(m) }
//
// Without it the helpers fail the test. (On Linux the server also dies
// with the test binary if the binary is killed.)
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
)

// EnvPostgres names the environment variable that points the helpers at an
// existing PostgreSQL server instead of starting one.
const EnvPostgres = "LISTCRYPT_TEST_POSTGRES"

var mainCalled atomic.Bool

// Main runs the tests, stops the PostgreSQL server if one was started,
// runs cleanups (what a package's tests and benchmarks share for the
// whole process, e.g. a binary built once), and exits with the tests'
// status. Call it from TestMain.
func Main(m *testing.M, cleanups ...func()) {
	mainCalled.Store(true)
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	if err := srv.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "storetest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// SQLiteDSN returns the DSN of a new, empty SQLite database in t.TempDir().
func SQLiteDSN(t testing.TB) string {
	t.Helper()
	return "sqlite:" + filepath.Join(t.TempDir(), "state.db")
}

// SQLite returns a migrated store on a new SQLite database in t.TempDir(),
// closed when the test ends.
func SQLite(t testing.TB) *store.Store {
	t.Helper()
	return openMigrated(t, SQLiteDSN(t))
}

// PostgresDSN returns the DSN of a new, empty PostgreSQL database, dropped
// when the test ends.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("storetest: call storetest.Main(m) from TestMain in this package (it stops the PostgreSQL server)")
	}
	srv.once.Do(srv.start)
	if srv.missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("storetest: %s (CI is set, so this fails instead of skipping)", srv.missing)
		}
		t.Skipf("storetest: %s", srv.missing)
	}
	if srv.err != nil {
		t.Fatalf("storetest: %v", srv.err)
	}
	name := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := srv.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("storetest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := srv.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("storetest: drop database %s: %v", name, err)
		}
	})
	u := *srv.base
	u.Path = "/" + name
	return u.String()
}

// Postgres returns a migrated store on a new PostgreSQL database, closed
// and dropped when the test ends. See the package documentation for where
// the server comes from.
func Postgres(t testing.TB) *store.Store {
	t.Helper()
	return openMigrated(t, PostgresDSN(t))
}

// Each runs fn as a subtest on each engine ("sqlite", "postgres"), with a
// fresh migrated store.
func Each(t *testing.T, fn func(t *testing.T, s *store.Store)) {
	t.Helper()
	t.Run(store.EngineSQLite, func(t *testing.T) { fn(t, SQLite(t)) })
	t.Run(store.EnginePostgres, func(t *testing.T) { fn(t, Postgres(t)) })
}

// EachDSN runs fn as a subtest on each engine with the DSN of a fresh,
// empty (not migrated) database, for tests that open stores themselves.
func EachDSN(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Helper()
	t.Run(store.EngineSQLite, func(t *testing.T) { fn(t, SQLiteDSN(t)) })
	t.Run(store.EnginePostgres, func(t *testing.T) { fn(t, PostgresDSN(t)) })
}

func openMigrated(t testing.TB, dsn string) *store.Store {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	// Registered after the database's own cleanup, so it runs before it.
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("storetest: %v", err)
		}
	})
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// server is a PostgreSQL server: the one shared by the tests of one test
// binary (srv), or a private one a fault test stops and starts ([Server]).
type server struct {
	once    sync.Once
	missing string // why the server is unavailable (skip, or fail on CI)
	err     error  // the server should be there but is not
	base    *url.URL
	admin   *sql.DB

	// Set only for a server this process started.
	bin    string
	dir    string
	data   string
	sock   string
	port   int
	pgCtl  string
	attr   *syscall.SysProcAttr
	cmd    *exec.Cmd
	exited chan struct{}
}

// srv is the PostgreSQL server shared by the tests of one test binary.
var srv = &server{}

func (srv *server) start() {
	if dsn := os.Getenv(EnvPostgres); dsn != "" {
		u, err := url.Parse(dsn)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			srv.err = fmt.Errorf("%s must be a postgres:// URL", EnvPostgres)
			return
		}
		srv.base = u
		srv.admin, srv.err = connect(dsn, 10*time.Second)
		return
	}
	bin, err := findBinaries()
	if err != nil {
		srv.missing = err.Error()
		return
	}
	if err := srv.launch(bin); err != nil {
		srv.err = err
		if serr := srv.stop(); serr != nil {
			srv.err = errors.Join(err, serr)
		}
	}
}

// findBinaries returns the directory holding initdb, postgres and pg_ctl.
func findBinaries() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first.
	sort.Slice(found, func(i, j int) bool { return pgMajor(found[i]) > pgMajor(found[j]) })
	dirs = append(dirs, found...)
	for _, d := range dirs {
		ok := true
		for _, name := range []string{"initdb", "postgres", "pg_ctl"} {
			if fi, err := os.Stat(filepath.Join(d, name)); err != nil || fi.IsDir() {
				ok = false
			}
		}
		if ok {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; install postgresql or set " + EnvPostgres)
}

func pgMajor(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func (srv *server) launch(bin string) error {
	attr := &syscall.SysProcAttr{}
	setParentDeathSignal(attr)
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			srv.missing = "running as root and there is no user \"postgres\" to run the server as"
			return nil
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		attr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	srv.attr = attr

	dir, err := os.MkdirTemp("", "listcrypt-pg-")
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	srv.dir = dir
	srv.data = filepath.Join(dir, "data")
	sock := filepath.Join(dir, "sock")
	if err := os.Mkdir(sock, 0o700); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if uid >= 0 {
		for _, p := range []string{dir, sock} {
			if err := os.Chown(p, uid, gid); err != nil {
				return fmt.Errorf("postgres: %w", err)
			}
		}
	}
	srv.pgCtl = filepath.Join(bin, "pg_ctl")
	srv.bin, srv.sock = bin, sock

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", srv.data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = attr
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("postgres: initdb: %v\n%s", err, out)
	}

	// The port is free when we look; another process may take it before
	// the server binds, so try again on a bind failure.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		retry, err := srv.startPostgres(port)
		if err == nil {
			return nil
		}
		lastErr = err
		if !retry {
			break
		}
	}
	return lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// startPostgres starts the server on port and waits until it accepts
// connections. retry reports a failure worth another port.
func (srv *server) startPostgres(port int) (retry bool, err error) {
	bin, sock := srv.bin, srv.sock
	logPath := filepath.Join(srv.dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return false, fmt.Errorf("postgres: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", srv.data,
		"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(port), "-k", sock,
		// A throw-away server: durability buys nothing.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300")
	cmd.SysProcAttr = srv.attr
	cmd.Dir = srv.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("postgres: start: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit is reported through exited and the log
		close(exited)
	}()
	srv.cmd, srv.exited = cmd, exited

	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(30 * time.Second)
	wait := 10 * time.Millisecond
	for {
		db, perr := connect(dsn, time.Second)
		if perr == nil {
			u, _ := url.Parse(dsn)
			srv.base, srv.admin, srv.port = u, db, port
			return false, nil
		}
		select {
		case <-exited:
			srv.cmd = nil
			logText, _ := os.ReadFile(logPath)
			return strings.Contains(string(logText), "could not bind"),
				fmt.Errorf("postgres: server exited while starting:\n%s", tail(logText, 2000))
		case <-time.After(wait):
		}
		if time.Now().After(deadline) {
			logText, _ := os.ReadFile(logPath)
			return false, fmt.Errorf("postgres: not ready after 30s: %v\n%s", perr, tail(logText, 2000))
		}
		wait = min(wait*2, 200*time.Millisecond)
	}
}

func connect(dsn string, timeout time.Duration) (*sql.DB, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close() // the ping error is the one that matters
		return nil, err
	}
	return db, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// stop closes the admin connection and stops and removes a server this
// process started. It is safe to call when nothing was started.
func (srv *server) stop() error {
	errs := []error{srv.halt()}
	if srv.dir != "" {
		if err := os.RemoveAll(srv.dir); err != nil {
			errs = append(errs, err)
		}
		srv.dir = ""
	}
	return errors.Join(errs...)
}

// halt closes the admin connection and stops the server process (fast
// shutdown: open sessions are terminated), keeping its data directory.
func (srv *server) halt() error {
	var errs []error
	if srv.admin != nil {
		if err := srv.admin.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close admin connection: %w", err))
		}
		srv.admin = nil
	}
	if srv.cmd != nil {
		stop := exec.Command(srv.pgCtl, "stop", "-D", srv.data, "-m", "fast", "-w", "-t", "30")
		stop.SysProcAttr = &syscall.SysProcAttr{Credential: srv.attr.Credential}
		stop.Dir = srv.dir
		if out, err := stop.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("pg_ctl stop: %v: %s", err, out))
			_ = srv.cmd.Process.Kill() // last resort; the error is reported above
		}
		select {
		case <-srv.exited:
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("postgres did not exit"))
		}
		srv.cmd = nil
	}
	return errors.Join(errs...)
}
