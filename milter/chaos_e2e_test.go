package milter_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/policy"
)

// The chaos test (issue 9, "Proof"): posts go to a 200-member list
// through a real Postfix while processes are killed with SIGKILL at
// random instants, and the sender retries each post (same bytes, same
// envelope) until Postfix answers 250, as a sender's MTA does on a 4xx
// or a dropped connection. Three parts, one seed:
//
//   - milter: the listcrypt-milter process is killed (then restarted)
//     at random instants of a post's transaction: during decryption and
//     the checks, during a batch, between batches, right after its
//     answer, and at the reply to a batch's DATA;
//   - postfix: the public smtpd, the reinjection smtpd or every cleanup
//     of the rig Postfix is killed instead (its master restarts them);
//   - hold-approve: posts held by the policy (post.non_member = "hold")
//     are approved with the listcrypt CLI, "hold approve ID", killed at
//     random instants and run again until it succeeds.
//
// A proxy in front of Postfix's reinjection listener sees every batch:
// its recipients, its Message-ID, whether the final dot reached Postfix
// and Postfix's reply to it. After every kill of a listcrypt process
// (and after every post) the test reads the store: a batch Postfix
// answered 250 whose recipients are not recorded (DeliveredRecipients)
// when its process died is in the window docs/outbound.md names (the
// MTA's 250 for a reinjected batch before our record of it); each such
// batch allows its recipients one more copy. A batch whose final dot
// reached Postfix and got no 250 back (Postfix killed after its commit,
// before its reply) may have been committed as well: its recipients are
// allowed one more copy too, counted apart. Any other duplicate, and any
// member without a copy of a post, fails the test.
//
// The seed is fixed (chaosSeed) and logged; LISTCRYPT_CHAOS_SEED=N runs
// another schedule, or replays the one of a failure. The seed fixes which
// attempts are killed, when and how (the instants are drawn from it);
// what a kill hits still depends on timing.

// chaosSeed is the default seed of the kill schedule.
const chaosSeed uint64 = 20261203

// chaosMembers is the size of the list: four batches of 50.
const chaosMembers = 200

// chaosPosts is the number of posts for the milter and postfix parts.
const chaosPosts = 200

// chaosHolds is the number of held posts approved under kills (each
// approval is a CLI process delivering 4 batches).
const chaosHolds = 20

