package milter

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Connection slots: every MTA connection takes one of
// milter.max_connections slots. What a connection may cost depends on its
// phase, read from the milter packets that pass through it:
//
//   - negotiating: accepted, option negotiation not done. It must finish
//     within milter.handshake_timeout of the accept, whatever it sends.
//   - idle: negotiated, between transactions. It may stay so for
//     milter.idle_timeout from the end of its last transaction; macro and
//     abort packets do not extend that.
//   - transaction: from MAIL, RCPT or any message packet to our final
//     answer or an abort. Each read waits at most milter.timeout.
//
// When every slot is taken, a new connection evicts, in this order, the
// oldest negotiating connection, the longest idle one, or the transaction
// whose MTA has been silent longest if that silence reaches
// milter.idle_timeout. Only when every slot holds a transaction making
// progress does the new connection wait for a slot. So silent or idle
// clients can never keep the MTA out (docs/config.md).

type phase uint8

const (
	phaseNegotiating phase = iota
	phaseIdle
	phaseTransaction
)

func (p phase) String() string {
	switch p {
	case phaseNegotiating:
		return "negotiating"
	case phaseIdle:
		return "idle"
	}
	return "transaction"
}

// slotListener admits connections into slots (see above).
type slotListener struct {
	net.Listener
	srv *Server
}

func (l *slotListener) Accept() (net.Conn, error) {
	s := l.srv
	raw, err := l.Listener.Accept()
	if err != nil {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return nil, gomilter.ErrServerClosed
		}
		return nil, err
	}
	now := time.Now()
	c := &trackedConn{Conn: raw, srv: s, id: s.connSeq.Add(1), accepted: now, since: now}
	max := s.opts.Config.Milter.MaxConnections
	waited := false
	s.mu.Lock()
	for {
		if s.closed {
			s.mu.Unlock()
			raw.Close()
			return nil, gomilter.ErrServerClosed
		}
		if len(s.conns) < max {
			break
		}
		now = time.Now()
		if v, why := s.victim(now); v != nil {
			delete(s.conns, v)
			v.evicted = true
			s.mu.Unlock()
			s.opts.Log.Warn("milter slots full: evicted a connection", "conn", v.id, "phase", v.phase.String(),
				"why", why, "max_connections", max, "for_conn", c.id)
			v.Conn.Close() // its session goroutine ends and calls Close
			s.mu.Lock()
			continue
		}
		// Every slot holds a transaction making progress: wait until a
		// slot frees, a connection goes idle, or a silent one becomes
		// evictable.
		wake := s.nextEvictable()
		s.mu.Unlock()
		if !waited {
			waited = true
			s.opts.Log.Warn("milter slots full: every connection is in a transaction; waiting for a slot", "max_connections", max, "for_conn", c.id)
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if !wake.IsZero() {
			timer = time.NewTimer(time.Until(wake))
			fire = timer.C
		}
		select {
		case <-s.changed:
		case <-fire:
		case <-s.done:
		}
		if timer != nil {
			timer.Stop()
		}
		s.mu.Lock()
	}
	// The handshake deadline counts from admission, not from a wait for
	// a slot.
	c.accepted = time.Now()
	c.since = c.accepted
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	return c, nil
}

// victim picks the connection to evict for a new one, or nil (s.mu held).
func (s *Server) victim(now time.Time) (*trackedConn, string) {
	idleLimit := s.opts.Config.Milter.IdleTimeout.D
	var best *trackedConn
	bestRank, bestAge := 3, time.Duration(-1)
	for c := range s.conns {
		var rank int
		var age time.Duration
		switch c.phase {
		case phaseNegotiating:
			rank, age = 0, now.Sub(c.accepted)
		case phaseIdle:
			rank, age = 1, now.Sub(c.since)
		default:
			if idleLimit <= 0 || c.waiting.IsZero() || now.Sub(c.waiting) < idleLimit {
				continue
			}
			rank, age = 2, now.Sub(c.waiting)
		}
		if rank < bestRank || (rank == bestRank && age > bestAge) {
			best, bestRank, bestAge = c, rank, age
		}
	}
	if best == nil {
		return nil, ""
	}
	why := []string{"not negotiated after ", "idle for ", "silent in a transaction for "}[bestRank] + bestAge.Round(time.Millisecond).String()
	return best, why
}

// nextEvictable is when the first silent transaction becomes evictable,
// or zero (s.mu held).
func (s *Server) nextEvictable() time.Time {
	idleLimit := s.opts.Config.Milter.IdleTimeout.D
	if idleLimit <= 0 {
		return time.Time{}
	}
	var first time.Time
	for c := range s.conns {
		if c.phase == phaseTransaction && !c.waiting.IsZero() {
			if t := c.waiting.Add(idleLimit); first.IsZero() || t.Before(first) {
				first = t
			}
		}
	}
	return first
}

