package deliver_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// Found in review (it failed before the fix): with bounces.verp = true and a listener that offers no XVERP
// (Sendmail), the warning is written once per batch of every post: a
// 10,000-member list in batches of 50 writes 200 identical Warn lines
// per post. It is one condition of the site, to be said once (per post
// at most).
func TestReview2VERPWarningOncePerPost(t *testing.T) {
	site, alice := threeBatches(t)
	site.EditPolicy(t, "[responder]", "[bounces]\nverp = true\n\n[responder]")
	ctx := context.Background()
	p, keys := listOf(t, site)
	if !p.Bounces.VERP {
		t.Fatal("verp not on")
	}
	var logs bytes.Buffer
	d := deliver.New(deliver.Options{Store: site.Admin.Store, Keys: keys, Config: site.Config, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "verp"})
	if _, err := d.Distribute(ctx, p, msg); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "does not offer XVERP"); n != 1 {
		t.Fatalf("%d XVERP warnings for one post of 3 batches, want 1:\n%s", n, logs.String())
	}
}
