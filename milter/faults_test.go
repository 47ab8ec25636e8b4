package milter_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/keyring/store/storetest"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// faultCanary is in every post body here: no log line may carry it.
const faultCanary = "CANARY-fault-4b1e"

// postLines returns the "post" log lines in logs.
func postLines(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, " msg=post ") {
			out = append(out, l)
		}
	}
	return out
}

// checkTempfailLine checks the one log line of a tempfailed post: level,
// list, queue id, action, and an err that names the cause (want), and no
// content of the post.
func checkTempfailLine(t *testing.T, logs, want string) {
	t.Helper()
	lines := postLines(logs)
	if len(lines) != 1 {
		t.Fatalf("want one post log line, got %d:\n%s", len(lines), logs)
	}
	l := lines[0]
	t.Logf("log: %s", l)
	for _, f := range []string{"level=ERROR", "list=" + milterfix.List, "queue_id=QID123", "action=tempfail", want} {
		if !strings.Contains(l, f) {
			t.Errorf("post log line lacks %q: %s", f, l)
		}
	}
	if strings.Contains(logs, faultCanary) {
		t.Errorf("post content in the log: %s", logs)
	}
	if n := strings.Count(logs, want); n != 1 {
		t.Errorf("%q appears %d times in the log, want once:\n%s", want, n, logs)
	}
}

// PostgreSQL stopped under a running milter (an administrator's restart):
// list posts are tempfailed within milliseconds with one log line saying
// the database is unreachable, ordinary mail still passes at end of
// headers, and once PostgreSQL is back the sender's retry is accepted by
// the same milter process, without a restart.
func TestPostgresRestartTempfailsThenRecovers(t *testing.T) {
	pg := storetest.PrivatePostgres(t)
	site := milterfix.New(t, milterfix.Options{Database: pg.DSN(t)})
	alice := site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
	d, logs := startDaemon(t, site)
	m := newMTA(t, d)
	list := []*openpgp.Entity{site.ListKey}

	first := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: "before " + faultCanary})
	if r := m.send("alice@example.org", []string{milterfix.List}, first); !r.delivered() {
		t.Fatalf("before the stop: %+v", r.action)
	}

	pg.Stop(t)
	before := len(logs.String())
	if r := m.send("x@example.net", []string{"bob@example.org"}, []byte("From: x@example.net\r\nSubject: hi\r\n\r\nhello\r\n")); r.stage != "eoh" || r.action.Code != gomilter.ActAccept {
		t.Fatalf("ordinary mail with the database down: %s %+v, want accept at end of headers", r.stage, r.action)
	}
	second := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: "during " + faultCanary})
	start := time.Now()
	r := m.send("alice@example.org", []string{milterfix.List}, second)
	took := time.Since(start)
	t.Logf("post with PostgreSQL down: %d %q in %v", r.code(), r.action.SMTPText, took)
	if r.stage != "eom" || r.code() != 451 || !strings.HasPrefix(r.action.SMTPText, "4.") {
		t.Fatalf("with the database down: %s %+v, want 451 4.x at end of message", r.stage, r.action)
	}
	if took > 5*time.Second {
		t.Errorf("the tempfail took %v; Postfix waits at most milter_content_timeout", took)
	}
	checkTempfailLine(t, logs.String()[before:], "database unreachable")

	pg.Start(t)
	start = time.Now()
	if r := m.send("alice@example.org", []string{milterfix.List}, second); !r.delivered() {
		t.Fatalf("the retry after PostgreSQL came back: %+v", r.action)
	}
	t.Logf("retry after the restart accepted in %v", time.Since(start))
}

// SQLite on a full file system: the post is tempfailed (nothing
// delivered, no delivery recorded), and once space is freed the sender's
// retry is accepted by the same milter process. The state database lives
// on a 2 MiB tmpfs mounted for the test (needs root; skipped otherwise).
func TestSQLiteDiskFullTempfails(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m,mode=0755"); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("mount a tmpfs: %v (the test needs root)", err)
		}
		t.Fatalf("mount a tmpfs: %v", err)
	}
	// Registered first, so it runs after the daemon and the site closed
	// the database; lazy, so a straggling descriptor cannot keep it.
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	dbPath := filepath.Join(mnt, "state.db")
	site := milterfix.New(t, milterfix.Options{Database: "sqlite:" + dbPath})
	alice := site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
	d, logs := startDaemon(t, site)
	m := newMTA(t, d)
	list := []*openpgp.Entity{site.ListKey}

	first := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: "before " + faultCanary})
	if r := m.send("alice@example.org", []string{milterfix.List}, first); !r.delivered() {
		t.Fatalf("before the disk filled: %+v", r.action)
	}

	// Empty the write-ahead log, so the next write must grow a file (the
	// WAL otherwise reuses its space), then fill the file system.
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	var busy, logFrames, ckpt int
	if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &ckpt); err != nil || busy != 0 {
		t.Fatalf("checkpoint: busy %d, %v", busy, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler)

	second := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: "during " + faultCanary})
	before := len(logs.String())
	start := time.Now()
	r := m.send("alice@example.org", []string{milterfix.List}, second)
	took := time.Since(start)
	t.Logf("post with the disk full: %d %q in %v", r.code(), r.action.SMTPText, took)
	if r.stage != "eom" || r.code() != 451 {
		t.Fatalf("with the disk full: %s %+v, want 451 at end of message", r.stage, r.action)
	}
	if len(r.modacts) != 0 {
		t.Errorf("a tempfailed transaction was modified: %+v", r.modacts)
	}
	checkTempfailLine(t, logs.String()[before:], "disk is full")
	id, err := deliver.PostID(second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got, _, err := site.Admin.Store.DeliveredRecipients(ctx, milterfix.List, id); err != nil || len(got) != 0 {
		t.Fatalf("delivery recorded for a tempfailed post: %v %v", got, err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if r := m.send("alice@example.org", []string{milterfix.List}, second); !r.delivered() {
		t.Fatalf("the retry after space was freed: %+v", r.action)
	}
	t.Logf("retry after space was freed accepted in %v", time.Since(start))
}

// fillDisk writes path until the file system holding it is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}
