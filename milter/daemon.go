package milter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/listcrypt/listcrypt/keyring/site"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/metrics"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Daemon is a running listcrypt-milter: site (config, store, keys), server.
type Daemon struct {
	site   *site.Site
	cfg    *config.Config
	st     *store.Store
	srv    *Server
	ln     net.Listener
	log    *slog.Logger
	closed chan struct{}
	ctx    context.Context // canceled by Shutdown: stops the periodic work
	cancel context.CancelFunc
	loops  sync.WaitGroup
	once   sync.Once
	err    error

	metricsLn  net.Listener // [metrics] listen, or nil
	metricsSrv *http.Server
}

// SiteOptions is how the daemon opens its site: the passphrase is read at
// once, so that nothing listens unless the list keys can be opened.
var SiteOptions = site.Options{Passphrase: true}

// Start opens the site cfg describes (site.OpenConfig with SiteOptions)
// and starts the daemon on it (StartSite).
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	s, err := site.OpenConfig(ctx, cfg, SiteOptions)
	if err != nil {
		return nil, err
	}
	d, err := StartSite(ctx, s, log)
	if err != nil {
		s.Close()
		return nil, err
	}
	return d, nil
}

// Check is "listcrypt-milter -n" on a site's config: the policy files,
// milter.socket_group, the passphrase file and the database must be
// usable. Every problem is reported, not only the first.
func Check(cfg *config.Config) error {
	var errs []error
	if _, err := policy.LoadDir(cfg.PolicyDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := SocketGroupID(cfg.Milter.SocketGroup); err != nil {
		errs = append(errs, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := site.Check(ctx, cfg); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// StartSite reads the policy files of the opened site s and listens on
// milter.listen. Errors name what failed; nothing listens unless
// everything is in order. On error s stays open (the caller closes it);
// once started the daemon owns s and Shutdown closes it.
func StartSite(ctx context.Context, s *site.Site, log *slog.Logger) (*Daemon, error) {
	cfg, st := s.Config, s.Store
	keys, err := s.Keys()
	if err != nil {
		return nil, err
	}
	set, err := s.Policies()
	if err != nil {
		return nil, err
	}
	for _, addr := range set.Addresses() {
		if _, err := st.GetList(ctx, addr); err != nil {
			log.Warn("list has a policy file but no key; its posts are tempfailed until \"listcrypt list create\"", "list", addr, "err", err)
		}
	}
	var m *metrics.Metrics
	var mln net.Listener
	if cfg.Metrics.Listen != "" {
		if mln, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			return nil, fmt.Errorf("metrics listen: %w", err)
		}
		m = metrics.New()
	}
	ln, err := listen(cfg)
	if err != nil {
		if mln != nil {
			mln.Close()
		}
		return nil, err
	}
	d := &Daemon{site: s, cfg: cfg, st: st, ln: ln, log: log, closed: make(chan struct{}), metricsLn: mln}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.srv = NewServer(Options{Store: st, Keys: keys, Config: cfg, Log: log, Metrics: m}, set)
	if m != nil {
		m.Register(d.srv.gauges())
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
		d.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
		log.Info("metrics", "listen", mln.Addr().String(), "path", "/metrics")
	}
	log.Info("listening", "listen", cfg.Milter.Listen, "lists", len(set.Lists), "database", st.Engine())
	return d, nil
}

// MetricsAddr is where the metrics are served ([metrics] listen), or nil.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metricsLn == nil {
		return nil
	}
	return d.metricsLn.Addr()
}

// Addr is the address the milter listens on.
func (d *Daemon) Addr() net.Addr { return d.ln.Addr() }

// Serve serves until Shutdown. Hourly, and once at the start, it also
// prunes the replay table and expires held posts (post.hold_expiry),
// retrying moderator notices that failed.
func (d *Daemon) Serve() error {
	d.loops.Add(2)
	go func() { defer d.loops.Done(); d.pruneLoop() }()
	go func() { defer d.loops.Done(); d.holdLoop() }()
	if d.metricsSrv != nil {
		d.loops.Add(1)
		go func() {
			defer d.loops.Done()
			if err := d.metricsSrv.Serve(d.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("metrics server", "err", err)
			}
		}()
	}
	return d.srv.Serve(d.ln)
}

// holdInterval is how often the daemon expires held posts.
const holdInterval = time.Hour

// holdLoop expires held posts and retries moderator notices, at start
// and every holdInterval. Several hosts may run it at once: the database
// gives each expired hold and each notice to one of them.
func (d *Daemon) holdLoop() {
	t := time.NewTicker(holdInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(d.ctx, 10*time.Minute)
		if _, err := d.srv.ExpireHolds(ctx, d.srv.opts.Now()); err != nil && d.ctx.Err() == nil {
			d.log.Error("expire held posts", "err", err)
		}
		cancel()
		select {
		case <-d.closed:
			return
		case <-t.C:
		}
	}
}

// Reload re-reads the policy files. On any error the last good policies
// stay and the error says why.
func (d *Daemon) Reload() error {
	set, err := d.site.Policies()
	if err != nil {
		d.log.Error("reload refused; keeping the last good policies", "err", err)
		return err
	}
	d.srv.SetPolicies(set)
	d.log.Info("policies reloaded", "lists", len(set.Lists))
	return nil
}

// Shutdown stops accepting and drains sessions until ctx ends. Calling
// it again returns the first call's result.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.once.Do(func() {
		close(d.closed)
		d.cancel()
		if d.metricsSrv != nil {
			d.metricsSrv.Close()
		} else if d.metricsLn != nil {
			d.metricsLn.Close()
		}
		d.err = d.srv.Shutdown(ctx)
		d.ln.Close() // already closed when Serve ran
		d.loops.Wait()
		// Sessions are drained: say QUIT on the idle connections to the
		// reinjection listener rather than leave them to idle_timeout.
		d.srv.reinjectPool().CloseIdle()
		if network, path, _ := config.ParseListen(d.cfg.Milter.Listen); network == "unix" {
			os.Remove(path)
		}
		if cerr := d.site.Close(); d.err == nil {
			d.err = cerr
		}
	})
	return d.err
}

