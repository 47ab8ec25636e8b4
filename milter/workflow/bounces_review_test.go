package workflow_test

// Attacks on the bounce mode found in review. Each test fails if its
// defect comes back.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store/storetest"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

// reviewEnv is newEnv with the fixture's temp folder inside t.TempDir().
func reviewEnv(t *testing.T, edit func(string) string) *env {
	t.Helper()
	t.Setenv("TMPDIR", t.TempDir())
	return newEnv(t, edit)
}

// multiDSN is one RFC 3464 report naming every address in rcpts as failed.
func multiDSN(to string, rcpts []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: MAILER-DAEMON@mx.attacker.example (Mail Delivery System)\nTo: %s\nSubject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\nMessage-Id: <forged-%d@attacker.example>\n\n", to, time.Now().UnixNano())
	b.WriteString("--B\nContent-Type: text/plain\n\nThis is the mail system at host mx.attacker.example.\n\n--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.attacker.example\n")
	for _, r := range rcpts {
		fmt.Fprintf(&b, "\nFinal-Recipient: rfc822; %s\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 no such user\n", r)
	}
	b.WriteString("\n--B--\n")
	return []byte(strings.ReplaceAll(b.String(), "\n", "\r\n"))
}

// docs/bounces.md: "With VERP the forger must also know the VERP form".
// With [bounces] verp = true the plain bounce address still attributes
// by the report's words, so a forger needs no VERP form at all.
func TestReviewVERPOnStillAttributesByReportWords(t *testing.T) {
	e := reviewEnv(t, withBounces("verp = true"))
	e.site.AddMember(t, bobAddr)
	out := e.handleAt(dsnMail(bounces, bobAddr, "5.1.1"), bounces)
	if st := e.bounceState(bobAddr); st.Score != 0 {
		t.Errorf("verp = true, a DSN at the plain bounce address naming %s in its body counted (%+v, outcome %+v)", bobAddr, st, out)
	}
}

// docs/bounces.md: "a forger needs score_threshold days of mail to
// disable someone". The per-day rule is by UTC calendar day, so two
// forged DSNs two minutes apart (23:59 and 00:01) both count: threshold
// 2 is reached in 2 minutes, the default 5 in 4 days and 2 minutes.
func TestReviewDayBoundaryHalvesTheTime(t *testing.T) {
	e := reviewEnv(t, withBounces("score_threshold = 2"))
	e.site.AddMember(t, bobAddr)
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	e.skew = midnight.Add(-time.Minute).Sub(now)
	e.handleAt(dsnMail(bounces, bobAddr, "5.1.1"), bounces)
	e.skew = midnight.Add(time.Minute).Sub(now)
	e.handleAt(dsnMail(bounces, bobAddr, "5.1.1"), bounces)
	if st := e.bounceState(bobAddr); st.Disabled() {
		t.Errorf("two forged bounces two minutes apart disabled the member (threshold 2): %+v", st)
	}
}

// The command log line carries Outcome.Reason; for an unreadable mail at
// the bounce address it is bounce.Parse's error, which quotes the header
// line it could not read (the workflow's own rule: "The parser's error
// quotes the line: not for the log or the bounce").
func TestReviewUnreadableBounceQuotedInLog(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	e := newEnv(t, nil)
	var logBuf bytes.Buffer
	e.r.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
	const canary = "SECRET-CONTENT-CANARY"
	msg := []byte("From: someone@example.org\r\nSubject: hi\r\n" + canary + " a line that is no header field\r\n\r\nbody\r\n")
	out, err := e.r.Handle(context.Background(), msg, bounces)
	t.Logf("outcome %+v err %v", out, err)
	if strings.Contains(out.Reason, canary) || strings.Contains(logBuf.String(), canary) {
		t.Errorf("the mail's content is in the outcome/log: %q", logBuf.String())
	}
}

// The same forged DSN on PostgreSQL: members and non-members mixed (a
// foreign key error per non-member inside its own transaction), two
// responders at once for the same members. Expected sound: every member
// counted once, no error.
func TestReviewPostgresMixedAndConcurrent(t *testing.T) {
	// No TMPDIR override: storetest's PostgreSQL server (run as the
	// postgres user) must reach its folder.
	e := newEnvWith(t, milterfix.Options{Database: storetest.PostgresDSN(t)}, withBounces("score_threshold = 1"))
	var names []string
	for i := range 6 {
		a := fmt.Sprintf("member%02d@example.org", i)
		e.site.AddMember(t, a)
		names = append(names, a, fmt.Sprintf("stranger%02d@example.org", i))
	}
	msg := multiDSN(bounces, names)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := e.r.Handle(context.Background(), msg, bounces)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Handle: %v (exit %d)", err, workflow.ExitCode(err))
		}
	}
	dis, _ := e.r.Store.DeliveryDisabled(context.Background(), list)
	// One notice to the owner naming all six, one to each member.
	if len(dis) != 6 || len(e.mail.Messages()) != 7 {
		t.Errorf("%d disabled, %d notices; want 6 and 7 (each once)", len(dis), len(e.mail.Messages()))
	}
}

