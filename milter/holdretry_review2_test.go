package milter_test

import (
	"bytes"
	"context"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// Found in review (it failed before the fix): with post.replay = "hold", a replay is held with no post id
// (decide leaves postID nil on the replay path), so migration 10's
// holds_post never applies to it: the sender's MTA retrying the same
// transaction (its answer lost: a timeout, a crash after AddHold) adds a
// second hold of the same post, and the moderators are told twice.
// docs/outbound.md, "A held post retried", promises one hold.
func TestReview2ReplayHoldRetriedKeepsOneHold(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	site.EditPolicy(t, `replay = "reject"`, `replay = "hold"`)
	d, _ := startDaemon(t, site)
	m := newMTA(t, d)
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", MessageID: "<orig@example.org>", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "delivered once"})
	if r := m.send("alice@example.org", []string{milterfix.List}, msg); !r.accepted() {
		t.Fatalf("original post: %+v", r.action)
	}
	// A replay: the same ciphertext under another Message-ID.
	replay := bytes.Replace(msg, []byte("<orig@example.org>"), []byte("<replay@evil.example>"), 1)
	for i := range 2 { // the second is the MTA's retry of the same transaction
		if r := m.send("mallory@evil.example", []string{milterfix.List}, replay); !r.accepted() {
			t.Fatalf("replay attempt %d: %+v", i+1, r.action)
		}
	}
	holds, err := site.Admin.Store.Holds(context.Background(), milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	if len(holds) != 1 {
		t.Fatalf("%d holds of one replayed transaction sent twice, want 1", len(holds))
	}
}