func TestChaos(t *testing.T) {
	rig.Require(t)
	if testing.Short() {
		t.Skip("kills the milter, Postfix daemons and the CLI for minutes")
	}
	began := time.Now()
	seed := chaosSeed
	if s := os.Getenv("LISTCRYPT_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LISTCRYPT_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("chaos seed %d (another: LISTCRYPT_CHAOS_SEED=N CI=1 go test -race -run 'TestChaos$' ./milter/; one part: -run 'TestChaos$/postfix')", seed)
	env := chaosSetup(t)
	t.Logf("chaos: setup %v", time.Since(began).Round(time.Millisecond))
	t.Run("milter", func(t *testing.T) {
		r := env.newRun(t, "milter", seed, 1)
		r.sendPosts(chaosPosts, r.killMilter)
		r.verify(env.members)
	})
	t.Run("postfix", func(t *testing.T) {
		r := env.newRun(t, "postfix", seed, 2)
		r.sendPosts(chaosPosts, r.killPostfix)
		r.verify(env.members)
	})
	t.Run("hold-approve", func(t *testing.T) {
		r := env.newRun(t, "hold-approve", seed, 3)
		r.approveHolds(chaosHolds)
		r.verify(env.members)
	})
	t.Logf("chaos: whole test %v (seed %d)", time.Since(began).Round(time.Millisecond), seed)
}

// chaosEnv is what the parts share: one site with one list, one rig
// Postfix, the proxy, the milter process and the CLI binary.
type chaosEnv struct {
	t        *testing.T
	site     *milterfix.Site
	pf       *rig.Postfix
	proxy    *chaosProxy
	milter   *chaosMilter
	cli      string // listcrypt binary
	list     string
	bounce   string
	members  []string
	keys     map[string]*openpgp.Entity
	listKey  *openpgp.Entity
	outsider *openpgp.Entity // signs the posts that are held
}

const chaosList = "chaos@lists.example.org"

func chaosSetup(t *testing.T) *chaosEnv {
	env := &chaosEnv{t: t, list: chaosList, bounce: "chaos-bounces@lists.example.org"}
	env.proxy = newChaosProxy(t)
	env.site = milterfix.New(t, milterfix.Options{Reinject: env.proxy.addr()})
	// A policy that holds the posts of non-members: the hold-approve
	// part sends those; members' posts are accepted.
	pol := strings.Replace(policy.Template(env.list, "owner@example.org"), "non_member = ", "non_member = \"hold\" # ", 1)
	if err := os.WriteFile(filepath.Join(env.site.Config.PolicyDir, env.list+".toml"), []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	env.members, env.keys = addList(t, env.site, env.list, chaosMembers)
	env.listKey = listKeyOf(t, env.site, env.list)
	env.outsider = milterfix.NewKey(t, "outsider@example.net")

	// Two reinjection connections (the default, set here so the test
	// does not depend on it): up to two batches are between Postfix's
	// 250 and their records at once. The accounting is per batch (the
	// proxy sees each), so it holds for any number.
	cfgSrc, err := os.ReadFile(env.site.Config.File)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cfgSrc, []byte("[reinject]\n")) || bytes.Contains(cfgSrc, []byte("\nconnections")) {
		t.Fatalf("unexpected site config:\n%s", cfgSrc)
	}
	cfgSrc = bytes.Replace(cfgSrc, []byte("[reinject]\n"), []byte("[reinject]\nconnections = 2\n"), 1)
	if err := os.WriteFile(env.site.Config.File, cfgSrc, 0o644); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", dir+"/",
		"github.com/listcrypt/listcrypt/cmd/listcrypt-milter", "github.com/listcrypt/listcrypt/cmd/listcrypt")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env.cli = filepath.Join(dir, "listcrypt")

	_, sock, _ := strings.Cut(env.site.Config.Milter.Listen, ":")
	env.pf = rig.Start(t, rig.Options{MilterAddr: "unix:" + sock, ExtraMain: map[string]string{
		// The master throttles a service for service_throttle_time
		// (60s) when one of its processes dies before it served a
		// client: killed idle smtpd or cleanup processes would stall
		// the test for a minute.
		"service_throttle_time": "1s",
	}})
	env.proxy.setTarget(env.pf.ReinjectAddr())
	env.milter = &chaosMilter{bin: filepath.Join(dir, "listcrypt-milter"), cfg: env.site.Config.File, sock: sock, logs: &logBuf{}}
	if err := env.milter.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.milter.kill()
		if t.Failed() {
			t.Logf("milter log (last 200 lines):\n%s", chaosLastLines(env.milter.logs.String(), 200))
		}
	})
	return env
}

func chaosLastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// chaosMilter is the listcrypt-milter process under test.
type chaosMilter struct {
	bin  string
	cfg  string
	sock string
	logs *logBuf
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs the milter and returns once its socket accepts connections.
func (m *chaosMilter) start() error {
	cmd := exec.Command(m.bin, "-c", m.cfg)
	cmd.Stderr = m.logs
	cmd.Stdout = m.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", m.sock); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("milter exited at start: %s", chaosLastLines(m.logs.String(), 30))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("milter did not listen within 30s: %s", chaosLastLines(m.logs.String(), 30))
		}
		time.Sleep(5 * time.Millisecond) // polling the socket
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (m *chaosMilter) kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// chaosTxn is one SMTP transaction the proxy saw on its way to the
// reinjection listener.
type chaosTxn struct {
	msgID   string    // the message's Message-ID ("" until its header passed)
	rcpts   []string  // recipients Postfix accepted
	dot     bool      // the final dot was passed on to Postfix
	reply   int       // Postfix's reply to the final dot; 0: none yet; -1: connection lost first
	replied time.Time // when the reply came
	began   time.Time
	checked bool // accounted by a store check
}

// chaosProxy relays SMTP to Postfix's reinjection listener and keeps a
// log of the transactions, parsing both directions (commands may be
// pipelined: replies are matched to commands in order). When the client
// side goes away with a final dot still unanswered, the proxy waits for
// Postfix's reply to it: that is when Postfix has committed the batch.
type chaosProxy struct {
	ln     net.Listener
	target atomic.Value // string
	mu     sync.Mutex
	txns   []*chaosTxn
	change chan struct{} // closed and replaced on every reply
	hookMu sync.Mutex
	hook   func(kind string, n int) // "dot" or "reply", n-th since the hook was set
	hookN  map[string]int
}

func newChaosProxy(t *testing.T) *chaosProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &chaosProxy{ln: ln, change: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *chaosProxy) addr() string       { return p.ln.Addr().String() }
func (p *chaosProxy) setTarget(a string) { p.target.Store(a) }

// setHook calls f (in the proxy's goroutine) after each final dot passed
// to Postfix and after each reply to one passed back; nil removes it.
func (p *chaosProxy) setHook(f func(kind string, n int)) {
	p.hookMu.Lock()
	p.hook, p.hookN = f, map[string]int{}
	p.hookMu.Unlock()
}

func (p *chaosProxy) fire(kind string) {
	p.hookMu.Lock()
	f := p.hook
	var n int
	if f != nil {
		p.hookN[kind]++
		n = p.hookN[kind]
	}
	p.hookMu.Unlock()
	if f != nil {
		f(kind, n)
	}
}

func (p *chaosProxy) changed() {
	close(p.change)
	p.change = make(chan struct{})
}

// settle waits until every final dot passed to Postfix has its reply
// (or its connection is gone).
// settle waits for Postfix's reply to every final dot the proxy
// forwarded; one that never comes counts as a reply lost (errNoReply).
func (r *chaosRun) settle() {
	err := r.env.proxy.settle()
	if errors.Is(err, errNoReply) {
		r.t.Logf("%s: %v (counted as replies lost)", r.name, err)
		return
	}
	if err != nil {
		r.t.Fatal(err)
	}
}

// errNoReply: settle gave up waiting for Postfix's reply to a final dot.
var errNoReply = errors.New("proxy: no reply")

func (p *chaosProxy) settle() error {
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		pending := 0
		for _, x := range p.txns {
			if x.dot && x.reply == 0 {
				pending++
			}
		}
		ch := p.change
		p.mu.Unlock()
		if pending == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			// Postfix neither answered nor closed (a process of its
			// killed mid-transaction): the batch may or may not have
			// been committed, as when its side is gone (fromServer).
			// Such a batch may arrive twice; verify still fails on any
			// loss and on any other duplicate.
			p.mu.Lock()
			for _, x := range p.txns {
				if x.dot && x.reply == 0 {
					x.reply = -1
				}
			}
			p.changed()
			p.mu.Unlock()
			return fmt.Errorf("%w: %d final dots without a reply after 60s", errNoReply, pending)
		}
	}
}

