package milter_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/admin"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/policy"
)

// Found in review (it failed before the fix): a post held before "list key rotate" is sealed to the old
// list key (post.go: keyring.EncryptTo(msg, listKey)). ShowHold and
// ApproveHold open it with the current key only (admin.ShowHold:
// keys.ListKey), so after a rotation every waiting hold can be neither
// read nor approved: it expires, the post is lost.
func TestReview3HeldPostAfterRotation(t *testing.T) {
	e := newHoldEnv(t, "", "")
	ctx := context.Background()
	id := e.hold(t, e.now)
	if _, err := e.site.Admin.ShowHold(ctx, id); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	if _, err := e.site.Admin.RotateListKey(ctx, milterfix.List); err != nil {
		t.Fatal(err)
	}
	hp, err := e.site.Admin.ShowHold(ctx, id)
	if err != nil {
		t.Fatalf("held post %d cannot be shown after a rotation: %v", id, err)
	}
	if !bytes.Contains(hp.Raw, []byte(holdCanary)) {
		t.Fatalf("held post: %q", hp.Raw)
	}
	if _, err := e.site.Admin.ApproveHold(ctx, id); err != nil {
		t.Fatalf("held post %d cannot be approved after a rotation: %v", id, err)
	}
}

// Found in review (it failed before the fix): "list delete" (without --purge) promises the list's keys are
// kept in state_dir; after a rotation it exports the current key only,
// and ON DELETE CASCADE drops the retired keys (sealed secrets) that
// still open posts and held posts.
func TestReview3DeleteKeepsRetiredKeys(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	ctx := context.Background()
	oldFpr := keyring.Fingerprint(site.ListKey)
	if _, err := site.Admin.RotateListKey(ctx, milterfix.List); err != nil {
		t.Fatal(err)
	}
	d, err := site.Admin.DeleteList(ctx, milterfix.List, admin.DeleteOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := os.ReadFile(d.ExportPath)
	if err != nil {
		t.Fatal(err)
	}
	old, err := site.Admin.Store.OldListKeys(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(exp, []byte(oldFpr)) && len(old) == 0 {
		t.Fatalf("the retired key %s is gone: not in the export %s (%d bytes), not in the store\n%s", oldFpr, d.ExportPath, len(exp), firstLines(exp, 3))
	}
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// Found in review (it failed before the fix): "list key import" accepts for list B the key that is the
// current key of list A (a key with user IDs for both): two lists then
// share one key, so a post encrypted (and intended, IRF) for A opens and
// binds on B as well.
func TestReview3ImportOtherListsKey(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	ctx := context.Background()
	const listB = "ops@lists.example.org"
	if err := os.WriteFile(filepath.Join(site.Config.PolicyDir, listB+".toml"), []byte(policy.Template(listB, "owner@example.org")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := site.Admin.CreateList(ctx, listB, "owner@example.org", keyring.KeyEd25519); err != nil {
		t.Fatal(err)
	}
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519}
	e, err := openpgp.NewEntity("devs", "", milterfix.List, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AddUserId("ops", "", listB, cfg); err != nil {
		t.Fatal(err)
	}
	file := secretKeyFile(t, e, cfg, "shared.key")
	if _, err := site.Admin.ImportListKey(ctx, milterfix.List, file); err != nil {
		t.Fatalf("import into %s: %v", milterfix.List, err)
	}
	kc, err := site.Admin.ImportListKey(ctx, listB, file)
	if err == nil {
		t.Fatalf("the current key of %s (%s) was imported as the key of %s too: %+v", milterfix.List, keyring.Fingerprint(e), listB, kc)
	}
}

// Found in review (it failed before the fix): "list key import" accepts a key that expires (gpg's default
// for new keys is an expiry). Once it has expired the list cannot get
// out of it with "list key rotate" (or another import): the notices are
// signed by the old key too (AlsoSignedBy), and an expired key cannot
// sign, so replaceKey fails before the transaction.
func TestReview3RotateAwayFromExpiredImportedKey(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	ctx := context.Background()
	site.AddMember(t, "alice@example.org")
	now := time.Now().UTC().Truncate(time.Second)
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519,
		KeyLifetimeSecs: 2 * 3600, Time: func() time.Time { return now }}
	e, err := openpgp.NewEntity("devs", "", milterfix.List, cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := secretKeyFile(t, e, cfg, "owner.key")
	site.Admin.Now = func() time.Time { return now }
	before, err := site.Admin.ExportListKey(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	// Fixed: an expiring key is refused at import, so the list cannot
	// get stuck with an expired key.
	_, err = site.Admin.ImportListKey(ctx, milterfix.List, file)
	if err == nil || !strings.Contains(err.Error(), "a list key must not expire") {
		t.Fatalf("import of a key valid for 2 hours: %v", err)
	}
	if after, _ := site.Admin.ExportListKey(ctx, milterfix.List); after != before {
		t.Fatal("a refused import changed the list key")
	}
	if _, err := site.Admin.RotateListKey(ctx, milterfix.List); err != nil {
		t.Fatalf("rotate after the refused import: %v", err)
	}
}

// Found in review (it failed before the fix): "list key rotate" promises a new key "of the same type as
// the current one", but keyTypeOf knows only RSA and Ed25519: after an
// import of an accepted NIST P-384 key, rotate makes an Ed25519 key.
func TestReview3RotateKeepsKeyType(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	ctx := context.Background()
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoECDSA, Curve: packet.CurveNistP384}
	e, err := openpgp.NewEntity("devs", "", milterfix.List, cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := secretKeyFile(t, e, cfg, "p384.key")
	if _, err := site.Admin.ImportListKey(ctx, milterfix.List, file); err != nil {
		t.Skipf("P-384 key refused at import: %v", err)
	}
	// Fixed: rotate keeps the type or refuses (listcrypt makes Ed25519
	// and RSA keys only), and changes nothing then.
	before, err := site.Admin.ExportListKey(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	_, err = site.Admin.RotateListKey(ctx, milterfix.List)
	if err == nil || !strings.Contains(err.Error(), "list key import") {
		t.Fatalf("rotating a NIST P-384 list key: %v, want a refusal pointing to import", err)
	}
	if after, _ := site.Admin.ExportListKey(ctx, milterfix.List); after != before {
		t.Fatal("a refused rotation changed the list key")
	}
}

// Found in review (it failed before the fix): a post encrypted to the old key inside the grace period and
// held for a moderator (sealed then to the NEW key, so the seal is not
// the problem here) can no longer be approved once the grace period has
// ended, although post.hold_expiry (default 14d, up to 365d) still lets
// it wait: Distribute examines the held message again "now", and the
// retired key past its grace no longer opens it. With the defaults
// (30d grace, 14d hold expiry) a post held in the last 14 days of the
// grace period is lost.
func TestReview3HeldInGraceApprovedAfterGrace(t *testing.T) {
	e := newHoldEnv(t, "", "")
	e.site.EditPolicy(t, `old_key_grace = "30d"`, `old_key_grace = "1d"`)
	ctx := context.Background()
	oldKey := e.site.ListKey
	if _, err := e.site.Admin.RotateListKey(ctx, milterfix.List); err != nil {
		t.Fatal(err)
	}
	armoredKey, err := e.site.Admin.ExportListKey(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(armoredKey))
	if err != nil {
		t.Fatal(err)
	}
	newKey := el[0]
	raw := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: e.alice,
		EncryptTo: []*openpgp.Entity{oldKey}, Body: holdCanary})
	sealed, err := keyring.EncryptTo(raw, []*openpgp.Entity{newKey}, keyring.DefaultLimits, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	held := e.now.Add(23 * time.Hour)
	id, err := e.site.Admin.Store.AddHold(ctx, store.Hold{List: milterfix.List, Sender: "alice@example.org",
		Recipients: []string{milterfix.List}, Reason: "moderated", Message: sealed, CreatedAt: held})
	if err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(25 * time.Hour) // grace over; the hold has 13 days left
	if _, err := e.site.Admin.ApproveHold(ctx, id); err != nil {
		t.Fatalf("a post held inside the grace period cannot be approved after it (hold still valid): %v", err)
	}
}

// secretKeyFile writes e's secret key (binary) to a 0600 file named name
// in a temp folder, as an owner hands it to "list key import".
func secretKeyFile(t *testing.T, e *openpgp.Entity, cfg *packet.Config, name string) string {
	t.Helper()
	var b bytes.Buffer
	if err := e.SerializePrivate(&b, cfg); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}