// pruneLoop drops replay digests older than the longest replay window
// (plus clock skew): such signatures are refused as too old anyway.
func (d *Daemon) pruneLoop() {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		window := 30 * 24 * time.Hour
		for _, p := range d.srv.Policies().Lists {
			if w := p.Post.ReplayWindow.D + p.Post.ClockSkew.D; w > window {
				window = w
			}
		}
		n, err := d.st.PruneReplay(d.ctx, time.Now().Add(-window-time.Hour))
		if err != nil && d.ctx.Err() == nil {
			d.log.Error("prune replay table", "err", err)
		} else if err == nil && n > 0 {
			d.log.Info("pruned replay table", "rows", n)
		}
		// Refused recipients only matter while a retry of their post can
		// still arrive: the same window.
		if n, err := d.st.PruneRefused(d.ctx, time.Now().Add(-window-time.Hour)); err != nil && d.ctx.Err() == nil {
			d.log.Error("prune refused recipients", "err", err)
		} else if err == nil && n > 0 {
			d.log.Info("pruned refused recipients", "rows", n)
		}
		select {
		case <-d.closed:
			return
		case <-t.C:
		}
	}
}

// listen opens the milter socket. A unix socket's folder is created, a
// stale socket removed, then the socket gets milter.socket_group (chown)
// and milter.socket_mode (chmod), in that order: until the chmod the
// socket has the umask's mode, which grants the group nothing more.
func listen(cfg *config.Config) (net.Listener, error) {
	network, addr, err := config.ParseListen(cfg.Milter.Listen)
	if err != nil {
		return nil, err
	}
	if network != "unix" {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.Milter.Listen, err)
		}
		return ln, nil
	}
	gid, err := SocketGroupID(cfg.Milter.SocketGroup)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
		return nil, fmt.Errorf("socket folder: %w", err)
	}
	if fi, err := os.Lstat(addr); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: %s exists and is not a socket", cfg.Milter.Listen, addr)
		}
		if c, err := net.Dial("unix", addr); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another milter is serving this socket", cfg.Milter.Listen)
		}
		os.Remove(addr)
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Milter.Listen, err)
	}
	if gid >= 0 {
		if err := os.Chown(addr, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("milter socket_group %q: give %s to group %d: %w (the daemon must be root or a member of the group)",
				cfg.Milter.SocketGroup, addr, gid, err)
		}
	}
	mode, _ := strconv.ParseUint(cfg.Milter.SocketMode, 8, 32)
	if err := os.Chmod(addr, os.FileMode(mode)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("milter socket_mode %s on %s: %w", cfg.Milter.SocketMode, addr, err)
	}
	return ln, nil
}

// SocketGroupID resolves milter.socket_group: a group name (it must
// exist) or a number; -1 for an empty setting (keep the socket's group).
func SocketGroupID(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	if n, err := strconv.ParseUint(group, 10, 31); err == nil {
		return int(n), nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("milter socket_group %q: no such group: %w", group, err)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("milter socket_group %q: gid %q: %w", group, g.Gid, err)
	}
	return n, nil
}

// LibraryLog is the writer for the standard logger that go-milter
// reports through: dropped MTA connections and protocol noise go to log
// at Debug, a panic it recovered in a session (with its stack) at Error.
func LibraryLog(log *slog.Logger) io.Writer { return libraryLog{log} }

type libraryLog struct{ log *slog.Logger }

func (l libraryLog) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	if strings.HasPrefix(msg, "panic") {
		first, stack, _ := strings.Cut(msg, "\n")
		l.log.Error("panic in a milter session", "panic", first, "stack", stack, "action", "connection dropped; the MTA applies milter_default_action (tempfail)")
		return len(p), nil
	}
	l.log.Debug(msg, "source", "go-milter")
	return len(p), nil
}