// since reports the transactions begun at or after t0: how many, and
// whether one is open (no reply to its final dot yet).
func (p *chaosProxy) since(t0 time.Time) (n int, open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range p.txns {
		if !x.began.Before(t0) {
			n++
			if x.reply == 0 {
				open = true
			}
		}
	}
	return n, open
}

type chaosCmd struct {
	kind string // "other", "mail", "rcpt", "data", "dot"
	txn  *chaosTxn
	rcpt string
}

// chaosConn is the parsing state of one proxied connection (guarded by
// the proxy's mu).
type chaosConn struct {
	pending    []chaosCmd
	cur        *chaosTxn
	inData     bool // between the 354 and the final dot
	inBody     bool // past the message's header
	clientGone bool
}

func (cs *chaosConn) dotPending() bool {
	for _, c := range cs.pending {
		if c.kind == "dot" {
			return true
		}
	}
	return false
}

func (p *chaosProxy) serve(c net.Conn) {
	target, _ := p.target.Load().(string)
	u, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	cs := &chaosConn{pending: []chaosCmd{{kind: "other"}}} // the greeting
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.fromServer(u, c, cs)
	}()
	p.fromClient(c, u, cs)
	p.mu.Lock()
	cs.clientGone = true
	waitDot := cs.dotPending()
	p.mu.Unlock()
	if waitDot {
		// The client died after its final dot: Postfix commits the batch
		// and answers; keep the connection until it has.
		select {
		case <-done:
		case <-time.After(60 * time.Second):
		}
	}
	u.Close()
	<-done
	c.Close()
}

func (p *chaosProxy) fromClient(c, u net.Conn, cs *chaosConn) {
	r := bufio.NewReader(c)
	w := bufio.NewWriter(u)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			dot := p.clientLine(cs, line)
			if _, werr := w.WriteString(line); werr != nil {
				return
			}
			if r.Buffered() == 0 || dot {
				if werr := w.Flush(); werr != nil {
					return
				}
			}
			if dot {
				p.fire("dot")
			}
		}
		if err != nil {
			return
		}
	}
}

