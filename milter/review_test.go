package milter_test

// Findings of an adversarial review of issue 8 ("what members receive is
// exactly what the author signed, and nothing else"), kept as regression
// tests: each asserts a promise the review first broke.

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// outerFields returns the header fields of the copy reinjected for bob.
func outerFields(t testing.TB, r result) map[string]string {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(r.copyTo("bob@example.org"))))
	if err != nil {
		t.Fatalf("copy for bob: %v", err)
	}
	out := map[string]string{}
	for fs := h.Fields(); fs.Next(); {
		out[fs.Key()] = fs.Value()
	}
	return out
}

// R1: a member must not choose the display name members see through the
// signed From ("Bob via devs" in every inbox): the name comes from the
// member's registered key only.
func TestSignedDisplayNameIsNotTheAuthors(t *testing.T) {
	f := newFixture(t, "")
	list := []*openpgp.Entity{f.site.ListKey}
	for _, name := range []string{`"Bob"`, `"bob@example.org"`, `=?utf-8?q?Bob_=28CEO=29?=`} {
		t.Run(name, func(t *testing.T) {
			entity := "Content-Type: text/plain; hp=\"cipher\"\r\nFrom: " + name + " <alice@example.org>\r\nTo: " + milterfix.List +
				"\r\nSubject: payroll change\r\n\r\nPlease use the new account.\r\n"
			msg := pgpMIMEPost(t, outerHeader("alice@example.org", "..."), encryptEntity(t, []byte(entity), list, f.alice, true))
			r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
			if !r.delivered() {
				t.Fatalf("%d %s", r.code(), r.action.SMTPText)
			}
			v := f.copyFor(t, r, f.bob)
			outer := outerFields(t, r)["From"]
			t.Logf("outer From: %s | inner From: %s | notice %q", outer, v.header.Get("From"), v.notice)
			if strings.Contains(strings.ToLower(outer), "bob") || strings.Contains(strings.ToLower(v.header.Get("From")), "bob") {
				t.Errorf("Alice's post reads as Bob's: outer From %q, protected From %q", outer, v.header.Get("From"))
			}
		})
	}
}

// R2: the outer From is not signed: what follows its one address (an
// empty group, a trailing comment) must not reach the From and Reply-To
// members see (it did when the raw field was re-parsed with
// mail.ParseAddress instead of using the address decide checked).
func TestOuterFromTailNeverReachesMembers(t *testing.T) {
	f := newFixture(t, "")
	list := []*openpgp.Entity{f.site.ListKey}
	for _, from := range []string{
		`alice@example.org, G:;(x@evil.example)`,
		`Alice <alice@example.org>, "Bob <bob@example.org>":;`,
		`alice@example.org,`,
	} {
		t.Run(from, func(t *testing.T) {
			entity := "Content-Type: text/plain\r\n\r\nlegit post by alice " + from + "\r\n"
			// Alice's own post, signed for the list; only the outer From
			// is changed on the way.
			msg := pgpMIMEPost(t, outerHeader(from, "..."), encryptEntity(t, []byte(entity), list, f.alice, true))
			r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
			if !r.delivered() {
				t.Logf("refused: %d %s", r.code(), r.action.SMTPText)
				return
			}
			v := f.copyFor(t, r, f.bob)
			of := outerFields(t, r)
			t.Logf("protected From: %s\n outer From: %s\n outer Reply-To: %s", v.header.Get("From"), of["From"], of["Reply-To"])
			for _, s := range []string{v.header.Get("From"), of["From"], of["Reply-To"]} {
				if strings.Contains(s, "evil") || strings.Contains(strings.ToLower(s), "bob") || strings.Contains(s, "g:;") || strings.HasSuffix(s, ",>") {
					t.Errorf("unsigned outer From bytes reach members: %q", s)
				}
			}
		})
	}
}

