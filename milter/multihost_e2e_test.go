package milter_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// mhTrials is how many races TestTwoPostfixHostsRaceForOnePost runs:
// LISTCRYPT_MULTIHOST_TRIALS, default 200 (make test; make race-long
// runs 1,000).
func mhTrials(t *testing.T) int { return envTrials(t, "LISTCRYPT_MULTIHOST_TRIALS", 200) }

// mhSMTP is one SMTP client session held open before the final dot of
// DATA, so that two sessions can end their messages at one instant.
type mhSMTP struct {
	conn net.Conn
	tp   *textproto.Conn
}

// mhOpen connects to addr and sends EHLO, MAIL, RCPT, DATA and the whole
// message (dot-stuffed, flushed to the socket), but not the final dot.
func mhOpen(addr, from string, rcpts []string, msg []byte) (*mhSMTP, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		conn.Close()
		return nil, err
	}
	s := &mhSMTP{conn: conn, tp: textproto.NewConn(conn)}
	step := func(want int, format string, args ...any) error {
		if format != "" {
			if err := s.tp.PrintfLine(format, args...); err != nil {
				return err
			}
		}
		if _, text, err := s.tp.ReadResponse(want); err != nil {
			return fmt.Errorf("%q: %w (%s)", format, err, text)
		}
		return nil
	}
	err = step(220, "")
	if err == nil {
		err = step(250, "EHLO client.rig.test")
	}
	if err == nil {
		err = step(250, "MAIL FROM:<%s>", from)
	}
	for _, r := range rcpts {
		if err == nil {
			err = step(250, "RCPT TO:<%s>", r)
		}
	}
	if err == nil {
		err = step(354, "DATA")
	}
	if err == nil {
		err = mhWriteStuffed(s.tp.W, msg)
	}
	if err == nil {
		err = s.tp.W.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// mhWriteStuffed writes msg with CRLF line ends and dot-stuffing, ending
// in CRLF (the final dot is not written).
func mhWriteStuffed(w *bufio.Writer, msg []byte) error {
	for _, line := range bytes.SplitAfter(msg, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) > 0 && line[0] == '.' {
			w.WriteByte('.')
		}
		w.Write(line)
		if _, err := w.WriteString("\r\n"); err != nil {
			return err
		}
	}
	return nil
}

// finish writes the final dot, reads the server's reply to the message
// and quits.
func (s *mhSMTP) finish() (code int, text string, err error) {
	defer s.conn.Close()
	if _, err := s.tp.W.WriteString(".\r\n"); err != nil {
		return 0, "", err
	}
	if err := s.tp.W.Flush(); err != nil {
		return 0, "", err
	}
	code, text, err = s.tp.ReadResponse(0)
	if _, ok := err.(*textproto.Error); ok || err == nil {
		err = nil
		_ = s.tp.PrintfLine("QUIT")
	}
	return code, text, err
}

// mhReply is what one rig answered to the message.
type mhReply struct {
	code int
	text string
	err  error
}

func (r mhReply) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("%d %s", r.code, r.text)
}

