package reinject

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Pool defaults; [reinject] connections and idle_timeout set them.
const (
	DefaultConnections = 2
	DefaultIdleTimeout = 5 * time.Second

	// MaxConnectionAge ends a connection after its transaction once it
	// is this old. Postfix's smtpd reads changed lookup tables (access
	// maps on the listener) only between connections: a connection kept
	// busy forever would keep the old ones.
	MaxConnectionAge = 30 * time.Second
)

// Pool keeps up to Size SMTP connections to one listener and runs
// transactions on them: a connection carries one transaction at a time,
// many one after another, and is dropped on any error. A connection
// idle for IdleTimeout is closed (with QUIT), so the MTA's smtpd does
// not hold a process for it. Safe for concurrent use: callers beyond
// Size wait for a connection.
type Pool struct {
	addr string
	size int
	idle time.Duration

	slots chan struct{} // one token per connection in use (capacity size)
	mu    sync.Mutex
	free  []*client // idle connections, most recently used last
	timer *time.Timer
	dials atomic.Int64
}

// NewPool returns a pool of at most size connections (DefaultConnections
// when size < 1) to addr (HOST:PORT), each closed after idle of
// inactivity (DefaultIdleTimeout when idle <= 0).
func NewPool(addr string, size int, idle time.Duration) *Pool {
	if size < 1 {
		size = DefaultConnections
	}
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	return &Pool{addr: addr, size: size, idle: idle, slots: make(chan struct{}, size)}
}

// Size is the most connections the pool opens at once.
func (p *Pool) Size() int { return p.size }

// Dials is the number of connections the pool opened so far.
func (p *Pool) Dials() int64 { return p.dials.Load() }

// SendEach is the package's SendEach over the pool's connections, with
// the message streamed from msg (CRLF or LF lines; dot-stuffing and
// line ends are done on the way).
func (p *Pool) SendEach(ctx context.Context, from string, to []string, msg io.WriterTo) (Result, error) {
	return p.send(ctx, from, to, msg, true, false)
}

// SendEachVERP is SendEach asking the listener for per-recipient VERP
// ("MAIL FROM:<from> XVERP=+=") when it offers XVERP (Postfix does to
// its authorized_verp_clients, $mynetworks by default): each recipient's
// copy then leaves with the envelope sender bounce.VERP(from, recipient).
// A listener that does not offer it (Sendmail) gets the plain MAIL FROM.
func (p *Pool) SendEachVERP(ctx context.Context, from string, to []string, msg io.WriterTo) (Result, error) {
	return p.send(ctx, from, to, msg, true, true)
}

// Send is the package's Send over the pool's connections.
func (p *Pool) Send(ctx context.Context, from string, to []string, msg io.WriterTo) error {
	_, err := p.send(ctx, from, to, msg, false, false)
	return err
}

func (p *Pool) send(ctx context.Context, from string, to []string, msg io.WriterTo, perRecipient, verp bool) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("reinject to %s: waiting for a connection: %w", p.addr, ctx.Err())
	}
	defer func() { <-p.slots }()
	for attempt := 0; ; attempt++ {
		c, err := p.get(ctx, attempt > 0)
		if err != nil {
			return Result{}, fmt.Errorf("reinject to %s: %w", p.addr, err)
		}
		res, err := p.sendOn(c, ctx, from, to, msg, perRecipient, verp)
		if err == nil {
			p.put(c)
			return res, nil
		}
		c.close()
		// An idle connection the server had closed: nothing of the
		// message went out, so it goes again on a fresh connection.
		if errors.Is(err, errNoTransaction) && attempt == 0 {
			continue
		}
		return Result{}, fmt.Errorf("reinject to %s: %w", p.addr, err)
	}
}

// sendOn runs one transaction on c. A panic under way (in msg's
// WriteTo, say) closes c before it goes on up: a connection left in the
// middle of DATA would hold an smtpd of the MTA until its timeout.
func (p *Pool) sendOn(c *client, ctx context.Context, from string, to []string, msg io.WriterTo, perRecipient, verp bool) (Result, error) {
	defer func() {
		if v := recover(); v != nil {
			c.close()
			panic(v)
		}
	}()
	return c.send(ctx, from, to, msg, perRecipient, verp)
}

// get returns an idle connection, or a new one (always when fresh).
func (p *Pool) get(ctx context.Context, fresh bool) (*client, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 && !fresh {
		c := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	p.dials.Add(1)
	return dial(ctx, p.addr)
}

// put returns a healthy connection to the idle list, or ends it when
// it is spent or MaxConnectionAge old.
func (p *Pool) put(c *client) {
	if c.spent || time.Since(c.born) >= MaxConnectionAge {
		c.quit()
		return
	}
	c.idleSince = time.Now()
	p.mu.Lock()
	p.free = append(p.free, c)
	if p.timer == nil {
		p.timer = time.AfterFunc(p.idle, p.reap)
	}
	p.mu.Unlock()
}

// reap closes the connections idle for the pool's idle time and
// schedules itself again while connections remain.
func (p *Pool) reap() {
	now := time.Now()
	var old []*client
	p.mu.Lock()
	keep := p.free[:0]
	for _, c := range p.free {
		if now.Sub(c.idleSince) >= p.idle {
			old = append(old, c)
		} else {
			keep = append(keep, c)
		}
	}
	clear(p.free[len(keep):])
	p.free = keep
	p.timer = nil
	if len(p.free) > 0 {
		next := p.idle - now.Sub(p.free[0].idleSince)
		p.timer = time.AfterFunc(max(next, time.Millisecond), p.reap)
	}
	p.mu.Unlock()
	for _, c := range old {
		c.quit()
	}
}

// CloseIdle closes every idle connection now (with QUIT). The pool stays
// usable: the next transaction opens a new connection.
func (p *Pool) CloseIdle() {
	p.mu.Lock()
	old := p.free
	p.free = nil
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.mu.Unlock()
	for _, c := range old {
		c.quit()
	}
}

// The process's pools, one per listener and settings: every session of
// the milter shares one bounded set of connections to the MTA.
var (
	sharedMu sync.Mutex
	shared   = map[poolKey]*Pool{}
)

type poolKey struct {
	addr string
	size int
	idle time.Duration
}

// Shared returns the process's pool for addr with these settings,
// making it on first use. It holds no goroutine and, once idle for
// idle, no connection.
func Shared(addr string, size int, idle time.Duration) *Pool {
	k := poolKey{addr, size, idle}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	p := shared[k]
	if p == nil {
		p = NewPool(addr, size, idle)
		shared[k] = p
	}
	return p
}

// CloseIdle closes the idle connections of every shared pool (at
// shutdown).
func CloseIdle() {
	sharedMu.Lock()
	ps := make([]*Pool, 0, len(shared))
	for _, p := range shared {
		ps = append(ps, p)
	}
	sharedMu.Unlock()
	for _, p := range ps {
		p.CloseIdle()
	}
}