// clientLine parses one line from the client; it reports the final dot.
func (p *chaosProxy) clientLine(cs *chaosConn, line string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cs.inData {
		switch {
		case line == ".\r\n" || line == ".\n":
			cs.inData = false
			cs.cur.dot = true
			cs.pending = append(cs.pending, chaosCmd{kind: "dot", txn: cs.cur})
			return true
		case cs.inBody:
		case line == "\r\n" || line == "\n":
			cs.inBody = true
		case len(line) > 11 && strings.EqualFold(line[:11], "message-id:"):
			cs.cur.msgID = strings.TrimSpace(line[11:])
		}
		return false
	}
	up := strings.ToUpper(line)
	switch {
	case strings.HasPrefix(up, "MAIL FROM:"):
		cs.cur = &chaosTxn{began: time.Now()}
		p.txns = append(p.txns, cs.cur)
		cs.pending = append(cs.pending, chaosCmd{kind: "mail", txn: cs.cur})
	case strings.HasPrefix(up, "RCPT TO:"):
		a := line[len("RCPT TO:"):]
		if i := strings.IndexByte(a, '<'); i >= 0 {
			a = a[i+1:]
		}
		if i := strings.IndexByte(a, '>'); i >= 0 {
			a = a[:i]
		}
		cs.pending = append(cs.pending, chaosCmd{kind: "rcpt", txn: cs.cur, rcpt: strings.ToLower(strings.TrimSpace(a))})
	case strings.TrimSpace(up) == "DATA":
		cs.pending = append(cs.pending, chaosCmd{kind: "data", txn: cs.cur})
	default:
		cs.pending = append(cs.pending, chaosCmd{kind: "other"})
	}
	return false
}

func (p *chaosProxy) fromServer(u, c net.Conn, cs *chaosConn) {
	defer func() {
		// Postfix's side is gone: a final dot still unanswered may or may
		// not have been committed.
		p.mu.Lock()
		for _, cmd := range cs.pending {
			if cmd.kind == "dot" && cmd.txn.reply == 0 {
				cmd.txn.reply = -1
			}
		}
		cs.pending = nil
		p.changed()
		p.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(u)
	w := bufio.NewWriter(c)
	var reply []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		reply = append(reply, line)
		if len(line) >= 4 && line[3] == '-' {
			continue // more lines of this reply follow
		}
		code, _ := strconv.Atoi(line[:min(3, len(line))])
		p.mu.Lock()
		var cmd chaosCmd
		if len(cs.pending) > 0 {
			cmd, cs.pending = cs.pending[0], cs.pending[1:]
		}
		switch cmd.kind {
		case "data":
			if code == 354 {
				cs.inData, cs.inBody = true, false
			}
		case "rcpt":
			if code/100 == 2 && cmd.txn != nil {
				cmd.txn.rcpts = append(cmd.txn.rcpts, cmd.rcpt)
			}
		case "dot":
			cmd.txn.reply, cmd.txn.replied = code, time.Now()
			p.changed()
		}
		gone := cs.clientGone && !cs.dotPending()
		p.mu.Unlock()
		for _, l := range reply {
			w.WriteString(l)
		}
		w.Flush() // the client may be dead: Postfix's reply still counts
		reply = reply[:0]
		if cmd.kind == "dot" {
			p.fire("reply")
		}
		if gone {
			return
		}
	}
}

// chaosPost is one post of a part.
type chaosPost struct {
	n        int
	msgID    string
	id       []byte // the post id (deliver.PostID)
	from     string
	msg      []byte
	attempts int
	holdID   int64
}

// chaosKill is one kill and where it landed.
type chaosKill struct {
	post, attempt int
	target        string
	how           string // "timer" or "dot N" / "reply N" (at a batch's final dot or its reply)
	where         string // what the post's attempt was doing
	window        int    // batches answered 250 by Postfix and unrecorded when the process died
	at            time.Time
	noop          bool  // the process had ended already: nothing was killed
	err           error // the kill's own failure (restarting the milter, ...)
}

// chaosRun is one part of the test.
type chaosRun struct {
	t       *testing.T
	env     *chaosEnv
	name    string
	seed    uint64
	rng     *rand.Rand
	began   time.Time
	posts   map[string]*chaosPost // by Message-ID
	order   []*chaosPost
	window  map[string]map[string]int // Message-ID → member → extra copies allowed: 250 before the record
	mtaSide map[string]map[string]int // Message-ID → member → extra copies allowed: dot committed, reply lost
	kills   []*chaosKill
	mtaDots int // batches with a final dot and no 250 back
	// Batches in the window when their process died: after the final
	// dot, before Postfix's 250 (Postfix was committing them), and after
	// the 250, before the record.
	windowCommit, windowRecord int
	failures                   []string
	typical                    time.Duration // moving average of an attempt's duration without a kill
}

func (env *chaosEnv) newRun(t *testing.T, name string, seed, stream uint64) *chaosRun {
	return &chaosRun{t: t, env: env, name: name, seed: seed, rng: rand.New(rand.NewPCG(seed, stream)), began: time.Now(),
		posts: map[string]*chaosPost{}, window: map[string]map[string]int{}, mtaSide: map[string]map[string]int{},
		typical: 300 * time.Millisecond}
}

