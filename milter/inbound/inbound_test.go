package inbound

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

type want struct {
	kind      Kind
	encrypted bool
	integrity bool
	sig       SigStatus
	signer    *openpgp.Entity
	problems  []error // each must match some problem (errors.Is)
	plaintext string  // substring of Result.Plaintext
	limit     string  // LimitError.What expected
	noDigest  bool    // CiphertextDigest must be nil
}

type tcase struct {
	name  string
	msg   func(t *testing.T, f *fixtures) []byte
	limit Limits
	want  want
}

func examineCases(t *testing.T) []tcase {
	return []tcase{
		{
			name: "plain",
			msg:  func(t *testing.T, f *fixtures) []byte { return textMessage("hello list\n") },
			want: want{kind: Plain, noDigest: true},
		},
		{
			name: "plain LF line ends, multipart alternative",
			msg: func(t *testing.T, f *fixtures) []byte {
				return []byte(hdr + "Content-Type: multipart/alternative; boundary=a\n\n--a\nContent-Type: text/plain\n\nhi\n--a\nContent-Type: text/html\n\n<p>hi</p>\n--a--\n")
			},
			want: want{kind: Plain},
		},
		{
			name: "pgp/mime encrypted and signed (combined, RFC 3156 §6.2)",
			msg: func(t *testing.T, f *fixtures) []byte {
				return pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, signer: f.alice, seed: "combined"})))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, sig: SigValid, signer: getFixtures(t).alice, plaintext: "secret post"},
		},
		{
			name: "pgp/mime encrypted, compressed, hidden recipient",
			msg: func(t *testing.T, f *fixtures) []byte {
				return pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{hidden: []*openpgp.Entity{f.other, f.list}, signer: f.bob, compress: packet.CompressionZLIB, seed: "hidden"})))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, sig: SigValid, signer: getFixtures(t).bob, plaintext: "secret post"},
		},
		{
			name: "pgp/mime encrypted, unsigned",
			msg: func(t *testing.T, f *fixtures) []byte {
				return pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, seed: "unsigned"})))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, sig: SigNone, plaintext: "secret post"},
		},
		{
			name: "pgp/mime sign-then-encrypt (RFC 3156 §6.1)",
			msg: func(t *testing.T, f *fixtures) []byte {
				inner := signedEntity(t, "", strings.TrimSuffix(innerEntity, "\n"), f.alice, "ste")
				return pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(inner), encOpts{to: []*openpgp.Entity{f.list}, seed: "ste"})))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, sig: SigValid, signer: getFixtures(t).alice, plaintext: "multipart/signed"},
		},
		{
			name: "pgp/mime encrypted, signed by a non-member",
			msg: func(t *testing.T, f *fixtures) []byte {
				return pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, signer: f.mallory, seed: "mallory"})))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, sig: SigUnknownKey, plaintext: "secret post"},
		},
		{
			name: "pgp/mime signed only (RFC 3156 §5)",
			msg: func(t *testing.T, f *fixtures) []byte {
				return crlf(signedEntity(t, hdr, strings.TrimSuffix(innerEntity, "\n"), f.alice, "signed"))
			},
			want: want{kind: PGPMIMESigned, sig: SigValid, signer: getFixtures(t).alice, noDigest: true},
		},
		{
			name: "pgp/mime signed, LF line ends as some MTAs deliver",
			msg: func(t *testing.T, f *fixtures) []byte {
				return []byte(signedEntity(t, hdr, "Content-Type: text/plain\n\nline one  \nline two\n", f.bob, "signed-lf"))
			},
			want: want{kind: PGPMIMESigned, sig: SigValid, signer: getFixtures(t).bob},
		},
		{
			name: "pgp/mime signed, signed part tampered",
			msg: func(t *testing.T, f *fixtures) []byte {
				m := signedEntity(t, hdr, strings.TrimSuffix(innerEntity, "\n"), f.alice, "tamper-signed")
				return crlf(strings.Replace(m, "secret post", "secret p0st", 1))
			},
			want: want{kind: PGPMIMESigned, sig: SigBad, problems: []error{ErrTampered}},
		},
		{
			name: "pgp/mime signed, signed part header re-encoded",
			msg: func(t *testing.T, f *fixtures) []byte {
				m := signedEntity(t, hdr, strings.TrimSuffix(innerEntity, "\n"), f.alice, "tamper-hdr")
				return crlf(strings.Replace(m, "Content-Type: text/plain; charset=utf-8", "Content-Type: text/plain;  charset=utf-8", 1))
			},
			want: want{kind: PGPMIMESigned, sig: SigBad, problems: []error{ErrTampered}},
		},
		{
			name: "pgp/mime signed by a non-member",
			msg: func(t *testing.T, f *fixtures) []byte {
				return crlf(signedEntity(t, hdr, strings.TrimSuffix(innerEntity, "\n"), f.mallory, "signed-mallory"))
			},
			want: want{kind: PGPMIMESigned, sig: SigUnknownKey},
		},
		{
			name: "pgp/mime signed part with unsigned part beside it",
			msg: func(t *testing.T, f *fixtures) []byte {
				s := signedEntity(t, "", strings.TrimSuffix(innerEntity, "\n"), f.alice, "signed-mixed")
				return crlf(hdr + "Content-Type: multipart/mixed; boundary=m\n\n--m\n" + s + "\n--m\nContent-Type: text/plain\n\nadded footer\n--m--\n")
			},
			want: want{kind: PGPMIMESigned, problems: []error{ErrMixed}},
		},
		{
			name: "inline encrypted and signed",
			msg: func(t *testing.T, f *fixtures) []byte {
				return textMessage(string(armored(t, "PGP MESSAGE", encrypt(t, []byte("inline secret\n"), encOpts{to: []*openpgp.Entity{f.list}, signer: f.bob, seed: "inline"}))))
			},
			want: want{kind: InlineEncrypted, encrypted: true, integrity: true, sig: SigValid, signer: getFixtures(t).bob, plaintext: "inline secret"},
		},
		{
			name: "inline encrypted, quoted-printable, whitespace around",
			msg: func(t *testing.T, f *fixtures) []byte {
				a := armored(t, "PGP MESSAGE", encrypt(t, []byte("qp secret\n"), encOpts{to: []*openpgp.Entity{f.list}, seed: "qp"}))
				return crlf(hdr + "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n \n" + strings.ReplaceAll(string(a), "=", "=3D") + "\n\n")
			},
			want: want{kind: InlineEncrypted, encrypted: true, integrity: true, plaintext: "qp secret"},
		},
		{
			name: "inline cleartext signed",
			msg: func(t *testing.T, f *fixtures) []byte {
				return textMessage(clearsigned(t, f.alice, "Signed in the clear.\n- dash line\n"))
			},
			want: want{kind: InlineSigned, sig: SigValid, signer: getFixtures(t).alice, noDigest: true},
		},
		{
			name: "inline cleartext signed, text changed",
			msg: func(t *testing.T, f *fixtures) []byte {
				return textMessage(strings.Replace(clearsigned(t, f.alice, "Pay 10 EUR.\n"), "10 EUR", "99 EUR", 1))
			},
			want: want{kind: InlineSigned, sig: SigBad, problems: []error{ErrTampered}},
		},
		{
			name: "inline signed PGP MESSAGE (gpg --sign --armor)",
			msg: func(t *testing.T, f *fixtures) []byte {
				var b bytes.Buffer
				w, err := openpgp.Sign(&b, []*openpgp.Entity{f.alice}, nil, fixedConfig("sign-only", tSign))
				if err != nil {
					t.Fatal(err)
				}
				w.Write([]byte("signed only\n"))
				w.Close()
				return textMessage(string(armored(t, "PGP MESSAGE", b.Bytes())))
			},
			want: want{kind: InlineSigned, sig: SigValid, signer: getFixtures(t).alice, plaintext: "signed only", noDigest: true},
		},
		{
			name: "mixed: html + encrypted + html",
			msg: func(t *testing.T, f *fixtures) []byte {
				enc := string(pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, seed: "mixed"}))))
				enc = enc[strings.Index(enc, "Content-Type: multipart/encrypted"):]
				return crlf(hdr + "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n\n<p>Look what I found:</p>\n--x\n" + enc + "\n--x\nContent-Type: text/html\n\n<p>bye</p>\n--x--\n")
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, problems: []error{ErrMixed}, noDigest: true},
		},
		{
			name: "mixed: encrypted part nested two levels down with an attachment",
			msg: func(t *testing.T, f *fixtures) []byte {
				enc := string(pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, seed: "mixed2"}))))
				enc = enc[strings.Index(enc, "Content-Type: multipart/encrypted"):]
				return crlf(hdr + "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: multipart/mixed; boundary=y\n\n--y\n" + enc + "\n--y--\n--x\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n--x--\n")
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, problems: []error{ErrMixed}},
		},
		{
			name: "encrypted part wrapped with only empty parts is fine",
			msg: func(t *testing.T, f *fixtures) []byte {
				enc := string(pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, seed: "wrapped"}))))
				enc = enc[strings.Index(enc, "Content-Type: multipart/encrypted"):]
				return crlf(hdr + "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\n \n--x\n" + enc + "\n--x--\n")
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, plaintext: "secret post"},
		},
		{
			name: "mixed: inline armor with text around it",
			msg: func(t *testing.T, f *fixtures) []byte {
				a := armored(t, "PGP MESSAGE", encrypt(t, []byte("captured\n"), encOpts{to: []*openpgp.Entity{f.list}, seed: "wrap-inline"}))
				return textMessage("Please decrypt this for me:\n\n" + string(a))
			},
			want: want{kind: InlineEncrypted, encrypted: true, problems: []error{ErrMixed}, noDigest: true},
		},
		{
			name: "mixed: cleartext signature with text after it",
			msg: func(t *testing.T, f *fixtures) []byte {
				return textMessage(clearsigned(t, f.alice, "I agree.\n") + "\nP.S. not signed\n")
			},
			want: want{kind: InlineSigned, problems: []error{ErrMixed}},
		},
		{
			name: "tampered ciphertext (SEIPDv1, MDC)",
			msg: func(t *testing.T, f *fixtures) []byte {
				bin := encrypt(t, bytes.Repeat(crlf(innerEntity), 20), encOpts{to: []*openpgp.Entity{f.list}, signer: f.alice, seed: "tamper"})
				return pgpMIME(armored(t, "PGP MESSAGE", flipMiddle(bin)))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: false, problems: []error{ErrTampered}},
		},
		{
			name: "tampered ciphertext, compressed",
			msg: func(t *testing.T, f *fixtures) []byte {
				bin := encrypt(t, bytes.Repeat(crlf(innerEntity), 20), encOpts{to: []*openpgp.Entity{f.list}, compress: packet.CompressionZLIB, seed: "tamper-z"})
				return pgpMIME(armored(t, "PGP MESSAGE", flipMiddle(bin)))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, problems: []error{ErrTampered}},
		},
		{
			name: "SED without MDC (tag 9)",
			msg: func(t *testing.T, f *fixtures) []byte {
				return pgpMIME(armored(t, "PGP MESSAGE", sedMessage(t, f)))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, problems: []error{ErrNoIntegrity}, noDigest: true},
		},
		{
			name: "encrypted to another key only",
			msg: func(t *testing.T, f *fixtures) []byte {
				return pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.other}, signer: f.alice, seed: "other"})))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, problems: []error{ErrNotForList}},
		},
		{
			name: "too many PKESKs (65 hidden recipients)",
			msg: func(t *testing.T, f *fixtures) []byte {
				hidden := make([]*openpgp.Entity, 65)
				for i := range hidden {
					hidden[i] = f.list
				}
				return pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{hidden: hidden, seed: "65"})))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, problems: []error{ErrLimit}, limit: LimitPKESKCount, noDigest: true},
		},
		{
			name: "multipart/encrypted with the wrong protocol",
			msg: func(t *testing.T, f *fixtures) []byte {
				m := pgpMIME(armored(t, "PGP MESSAGE", encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, seed: "proto"})))
				return bytes.Replace(m, []byte(`protocol="application/pgp-encrypted"`), []byte(`protocol="application/pkcs7-mime"`), 1)
			},
			want: want{kind: Unknown, problems: []error{ErrMalformed}},
		},
		{
			name: "signature re-encrypted to the list (intended recipient is someone else)",
			msg: func(t *testing.T, f *fixtures) []byte {
				// Alice signs and encrypts to Other; Other strips the
				// encryption and re-encrypts the signed stream to the list.
				bin := encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.other}, signer: f.alice, seed: "fwd"})
				return pgpMIME(armored(t, "PGP MESSAGE", reencrypt(t, bin, f.other, f.list)))
			},
			// The signature itself verifies; Binding refuses it (TestBinding).
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, sig: SigValid, signer: getFixtures(t).alice},
		},
		{
			name: "signed stream re-encrypted to the list, intended for the list",
			msg: func(t *testing.T, f *fixtures) []byte {
				bin := encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, signer: f.alice, seed: "fwd2"})
				return pgpMIME(armored(t, "PGP MESSAGE", reencrypt(t, bin, f.list, f.list)))
			},
			want: want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, sig: SigValid, signer: getFixtures(t).alice},
		},
		{
			name:  "MIME depth 10,000",
			msg:   func(t *testing.T, f *fixtures) []byte { return deepMessage(10000) },
			want:  want{kind: Unknown, problems: []error{ErrLimit}, limit: LimitMIMEDepth},
			limit: Limits{},
		},
		{
			name: "10,000 parts",
			msg:  func(t *testing.T, f *fixtures) []byte { return wideMessage(10000) },
			want: want{kind: Unknown, problems: []error{ErrLimit}, limit: LimitMIMEParts},
		},
		{
			name: "huge part header",
			msg:  func(t *testing.T, f *fixtures) []byte { return hugePartHeader(8 << 20) },
			want: want{kind: Unknown, problems: []error{ErrLimit}, limit: LimitHeaderSize},
		},
		{
			name: "huge top-level header",
			msg: func(t *testing.T, f *fixtures) []byte {
				return append([]byte(strings.Repeat("X-Junk: "+strings.Repeat("j", 70)+"\r\n", 100000)), textMessage("hi")...)
			},
			want: want{kind: Unknown, problems: []error{ErrLimit}, limit: LimitHeaderSize},
		},
		{
			name: "part header just under the limit",
			msg:  func(t *testing.T, f *fixtures) []byte { return hugePartHeader(60 << 10) },
			want: want{kind: Plain},
		},
	}
}

