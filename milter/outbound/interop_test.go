package outbound

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
)

// armoredPart returns the armored OpenPGP message of a PGP/MIME message,
// as a member's mail client hands it to its OpenPGP tool.
func armoredPart(t testing.TB, msg []byte) []byte {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := textproto.NewMultipartReader(br, params["boundary"])
	var last []byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return last
		}
		if err != nil {
			t.Fatal(err)
		}
		if last, err = io.ReadAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestInterop: members whose keys were made by GnuPG, Sequoia and RNP
// each decrypt their own copy with their own tool and verify the list's
// signature. Batches mix in RSA-2048 keys so that the key packets need
// Marker padding (armor.go), and the per-batch base64 run ends with a
// short line: the tools must accept both.
//
// Hidden recipients: gpg and sq try every secret key on a wildcard key
// ID; rnp 0.16.3 cannot decrypt such a message at all (rnp 0.17 added
// --allow-hidden, which Thunderbird's RNP uses), so rnp members need a
// list with hide_recipients = false, which this test covers.
func TestInterop(t *testing.T) {
	listPub, err := keyring.ArmorPublicKey(testListKey(t))
	if err != nil {
		t.Fatal(err)
	}
	parse := func(name string, pub []byte) Recipient {
		t.Helper()
		mk, err := keyring.ParseMemberKey(pub, keyring.DefaultLimits, time.Now())
		if err != nil {
			t.Fatalf("%s key: %v", name, err)
		}
		return Recipient{Address: mk.Addresses[0], Key: keyring.EntityKey(mk.Entity)}
	}

	g := pgptest.NewGPG(t)
	gfpr := g.GenKey("Gina <gina@example.net>")
	g.Import([]byte(listPub))

	s := pgptest.NewSQ(t)
	sk := s.GenKey("Sam <sam@example.net>")
	listCert := s.WriteFile("list.cert", []byte(listPub))

	r := pgptest.NewRNP(t)
	rfpr := r.GenKey("Rita <rita@example.net>")
	r.Import([]byte(listPub))

	gina, sam, rita := parse("gpg", g.Export(gfpr)), parse("sq", s.Cert(sk)), parse("rnp", r.Export(rfpr))
	filler := func(name string) Recipient {
		return Recipient{Address: name + "@example.net", Key: keyring.EntityKey(memberKey(t, name, rsa2048))}
	}
	// Batch 1: gpg, sq, RSA-2048 (96+96+271 bytes of PKESK: one Marker).
	// Batch 2: rnp, 2 x RSA-2048 (96+271+271: two Markers).
	rs := []Recipient{gina, sam, filler("fa"), rita, filler("fb"), filler("fc")}

	listKeyID := strings.ToUpper(testListKey(t).PrimaryKey.KeyIdString())
	listFpr := keyring.Fingerprint(testListKey(t))
	gpgDecrypt := func(ct []byte) (string, error) {
		out, errOut, err := g.RunErr(ct, "--status-fd", "2", "--decrypt")
		if err != nil {
			return "", err
		}
		if !strings.Contains(string(errOut), "[GNUPG:] VALIDSIG "+listFpr) || !strings.Contains(string(errOut), "[GNUPG:] DECRYPTION_OKAY") {
			t.Fatalf("gpg did not verify the list signature:\n%s", errOut)
		}
		return string(out), nil
	}
	checkInner := func(tool, inner string) {
		t.Helper()
		if !strings.Contains(inner, "CANARY-7f3a") || !strings.Contains(inner, "Subject: Secret plans for the release\r\n") || !strings.Contains(inner, `hp="cipher"`) {
			t.Fatalf("%s: inner entity %q", tool, inner)
		}
	}

	for _, hidden := range []bool{true, false} {
		p := testParams(t)
		p.Now, p.Rand, p.BatchSize, p.HideRecipients = time.Now, nil, 3, hidden
		post := testPost()
		if !hidden {
			// Large enough to be compressed: every tool reads ZIP.
			post.Inner = append(post.Inner, bytes.Repeat([]byte("a filler line that makes the post worth compressing\r\n"), 4000)...)
		}
		pr, err := Prepare(post, p)
		if err != nil {
			t.Fatal(err)
		}
		bs, err := pr.Batches(rs)
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != 2 {
			t.Fatalf("%d batches", len(bs))
		}
		// Marker packets make each batch's key packets a multiple of 3
		// bytes (armor.go). How many depends on the exact PKESK sizes (an
		// RSA ciphertext is a byte shorter when its top byte is zero), so
		// the expectation is computed from the packets themselves.
		for i := range bs {
			bin := parseMessage(t, bs[i].Message()).pgp
			m := 0
			for bytes.HasPrefix(bin[5*m:], markerPacket) {
				m++
			}
			keyLen := pkeskLen(t, bin[5*m:])
			if want := len(markersFor(keyLen)) / len(markerPacket); m != want || (5*m+keyLen)%3 != 0 {
				t.Fatalf("batch %d: %d markers before %d bytes of key packets, want %d", i+1, m, keyLen, want)
			}
		}
		b1, b2 := armoredPart(t, bs[0].Message()), armoredPart(t, bs[1].Message())
		if !hidden && len(b1) > len(post.Inner)/4 {
			t.Fatalf("a %d byte post of text goes out as %d bytes: not compressed", len(post.Inner), len(b1))
		}

		// GnuPG.
		inner, err := gpgDecrypt(b1)
		if err != nil {
			t.Fatalf("hidden=%v: gpg: %v", hidden, err)
		}
		checkInner("gpg", inner)
		if _, err := gpgDecrypt(b2); err == nil {
			t.Fatalf("hidden=%v: gpg decrypts a batch it is not in", hidden)
		}

		// Sequoia: decrypt with only Sam's key, require the list's signature.
		out, errOut, err := s.DecryptErr(b1, sk.KeyFile, listCert)
		if err != nil {
			t.Fatalf("hidden=%v: sq: %v", hidden, err)
		}
		if !strings.Contains(string(errOut), "Good signature") {
			t.Fatalf("sq did not report the list signature:\n%s", errOut)
		}
		checkInner("sq", string(out))
		if _, _, err := s.DecryptErr(b2, sk.KeyFile, listCert); err == nil {
			t.Fatalf("hidden=%v: sq decrypts a batch it is not in", hidden)
		}

		// RNP: exit status 0 does not mean a good signature; read stderr.
		in := r.WriteFile("ct.asc", b2)
		out, errOut, err = r.RunErr(nil, "--decrypt", "--password", "", "--output", "-", in)
		if hidden {
			if err == nil {
				t.Logf("rnp decrypted a hidden-recipient message: newer than 0.16.3? %s", errOut)
			} else {
				t.Logf("rnp with hidden recipients fails as documented: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("rnp: %v", err)
		}
		e := string(errOut)
		if !strings.Contains(e, "Good signature") || strings.Contains(strings.ToLower(e), "bad signature") || !strings.Contains(strings.ToUpper(e), listKeyID) {
			t.Fatalf("rnp did not verify the list signature:\n%s", e)
		}
		checkInner("rnp", string(out))
	}
}

// pkeskLen returns the length of the PKESK packets (new format, as
// go-crypto writes them) at the start of bin.
func pkeskLen(t *testing.T, bin []byte) int {
	t.Helper()
	n := 0
	for n < len(bin) && bin[n] == 0xC0|1 {
		o := int(bin[n+1])
		switch {
		case o < 192:
			n += 2 + o
		case o < 224:
			n += 3 + (o-192)<<8 + int(bin[n+2]) + 192
		default:
			t.Fatalf("unexpected PKESK length octet %#x", o)
		}
	}
	if n == 0 {
		t.Fatal("no key packets after the markers")
	}
	return n
}
