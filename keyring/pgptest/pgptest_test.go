package pgptest_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
)

// The direction the outbound stage needs: go-crypto encrypts and signs
// (as the list), each tool decrypts and verifies.

func listKey(t *testing.T) (*openpgp.Entity, []byte) {
	t.Helper()
	cfg := keyring.PacketConfig(keyring.DefaultLimits, nil)
	cfg.Algorithm, cfg.Curve = packet.PubKeyAlgoEdDSA, packet.Curve25519
	e, err := openpgp.NewEntity("List", "", "list@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w, _ := armor.Encode(&b, "PGP PUBLIC KEY BLOCK", nil)
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return e, b.Bytes()
}

func encryptTo(t *testing.T, to []byte, signer *openpgp.Entity, msg string) []byte {
	t.Helper()
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(to))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	aw, _ := armor.Encode(&b, "PGP MESSAGE", nil)
	w, err := openpgp.EncryptWithParams(aw, el, nil, &openpgp.EncryptParams{Signers: []*openpgp.Entity{signer}, Config: keyring.PacketConfig(keyring.DefaultLimits, nil)})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(msg))
	w.Close()
	aw.Close()
	return b.Bytes()
}

func TestGPG(t *testing.T) {
	list, listPub := listKey(t)
	g := pgptest.NewGPG(t)
	g.Import(listPub)
	fpr := g.GenKey("Gina <gina@example.org>")
	if len(fpr) != 40 || !strings.Contains(string(g.ExportSecret(fpr)), "PRIVATE KEY") {
		t.Fatalf("fpr %q / secret export", fpr)
	}
	ct := encryptTo(t, g.Export(fpr), list, "to gina\n")
	out, errOut := g.Run(ct, "--decrypt")
	if string(out) != "to gina\n" || !strings.Contains(string(errOut), "Good signature") {
		t.Fatalf("gpg: %q %s", out, errOut)
	}
}

func TestSQ(t *testing.T) {
	list, listPub := listKey(t)
	s := pgptest.NewSQ(t)
	k := s.GenKey("<sam@example.org>")
	listCert := s.WriteFile("list.cert", listPub)
	ct := encryptTo(t, s.Cert(k), list, "to sam\n")
	if out := s.Decrypt(ct, k.KeyFile, listCert); string(out) != "to sam\n" {
		t.Fatalf("sq: %q", out)
	}
	// Signing and verifying with sq itself.
	sig := s.Sign([]byte("data"), k.KeyFile, true)
	if _, _, err := s.VerifyErr([]byte("data"), sig, k.CertFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.VerifyErr([]byte("tampered"), sig, k.CertFile); err == nil {
		t.Fatal("sq verified a tampered message")
	}
}

func TestRNP(t *testing.T) {
	list, listPub := listKey(t)
	r := pgptest.NewRNP(t)
	r.Import(listPub)
	fpr := r.GenKey("Rita <rita@example.org>")
	ct := encryptTo(t, r.Export(fpr), list, "to rita\n")
	out, errOut := r.Decrypt(ct)
	if string(out) != "to rita\n" || !strings.Contains(strings.ToLower(string(errOut)), "good signature") {
		t.Fatalf("rnp: %q %s", out, errOut)
	}
}