func TestExamine(t *testing.T) {
	f := getFixtures(t)
	for _, tc := range examineCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			in := f.input(tc.msg(t, f))
			in.Limits = tc.limit
			res, err := Examine(in)
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, tc.want)
		})
	}
}

func checkResult(t *testing.T, res *Result, w want) {
	t.Helper()
	if res.Kind != w.kind || res.Encrypted != w.encrypted || res.Integrity != w.integrity || res.Sig != w.sig {
		t.Errorf("got kind=%v encrypted=%v integrity=%v sig=%v, want kind=%v encrypted=%v integrity=%v sig=%v (problems %v)",
			res.Kind, res.Encrypted, res.Integrity, res.Sig, w.kind, w.encrypted, w.integrity, w.sig, res.Problems)
	}
	for _, p := range w.problems {
		if !res.Has(p) {
			t.Errorf("problems %v: missing %v", res.Problems, p)
		}
	}
	if len(w.problems) == 0 && len(res.Problems) > 0 {
		t.Errorf("unexpected problems %v", res.Problems)
	}
	for _, p := range res.Problems {
		if p.Error() == "" {
			t.Errorf("problem without text: %#v", p)
		}
	}
	if w.limit != "" {
		var le *LimitError
		found := false
		for _, p := range res.Problems {
			if errors.As(p, &le) && le.What == w.limit {
				found = true
			}
		}
		if !found {
			t.Errorf("no LimitError %q in %v", w.limit, res.Problems)
		}
	}
	if w.sig == SigValid {
		if w.signer != nil && res.SignerFingerprint != fingerprint(w.signer) {
			t.Errorf("signer %s, want %s", res.SignerFingerprint, fingerprint(w.signer))
		}
		if res.Signer == nil || len(res.SigDigests) == 0 || res.SigTime.IsZero() {
			t.Errorf("valid signature without signer/digests/time: %+v", res)
		}
		if !res.SigTime.Equal(tSign) {
			t.Errorf("SigTime %v, want %v", res.SigTime, tSign)
		}
	}
	if w.sig != SigValid && (res.Signer != nil || res.SignerFingerprint != "") {
		t.Errorf("signer set for sig=%v", res.Sig)
	}
	if w.plaintext != "" && !bytes.Contains(res.Plaintext, []byte(w.plaintext)) {
		t.Errorf("plaintext %.200q does not contain %q", res.Plaintext, w.plaintext)
	}
	if w.encrypted && w.integrity && len(res.CiphertextDigest) != 32 {
		t.Errorf("CiphertextDigest %x", res.CiphertextDigest)
	}
	if w.noDigest && res.CiphertextDigest != nil {
		t.Errorf("CiphertextDigest set: %x", res.CiphertextDigest)
	}
	if !w.integrity && res.Plaintext != nil && w.encrypted {
		t.Errorf("plaintext returned without integrity")
	}
}