// R3: one signature, two readings. A MITM who cannot decrypt moves
// Alice's inline PGP post (text, bound to the list) into a
// multipart/encrypted wrapper, so that the first paragraph of her text
// would become a header of the entity that clients do not show. The
// decrypted content of PGP/MIME must be a MIME entity with a
// Content-Type: the reframed post is refused.
func TestInlineTextReframedAsEntity(t *testing.T) {
	text := "Warning: do NOT follow the next line\r\n\r\nWire the money to account 666.\r\n"
	for _, reframe := range []bool{false, true} {
		t.Run(map[bool]string{false: "as sent (inline PGP)", true: "reframed by a MITM (PGP/MIME)"}[reframe], func(t *testing.T) {
			f := newFixture(t, "")
			// gpg --sign --encrypt --armor; the signature names the list (IRF).
			bin := encryptEntity(t, []byte(text), []*openpgp.Entity{f.site.ListKey}, f.alice, true)
			msg := append([]byte(outerHeader("alice@example.org", "...")+"Content-Type: text/plain\r\n\r\n"), armorBlock(t, "PGP MESSAGE", bin)...)
			if reframe {
				// Same ciphertext, not decrypted: only the wrapper changes.
				msg = pgpMIMEPost(t, outerHeader("alice@example.org", "..."), bin)
			}
			r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
			if reframe {
				if r.code() != 554 || !strings.Contains(r.action.SMTPText, "cannot be read") {
					t.Fatalf("reframed post: got %d %q, want 554 malformed", r.code(), r.action.SMTPText)
				}
				return
			}
			if !r.delivered() {
				t.Fatalf("refused: %d %s", r.code(), r.action.SMTPText)
			}
			v := f.copyFor(t, r, f.bob)
			br := bufio.NewReader(bytes.NewReader(v.entity))
			h, err := textproto.ReadHeader(br)
			if err != nil {
				t.Fatal(err)
			}
			var body bytes.Buffer
			body.ReadFrom(br)
			if !strings.Contains(body.String(), "do NOT") {
				t.Errorf("members are not shown Alice's warning; header %v, body %q", fieldNames(h), body.String())
			}
		})
	}
}

func fieldNames(h textproto.Header) []string {
	var out []string
	for fs := h.Fields(); fs.Next(); {
		out = append(out, fs.Key()+": "+fs.Value())
	}
	return out
}

// R4: work before a decision must not grow with signatures × plaintext.
// A non-member sends a small, unencrypted inline "signed" message: inside
// one compressed packet, N copies of a signature by an unknown key (old
// style, before the literal data) and M bytes of literal data; go-crypto
// would hash the data once per signature. The count is checked as soon
// as the signatures are known, before the data is read.
func TestSignatureCountBoundedBeforeHashing(t *testing.T) {
	f := newFixture(t, "encrypted = \"allow\"\nnon_member = \"accept\"")
	var sb bytes.Buffer
	if err := openpgp.DetachSign(&sb, []*openpgp.Entity{f.mallory}, strings.NewReader("x"), pgpConfig(false)); err != nil {
		t.Fatal(err)
	}
	sig := sb.Bytes()
	build := func(n, m int) []byte {
		var inner bytes.Buffer
		cw, err := packet.SerializeCompressed(nopWC{&inner}, packet.CompressionZLIB, &packet.CompressionConfig{Level: 9})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			cw.Write(sig)
		}
		lw, err := packet.SerializeLiteral(nopWC{cw}, true, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		lw.Write(make([]byte, m))
		lw.Close()
		cw.Close()
		return append([]byte(outerHeader("mallory@evil.example", "...")+"Content-Type: text/plain\r\n\r\n"), armorBlock(t, "PGP MESSAGE", inner.Bytes())...)
	}
	for _, tc := range []struct {
		n, m int
		ok   bool
	}{{16, 1 << 10, true}, {17, 1 << 10, false}, {1500, 4 << 20, false}} {
		before := len(f.logs.String())
		r := f.mta.send("mallory@evil.example", []string{milterfix.List}, build(tc.n, tc.m))
		limited := r.code() == 554 && strings.Contains(f.logs.String()[before:], "problem=limit-signatures")
		if limited == tc.ok {
			t.Fatalf("%d signatures: got %d %q, limit hit %v", tc.n, r.code(), r.action.SMTPText, limited)
		}
	}
	// Several lists, encrypted: the same bound inside the encryption.
	var inner bytes.Buffer
	w, err := openpgp.SignWithParams(&inner, []*openpgp.Entity{f.mallory}, &openpgp.SignParams{Config: pgpConfig(false)})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Content-Type: text/plain\r\n\r\nx\r\n"))
	w.Close()
	many := append(bytes.Repeat(sig, 40), inner.Bytes()...)
	before := len(f.logs.String())
	r := f.mta.send("mallory@evil.example", []string{milterfix.List}, pgpMIMEPost(t, outerHeader("mallory@evil.example", "..."), sealPackets(t, many, f.site.ListKey)))
	if r.code() != 554 || !strings.Contains(f.logs.String()[before:], "problem=limit-signatures") {
		t.Fatalf("encrypted, 41 signatures: %d %q", r.code(), r.action.SMTPText)
	}
}

