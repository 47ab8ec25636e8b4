package inbound

import (
	"bytes"
	"compress/flate"
	"crypto/aes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Deterministic fixtures: keys and messages come from a seeded ChaCha8
// stream and a fixed clock, so every run builds the same bytes.
var (
	t0      = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) // key creation
	tSign   = t0.Add(time.Hour)                            // signatures
	tNow    = t0.Add(24 * time.Hour)                       // Examine's Now
	fixOnce sync.Once
	fix     *fixtures
)

type fixtures struct {
	list, alice, bob, mallory, other *openpgp.Entity
	signers                          openpgp.EntityList
}

func detRand(seed string) io.Reader {
	return rand.NewChaCha8(sha256.Sum256([]byte(seed)))
}

func fixedConfig(seed string, at time.Time) *packet.Config {
	return &packet.Config{
		Rand:                   detRand(seed),
		Time:                   func() time.Time { return at },
		Algorithm:              packet.PubKeyAlgoEdDSA,
		Curve:                  packet.Curve25519,
		DefaultCipher:          packet.CipherAES256,
		DefaultCompressionAlgo: packet.CompressionNone,
	}
}

func newKey(t testing.TB, name string) *openpgp.Entity {
	t.Helper()
	cfg := fixedConfig("key "+name, t0)
	// Advertise ZLIB (after "uncompressed") so tests can compress.
	cfg.DefaultCompressionAlgo = packet.CompressionZLIB
	e, err := openpgp.NewEntity(name, "", strings.ToLower(name)+"@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func getFixtures(t testing.TB) *fixtures {
	t.Helper()
	fixOnce.Do(func() {
		f := &fixtures{
			list:    newKey(t, "List"),
			alice:   newKey(t, "Alice"),
			bob:     newKey(t, "Bob"),
			mallory: newKey(t, "Mallory"),
			other:   newKey(t, "Other"),
		}
		// Members as the caller has them: public keys only.
		f.signers = openpgp.EntityList{publicOnly(t, f.alice), publicOnly(t, f.bob)}
		fix = f
	})
	if fix == nil {
		t.Fatal("fixtures failed")
	}
	return fix
}

func publicOnly(t testing.TB, e *openpgp.Entity) *openpgp.Entity {
	t.Helper()
	var b bytes.Buffer
	if err := e.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	el, err := openpgp.ReadKeyRing(&b)
	if err != nil {
		t.Fatal(err)
	}
	return el[0]
}

func (f *fixtures) input(msg []byte) Input {
	return Input{Message: msg, ListKey: f.list, Signers: f.signers, Now: tNow}
}

// encOpts shapes an encrypted test message.
type encOpts struct {
	to, hidden []*openpgp.Entity
	signer     *openpgp.Entity
	compress   packet.CompressionAlgo
	seed       string
}

// encrypt encrypts plaintext and returns the binary OpenPGP message.
func encrypt(t testing.TB, plaintext []byte, o encOpts) []byte {
	t.Helper()
	cfg := fixedConfig("enc "+o.seed, tSign)
	cfg.DefaultCompressionAlgo = o.compress
	var signers []*openpgp.Entity
	if o.signer != nil {
		signers = []*openpgp.Entity{o.signer}
	}
	var b bytes.Buffer
	w, err := openpgp.EncryptWithParams(&b, o.to, o.hidden, &openpgp.EncryptParams{Signers: signers, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plaintext); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func armored(t testing.TB, typ string, bin []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, typ, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bin)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b.WriteString("\n")
	return b.Bytes()
}

// crlf turns LF line ends into CRLF (test messages are written with LF).
func crlf(s string) []byte {
	return []byte(strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n"))
}

const hdr = "From: Alice <alice@example.org>\nTo: list@example.org\nSubject: test\nDate: Sat, 01 Mar 2025 13:00:00 +0000\nMessage-ID: <1@example.org>\nMIME-Version: 1.0\n"

// pgpMIME wraps an armored message in multipart/encrypted (RFC 3156 §4).
func pgpMIME(arm []byte) []byte {
	return crlf(hdr + `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="enc-b"

This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)
--enc-b
Content-Type: application/pgp-encrypted
Content-Description: PGP/MIME version identification

Version: 1

--enc-b
Content-Type: application/octet-stream; name="encrypted.asc"
Content-Disposition: inline; filename="encrypted.asc"

` + string(arm) + `
--enc-b--
`)
}

const innerEntity = "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\nHello list,\n\nthis is the secret post.\n"

// detachSign returns an armored detached signature over data.
func detachSign(t testing.TB, signer *openpgp.Entity, data []byte, seed string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&b, []*openpgp.Entity{signer}, bytes.NewReader(data), &openpgp.SignParams{Config: fixedConfig("sig "+seed, tSign)}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// signedEntity builds a multipart/signed entity (RFC 3156 §5) whose first
// part is first (LF line ends; signed in CRLF form). The returned bytes
// use LF; headers is prepended (a message header or nothing).
func signedEntity(t testing.TB, headers string, first string, signer *openpgp.Entity, seed string) string {
	t.Helper()
	sig := detachSign(t, signer, crlf(first), seed)
	return headers + `Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="sig-b"

This is an OpenPGP/MIME signed message (RFC 4880 and 3156)
--sig-b
` + first + `
--sig-b
Content-Type: application/pgp-signature; name="signature.asc"
Content-Description: OpenPGP digital signature

` + strings.ReplaceAll(string(sig), "\r\n", "\n") + `
--sig-b--
`
}

func clearsigned(t testing.TB, signer *openpgp.Entity, text string) string {
	t.Helper()
	var b bytes.Buffer
	w, err := clearsign.Encode(&b, signer.PrivateKey, fixedConfig("clear", tSign))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, text)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String() + "\n"
}

func textMessage(body string) []byte {
	return crlf(hdr + "Content-Type: text/plain; charset=us-ascii\n\n" + body)
}

// flipMiddle flips one bit in the middle of the encrypted data.
func flipMiddle(bin []byte) []byte {
	out := bytes.Clone(bin)
	out[len(out)*2/3] ^= 0x20
	return out
}

// sedMessage builds a PKESK for the list key followed by a Symmetrically
// Encrypted Data packet (tag 9, OpenPGP CFB with resync, no MDC), as
// gpg --rfc2440 writes.
func sedMessage(t testing.TB, f *fixtures) []byte {
	t.Helper()
	cfg := fixedConfig("sed", tSign)
	key := make([]byte, 32)
	io.ReadFull(cfg.Rand, key)
	var b bytes.Buffer
	if err := packet.SerializeEncryptedKey(&b, f.list.Subkeys[0].PublicKey, packet.CipherAES256, key, cfg); err != nil {
		t.Fatal(err)
	}
	// Literal data packet as the plaintext.
	var lit bytes.Buffer
	lw, err := packet.SerializeLiteral(nopCloser{&lit}, true, "", uint32(tSign.Unix()))
	if err != nil {
		t.Fatal(err)
	}
	lw.Write([]byte("unprotected secret\n"))
	lw.Close()
	block, _ := aes.NewCipher(key)
	prefixRand := make([]byte, block.BlockSize())
	io.ReadFull(cfg.Rand, prefixRand)
	s, prefix := packet.NewOCFBEncrypter(block, prefixRand, packet.OCFBResync)
	body := append([]byte{}, prefix...)
	ct := make([]byte, lit.Len())
	s.XORKeyStream(ct, lit.Bytes())
	body = append(body, ct...)
	// New-format header, tag 9, two-octet length if needed.
	b.WriteByte(0xC0 | 9)
	writeNewLen(&b, len(body))
	b.Write(body)
	return b.Bytes()
}

func writeNewLen(b *bytes.Buffer, n int) {
	switch {
	case n < 192:
		b.WriteByte(byte(n))
	case n < 8384:
		n -= 192
		b.WriteByte(byte(n>>8) + 192)
		b.WriteByte(byte(n))
	default:
		b.WriteByte(255)
		b.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// deepMessage nests depth multipart/mixed levels.
func deepMessage(depth int) []byte {
	var b bytes.Buffer
	b.WriteString(strings.ReplaceAll(hdr, "\n", "\r\n"))
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"d%d\"\r\n\r\n--d%d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\nbottom\r\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--d%d--\r\n", i)
	}
	return b.Bytes()
}

// wideMessage has n text parts.
func wideMessage(n int) []byte {
	var b bytes.Buffer
	b.WriteString(strings.ReplaceAll(hdr, "\n", "\r\n"))
	b.WriteString("Content-Type: multipart/mixed; boundary=\"w\"\r\n\r\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "--w\r\nContent-Type: text/plain\r\n\r\npart %d\r\n", i)
	}
	b.WriteString("--w--\r\n")
	return b.Bytes()
}

// hugePartHeader has a part whose header is size bytes.
func hugePartHeader(size int) []byte {
	var b bytes.Buffer
	b.WriteString(strings.ReplaceAll(hdr, "\n", "\r\n"))
	b.WriteString("Content-Type: multipart/mixed; boundary=\"h\"\r\n\r\n--h\r\nContent-Type: text/plain\r\n")
	line := "X-Junk: " + strings.Repeat("j", 70) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	b.WriteString("\r\nbody\r\n--h--\r\n")
	return b.Bytes()
}

var (
	bombOnce sync.Once
	bombMsg  []byte
)

// bombMessage is 512 MiB of zeros in a literal packet, compressed
// (ZIP, raw deflate) inside SEIPD encryption to the list key: about 500
// KB of ciphertext. The deflate stream is assembled from one flushed
// segment that decodes to 1 MiB of zeros given zero history, repeated, so
// building it costs milliseconds even under -race.
func bombMessage(t testing.TB, f *fixtures) []byte {
	t.Helper()
	bombOnce.Do(func() {
		const mib, n = 1 << 20, 512
		zeros := make([]byte, mib)
		var z bytes.Buffer
		fw, _ := flate.NewWriter(&z, flate.BestCompression)
		// Literal data packet header: new format, tag 11, 4-octet length.
		litBody := n*mib + 6
		fw.Write([]byte{0xC0 | 11, 255, byte(litBody >> 24), byte(litBody >> 16), byte(litBody >> 8), byte(litBody), 'b', 0, 0, 0, 0, 0})
		fw.Write(zeros)
		fw.Flush()
		head := z.Len()
		fw.Write(zeros)
		fw.Flush()
		seg := bytes.Clone(z.Bytes()[head:])
		for i := 2; i < n; i++ {
			z.Write(seg)
		}
		z.Write([]byte{0x03, 0x00}) // final empty fixed-Huffman block
		var comp bytes.Buffer
		comp.WriteByte(0xC0 | 8)
		writeNewLen(&comp, z.Len()+1)
		comp.WriteByte(byte(packet.CompressionZIP))
		comp.Write(z.Bytes())

		cfg := fixedConfig("bomb", tSign)
		key := make([]byte, 32)
		io.ReadFull(cfg.Rand, key)
		var b bytes.Buffer
		if err := packet.SerializeEncryptedKey(&b, f.list.Subkeys[0].PublicKey, packet.CipherAES256, key, cfg); err != nil {
			t.Fatal(err)
		}
		w, err := packet.SerializeSymmetricallyEncrypted(&b, packet.CipherAES256, false, packet.CipherSuite{}, key, cfg)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(comp.Bytes())
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		bombMsg = pgpMIME(armored(t, "PGP MESSAGE", b.Bytes()))
	})
	return bombMsg
}

// reencrypt decrypts bin with from's key and encrypts the raw decrypted
// packet stream (signature included) to to, as a recipient forwarding a
// signed message would.
func reencrypt(t testing.TB, bin []byte, from, to *openpgp.Entity) []byte {
	t.Helper()
	ex := &examiner{in: Input{ListKey: from}, cfg: fixedConfig("re", tNow), res: &Result{}}
	sc, err := scanPackets(bin, 64)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ex.openData(bin, sc)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := fixedConfig("re-enc", tSign)
	key := make([]byte, 32)
	io.ReadFull(cfg.Rand, key)
	var b bytes.Buffer
	if err := packet.SerializeEncryptedKey(&b, to.Subkeys[0].PublicKey, packet.CipherAES256, key, cfg); err != nil {
		t.Fatal(err)
	}
	w, err := packet.SerializeSymmetricallyEncrypted(&b, packet.CipherAES256, false, packet.CipherSuite{}, key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(inner)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// timeNow is the clock for tests with keys the tools made just now.
func timeNow() time.Time { return time.Now() }