// TestDigestsStable: the replay digests do not change when the same
// ciphertext is re-armored or re-wrapped, nor when a signature is sent
// again; a different post gets different digests.
func TestDigestsStable(t *testing.T) {
	f := getFixtures(t)
	bin := encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, signer: f.alice, seed: "digest"})
	r1, _ := Examine(f.input(pgpMIME(armored(t, "PGP MESSAGE", bin))))
	r2, _ := Examine(f.input(textMessage(string(armored(t, "PGP MESSAGE", bin)))))
	// Add an extra PKESK (to Other) in front: the data packet is unchanged.
	extra := encrypt(t, []byte("x"), encOpts{to: []*openpgp.Entity{f.other}, seed: "extra"})
	sc, err := scanPackets(extra, 10)
	if err != nil {
		t.Fatal(err)
	}
	withExtra := append(bytes.Clone(extra[sc.pkesks[0].start:sc.pkesks[0].end]), bin...)
	r3, _ := Examine(f.input(pgpMIME(armored(t, "PGP MESSAGE", withExtra))))
	for i, r := range []*Result{r1, r2, r3} {
		if r.Sig != SigValid || len(r.Problems) > 0 {
			t.Fatalf("result %d: sig %v problems %v", i, r.Sig, r.Problems)
		}
	}
	if !bytes.Equal(r1.CiphertextDigest, r2.CiphertextDigest) || !bytes.Equal(r1.CiphertextDigest, r3.CiphertextDigest) {
		t.Errorf("ciphertext digests differ: %x %x %x", r1.CiphertextDigest, r2.CiphertextDigest, r3.CiphertextDigest)
	}
	if !bytes.Equal(r1.SigDigests[0], r2.SigDigests[0]) || !bytes.Equal(r1.SigDigests[0], r3.SigDigests[0]) {
		t.Errorf("signature digests differ")
	}
	other := encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{f.list}, signer: f.alice, seed: "digest-2"})
	r4, _ := Examine(f.input(pgpMIME(armored(t, "PGP MESSAGE", other))))
	if bytes.Equal(r4.CiphertextDigest, r1.CiphertextDigest) {
		t.Errorf("different ciphertexts, same digest")
	}
}

