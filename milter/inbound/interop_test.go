package inbound

import (
	"bytes"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
)

// Interop: posts made by the tools subscribers use are examined. The list
// key (go-crypto, EdDSA + ECDH Curve25519) is given to each tool; each
// tool's member key goes into Signers.

func exportPublic(t *testing.T, e *openpgp.Entity) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := e.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	return armored(t, "PGP PUBLIC KEY BLOCK", b.Bytes())
}

func readKey(t *testing.T, armoredKey []byte) *openpgp.Entity {
	t.Helper()
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(armoredKey))
	if err != nil || len(el) != 1 {
		t.Fatalf("reading tool key: %v (%d keys)", err, len(el))
	}
	return el[0]
}

func examineInterop(t *testing.T, f *fixtures, member *openpgp.Entity, msg []byte) *Result {
	t.Helper()
	in := f.input(msg)
	in.Signers = openpgp.EntityList{member}
	// Tool keys and signatures are made now, not at the fixture time.
	in.Now = timeNow()
	res, err := Examine(in)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func wantValid(t *testing.T, res *Result, kind Kind, encrypted bool, fpr string) {
	t.Helper()
	if res.Kind != kind || res.Encrypted != encrypted || res.Integrity != encrypted || res.Sig != SigValid || len(res.Problems) > 0 {
		t.Fatalf("kind=%v encrypted=%v integrity=%v sig=%v problems=%v", res.Kind, res.Encrypted, res.Integrity, res.Sig, res.Problems)
	}
	if res.SignerFingerprint != strings.ToUpper(fpr) {
		t.Fatalf("signer %s, want %s", res.SignerFingerprint, fpr)
	}
	if len(res.SigDigests) == 0 || (encrypted && len(res.CiphertextDigest) != 32) {
		t.Fatalf("digests missing")
	}
}

func TestInteropGPG(t *testing.T) {
	f := getFixtures(t)
	g := pgptest.NewGPG(t)
	g.Import(exportPublic(t, f.list))
	listFpr := fingerprint(f.list)
	fpr := g.GenKey("Gina <gina@example.org>")
	member := readKey(t, g.Export(fpr))

	t.Run("inline sign+encrypt", func(t *testing.T) {
		ct, _ := g.Run([]byte("inline from gpg\n"), "--armor", "--sign", "--encrypt", "-r", listFpr, "-u", fpr)
		res := examineInterop(t, f, member, textMessage(string(ct)))
		wantValid(t, res, InlineEncrypted, true, fpr)
		if !bytes.Contains(res.Plaintext, []byte("inline from gpg")) {
			t.Fatalf("plaintext %q", res.Plaintext)
		}
	})
	t.Run("pgp/mime combined", func(t *testing.T) {
		ct, _ := g.Run(crlf(innerEntity), "--armor", "--sign", "--encrypt", "-r", listFpr, "-u", fpr)
		res := examineInterop(t, f, member, pgpMIME(ct))
		wantValid(t, res, PGPMIMEEncrypted, true, fpr)
	})
	t.Run("pgp/mime sign-then-encrypt", func(t *testing.T) {
		first := crlf(strings.TrimSuffix(innerEntity, "\n"))
		sig, _ := g.Run(first, "--armor", "--detach-sign", "-u", fpr)
		inner := "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"s\"\r\n\r\n--s\r\n" +
			string(first) + "\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\n" + string(sig) + "\r\n--s--\r\n"
		ct, _ := g.Run([]byte(inner), "--armor", "--encrypt", "-r", listFpr)
		res := examineInterop(t, f, member, pgpMIME(ct))
		wantValid(t, res, PGPMIMEEncrypted, true, fpr)
	})
	t.Run("pgp/mime signed only", func(t *testing.T) {
		first := crlf("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nSigned by gpg, trailing space =20\nend")
		sig, _ := g.Run(first, "--armor", "--detach-sign", "-u", fpr)
		msg := signedMessage(first, sig)
		res := examineInterop(t, f, member, msg)
		wantValid(t, res, PGPMIMESigned, false, fpr)
	})
	t.Run("inline clearsign", func(t *testing.T) {
		cs, _ := g.Run([]byte("clear text from gpg\n-- \nsig\n"), "--clearsign", "-u", fpr)
		res := examineInterop(t, f, member, textMessage(string(cs)))
		wantValid(t, res, InlineSigned, false, fpr)
	})
	t.Run("rfc2440 without MDC", func(t *testing.T) {
		ct, _ := g.Run([]byte("legacy\n"), "--armor", "--rfc2440", "--encrypt", "-r", listFpr)
		res := examineInterop(t, f, member, pgpMIME(ct))
		if !res.Has(ErrNoIntegrity) || res.Integrity || res.Plaintext != nil {
			t.Fatalf("gpg --rfc2440: problems %v integrity %v", res.Problems, res.Integrity)
		}
	})
}

func TestInteropSQ(t *testing.T) {
	f := getFixtures(t)
	s := pgptest.NewSQ(t)
	listCert := s.WriteFile("list.cert", exportPublic(t, f.list))
	k := s.GenKey("<sam@example.org>")
	member := readKey(t, s.Cert(k))

	t.Run("pgp/mime combined", func(t *testing.T) {
		ct := s.Encrypt(crlf(innerEntity), []string{listCert}, k.KeyFile)
		res := examineInterop(t, f, member, pgpMIME(ct))
		wantValid(t, res, PGPMIMEEncrypted, true, k.Fingerprint)
	})
	t.Run("inline", func(t *testing.T) {
		ct := s.Encrypt([]byte("inline from sq\n"), []string{listCert}, k.KeyFile)
		res := examineInterop(t, f, member, textMessage(string(ct)))
		wantValid(t, res, InlineEncrypted, true, k.Fingerprint)
	})
	t.Run("pgp/mime signed only", func(t *testing.T) {
		first := crlf("Content-Type: text/plain\n\nSigned by sq.\n")
		sig := s.Sign(first, k.KeyFile, true)
		msg := signedMessage(first, sig)
		res := examineInterop(t, f, member, msg)
		wantValid(t, res, PGPMIMESigned, false, k.Fingerprint)
	})
}

func TestInteropRNP(t *testing.T) {
	f := getFixtures(t)
	r := pgptest.NewRNP(t)
	r.Import(exportPublic(t, f.list))
	fpr := r.GenKey("Rita <rita@example.org>")
	member := readKey(t, r.Export(fpr))

	t.Run("pgp/mime combined", func(t *testing.T) {
		ct := r.SignEncrypt(crlf(innerEntity), fingerprint(f.list), fpr)
		res := examineInterop(t, f, member, pgpMIME(ct))
		wantValid(t, res, PGPMIMEEncrypted, true, fpr)
	})
	t.Run("inline", func(t *testing.T) {
		ct := r.SignEncrypt([]byte("inline from rnp\n"), fingerprint(f.list), fpr)
		res := examineInterop(t, f, member, textMessage(string(ct)))
		wantValid(t, res, InlineEncrypted, true, fpr)
	})
	t.Run("aead (OCB, tag 20)", func(t *testing.T) {
		in := r.WriteFile("aead-plain", crlf(innerEntity))
		ct, _ := r.Run(nil, "--encrypt", "--sign", "--aead=OCB", "-r", fingerprint(f.list), "-u", fpr, "--armor", "--password", "", "--output", "-", in)
		res := examineInterop(t, f, member, pgpMIME(ct))
		wantValid(t, res, PGPMIMEEncrypted, true, fpr)
	})
}

// signedMessage builds a multipart/signed post around first (CRLF, as
// signed) and an armored signature.
func signedMessage(first, sig []byte) []byte {
	var b bytes.Buffer
	b.Write(crlf(hdr + "Content-Type: multipart/signed; micalg=pgp-sha512; protocol=\"application/pgp-signature\"; boundary=\"s\"\n\n--s\n"))
	b.Write(first)
	b.Write(crlf("\n--s\nContent-Type: application/pgp-signature\n\n" + string(sig) + "\n--s--\n"))
	return b.Bytes()
}