// mhRace hands msg to every address and releases the final dots of all
// DATA phases at one instant (each goroutine waits on one channel).
func mhRace(addrs []string, from string, rcpts []string, msg []byte) []mhReply {
	out := make([]mhReply, len(addrs))
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i, addr := range addrs {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			s, err := mhOpen(addr, from, rcpts, msg)
			ready.Done()
			if err != nil {
				out[i].err = err
				return
			}
			<-start
			out[i].code, out[i].text, out[i].err = s.finish()
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return out
}

// mhTally indexes what the sinks of several rigs received: list copies
// (envelope sender bounce) by Message-ID, rig and recipient. It reads
// only what arrived since its last call.
type mhTally struct {
	bounce string
	sinks  []*rig.Sink
	seen   []int
	copies map[string][]map[string]int // message id -> per rig: recipient -> copies
	other  int                         // messages not from the bounce address
}

func mhNewTally(bounce string, sinks ...*rig.Sink) *mhTally {
	return &mhTally{bounce: bounce, sinks: sinks, seen: make([]int, len(sinks)), copies: map[string][]map[string]int{}}
}

func (ty *mhTally) update() {
	for i, s := range ty.sinks {
		msgs := s.Messages()
		for _, m := range msgs[ty.seen[i]:] {
			if m.From != ty.bounce {
				ty.other++
				continue
			}
			id := mhMessageID(m.Data)
			if ty.copies[id] == nil {
				ty.copies[id] = make([]map[string]int, len(ty.sinks))
				for j := range ty.sinks {
					ty.copies[id][j] = map[string]int{}
				}
			}
			for _, r := range m.To {
				ty.copies[id][i][r]++
			}
		}
		ty.seen[i] = len(msgs)
	}
}

// total is the number of copies of message id, over all rigs.
func (ty *mhTally) total(id string) int {
	n := 0
	for _, perRig := range ty.copies[id] {
		for _, c := range perRig {
			n += c
		}
	}
	return n
}

// wait blocks until the rigs' sinks hold at least want copies of message
// id, or ctx ends.
func (ty *mhTally) wait(ctx context.Context, id string, want int) error {
	for {
		ty.update()
		if ty.total(id) >= want {
			return nil
		}
		// Wake up on the next arrival at any sink.
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for i, s := range ty.sinks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Wait(wctx, ty.seen[i]+1); err == nil {
					cancel()
				}
			}()
		}
		wg.Wait()
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// mhMessageID is the value of the first Message-ID field of a message's
// header.
func mhMessageID(data []byte) string {
	hdr, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	for _, line := range bytes.Split(hdr, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(k), "Message-ID") {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}

// Two MTA hosts, each a real Postfix with its own listcrypt-milter, both
// milters on one real PostgreSQL, get the same post within microseconds:
// the test opens an SMTP session to each Postfix, sends the envelope and
// the message to both, and writes both final dots at one instant. Per
// race: exactly one host accepts and delivers (the other answers 451
// "being delivered by another server", or 250 when it looked after the
// winner finished and took the post for the sender's retry of a
// completed post, which it discards: then its Postfix delivers nothing),
// every member gets exactly one copy over the sinks of both Postfix
// instances, and the loser's retry (same envelope, to the losing Postfix)
// ends with 250 and delivers nothing. The list has 4 members in batches
// of 2, so every delivery also reinjects through the winner's Postfix.
func TestTwoPostfixHostsRaceForOnePost(t *testing.T) {
	rig.Require(t)
	if testing.Short() {
		t.Skip("hundreds of races through two real Postfix instances")
	}
	dsn := storetest.PostgresDSN(t)
	site := milterfix.New(t, milterfix.Options{Database: dsn})
	alice := site.AddMember(t, "alice@example.org")
	for _, m := range []string{"bob@example.org", "carol@example.org", "dave@example.org"} {
		site.AddMember(t, m)
	}
	members := []string{"alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org"}
	// Two batches per post.
	polFile := filepath.Join(site.Config.PolicyDir, milterfix.List+".toml")
	pol, err := os.ReadFile(polFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(pol, []byte("\nbatch_size = 50\n")) {
		t.Fatalf("policy template has no batch_size = 50:\n%s", pol)
	}
	if err := os.WriteFile(polFile, bytes.Replace(pol, []byte("\nbatch_size = 50\n"), []byte("\nbatch_size = 2\n"), 1), 0o644); err != nil {
		t.Fatal(err)
	}

	// Host A: the fixture's socket; host B: same config and database, its
	// own socket. Each milter reinjects into its own Postfix.
	sockA := strings.TrimPrefix(site.Config.Milter.Listen, "unix:")
	sockB := filepath.Join(site.Dir, "run", "milter-b.sock")
	pfs := []*rig.Postfix{
		rig.Start(t, rig.Options{MilterAddr: "unix:" + sockA}),
		rig.Start(t, rig.Options{MilterAddr: "unix:" + sockB}),
	}
	site.Config.Reinject.Address = pfs[0].ReinjectAddr()
	cfgB := *site.Config
	cfgB.Milter.Listen = "unix:" + sockB
	cfgB.Reinject.Address = pfs[1].ReinjectAddr()
	siteB := *site
	siteB.Config = &cfgB
	_, logA := startDaemon(t, site)
	_, logB := startDaemon(t, &siteB)
	logs := []*logBuf{logA, logB}
	addrs := []string{pfs[0].SMTPAddr(), pfs[1].SMTPAddr()}
	const bounce = "devs-bounces@lists.example.org"
	tally := mhNewTally(bounce, pfs[0].Sink(), pfs[1].Sink())
	list := []*openpgp.Entity{site.ListKey}
	rcpts := []string{milterfix.List}
	const from = "alice@example.org"

	trials := mhTrials(t)
	began := time.Now()
	var won [2]int      // races won by host A, by host B
	var tempfailed int  // the loser answered 451
	var discarded int   // the loser answered 250: retry of the completed post
	var retryTook []int // per race, ms from the loser's retry to its 250
	ids := make([][]byte, 0, trials)
	logFrom := []int{0, 0}
	for trial := range trials {
		msgID := fmt.Sprintf("<mh-race-%d.%d@example.org>", trial, time.Now().UnixNano())
		post := milterfix.Build(t, milterfix.Post{From: from, MessageID: msgID, SignWith: alice, EncryptTo: list,
			Body: fmt.Sprintf("race %d through two Postfix hosts", trial)})
		id, err := deliver.PostID(post)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)

		replies := mhRace(addrs, from, rcpts, post)
		report := func() string {
			tally.update()
			return fmt.Sprintf("trial %d (%s): host A answered %v, host B answered %v; copies at A %v, at B %v",
				trial, msgID, replies[0], replies[1], tally.copies[msgID][0], tally.copies[msgID][1])
		}
		for i, r := range replies {
			switch {
			case r.err != nil:
				t.Fatalf("%s: host %c: %v", report(), 'A'+i, r.err)
			case r.code == 250:
			case r.code == 451 && strings.Contains(r.text, "being delivered by another server"):
			default:
				t.Fatalf("%s: unexpected answer from host %c", report(), 'A'+i)
			}
		}
		if replies[0].code == 451 && replies[1].code == 451 {
			t.Fatalf("%s: no host accepted", report())
		}

		// Every member's copy arrives, at one sink or the other.
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		err = tally.wait(ctx, msgID, len(members))
		cancel()
		if err != nil {
			t.Fatalf("%s: copies did not arrive: %v", report(), err)
		}
		mhWaitQueues(t, pfs, report)
		var delivered []int // hosts whose Postfix received copies
		for i := range 2 {
			if len(tally.copies[msgID][i]) > 0 {
				delivered = append(delivered, i)
			}
		}
		if len(delivered) != 1 {
			t.Fatalf("%s: both hosts delivered the post", report())
		}
		winner := delivered[0]
		loser := 1 - winner
		if replies[winner].code != 250 {
			t.Fatalf("%s: host %c delivered although it answered 451", report(), 'A'+winner)
		}
		won[winner]++
		if replies[loser].code == 451 {
			tempfailed++
		} else {
			// It answered 250 and its Postfix delivered nothing: its milter
			// must have said why (discard, retry of a completed post).
			if !mhLogged(logs[loser].String()[logFrom[loser]:], msgID, "reason=retry-of-completed") {
				t.Fatalf("%s: host %c answered 250 without delivering, and its milter did not log a retry-of-completed",
					report(), 'A'+loser)
			}
			discarded++
		}

		// The loser's MTA retries (same envelope, same Postfix): 250, and
		// nothing is delivered.
		t0 := time.Now()
		if err := rig.Send(addrs[loser], from, rcpts, post); err != nil {
			t.Fatalf("%s: the loser's retry: %v", report(), err)
		}
		retryTook = append(retryTook, int(time.Since(t0).Milliseconds()))

		// Nothing more in flight on either Postfix, then count: exactly one
		// copy per member, all from the winner.
		mhWaitQueues(t, pfs, report)
		tally.update()
		got := tally.copies[msgID]
		if len(got[loser]) != 0 {
			t.Fatalf("%s: the loser's retry delivered", report())
		}
		for _, m := range members {
			if got[winner][m] != 1 {
				t.Fatalf("%s: %s got %d copies", report(), m, got[winner][m])
			}
		}
		if len(got[winner]) != len(members) {
			t.Fatalf("%s: copies went to others than the members", report())
		}
		if !mhLogged(logs[loser].String()[logFrom[loser]:], msgID, "reason=retry-of-completed") {
			t.Fatalf("%s: the loser's retry was not logged as retry-of-completed", report())
		}
		for i, l := range logs {
			logFrom[i] = len(l.String())
		}
	}
	elapsed := time.Since(began)
	if tally.other != 0 {
		t.Fatalf("the sinks received %d messages not sent by the list", tally.other)
	}

	// Every claim was released and every post is complete.
	st := site.Admin.Store
	ctx := context.Background()
	for trial, id := range ids {
		ok, holder, err := st.ClaimPost(ctx, milterfix.List, id, "test", time.Minute, time.Now())
		if err != nil || !ok {
			t.Fatalf("trial %d: claim left behind by %q: %v", trial, holder, err)
		}
		if done, err := st.PostComplete(ctx, milterfix.List, id); err != nil || !done {
			t.Fatalf("trial %d: post not complete: %v", trial, err)
		}
	}
	slices.Sort(retryTook)
	t.Logf("%d races through two Postfix hosts in %v: won by A %d, by B %d; the loser answered 451 in %d, "+
		"250 (retry of the completed post, discarded) in %d; loser's retry median %d ms",
		trials, elapsed.Round(time.Millisecond), won[0], won[1], tempfailed, discarded, retryTook[len(retryTook)/2])
	if tempfailed == 0 {
		t.Fatal("no race ever overlapped: the test does not test the claim")
	}
}

// mhWaitQueues waits until the queues of every rig are empty: all they
// took has reached their sinks.
func mhWaitQueues(t *testing.T, pfs []*rig.Postfix, report func() string) {
	t.Helper()
	for i, pf := range pfs {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		err := pf.WaitQueueEmpty(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s: queue of host %c not empty: %v", report(), 'A'+i, err)
		}
	}
}

// mhLogged reports whether a line of log names message id and has want.
func mhLogged(log, msgID, want string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, msgID) && strings.Contains(line, want) {
			return true
		}
	}
	return false
}