// TestNoDecryptionWhenMixed: a captured list ciphertext wrapped by an
// outsider is refused before any decryption (no plaintext, no digest).
func TestNoDecryptionWhenMixed(t *testing.T) {
	f := getFixtures(t)
	for _, tc := range examineCases(t) {
		if !strings.HasPrefix(tc.name, "mixed") {
			continue
		}
		res, err := Examine(f.input(tc.msg(t, f)))
		if err != nil {
			t.Fatal(err)
		}
		if res.Plaintext != nil || res.Integrity || res.CiphertextDigest != nil {
			t.Errorf("%s: decrypted a mixed message", tc.name)
		}
	}
}

func TestCompressionBomb(t *testing.T) {
	f := getFixtures(t)
	msg := bombMessage(t, f)
	t.Logf("bomb message: %d bytes", len(msg))
	const limit = 16 << 20
	in := f.input(msg)
	in.Limits.MaxDecompressed = limit

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	res, err := Examine(in)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("bomb: %v, %d MiB allocated, problems %v", elapsed, alloc>>20, res.Problems)
	checkResult(t, res, want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, problems: []error{ErrLimit}, limit: LimitDecompressedSize})
	if res.Plaintext != nil {
		t.Errorf("plaintext returned over the limit")
	}
	if alloc > 2*limit+8<<20 {
		t.Errorf("allocated %d bytes for a %d byte limit", alloc, limit)
	}
	if elapsed > 5*time.Second {
		t.Errorf("took %v", elapsed)
	}
}

