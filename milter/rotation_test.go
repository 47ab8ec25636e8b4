package milter_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
	"github.com/listcrypt/listcrypt/policy"
)

var keyBlock = regexp.MustCompile(`(?s)-----BEGIN PGP PUBLIC KEY BLOCK-----.*?-----END PGP PUBLIC KEY BLOCK-----`)

// attachedKey is the one armored public key in b, parsed.
func attachedKey(t *testing.T, b []byte) (*openpgp.Entity, []byte) {
	t.Helper()
	blocks := keyBlock.FindAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), -1)
	if len(blocks) != 1 {
		t.Fatalf("%d key blocks in %q", len(blocks), b)
	}
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(blocks[0]))
	if err != nil || len(el) != 1 {
		t.Fatalf("attached key: %v (%d)", err, len(el))
	}
	return el[0], blocks[0]
}

// List key rotation: the store keeps the old key, "list key export" and
// the responder's "key get" give the new one; every member's notice is
// verified by the member's gpg, sq and rnp with the old key and with the
// new one, and each imports the attached new key; through the milter
// with a fixed clock, a post encrypted to the old key is delivered
// within keys.old_key_grace and refused after it with the reply that
// points to the new key, while posts to the new key are unaffected.
func TestListKeyRotation(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	site.EditPolicy(t, `old_key_grace = "30d"`, `old_key_grace = "1d"`)
	ctx := context.Background()
	alice := site.AddMember(t, "alice@example.org")
	oldKey := site.ListKey
	oldFpr := keyring.Fingerprint(oldKey)
	oldArmored, err := site.Admin.ExportListKey(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	add := func(addr string, key []byte) {
		t.Helper()
		if _, err := site.Admin.AddMember(ctx, milterfix.List, addr, key); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
	}
	g := pgptest.NewGPG(t)
	add("gina@example.org", g.Export(g.GenKey("Gina <gina@example.org>")))
	g.Import([]byte(oldArmored))
	sq := pgptest.NewSQ(t)
	sk := sq.GenKey("Sam <sam@example.org>")
	add("sam@example.org", sq.Cert(sk))
	oldCert := sq.WriteFile("old.cert", []byte(oldArmored))
	r := pgptest.NewRNP(t)
	add("rita@example.org", r.Export(r.GenKey("Rita <rita@example.org>")))
	r.Import([]byte(oldArmored))

	now := time.Now().UTC().Truncate(time.Second)
	site.Admin.Now = func() time.Time { return now }
	kc, err := site.Admin.RotateListKey(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	if kc.OldFingerprint != oldFpr || kc.NewFingerprint == oldFpr || kc.Notices != 4 || kc.Sent != 4 || kc.NoKey != 0 {
		t.Fatalf("rotate: %+v", kc)
	}
	newFpr := kc.NewFingerprint

	// The store: the new key in the list row, the old one kept with its
	// retirement time; export gives the new key.
	old, err := site.Admin.Store.OldListKeys(ctx, milterfix.List)
	if err != nil || len(old) != 1 || old[0].Fingerprint != oldFpr || !old[0].RetiredAt.Equal(now) || len(old[0].SecretKey) == 0 {
		t.Fatalf("old keys: %v %+v", err, old)
	}
	exported, err := site.Admin.ExportListKey(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	newPub, _ := attachedKey(t, []byte(exported))
	if keyring.Fingerprint(newPub) != newFpr {
		t.Fatalf("export gives %s, want %s", keyring.Fingerprint(newPub), newFpr)
	}
	if newPub.PrimaryKey.PubKeyAlgo != oldKey.PrimaryKey.PubKeyAlgo {
		t.Fatalf("new key algorithm %v, old %v", newPub.PrimaryKey.PubKeyAlgo, oldKey.PrimaryKey.PubKeyAlgo)
	}

	// The notices: one per member, envelope sender the bounce address.
	notices := map[string][]byte{}
	for _, m := range site.Reinjected.Messages() {
		if m.From != "devs-bounces@lists.example.org" || len(m.To) != 1 {
			t.Fatalf("notice envelope %s -> %v", m.From, m.To)
		}
		notices[strings.Trim(m.To[0], "<>")] = m.Data
	}
	if len(notices) != 4 {
		t.Fatalf("notices to %d members", len(notices))
	}
	for addr, n := range notices {
		if !bytes.Contains(n, []byte("Content-Type: multipart/encrypted")) {
			t.Fatalf("notice to %s is not encrypted", addr)
		}
	}
	checkText := func(tool string, pt []byte) {
		t.Helper()
		k, _ := attachedKey(t, pt)
		if keyring.Fingerprint(k) != newFpr || !bytes.Contains(pt, []byte("application/pgp-keys")) ||
			!bytes.Contains(pt, []byte("The key of the list devs@lists.example.org has changed")) {
			t.Fatalf("%s: notice %q", tool, pt)
		}
	}

	// gpg: the old key verifies; the attached key imports; then both do.
	ct := milterfix.ArmoredPart(t, notices["gina@example.org"])
	out, stderr, _ := g.RunErr(ct, "--status-fd", "2", "--decrypt")
	if !bytes.Contains(stderr, []byte("[GNUPG:] VALIDSIG "+oldFpr)) || !bytes.Contains(stderr, []byte("[GNUPG:] DECRYPTION_OKAY")) {
		t.Fatalf("gpg, old key:\n%s", stderr)
	}
	checkText("gpg", out)
	_, att := attachedKey(t, out)
	g.Import(att)
	_, stderr, err = g.RunErr(ct, "--status-fd", "2", "--decrypt")
	if err != nil || !bytes.Contains(stderr, []byte("[GNUPG:] VALIDSIG "+oldFpr)) || !bytes.Contains(stderr, []byte("[GNUPG:] VALIDSIG "+newFpr)) {
		t.Fatalf("gpg, both keys: %v\n%s", err, stderr)
	}

	// sq: a good signature by the old certificate, and by the attached
	// new one alone.
	ct = milterfix.ArmoredPart(t, notices["sam@example.org"])
	out, stderr, err = sq.DecryptErr(ct, sk.KeyFile, oldCert)
	if err != nil || !bytes.Contains(stderr, []byte("Good signature")) {
		t.Fatalf("sq, old key: %v\n%s", err, stderr)
	}
	checkText("sq", out)
	_, att = attachedKey(t, out)
	newCert := sq.WriteFile("new.cert", att)
	if _, stderr, err = sq.DecryptErr(ct, sk.KeyFile, newCert); err != nil || !bytes.Contains(stderr, []byte("Good signature")) {
		t.Fatalf("sq, new key: %v\n%s", err, stderr)
	}

	// rnp: the old key's signature is good; after importing the attached
	// key, both are.
	ct = milterfix.ArmoredPart(t, notices["rita@example.org"])
	out, stderr = r.Decrypt(ct)
	if strings.Count(string(stderr), "Good signature") != 1 || strings.Contains(strings.ToLower(string(stderr)), "bad signature") {
		t.Fatalf("rnp, old key:\n%s", stderr)
	}
	checkText("rnp", out)
	_, att = attachedKey(t, out)
	r.Import(att)
	_, stderr = r.Decrypt(ct)
	if strings.Count(string(stderr), "Good signature") != 2 || strings.Contains(strings.ToLower(string(stderr)), "bad signature") {
		t.Fatalf("rnp, both keys:\n%s", stderr)
	}

	// The responder's "key get" answers with the new key.
	resp, err := workflow.ForSite(site.Admin.Site, nil)
	if err != nil {
		t.Fatal(err)
	}
	capture := &wftest.Capture{}
	resp.Mail = capture
	cmd := "From: carol@example.net\r\nTo: devs-request@lists.example.org\r\nSubject: key get\r\nMessage-ID: <kg@example.net>\r\n\r\nkey get\r\n"
	if _, err := resp.Handle(ctx, []byte(cmd), "devs-request@lists.example.org"); err != nil {
		t.Fatal(err)
	}
	replies := capture.To("carol@example.net")
	if len(replies) != 1 {
		t.Fatalf("%d replies to key get", len(replies))
	}
	if k, _ := attachedKey(t, replies[0].Data); keyring.Fingerprint(k) != newFpr {
		t.Fatalf("key get gives %s, want %s", keyring.Fingerprint(k), newFpr)
	}

	// Through the milter, at a fixed clock.
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	pass, err := keyring.LoadPassphrase(site.Config.PassphraseFile)
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.LoadDir(site.Config.PolicyDir)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	srv := milter.NewServer(milter.Options{Store: site.Admin.Store,
		Keys:   keyring.NewCache(site.Admin.Store, pass, keyring.ConfigLimits(site.Config)),
		Config: site.Config, Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() },
		Log: slog.New(slog.NewTextHandler(logs, nil))}, set)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	c := gomilter.NewClientWithOptions("tcp", ln.Addr().String(), gomilter.ClientOptions{
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptRemoveRcpt | gomilter.OptAddRcpt |
			gomilter.OptChangeBody,
	})
	t.Cleanup(func() { c.Close() })
	m := &mta{t: t, client: c, sink: site.Reinjected}
	post := func(to *openpgp.Entity, body string) result {
		t.Helper()
		return m.send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{
			From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{to}, Body: body}))
	}
	const refusal = `the list key of devs@lists.example.org has changed and the post is encrypted to the old one; send "key get" to devs-request@lists.example.org for the new list key`

	// Within the grace period: the old key's post is delivered, and the
	// members' copies hold it.
	res := post(oldKey, "to the old key, in time")
	if !res.delivered() || len(res.recipients()) != 4 {
		t.Fatalf("old key within the grace period: %+v, %v", res.action, res.recipients())
	}
	if pt := milterfix.DecryptCopy(t, res.copyTo("alice@example.org"), alice, newPub); !bytes.Contains(pt, []byte("to the old key, in time")) {
		t.Fatalf("copy: %q", pt)
	}
	if res := post(newPub, "to the new key"); !res.delivered() {
		t.Fatalf("new key: %+v", res.action)
	}
	// One second before the end, still in; at the end, refused.
	clock.Store(now.Add(24*time.Hour - time.Second).UnixNano())
	if res := post(oldKey, "to the old key, just in time"); !res.delivered() {
		t.Fatalf("old key, last second of the grace period: %+v", res.action)
	}
	clock.Store(now.Add(24 * time.Hour).UnixNano())
	before := len(logs.String())
	res = post(oldKey, "to the old key, too late")
	if res.code() != 550 || !strings.Contains(res.action.SMTPText, refusal) || len(res.copies) != 0 {
		t.Fatalf("old key after the grace period: %d %q", res.code(), res.action.SMTPText)
	}
	if line := logs.String()[before:]; !strings.Contains(line, "reason=old-list-key") || strings.Contains(line, "too late") {
		t.Fatalf("log: %s", line)
	}
	if res := post(newPub, "to the new key, later"); !res.delivered() {
		t.Fatalf("new key after the grace period: %+v", res.action)
	}
	// A key the list never had is still "not for the list key".
	if res := post(milterfix.NewKey(t, "x@example.org"), "elsewhere"); res.code() != 550 || !strings.Contains(res.action.SMTPText, "not encrypted to the list key") {
		t.Fatalf("other key: %d %q", res.code(), res.action.SMTPText)
	}
}