// Probes that held (kept to show what was tried).
func TestReviewProbesThatHeld(t *testing.T) {
	f := newFixture(t, "")
	list := []*openpgp.Entity{f.site.ListKey}
	t.Run("signed To names the list only as a display name or comment", func(t *testing.T) {
		for _, to := range []string{`"devs@lists.example.org" <eve@outside.example>`, `eve@outside.example (devs@lists.example.org)`} {
			e := "Content-Type: text/plain; hp=\"clear\"\r\nTo: " + to + "\r\nSubject: x\r\n\r\nfor eve " + to + "\r\n"
			msg := pgpMIMEPost(t, outerHeader("alice@example.org", "..."), encryptEntity(t, []byte(e), list, f.alice, false))
			if r := f.mta.send("eve@outside.example", []string{milterfix.List}, msg); r.code() != 550 {
				t.Errorf("%s: %d %s", to, r.code(), r.action.SMTPText)
			}
		}
	})
	t.Run("Alice's detached signature plus one by an unknown key", func(t *testing.T) {
		first := "Content-Type: text/plain\r\n\r\nco-signed\r\n"
		var sb bytes.Buffer
		openpgp.DetachSign(&sb, []*openpgp.Entity{f.mallory}, strings.NewReader(first), pgpConfig(false))
		openpgp.DetachSign(&sb, []*openpgp.Entity{f.alice}, strings.NewReader(first), pgpConfig(false))
		inner := signedMultipart("", "B", "", first, armorBlock(t, "PGP SIGNATURE", sb.Bytes()), "")
		msg := pgpMIMEPost(t, outerHeader("alice@example.org", "..."), encryptEntity(t, []byte(inner), list, nil, false))
		r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
		if r.accepted() {
			if v := f.copyFor(t, r, f.bob); !bytes.Equal(v.entity, []byte(first)) {
				t.Errorf("entity %q", v.entity)
			}
		}
		t.Logf("%d %s", r.code(), r.action.SMTPText)
	})
	t.Run("§6.2 by Alice around Bob's §6.1", func(t *testing.T) {
		first := "Content-Type: text/plain; hp=\"cipher\"\r\nFrom: bob@example.org\r\n\r\nI am Bob\r\n"
		inner := signedMultipart("", "B", "", first, detachSig(t, f.bob, []byte(first), nil), "")
		msg := pgpMIMEPost(t, outerHeader("alice@example.org", "..."), encryptEntity(t, []byte(inner), list, f.alice, true))
		r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
		t.Logf("%d %s", r.code(), r.action.SMTPText)
		if r.accepted() {
			v := f.copyFor(t, r, f.bob)
			t.Logf("From %q; entity is Bob's multipart/signed: %v", v.header.Get("From"), bytes.Equal(v.entity, []byte(inner)))
		}
	})
	t.Run("CR LF in signed Subject and Reply-To", func(t *testing.T) {
		e := "Content-Type: text/plain; hp=\"cipher\"\r\nFrom: alice@example.org\r\nTo: devs@lists.example.org\r\nSubject: a\r\n\tb\rBcc: x@y\r\nReply-To: r@example.org\r\n\r\nbody\r\n"
		msg := pgpMIMEPost(t, outerHeader("alice@example.org", "..."), encryptEntity(t, []byte(e), list, f.alice, true))
		r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
		if !r.delivered() {
			t.Fatalf("%d %s", r.code(), r.action.SMTPText)
		}
		v := f.copyFor(t, r, f.bob)
		checkPayloadFields(t, v.header)
		for name, value := range outerFields(t, r) {
			if strings.ContainsAny(value, "\r\n") {
				t.Errorf("outer field %s carries a line break: %q", name, value)
			}
		}
	})
}
