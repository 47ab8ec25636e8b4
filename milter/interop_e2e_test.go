package milter_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	smrig "github.com/listcrypt/listcrypt/contrib/sendmail/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// mtaRig is what the end-to-end tests need of a real MTA with the
// milter: Postfix (contrib/postfix/rig) or Sendmail
// (contrib/sendmail/rig).
type mtaRig interface {
	SMTPAddr() string
	ReinjectAddr() string
	Sink() *rig.Sink
	// Maillog is what the MTA logged so far.
	Maillog() string
	// WaitQueueEmpty returns once the MTA's queue is empty: all it took
	// has reached the sink or bounced.
	WaitQueueEmpty(ctx context.Context) error
}

// mtas are the MTAs the end-to-end tests run over.
var mtas = []string{"postfix", "sendmail"}

// requireMTA skips (fails under CI) when mta cannot run here.
func requireMTA(t *testing.T, mta string) {
	t.Helper()
	if mta == "sendmail" {
		smrig.Require(t)
		return
	}
	rig.Require(t)
}

// startMTA starts mta with the milter on the unix socket sock.
func startMTA(t *testing.T, mta, sock string) mtaRig {
	t.Helper()
	if mta == "sendmail" {
		return smrig.Start(t, smrig.Options{MilterAddr: "unix:" + sock})
	}
	return rig.Start(t, rig.Options{MilterAddr: "unix:" + sock})
}

// Through a real MTA to the sink: members whose keys come from GnuPG,
// Sequoia and RNP each read their own copy with their own tool and only
// their own key, and verify the list's signature; a non-member's key
// opens nothing; with hide_recipients every key packet has a wildcard
// key ID; the real Subject is inside, the outer one is not it. RNP 0.16
// cannot decrypt hidden recipients (LIBRARY-NOTES), so it is checked on a
// list with hide_recipients = false.
func TestOutboundInteropThroughMTAs(t *testing.T) {
	for _, tool := range []string{"gpg", "sq", "rnp"} {
		pgptest.RequireTool(t, tool)
	}
	for _, mta := range mtas {
		for _, hidden := range []bool{true, false} {
			name := mta + "/hidden"
			if !hidden {
				name = mta + "/visible"
			}
			t.Run(name, func(t *testing.T) { outboundInterop(t, mta, hidden) })
		}
	}
}

// outboundInterop is TestOutboundInteropThroughMTAs through one MTA.
func outboundInterop(t *testing.T, mta string, hidden bool) {
	requireMTA(t, mta)
	site := milterfix.New(t, milterfix.Options{})
	if !hidden {
		site.EditPolicy(t, "hide_recipients = true", "hide_recipients = false")
	}
	ctx := context.Background()
	alice := site.AddMember(t, "alice@example.org")
	listArmored, err := site.Admin.ExportListKey(ctx, milterfix.List)
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
	gfpr := g.GenKey("Gina <gina@example.org>")
	g.Import([]byte(listArmored))
	add("gina@example.org", g.Export(gfpr))
	sq := pgptest.NewSQ(t)
	sk := sq.GenKey("Sam <sam@example.org>")
	add("sam@example.org", sq.Cert(sk))
	listCert := sq.WriteFile("list.cert", []byte(listArmored))
	var r *pgptest.RNP
	if !hidden {
		r = pgptest.NewRNP(t)
		rfpr := r.GenKey("Rita <rita@example.org>")
		r.Import([]byte(listArmored))
		add("rita@example.org", r.Export(rfpr))
	}
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := startMTA(t, mta, sock)
	site.Config.Reinject.Address = pf.ReinjectAddr()
	startDaemon(t, site)

	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", Subject: "Secret release plans",
		SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "interop CANARY-9d1e"})
	if err := rig.Send(pf.SMTPAddr(), "alice@example.org", []string{milterfix.List}, msg); err != nil {
		t.Fatal(err)
	}
	members := 3
	if !hidden {
		members = 4
	}
	waitCopies(t, pf.Sink(), "devs-bounces@lists.example.org", members)
	var cp []byte
	for _, m := range pf.Sink().Messages() {
		if m.From == "devs-bounces@lists.example.org" {
			cp = m.Data
		}
	}
	outer, _, _ := bytes.Cut(cp, []byte("\r\n\r\n"))
	if !bytes.Contains(outer, []byte("\r\nSubject: ...\r\n")) || bytes.Contains(cp, []byte("Secret release plans")) || bytes.Contains(cp, []byte("CANARY-9d1e")) {
		t.Fatalf("outer header reveals the post:\n%s", outer)
	}
	ct := milterfix.ArmoredPart(t, cp)
	checkKeyIDs(t, ct, hidden)

	check := func(tool string, out []byte) {
		t.Helper()
		if !bytes.Contains(out, []byte("interop CANARY-9d1e")) || !bytes.Contains(out, []byte("Subject: Secret release plans")) {
			t.Fatalf("%s: decrypted %q", tool, out)
		}
	}
	out, stderr, _ := g.RunErr(ct, "--status-fd", "2", "--decrypt")
	if !bytes.Contains(stderr, []byte("[GNUPG:] VALIDSIG "+keyring.Fingerprint(site.ListKey))) || !bytes.Contains(stderr, []byte("[GNUPG:] DECRYPTION_OKAY")) {
		t.Fatalf("gpg:\n%s", stderr)
	}
	check("gpg", out)
	out, stderr, err = sq.DecryptErr(ct, sk.KeyFile, listCert)
	if err != nil || !bytes.Contains(stderr, []byte("Good signature")) {
		t.Fatalf("sq: %v\n%s", err, stderr)
	}
	check("sq", out)
	if r != nil {
		// rnp exits 0 on a bad signature: read what it says.
		out, stderr := r.Decrypt(ct)
		e := string(stderr)
		if !strings.Contains(e, "Good signature") || strings.Contains(strings.ToLower(e), "bad signature") {
			t.Fatalf("rnp:\n%s", e)
		}
		check("rnp", out)
	}
	// A non-member's key opens nothing.
	mallory := milterfix.NewKey(t, "mallory@evil.example")
	block, err := armor.Decode(bytes.NewReader(ct))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openpgp.ReadMessage(block.Body, openpgp.EntityList{mallory}, nil, keyring.PacketConfig(keyring.DefaultLimits, nil)); err == nil {
		t.Fatal("a non-member key decrypted a copy")
	}
	t.Logf("through %s: %d members' copies, decrypted with gpg, sq%s", mta, members, map[bool]string{true: "", false: " and rnp"}[hidden])
}

// checkKeyIDs asserts every key packet's key ID is the wildcard (hidden)
// or none is.
func checkKeyIDs(t *testing.T, armored []byte, hidden bool) {
	t.Helper()
	block, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	pr := packet.NewReader(block.Body)
	n := 0
	for {
		p, err := pr.Next()
		if err != nil {
			break
		}
		ek, ok := p.(*packet.EncryptedKey)
		if !ok {
			if _, marker := p.(*packet.Marker); marker {
				continue
			}
			break
		}
		n++
		if (ek.KeyId == 0) != hidden {
			t.Fatalf("key packet %d: key ID %X, hidden=%v", n, ek.KeyId, hidden)
		}
	}
	if n == 0 {
		t.Fatal("no key packets")
	}
}
