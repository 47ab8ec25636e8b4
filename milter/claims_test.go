package milter_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/keyring/store/storetest"
	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// openTx runs one transaction up to (not including) end of message, so
// that a test can release several at one instant.
func openTx(m *mta, from string, rcpts []string, msg []byte) (*gomilter.ClientSession, error) {
	s, err := m.client.Session()
	if err != nil {
		return nil, err
	}
	fail := func(stage string, a *gomilter.Action, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", stage, err)
		}
		if a.Code != gomilter.ActContinue {
			return fmt.Errorf("%s: milter answered %+v", stage, a)
		}
		return nil
	}
	a, err := s.Mail(from, nil)
	if err := fail("mail", a, err); err != nil {
		s.Close()
		return nil, err
	}
	for _, rc := range rcpts {
		a, err = s.Rcpt(rc, nil)
		if err := fail("rcpt", a, err); err != nil {
			s.Close()
			return nil, err
		}
	}
	hdr, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, line := range unfold(string(hdr)) {
		k, v, _ := strings.Cut(line, ":")
		a, err = s.HeaderField(k, strings.TrimPrefix(v, " "))
		if err := fail("header", a, err); err != nil {
			s.Close()
			return nil, err
		}
	}
	a, err = s.HeaderEnd()
	if err := fail("eoh", a, err); err != nil {
		s.Close()
		return nil, err
	}
	for len(body) > 0 {
		n := min(len(body), 65535)
		a, err = s.BodyChunk(body[:n])
		if err := fail("body", a, err); err != nil {
			s.Close()
			return nil, err
		}
		body = body[n:]
	}
	if err := s.Macros(gomilter.CodeEOB, "i", "QID123"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// raceTrials is how many races TestTwoHostsRaceForOnePost runs:
// LISTCRYPT_RACE_TRIALS, default 200 (make test).
func raceTrials(t *testing.T) int { return envTrials(t, "LISTCRYPT_RACE_TRIALS", 200) }

// envTrials is the positive number in the environment variable name, or
// def when it is unset.
func envTrials(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// Two milter hosts on one real PostgreSQL get the same post at the same
// instant (both transactions are opened, then both ends of message are
// released together): exactly one accepts and serves every member, the
// other answers 451 (or, when it came after the winner finished, takes
// it for a retry of the completed post: discard), and the loser's retry
// after the winner completed delivers nothing. Both hosts reinject to one
// recording listener, which counts the copies.
func TestTwoHostsRaceForOnePost(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	site := milterfix.New(t, milterfix.Options{Database: dsn})
	alice := site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
	members := []string{"alice@example.org", "bob@example.org"}
	hostA, logsA := startDaemon(t, site)
	cfgB := *site.Config
	cfgB.Milter.Listen = "unix:" + site.Dir + "/run/milter-b.sock"
	siteB := *site
	siteB.Config = &cfgB
	hostB, logsB := startDaemon(t, &siteB)
	mtas := []*mta{newMTA(t, hostA), newMTA(t, hostB)}
	logs := []*logBuf{logsA, logsB}
	// Both hosts answer a delivered post with discard (every copy was
	// reinjected) as they do a retry of a completed one: their logs say
	// which one delivered.
	accepts := func(i int) int { return strings.Count(logs[i].String(), "action=accept") }
	for _, m := range mtas {
		m.sink = site.Reinjected
	}
	list := []*openpgp.Entity{site.ListKey}
	ctx := context.Background()

	trials := raceTrials(t)
	var tempfailed, replayed int
	ids := make([][]byte, 0, trials)
	for trial := range trials {
		post := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list,
			Body: fmt.Sprintf("race %d", trial)})
		id, err := deliver.PostID(post)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		copiesBefore := len(site.Reinjected.Messages())
		acceptsBefore := [2]int{accepts(0), accepts(1)}
		var sessions [2]*gomilter.ClientSession
		for i, m := range mtas {
			if sessions[i], err = openTx(m, "alice@example.org", []string{milterfix.List}, post); err != nil {
				t.Fatalf("trial %d host %d: %v", trial, i, err)
			}
		}
		type answer struct {
			acts []gomilter.ModifyAction
			act  *gomilter.Action
			err  error
		}
		var answers [2]answer
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				a := &answers[i]
				a.acts, a.act, a.err = s.End()
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, a := range answers {
			sessions[i].Close()
			if a.err != nil {
				t.Fatalf("trial %d host %d: %v", trial, i, a.err)
			}
			if accepts(i) > acceptsBefore[i] {
				if a.act.Code != gomilter.ActDiscard {
					t.Fatalf("trial %d host %d delivered and answered %+v", trial, i, a.act)
				}
				if winner >= 0 {
					t.Fatalf("trial %d: both hosts accepted the same post", trial)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("trial %d: no host accepted: %+v / %+v", trial, answers[0].act, answers[1].act)
		}
		if got := (result{copies: site.Reinjected.Messages()[copiesBefore:]}).recipients(); !slices.Equal(got, members) {
			t.Fatalf("trial %d: the race served %v, want %v once each", trial, got, members)
		}
		loser := 1 - winner
		la := answers[loser]
		switch {
		case la.act.Code == gomilter.ActReplyCode && la.act.SMTPCode == 451 && strings.Contains(la.act.SMTPText, "being delivered by another server"):
			tempfailed++
			if len(la.acts) != 0 {
				t.Fatalf("trial %d: loser changed the transaction: %+v", trial, la.acts)
			}
		case la.act.Code == gomilter.ActDiscard:
			replayed++ // the winner had finished before the loser looked: a retry of a completed post
		default:
			t.Fatalf("trial %d: loser answered %+v", trial, la.act)
		}
		// The loser's MTA retries: the post is complete, nothing goes out.
		r := mtas[loser].send("alice@example.org", []string{milterfix.List}, post)
		if r.action.Code != gomilter.ActDiscard || len(r.copies) != 0 {
			t.Fatalf("trial %d: the loser's retry: %+v %v", trial, r.action, r.modacts)
		}
	}
	// Every claim was released: a newcomer gets each at once.
	st := site.Admin.Store
	for _, id := range ids {
		ok, holder, err := st.ClaimPost(ctx, milterfix.List, id, "test", time.Minute, time.Now())
		if err != nil || !ok {
			t.Fatalf("claim left behind by %q: %v", holder, err)
		}
		if done, err := st.PostComplete(ctx, milterfix.List, id); err != nil || !done {
			t.Fatalf("post not complete: %v", err)
		}
	}
	t.Logf("%d races: the loser answered 451 in %d, came after the winner finished (retry of a completed post) in %d", trials, tempfailed, replayed)
	if tempfailed == 0 {
		t.Fatal("no race ever overlapped: the test does not test the claim")
	}
}

// A post whose claim is held by another live attempt is answered 451 and
// nothing of it changes (the other attempt's digests stay); once that
// claim is gone, the retry delivers. A claim whose holder died (its
// lease ran out) is taken over and the delivery resumes where the dead
// holder stopped: members it recorded are not served again.
func TestPostClaims(t *testing.T) {
	f := newFixture(t, "")
	f.site.AddMember(t, "carol@example.org")
	ctx := context.Background()
	st := f.site.Admin.Store
	list := []*openpgp.Entity{f.site.ListKey}
	const lease = 3 * time.Minute

	// Live claim elsewhere.
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: list, Body: "claimed elsewhere"})
	id, err := deliver.PostID(msg)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := st.ClaimPost(ctx, milterfix.List, id, "other-host/1/x/1", lease, time.Now()); err != nil || !ok {
		t.Fatal(ok, err)
	}
	// The other host recorded the post's digests and is delivering.
	if replayOf, err := st.RecordPost(ctx, milterfix.List, id, [][]byte{[]byte("winner-digest")}, time.Now()); err != nil || replayOf != nil {
		t.Fatal(replayOf, err)
	}
	r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
	if r.code() != 451 || !strings.HasPrefix(r.action.SMTPText, "4.3.0 ") || !strings.Contains(r.action.SMTPText, "another server") {
		t.Fatalf("post claimed elsewhere: %d %q", r.code(), r.action.SMTPText)
	}
	if !strings.Contains(f.logs.String(), "reason=claimed-elsewhere") || !strings.Contains(f.logs.String(), "claimed_by=other-host/1/x/1") {
		t.Fatalf("log does not say why:\n%s", f.logs.String())
	}
	if owner, found, err := st.SeenDigest(ctx, milterfix.List, []byte("winner-digest")); err != nil || !found || !bytes.Equal(owner, id) {
		t.Fatalf("the 451 released the other host's digests: %v %v", found, err)
	}
	// The other host gave up without delivering (its claim is gone): the
	// retry delivers to everybody.
	if ok, err := st.ReleaseClaim(ctx, milterfix.List, id, "other-host/1/x/1"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	r = f.mta.send("alice@example.org", []string{milterfix.List}, msg)
	if !r.delivered() || !slices.Equal(r.recipients(), []string{"alice@example.org", "bob@example.org", "carol@example.org"}) {
		t.Fatalf("retry after the claim ended: %+v %v", r.action, r.modacts)
	}

	// Dead holder: it claimed ten minutes ago, recorded the post and
	// delivered a batch to alice, then died.
	msg = milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: list, Body: "holder died"})
	if id, err = deliver.PostID(msg); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := st.ClaimPost(ctx, milterfix.List, id, "dead-host/1/x/1", lease, time.Now().Add(-10*time.Minute)); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if replayOf, err := st.RecordPost(ctx, milterfix.List, id, [][]byte{[]byte("dead-digest")}, time.Now()); err != nil || replayOf != nil {
		t.Fatal(replayOf, err)
	}
	if _, err := st.MarkDelivered(ctx, milterfix.List, id, 2, []string{"alice@example.org"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	r = f.mta.send("alice@example.org", []string{milterfix.List}, msg)
	if !r.delivered() || !slices.Equal(r.recipients(), []string{"bob@example.org", "carol@example.org"}) {
		t.Fatalf("take-over of an expired claim: %+v %v", r.action, r.modacts)
	}
	if done, err := st.PostComplete(ctx, milterfix.List, id); err != nil || !done {
		t.Fatalf("resumed post not complete: %v", err)
	}
	if ok, holder, err := st.ClaimPost(ctx, milterfix.List, id, "test", lease, time.Now()); err != nil || !ok {
		t.Fatalf("claim left behind by %q: %v", holder, err)
	}

	// A process of this machine killed while it held the post (its lease
	// still runs): the next attempt takes over at once and resumes.
	msg = milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: list, Body: "killed here"})
	if id, err = deliver.PostID(msg); err != nil {
		t.Fatal(err)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := st.ClaimPost(ctx, milterfix.List, id, milter.LocalClaimOwner(gone.Process.Pid), lease, time.Now()); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := st.MarkDelivered(ctx, milterfix.List, id, 2, []string{"bob@example.org"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	r = f.mta.send("alice@example.org", []string{milterfix.List}, msg)
	if runtime.GOOS == "linux" {
		if !r.delivered() || !slices.Equal(r.recipients(), []string{"alice@example.org", "carol@example.org"}) {
			t.Fatalf("take-over from a dead local process: %+v %v", r.action, r.modacts)
		}
	} else if r.code() != 451 {
		t.Fatalf("claim of a local process elsewhere than Linux: %+v", r.action)
	}
}
