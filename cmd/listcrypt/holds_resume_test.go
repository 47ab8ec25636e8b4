package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-smtp"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// flakyMTA is a reinjection listener that takes the first ok
// transactions and answers 451 to the DATA of every later one until it
// is healed; it counts the copies each recipient got.
type flakyMTA struct {
	mu     sync.Mutex
	ok     int // transactions still accepted; < 0: all
	copies map[string]int
}

func (f *flakyMTA) NewSession(*smtp.Conn) (smtp.Session, error) { return &flakySession{f: f}, nil }

func (f *flakyMTA) heal() {
	f.mu.Lock()
	f.ok = -1
	f.mu.Unlock()
}

func (f *flakyMTA) count() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.copies {
		out[k] = v
	}
	return out
}

type flakySession struct {
	f  *flakyMTA
	to []string
}

func (s *flakySession) Reset()                               { s.to = nil }
func (s *flakySession) Logout() error                        { return nil }
func (s *flakySession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *flakySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *flakySession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.f.ok == 0 {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	if s.f.ok > 0 {
		s.f.ok--
	}
	for _, a := range s.to {
		s.f.copies[a]++
	}
	return nil
}

func startFlaky(t *testing.T, ok int) (*flakyMTA, string) {
	t.Helper()
	f := &flakyMTA{ok: ok, copies: map[string]int{}}
	srv := smtp.NewServer(f)
	srv.Domain = "flaky.test"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f, ln.Addr().String()
}

// "hold approve" whose delivery stops half-way (the MTA refuses the
// second batch) leaves the hold delivering: it does not expire, cannot
// be rejected, shows as delivering; approving again resumes through the
// same delivery records and every member ends with exactly one copy; a
// third approval says it was delivered. While another process holds the
// delivery claim, approval is refused.
func TestHoldApproveResumes(t *testing.T) {
	mta, addr := startFlaky(t, 1)
	site := milterfix.New(t, milterfix.Options{Reinject: addr})
	cfg := site.Config.File
	pf := filepath.Join(site.Config.PolicyDir, milterfix.List+".toml")
	src, err := os.ReadFile(pf)
	if err != nil {
		t.Fatal(err)
	}
	src = regexp.MustCompile(`(?m)^batch_size = \d+$`).ReplaceAll(src, []byte("batch_size = 2"))
	if err := os.WriteFile(pf, src, 0o644); err != nil {
		t.Fatal(err)
	}
	var members []string
	for i := range 5 {
		a := fmt.Sprintf("m%d@example.org", i)
		site.AddMember(t, a)
		members = append(members, a)
	}
	ctx := context.Background()
	raw := milterfix.Build(t, milterfix.Post{From: "x@example.net", Body: "CANARY-resume"})
	sealed, err := keyring.EncryptTo(raw, []*openpgp.Entity{site.ListKey}, keyring.DefaultLimits, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := site.Admin.Store.AddHold(ctx, store.Hold{List: milterfix.List, Sender: "x@example.net",
		Recipients: []string{milterfix.List}, Reason: "non-member", Message: sealed})
	if err != nil {
		t.Fatal(err)
	}
	ids := fmt.Sprint(id)

	// Another process is delivering it: refused, nothing sent.
	postID, err := deliver.PostID(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := site.Admin.Store.ClaimPost(ctx, milterfix.List, postID, "other host", time.Minute, time.Now()); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if _, err := cli(t, cfg, "hold", "approve", ids); err == nil || !strings.Contains(err.Error(), "being delivered right now (other host)") {
		t.Fatalf("approve while claimed elsewhere: %v", err)
	}
	if _, err := site.Admin.Store.ReleaseClaim(ctx, milterfix.List, postID, "other host"); err != nil {
		t.Fatal(err)
	}
	if n := len(mta.count()); n != 0 {
		t.Fatalf("%d members got it while another process held the claim", n)
	}

	// Batch 1 goes, batch 2 is refused: the delivery stops half-way.
	if _, err := cli(t, cfg, "hold", "approve", ids); err == nil || !strings.Contains(err.Error(), "run \"listcrypt hold approve "+ids+"\" again to resume") {
		t.Fatalf("half-way approve: %v", err)
	}
	if got := mta.count(); len(got) != 2 {
		t.Fatalf("after the failed batch: %v, want one batch of 2", got)
	}
	if out := mustCLI(t, cfg, "hold", "show", ids); !strings.Contains(out, "state: delivering\n") {
		t.Fatalf("hold show: %q", out)
	}
	if out := mustCLI(t, cfg, "hold", "list", milterfix.List, "--all"); !strings.HasSuffix(out, "\tdelivering\n") {
		t.Fatalf("hold list --all: %q", out)
	}
	if out := mustCLI(t, cfg, "hold", "list", milterfix.List); out != "" {
		t.Fatalf("hold list (waiting only): %q", out)
	}
	if _, err := cli(t, cfg, "hold", "reject", ids); err == nil || !strings.Contains(err.Error(), "can no longer be rejected") {
		t.Fatalf("reject a delivering hold: %v", err)
	}
	// A delivering hold never expires, however old.
	if hs, err := site.Admin.Store.ExpireHolds(ctx, milterfix.List, time.Now().Add(time.Hour), time.Now()); err != nil || len(hs) != 0 {
		t.Fatalf("expired a delivering hold: %v %v", hs, err)
	}

	// Resume: the rest, once each.
	mta.heal()
	if out := mustCLI(t, cfg, "hold", "approve", ids); out != "held post "+ids+": delivery resumed and completed, 3 more members\n" {
		t.Fatalf("resume: %q", out)
	}
	got := mta.count()
	for _, m := range members {
		if got[m] != 1 {
			t.Errorf("%s got %d copies, want 1 (%v)", m, got[m], got)
		}
	}
	if len(got) != len(members) {
		t.Errorf("copies went to %v", got)
	}
	if out := mustCLI(t, cfg, "hold", "show", ids); !strings.Contains(out, "state: delivered ") {
		t.Fatalf("hold show after delivery: %q", out)
	}
	if out := mustCLI(t, cfg, "hold", "list", milterfix.List, "--all"); !strings.HasSuffix(out, "\tdelivered\n") {
		t.Fatalf("hold list --all: %q", out)
	}
	if _, err := cli(t, cfg, "hold", "approve", ids); err == nil || !strings.Contains(err.Error(), "already approved and was delivered on") {
		t.Fatalf("approve a delivered hold: %v", err)
	}
	if again := mta.count(); len(again) != len(got) {
		t.Fatalf("a third approve delivered: %v", again)
	}
	for _, m := range members {
		if mta.count()[m] != 1 {
			t.Fatalf("%s: %d copies", m, mta.count()[m])
		}
	}
}
