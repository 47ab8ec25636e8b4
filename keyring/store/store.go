package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	_ "modernc.org/sqlite" // registers "sqlite"
)

// Engine names returned by [Store.Engine].
const (
	EngineSQLite   = "sqlite"
	EnginePostgres = "postgres"
)

// Sentinel errors. Methods return errors wrapping these; test with errors.Is.
var (
	// ErrNotFound: the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a row with the same key already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: a compare-and-set found a state other than expected.
	ErrConflict = errors.New("state changed concurrently")
	// ErrExpired: a challenge is past its expiry time.
	ErrExpired = errors.New("expired")
	// ErrUsed: a challenge has already been used.
	ErrUsed = errors.New("already used")
	// ErrUnavailable: no connection to the database server could be made
	// (PostgreSQL stopped, restarting, unreachable or not answering
	// within the DSN's connect_timeout). The caller should answer
	// "try again later"; the store reconnects by itself on the next call.
	ErrUnavailable = errors.New("database unreachable")
)

func init() {
	// modernc.org/sqlite registers as "sqlite", which sqlx does not know.
	sqlx.BindDriver("sqlite", sqlx.QUESTION)
}

// Store is the state database. It is safe for concurrent use.
type Store struct {
	db     *sqlx.DB
	engine string
}

// Open opens the database named by dsn without changing it; call
// [Store.Migrate] before use. dsn is "sqlite:PATH" for an SQLite file, or a
// lib/pq URL "postgres://..." / "postgresql://..." (carry sslmode in it;
// connect_timeout, in seconds, defaults to [DefaultConnectTimeout]).
func Open(ctx context.Context, dsn string) (*Store, error) {
	var (
		driver, source, engine string
	)
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" {
			return nil, errors.New("store: sqlite DSN has no path (want sqlite:PATH)")
		}
		if path == ":memory:" || strings.HasPrefix(path, "file:") {
			return nil, fmt.Errorf("store: sqlite DSN %q: want a file path (in-memory databases are per connection)", dsn)
		}
		if strings.ContainsAny(path, "?#") {
			return nil, fmt.Errorf("store: sqlite path %q must not contain '?' or '#'", path)
		}
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		// Every commit is durable when it returns (the WAL is synced),
		// but for the delivery records (relaxedTx): docs/outbound.md.
		q.Add("_pragma", "synchronous(FULL)")
		q.Add("_pragma", "foreign_keys(1)")
		q.Set("_txlock", "immediate")
		q.Set("_time_format", "sqlite")
		driver, source, engine = "sqlite", path+"?"+q.Encode(), EngineSQLite
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		driver, source, engine = "postgres", withConnectTimeout(dsn), EnginePostgres
	default:
		scheme, _, ok := strings.Cut(dsn, ":")
		if !ok {
			scheme = dsn
		}
		if len(scheme) > 20 {
			scheme = scheme[:20] + "..."
		}
		return nil, fmt.Errorf("store: unknown database scheme %q: want sqlite:PATH, postgres://... or postgresql://...", scheme)
	}
	var db *sqlx.DB
	if engine == EnginePostgres {
		c, err := pq.NewConnector(source)
		if err != nil {
			return nil, fmt.Errorf("store: open %s: %w", engine, err)
		}
		db = sqlx.NewDb(sql.OpenDB(dialErrors{c}), driver)
		// A connection idle this long is closed rather than reused: one a
		// firewall or NAT dropped silently would otherwise hang the next
		// query until the caller's deadline. Connections to a server that
		// restarted fail at once (lib/pq reports them bad) and are
		// replaced within the same call.
		db.SetConnMaxIdleTime(5 * time.Minute)
	} else {
		var err error
		if db, err = sqlx.Open(driver, source); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", engine, err)
		}
	}
	if err := db.PingContext(ctx); err != nil {
		err = fmt.Errorf("store: connect to %s: %w", engine, err)
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return &Store{db: db, engine: engine}, nil
}

// DefaultConnectTimeout bounds connecting to PostgreSQL (TCP, TLS and
// startup) when the DSN carries no connect_timeout and PGCONNECT_TIMEOUT
// is unset. Without a bound lib/pq would wait for an unreachable host
// until the caller's deadline (a post's is two minutes), holding a
// connection slot of the MTA all that time.
const DefaultConnectTimeout = 5 * time.Second

// withConnectTimeout adds connect_timeout to a postgres:// URL that has
// none.
func withConnectTimeout(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn // lib/pq reports it
	}
	q := u.Query()
	if q.Has("connect_timeout") || os.Getenv("PGCONNECT_TIMEOUT") != "" {
		return dsn
	}
	q.Set("connect_timeout", strconv.Itoa(int(DefaultConnectTimeout/time.Second)))
	u.RawQuery = q.Encode()
	return u.String()
}

// dialErrors marks a failure to connect to the server with
// [ErrUnavailable], so that the one log line of a failed post says the
// database is unreachable rather than only "connection refused".
type dialErrors struct{ driver.Connector }

func (c dialErrors) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return conn, nil
}

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Engine reports the database engine: [EngineSQLite] or [EnginePostgres].
func (s *Store) Engine() string { return s.engine }

// q rebinds a query written with "?" placeholders for the engine.
func (s *Store) q(query string) string { return s.db.Rebind(query) }

// tx runs fn in a transaction, committing if fn returns nil.
func (s *Store) tx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	return finish(tx, fn)
}

// finish runs fn in tx, then commits, or rolls back if fn failed.
func finish(tx *sqlx.Tx, fn func(tx *sqlx.Tx) error) error {
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// relaxedTx runs fn in a transaction whose commit does not wait for the
// disk: on SQLite with synchronous=NORMAL on its connection (in WAL mode
// the commit is in the WAL, in the OS's page cache, when it returns: a
// crash of the process keeps it, a crash of the machine may lose it
// until the next commit with synchronous=FULL, which syncs the WAL with
// it), on PostgreSQL with synchronous_commit off for this transaction (a
// crash of the server may lose it until the next synchronous commit
// flushes the WAL past it). Only for records whose loss repeats work
// and never loses or admits anything: the delivery records.
func (s *Store) relaxedTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	if s.engine == EnginePostgres {
		return s.tx(ctx, func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit TO off`); err != nil {
				return err
			}
			return fn(tx)
		})
	}
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer conn.Close()
	defer func() {
		// Back to FULL before the connection returns to the pool; one
		// that cannot be restored is discarded, never reused relaxed.
		// (Deferred before the switch: a switch that took effect but
		// reported an error is undone too.)
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA synchronous = FULL`); err != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	return finish(tx, fn)
}

// ts is the form every time is written in: UTC, microseconds (PostgreSQL's
// precision). On SQLite the text form then also sorts in time order.
func ts(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// nowOr returns ts(t), or the current time when t is zero.
func nowOr(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return ts(t)
}

func affected(res sql.Result) (int64, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("rows affected: %w", err)
	}
	return n, nil
}
