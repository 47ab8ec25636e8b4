package milter_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// A transaction whose hold was stored but that failed before the post
// was marked complete (the milter or the MTA died before the answer) is
// retried by the sender's MTA: the retry finds that hold instead of
// adding a second one, and the moderators are told once.
func TestHeldPostRetriedKeepsOneHold(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "state.db")
	site := milterfix.New(t, milterfix.Options{Database: "sqlite:" + dbPath})
	site.AddMember(t, "alice@example.org")
	site.EditPolicy(t, `non_member = "reject"`, `non_member = "hold"`)
	d, _ := startDaemon(t, site)
	m := newMTA(t, d)
	mallory := milterfix.NewKey(t, "mallory@evil.example")
	msg := milterfix.Build(t, milterfix.Post{From: "mallory@evil.example", SignWith: mallory, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "held, then retried"})
	if r := m.send("mallory@evil.example", []string{milterfix.List}, msg); !r.accepted() {
		t.Fatalf("held post: %+v", r.action)
	}
	// The state a crash right after AddHold leaves: the post is not
	// complete and nobody holds its claim.
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DELETE FROM posts_complete`, `DELETE FROM post_claims`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	if r := m.send("mallory@evil.example", []string{milterfix.List}, msg); !r.accepted() {
		t.Fatalf("retried held post: %+v", r.action)
	}
	holds, err := site.Admin.Store.Holds(context.Background(), milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	if len(holds) != 1 {
		t.Fatalf("%d holds after the retry, want 1", len(holds))
	}
}