func TestDepthAndWidthStopFast(t *testing.T) {
	f := getFixtures(t)
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"depth 10000", deepMessage(10000)},
		{"parts 10000", wideMessage(10000)},
		{"part header 8 MiB", hugePartHeader(8 << 20)},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		res, err := Examine(f.input(tc.msg))
		elapsed := time.Since(start)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s (%d bytes): %v, %d KiB allocated, %v", tc.name, len(tc.msg), elapsed, alloc>>10, res.Problems)
		if !res.Has(ErrLimit) {
			t.Errorf("%s: no limit problem: %v", tc.name, res.Problems)
		}
		if elapsed > time.Second {
			t.Errorf("%s: took %v", tc.name, elapsed)
		}
		if alloc > 32<<20 {
			t.Errorf("%s: allocated %d bytes", tc.name, alloc)
		}
	}
}

func TestLimitDefaults(t *testing.T) {
	l := Limits{}.withDefaults()
	if l.MaxMIMEDepth != DefaultLimits.MaxMIMEDepth || l.MaxPKESK != DefaultLimits.MaxPKESK || l.MaxDecompressed != DefaultLimits.MaxDecompressed {
		t.Errorf("defaults not applied: %+v", l)
	}
}

func TestExamineNeedsListKey(t *testing.T) {
	if _, err := Examine(Input{Message: textMessage("x")}); err == nil {
		t.Error("no error without list key")
	}
}