func (r *chaosRun) failf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

// newPost builds post n of the part: from a member (accepted), or from
// the outsider (held).
func (r *chaosRun) newPost(n int, held bool) *chaosPost {
	env := r.env
	from, key := env.members[0], env.keys[env.members[0]]
	if held {
		from, key = "outsider@example.net", env.outsider
	}
	msgID := fmt.Sprintf("<chaos-%s-%04d@example.org>", r.name, n)
	msg := milterfix.Build(r.t, milterfix.Post{From: from, MessageID: msgID, SignWith: key,
		EncryptTo: []*openpgp.Entity{env.listKey}, Body: fmt.Sprintf("chaos %s post %d", r.name, n)})
	msg = bytes.ReplaceAll(msg, []byte("To: "+milterfix.List), []byte("To: "+env.list))
	id, err := deliver.PostID(msg)
	if err != nil {
		r.t.Fatal(err)
	}
	p := &chaosPost{n: n, msgID: msgID, id: id, from: from, msg: msg}
	r.posts[msgID] = p
	r.order = append(r.order, p)
	return p
}

// killPlan decides whether to kill during this attempt, and when: a
// random instant after its start (up to a little past its usual
// duration, so some kills come right after the answer), or at the
// final dot or the reply of a random batch.
func (r *chaosRun) killPlan(attempt int) (how string, delay time.Duration, kind string, nth int, ok bool) {
	p := [...]float64{0, 0.3, 0.2, 0.1}
	if attempt >= len(p) || r.rng.Float64() >= p[attempt] {
		return "", 0, "", 0, false
	}
	switch x := r.rng.Float64(); {
	case x < 0.6:
		delay = time.Duration(r.rng.Int64N(int64(r.typical)*5/4 + 1))
		return "timer", delay, "", 0, true
	case x < 0.8:
		kind = "dot"
	default:
		kind = "reply"
	}
	nth = 1 + r.rng.IntN(chaosMembers/50)
	delay = time.Duration(r.rng.Int64N(int64(2 * time.Millisecond)))
	return fmt.Sprintf("%s %d", kind, nth), delay, kind, nth, true
}

// arm schedules kill (which must tolerate running after the attempt)
// per the plan; wait blocks until it ran or can no longer run.
func (r *chaosRun) arm(attempt int, start time.Time, kill func(k *chaosKill)) (wait func()) {
	how, delay, kind, nth, ok := r.killPlan(attempt)
	if !ok {
		return func() {}
	}
	k := &chaosKill{attempt: attempt, how: how}
	fired := make(chan struct{})
	var once sync.Once
	run := func() {
		once.Do(func() {
			kill(k)
			if !k.noop {
				r.kills = append(r.kills, k) // read by the test's goroutine after wait
			}
			close(fired)
		})
	}
	if kind == "" {
		timer := time.AfterFunc(time.Until(start.Add(delay)), run)
		return func() { <-fired; timer.Stop() }
	}
	r.env.proxy.setHook(func(k string, n int) {
		if k == kind && n == nth {
			time.AfterFunc(delay, run)
		}
	})
	return func() {
		r.env.proxy.setHook(nil)
		// The hook may have fired just now: give its timer the time to
		// run, else cancel the plan.
		select {
		case <-fired:
		case <-time.After(delay + 50*time.Millisecond):
			once.Do(func() { close(fired) })
		}
	}
}

// where says what the current attempt was doing when the kill came.
func (r *chaosRun) where(start time.Time, returned *atomic.Bool) string {
	if returned.Load() {
		return "after the answer"
	}
	n, open := r.env.proxy.since(start)
	switch {
	case n == 0:
		return "before reinjection (decryption, checks, claim)"
	case open:
		return "during a batch"
	default:
		return "after a batch (between batches or before the answer)"
	}
}