// An auto-reply's Subject quotes the subject of the post it answers
// ("Automatic reply: ...", "Out of Office: Re: ..."): the member's client
// decrypted the post, so that is the protected subject of an encrypted
// post. The owner without a key gets the header summary signed only, in
// clear through the MTA queue, Subject included.
func TestReviewSummaryLeaksDecryptedSubject(t *testing.T) {
	e := reviewEnv(t, nil)
	const secret = "Merger with ACME closes Friday"
	auto := []byte(strings.ReplaceAll("From: Bob <bob@example.org>\nTo: devs-bounces@lists.example.org\nSubject: Automatic reply: "+secret+"\nAuto-Submitted: auto-replied\n\nI am away.\n", "\n", "\r\n"))
	if out := e.handleAt(auto, bounces); out.Result != "forwarded" {
		t.Fatalf("outcome %+v", out)
	}
	plain := e.mail.To(ownerAddr)
	if len(plain) != 1 {
		t.Fatalf("%d forwards", len(plain))
	}
	if bytes.Contains(plain[0].Data, []byte(secret)) {
		t.Errorf("the subject quoted from a decrypted post travels in clear to the owner without a key:\n%s", plain[0].Data)
	}
}

// The threshold acts only on the bounce that crosses it from below. An
// owner told by action = "notify" that a member's address is dead, who
// then sets action = "disable" (or lowers score_threshold under a score
// already reached), expects the next bounce to disable it; the member
// keeps bouncing every day and is never disabled (until it stops
// bouncing for reset_after). Mailman compares score >= threshold on
// every bounce.
func TestReviewPolicyChangeNeverDisables(t *testing.T) {
	e := reviewEnv(t, withBounces("score_threshold = 1\naction = \"notify\""))
	e.site.AddMember(t, bobAddr)
	e.handleAt(dsnMail(bounces, bobAddr, "5.1.1"), bounces)
	if st := e.bounceState(bobAddr); st.Score != 1 || st.Disabled() {
		t.Fatalf("notify: %+v", st)
	}
	pfile := filepath.Join(e.site.Config.PolicyDir, list+".toml")
	src, err := os.ReadFile(pfile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pfile, []byte(strings.Replace(string(src), `action = "notify"`, `action = "disable"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := workflow.New(e.site.Config, e.site.Admin.Store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.Mail, r.Now = e.mail, e.r.Now
	e.r = r
	for day := 1; day <= 3; day++ {
		e.skew = time.Duration(day) * 25 * time.Hour
		e.handleAt(dsnMail(bounces, bobAddr, "5.1.1"), bounces)
	}
	if st := e.bounceState(bobAddr); !st.Disabled() {
		t.Errorf("three more days of bounces under action = \"disable\" and threshold 1 left the member enabled: %+v", st)
	}
}

// One forged report naming many members counts against at most
// maxBounceMembers (10) of them, and the owner gets one notice naming
// them all, not one per member.
func TestForgedReportCountsFewMembers(t *testing.T) {
	e := reviewEnv(t, withBounces("score_threshold = 1"))
	var names []string
	for i := range 12 {
		a := fmt.Sprintf("member%02d@example.org", i)
		e.site.AddMember(t, a)
		names = append(names, a)
	}
	out := e.handleAt(multiDSN(bounces, names), bounces)
	dis, _ := e.r.Store.DeliveryDisabled(context.Background(), list)
	if len(dis) != 10 || dis["member10@example.org"] || dis["member11@example.org"] {
		t.Fatalf("%d disabled (%v), want the first 10; outcome %+v", len(dis), dis, out)
	}
	if n := len(e.mail.To(ownerAddr)); n != 1 {
		t.Fatalf("%d notices to the owner, want 1", n)
	}
	if text := wftest.Open(t, e.mail.To(ownerAddr)[0].Data, nil, e.site.ListKey); !strings.Contains(text, "member09@example.org") || strings.Contains(text, "member10@") {
		t.Fatalf("owner notice:\n%s", text)
	}
	if n := len(e.mail.Messages()); n != 11 {
		t.Fatalf("%d notices in all, want 11 (the owner, and each disabled member once)", n)
	}
}