// signal wakes an Accept waiting for a slot.
func (s *Server) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// trackedConn is one MTA connection in a slot. It follows the milter
// packets both ways to know the connection's phase and sets deadlines to
// match. Read and Write run on the connection's session goroutine; the
// fields under "s.mu" are also read by Accept and Shutdown.
type trackedConn struct {
	net.Conn
	srv      *Server
	id       uint64
	accepted time.Time
	in, out  packetScanner

	// guarded by srv.mu
	phase   phase
	since   time.Time // start of the phase
	waiting time.Time // when the pending Read started; zero outside Read
	evicted bool

	once sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	s := c.srv
	cfg := s.opts.Config.Milter
	now := time.Now()
	s.mu.Lock()
	ph := c.phase
	var deadline time.Time
	var limit time.Duration
	switch ph {
	case phaseNegotiating:
		limit = cfg.HandshakeTimeout.D
		deadline = c.accepted.Add(limit)
	case phaseIdle:
		limit = cfg.IdleTimeout.D
		deadline = c.since.Add(limit)
	default:
		limit = cfg.Timeout.D
		deadline = now.Add(limit)
	}
	if limit <= 0 {
		deadline = time.Time{}
	}
	c.waiting = now
	s.mu.Unlock()
	if ph == phaseTransaction {
		s.signal() // a waiting Accept recomputes when this one is evictable
	}
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	s.mu.Lock()
	c.waiting = time.Time{}
	s.mu.Unlock()
	if n > 0 {
		c.in.scan(p[:n], c.command)
	}
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		s.opts.Log.Info("milter connection timed out", "conn", c.id, "phase", ph.String(), "limit", limit.String())
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	if t := c.srv.opts.Config.Milter.Timeout.D; t > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(t)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.out.scan(p[:n], c.response)
	}
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		c.srv.opts.Log.Info("milter connection timed out writing to the MTA", "conn", c.id)
	}
	return n, err
}

// command notes a packet from the MTA. Commands sent before negotiation
// do not leave that phase: the handshake deadline cannot be dodged.
func (c *trackedConn) command(code byte) {
	switch gomilter.Code(code) {
	case gomilter.CodeMail, gomilter.CodeRcpt, gomilter.CodeHeader, gomilter.CodeEOH,
		gomilter.CodeBody, gomilter.CodeEOB, gomilter.CodeData:
		c.setPhase(phaseTransaction, false)
	case gomilter.CodeAbort:
		c.setPhase(phaseIdle, false)
	}
}

// response notes a packet to the MTA: the negotiation reply ends the
// handshake, a final answer ends the transaction.
func (c *trackedConn) response(code byte) {
	switch code {
	case byte(gomilter.CodeOptNeg):
		c.setPhase(phaseIdle, true)
	case byte(gomilter.ActAccept), byte(gomilter.ActReject), byte(gomilter.ActDiscard),
		byte(gomilter.ActTempFail), byte(gomilter.ActReplyCode):
		c.setPhase(phaseIdle, false)
	}
}

// setPhase moves the connection to phase to; negotiating is left only by
// the negotiation reply (negotiated).
func (c *trackedConn) setPhase(to phase, negotiated bool) {
	s := c.srv
	s.mu.Lock()
	changed := false
	if (c.phase == phaseNegotiating) == negotiated && c.phase != to {
		c.phase, c.since, changed = to, time.Now(), true
	}
	s.mu.Unlock()
	if changed && to == phaseIdle {
		s.signal() // an idle connection can be evicted for a waiting one
	}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		s := c.srv
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.signal()
		s.wg.Done()
	})
	return err
}

// packetScanner follows milter packet framing (4-byte length, then the
// command or response code and its data) across arbitrary reads.
type packetScanner struct {
	hdr     [4]byte
	n       int    // header bytes seen
	left    uint32 // bytes of the current packet still to come
	newPack bool   // the next byte is a packet's code
}

func (p *packetScanner) scan(b []byte, code func(byte)) {
	for len(b) > 0 {
		if p.left == 0 {
			k := copy(p.hdr[p.n:], b)
			p.n += k
			b = b[k:]
			if p.n == 4 {
				p.n = 0
				p.left = binary.BigEndian.Uint32(p.hdr[:])
				p.newPack = p.left > 0
			}
			continue
		}
		if p.newPack {
			p.newPack = false
			code(b[0])
		}
		k := uint32(len(b))
		if k > p.left {
			k = p.left
		}
		p.left -= k
		b = b[k:]
	}
}