// sendPosts sends n posts, each retried until Postfix answers 250, with
// kill killing something at random instants.
func (r *chaosRun) sendPosts(n int, kill func(p *chaosPost, start time.Time, returned *atomic.Bool) func(k *chaosKill)) {
	env := r.env
	for i := range n {
		p := r.newPost(i, false)
		// The first posts run without kills: they measure a post.
		warm := i < 3
		for attempt := 1; ; attempt++ {
			p.attempts = attempt
			start := time.Now()
			var returned atomic.Bool
			before := len(r.kills)
			wait := func() {}
			if !warm {
				wait = r.arm(attempt, start, kill(p, start, &returned))
			}
			err := rig.Send(env.pf.SMTPAddr(), p.from, []string{env.list}, p.msg)
			took := time.Since(start)
			returned.Store(true)
			wait()
			killed := len(r.kills) > before
			if killed && r.kills[len(r.kills)-1].err != nil {
				r.t.Fatalf("%s post %d: %v", r.name, i, r.kills[len(r.kills)-1].err)
			}
			if err == nil {
				if !killed {
					r.typical = (r.typical*7 + took) / 8
				}
				break
			}
			var se *rig.SMTPError
			if errors.As(err, &se) && !se.Temporary() {
				r.t.Fatalf("%s post %d attempt %d: permanent refusal %v (seed %d)", r.name, i, attempt, err, r.seed)
			}
			if attempt > 200 {
				r.t.Fatalf("%s post %d: still refused after %d attempts: %v (seed %d)", r.name, i, attempt, err, r.seed)
			}
			if !killed {
				// Refused without a kill of ours in this attempt (Postfix
				// restarting a service, the claim of an attempt still
				// running): back off a little, as an MTA would.
				time.Sleep(time.Duration(min(attempt, 20)) * 10 * time.Millisecond)
			}
		}
		r.settle()
		r.check(nil)
	}
}

// killMilter kills the milter process, accounts in the store for the
// batches it had handed to Postfix, and starts it again.
func (r *chaosRun) killMilter(p *chaosPost, start time.Time, returned *atomic.Bool) func(k *chaosKill) {
	return func(k *chaosKill) {
		k.post, k.target = p.n, "milter"
		k.where = r.where(start, returned)
		k.at = time.Now()
		r.env.milter.kill()
		if k.err = r.env.proxy.settle(); k.err != nil {
			return
		}
		r.check(k)
		k.err = r.env.milter.start()
	}
}

// killPostfix kills every process of one Postfix daemon: the public
// smtpd (with the milter), the reinjection smtpd, or cleanup.
func (r *chaosRun) killPostfix(p *chaosPost, start time.Time, returned *atomic.Bool) func(k *chaosKill) {
	pf := r.env.pf
	targets := []struct {
		name, program, service string
	}{
		{"public smtpd", "smtpd", pf.SMTPAddr()},
		{"reinjection smtpd", "smtpd", pf.ReinjectAddr()},
		{"cleanup", "cleanup", ""},
	}
	tg := targets[r.rng.IntN(len(targets))]
	return func(k *chaosKill) {
		k.post, k.target = p.n, tg.name
		k.where = r.where(start, returned)
		procs := pf.ServiceProcs(tg.program, tg.service)
		k.at = time.Now()
		for _, pr := range procs {
			syscall.Kill(pr.PID, syscall.SIGKILL)
		}
		if len(procs) == 0 {
			k.target += " (none running)"
		}
	}
}

// check accounts, against the store, for the batches the proxy saw
// answered since the last check. Called when no process is working on
// the post: after k's kill (its process is gone) or after the post was
// answered 250 (k nil).
func (r *chaosRun) check(k *chaosKill) {
	ctx := context.Background()
	px := r.env.proxy
	px.mu.Lock()
	var todo []chaosTxn
	var mark []*chaosTxn
	for _, x := range px.txns {
		if x.checked || (x.dot && x.reply == 0) {
			continue
		}
		mark = append(mark, x)
		if x.dot {
			todo = append(todo, *x)
		}
	}
	for _, x := range mark {
		x.checked = true
	}
	px.mu.Unlock()
	delivered := map[string]map[string]bool{}
	for _, x := range todo {
		p := r.posts[x.msgID]
		if p == nil {
			continue // a notice to the owners or moderators
		}
		if x.reply != 250 {
			// The final dot reached Postfix and no 250 came back: Postfix
			// may have committed the batch before it died.
			r.mtaDots++
			chaosAdd(r.mtaSide, x.msgID, x.rcpts)
			continue
		}
		d := delivered[x.msgID]
		if d == nil {
			addrs, _, err := r.env.site.Admin.Store.DeliveredRecipients(ctx, r.env.list, p.id)
			if err != nil {
				r.failf("post %d: store: %v", p.n, err)
				continue
			}
			d = map[string]bool{}
			for _, a := range addrs {
				d[a] = true
			}
			delivered[x.msgID] = d
		}
		recorded := true
		for _, a := range x.rcpts {
			if !d[a] {
				recorded = false
			}
		}
		switch {
		case recorded:
		case k != nil:
			k.window++
			if x.replied.After(k.at) {
				r.windowCommit++ // Postfix was committing the batch when the process died
			} else {
				r.windowRecord++ // the 250 had come; the record had not been made
			}
			chaosAdd(r.window, x.msgID, x.rcpts)
		default:
			r.failf("post %d: a batch of %d recipients was answered 250 by Postfix and is not recorded, and no process was killed", p.n, len(x.rcpts))
		}
	}
}