// TestSEIPDv2: a list key that advertises SEIPDv2 gets AEAD (GCM)
// encrypted posts; they decrypt, and a flipped byte is ErrTampered.
func TestSEIPDv2(t *testing.T) {
	f := getFixtures(t)
	cfg := fixedConfig("key ListAEAD", t0)
	cfg.AEADConfig = &packet.AEADConfig{DefaultMode: packet.AEADModeGCM}
	list, err := openpgp.NewEntity("ListAEAD", "", "list@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ecfg := fixedConfig("enc aead", tSign)
	ecfg.AEADConfig = &packet.AEADConfig{DefaultMode: packet.AEADModeGCM}
	var b bytes.Buffer
	w, err := openpgp.EncryptWithParams(&b, []*openpgp.Entity{list}, nil, &openpgp.EncryptParams{Signers: []*openpgp.Entity{f.alice}, Config: ecfg})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat(crlf(innerEntity), 50))
	w.Close()
	bin := b.Bytes()
	sc, err := scanPackets(bin, 64)
	if err != nil {
		t.Fatal(err)
	}
	p, err := packet.Read(bytes.NewReader(bin[sc.data.start:sc.data.end]))
	if se, ok := p.(*packet.SymmetricallyEncrypted); err != nil || !ok || se.Version != 2 {
		t.Fatalf("not SEIPDv2: %T %v", p, err)
	}
	in := f.input(pgpMIME(armored(t, "PGP MESSAGE", bin)))
	in.ListKey = list
	res, _ := Examine(in)
	checkResult(t, res, want{kind: PGPMIMEEncrypted, encrypted: true, integrity: true, sig: SigValid, signer: f.alice, plaintext: "secret post"})

	in.Message = pgpMIME(armored(t, "PGP MESSAGE", flipMiddle(bin)))
	res, _ = Examine(in)
	checkResult(t, res, want{kind: PGPMIMEEncrypted, encrypted: true, problems: []error{ErrTampered}})
}

// TestBombIsABomb: the bomb really expands to 512 MiB (checked with a
// generous limit, counting only).
func TestBombIsABomb(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses 512 MiB")
	}
	f := getFixtures(t)
	in := f.input(bombMessage(t, f))
	in.Limits.MaxDecompressed = 600 << 20
	ex := &examiner{in: in, lim: in.Limits.withDefaults(), res: &Result{}}
	ex.cfg = fixedConfig("x", tNow)
	ex.vcfg = verifyConfig(ex.lim)
	ex.signers = openpgp.EntityList(nil)
	w := &walker{lim: ex.lim}
	tr, _, err := w.walkMessage(in.Message, 0)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := dearmor(tr.leaves[0].data, "PGP MESSAGE")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := scanPackets(bin, 8)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ex.openData(bin, sc)
	if err != nil {
		t.Fatal(err)
	}
	md, err := openpgp.ReadMessage(rc, ex.signers, nil, ex.vcfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, md.UnverifiedBody)
	if err != nil || n != 512<<20 {
		t.Fatalf("bomb expands to %d bytes (%v)", n, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("MDC: %v", err)
	}
}