func chaosAdd(m map[string]map[string]int, id string, rcpts []string) {
	if m[id] == nil {
		m[id] = map[string]int{}
	}
	for _, a := range rcpts {
		m[id][a]++
	}
}

// approveHolds sends n posts that the policy holds, then approves each
// with "listcrypt hold approve ID", killing the CLI at random instants
// and running it again until it succeeds.
func (r *chaosRun) approveHolds(n int) {
	env := r.env
	ctx := context.Background()
	before, err := env.site.Admin.Store.Holds(ctx, env.list)
	if err != nil {
		r.t.Fatal(err)
	}
	known := map[int64]bool{}
	for _, h := range before {
		known[h.ID] = true
	}
	for i := range n {
		p := r.newPost(i, true)
		for attempt := 1; ; attempt++ {
			err := rig.Send(env.pf.SMTPAddr(), p.from, []string{env.list}, p.msg)
			if err == nil {
				break
			}
			if attempt > 50 {
				r.t.Fatalf("held post %d: %v", i, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	holds, err := env.site.Admin.Store.Holds(ctx, env.list)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, h := range holds {
		if known[h.ID] {
			continue
		}
		hp, err := env.site.Admin.ShowHold(ctx, h.ID)
		if err != nil {
			r.t.Fatal(err)
		}
		id, err := deliver.PostID(hp.Raw)
		if err != nil {
			r.t.Fatal(err)
		}
		for _, p := range r.order {
			if bytes.Equal(p.id, id) {
				p.holdID = h.ID
			}
		}
	}
	for _, p := range r.order {
		if p.holdID == 0 {
			r.t.Fatalf("post %d (%s) was not held", p.n, p.msgID)
		}
	}
	warm := 2
	for _, p := range r.order {
		for attempt := 1; ; attempt++ {
			p.attempts = attempt
			if attempt > 30 {
				r.t.Fatalf("hold %d: not approved after %d runs", p.holdID, attempt)
			}
			var out bytes.Buffer
			cmd := exec.Command(env.cli, "-c", env.site.Config.File, "hold", "approve", strconv.FormatInt(p.holdID, 10))
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			if err := cmd.Start(); err != nil {
				r.t.Fatal(err)
			}
			before := len(r.kills)
			var returned atomic.Bool
			wait := func() {}
			if p.n >= warm {
				wait = r.arm(attempt, start, func(k *chaosKill) {
					k.post, k.target = p.n, "listcrypt hold approve"
					k.where = r.where(start, &returned)
					if returned.Load() {
						k.noop = true
					} else {
						k.at = time.Now()
						cmd.Process.Signal(syscall.SIGKILL)
					}
				})
			}
			err := cmd.Wait()
			took := time.Since(start)
			returned.Store(true)
			wait()
			killed := len(r.kills) > before
			r.settle()
			if err == nil {
				if !killed {
					r.typical = (r.typical*7 + took) / 8
				}
				r.check(nil)
				break
			}
			if killed {
				r.check(r.kills[len(r.kills)-1])
				continue
			}
			if strings.Contains(out.String(), "is being delivered right now") {
				// The killed run was a process of this machine: its claim
				// must be taken over at once, not after its lease.
				r.t.Fatalf("hold approve %d after a kill waits for the killed run's claim:\n%s", p.holdID, out.String())
			}
			if attempt > 1 && strings.Contains(out.String(), "is already approved and was delivered") {
				// The run killed last had delivered it and recorded so,
				// and died before it exited: the hold is done.
				r.check(nil)
				break
			}
			r.t.Fatalf("hold approve %d: %v\n%s", p.holdID, err, out.String())
		}
	}
}

// verify waits until Postfix has delivered everything it took, then
// checks every member got every post, and more than one copy only where
// a kill explains it.
func (r *chaosRun) verify(members []string) {
	t := r.t
	env := r.env
	sendDone := time.Since(r.began)
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := chaosCopies(env.pf.Sink().Messages(), env.bounce)
		missing := 0
		for _, p := range r.order {
			for _, m := range members {
				if got[p.msgID][m] == 0 {
					missing++
				}
			}
		}
		// A queue file cleanup never completed (killed) is no message
		// (rig.QueueEmpty).
		empty, err := env.pf.QueueEmpty()
		if err != nil {
			t.Fatal(err)
		}
		if missing == 0 && empty {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("after 90s: %d copies missing; queue empty: %v", missing, empty)
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		env.pf.Sink().Wait(ctx, len(env.pf.Sink().Messages())+1)
		cancel()
	}
	got := chaosCopies(env.pf.Sink().Messages(), env.bounce)
	lost, dups, byWindow, byMTA := 0, 0, 0, 0
	for _, p := range r.order {
		var lostHere []string
		for _, m := range members {
			c := got[p.msgID][m]
			switch {
			case c == 0:
				lost++
				lostHere = append(lostHere, m)
			case c > 1:
				dups += c - 1
				w, x := r.window[p.msgID][m], r.mtaSide[p.msgID][m]
				if c-1 > w+x {
					r.failf("post %d (%s): %s got %d copies; kills explain %d (250 before the record) + %d (dot committed, reply lost)",
						p.n, p.msgID, m, c, w, x)
				}
				byWindow += min(c-1, w)
				byMTA += max(0, c-1-w)
			}
		}
		if len(lostHere) > 0 {
			r.failf("post %d (%s), %d attempts: LOST for %d members (e.g. %s); reinjected batches seen for it: %s",
				p.n, p.msgID, p.attempts, len(lostHere), lostHere[0], r.describe(p.msgID))
		}
		for a := range got[p.msgID] {
			if !chaosContains(members, a) {
				r.failf("post %d: a copy went to %s, not a member", p.n, a)
			}
		}
	}
	where := map[string]int{}
	targets := map[string]int{}
	hows := map[string]int{}
	inWindow := 0
	for _, k := range r.kills {
		where[k.where]++
		targets[k.target]++
		how, _, _ := strings.Cut(k.how, " ")
		hows[how]++
		if k.window > 0 {
			inWindow++
			hows[how+" in the window"]++
		}
	}
	attempts := 0
	for _, p := range r.order {
		attempts += p.attempts
	}
	t.Logf("chaos %s: %d posts x %d members, %d attempts (an unkilled one takes about %v), %d kills (%s); where: %s; how: %s", r.name, len(r.order), len(members),
		attempts, r.typical.Round(time.Millisecond), len(r.kills), chaosCounts(targets), chaosCounts(where), chaosCounts(hows))
	t.Logf("chaos %s: %d kills landed in the window (a batch committed by Postfix, not recorded): %d batches (%d past the final dot, Postfix committing; %d past Postfix's 250, not yet recorded); %d batches had a final dot and no 250 back (Postfix killed); duplicate copies %d (%d explained by the window, %d by lost replies); lost %d; %v (sending %v)",
		r.name, inWindow, r.windowCommit+r.windowRecord, r.windowCommit, r.windowRecord, r.mtaDots, dups, byWindow, byMTA, lost,
		time.Since(r.began).Round(time.Millisecond), sendDone.Round(time.Millisecond))
	if len(r.failures) > 0 {
		if len(r.failures) > 30 {
			r.failures = append(r.failures[:30], fmt.Sprintf("... and %d more", len(r.failures)-30))
		}
		t.Errorf("chaos %s failed (replay: LISTCRYPT_CHAOS_SEED=%d CI=1 go test -race -run 'TestChaos$/%s' ./milter/):\n%s",
			r.name, r.seed, r.name, strings.Join(r.failures, "\n"))
		for _, k := range r.kills {
			t.Logf("kill: post %d attempt %d, %s, %s, %s, window batches %d", k.post, k.attempt, k.target, k.how, k.where, k.window)
		}
	}
}

// describe lists the batches the proxy saw for a post: recipients, reply.
func (r *chaosRun) describe(msgID string) string {
	px := r.env.proxy
	px.mu.Lock()
	defer px.mu.Unlock()
	var parts []string
	for _, x := range px.txns {
		if x.msgID == msgID {
			parts = append(parts, fmt.Sprintf("[%d rcpts, dot %v, reply %d]", len(x.rcpts), x.dot, x.reply))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func chaosContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func chaosCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	return b.String()
}

// chaosCopies counts the list copies the sink received from bounce, per
// Message-ID and envelope recipient.
func chaosCopies(msgs []rig.Delivered, bounce string) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, m := range msgs {
		if m.From != bounce {
			continue
		}
		id := chaosHeader(m.Data, "Message-ID")
		if out[id] == nil {
			out[id] = map[string]int{}
		}
		for _, r := range m.To {
			out[id][strings.ToLower(r)]++
		}
	}
	return out
}

// headerValue is the value of the first header field name in msg.
func chaosHeader(msg []byte, name string) string {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, l := range strings.Split(string(hdr), "\r\n") {
		if len(l) > len(name) && l[len(name)] == ':' && strings.EqualFold(l[:len(name)], name) {
			return strings.TrimSpace(l[len(name)+1:])
		}
	}
	return ""
}
