package milter_test

// Attacks on the promise "a post that says it comes from Alice was
// written and signed by Alice for this list" (issue 8), through the
// in-process milter: each builds what an attacker would send and checks
// what every member decrypts.

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	nettextproto "net/textproto"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/emersion/go-message/textproto"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/outbound"
	"github.com/listcrypt/listcrypt/policy"
)

// pgpConfig is a go-crypto config for building posts; irf says whether
// a signature made while encrypting names the recipients.
func pgpConfig(irf bool) *packet.Config {
	cfg := keyring.PacketConfig(keyring.DefaultLimits, nil)
	cfg.CheckIntendedRecipients = &irf
	return cfg
}

// armorBlock armors bin as typ with CRLF line ends.
func armorBlock(t testing.TB, typ string, bin []byte) string {
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
	return strings.ReplaceAll(b.String(), "\n", "\r\n")
}

// encryptEntity encrypts entity to keys, signed inside by signer when set
// (RFC 3156 §6.2); irf: the signature names the recipients.
func encryptEntity(t testing.TB, entity []byte, to []*openpgp.Entity, signer *openpgp.Entity, irf bool) []byte {
	t.Helper()
	var signers []*openpgp.Entity
	if signer != nil {
		signers = []*openpgp.Entity{signer}
	}
	var b bytes.Buffer
	w, err := openpgp.EncryptWithParams(&b, to, nil, &openpgp.EncryptParams{Signers: signers, Config: pgpConfig(irf)})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(entity)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sealPackets encrypts raw OpenPGP packets (a signed message, say) to
// keys without any literal wrapper, as someone forwarding a decrypted
// signed stream would (SEIPDv1 with MDC).
func sealPackets(t testing.TB, packets []byte, to ...*openpgp.Entity) []byte {
	t.Helper()
	cfg := pgpConfig(false)
	key := make([]byte, 32)
	io.ReadFull(rand.Reader, key)
	var b bytes.Buffer
	for _, e := range to {
		k, ok := e.EncryptionKey(time.Now(), cfg)
		if !ok {
			t.Fatal("no encryption key")
		}
		// The AEAD flag of the key packet must match the data packet
		// (SEIPDv1 here): go-crypto's SerializeEncryptedKey would take it
		// from the config.
		if err := packet.SerializeEncryptedKeyAEAD(&b, k.PublicKey, packet.CipherAES256, false, key, cfg); err != nil {
			t.Fatal(err)
		}
	}
	w, err := packet.SerializeSymmetricallyEncrypted(&b, packet.CipherAES256, false, packet.CipherSuite{}, key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(packets)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// detachSig returns an armored detached signature over data (CRLF).
func detachSig(t testing.TB, signer *openpgp.Entity, data []byte, cfg *packet.Config) string {
	t.Helper()
	if cfg == nil {
		cfg = pgpConfig(false)
	}
	var b bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&b, []*openpgp.Entity{signer}, bytes.NewReader(data), &openpgp.SignParams{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(b.String(), "\n", "\r\n")
}

// outerHeader is a post's header as the attacker writes it.
func outerHeader(from, subject string) string {
	return fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%d@attack.example>\r\nDate: %s\r\nMIME-Version: 1.0\r\n",
		from, milterfix.List, subject, time.Now().UnixNano(), time.Now().UTC().Format(time.RFC1123Z))
}

// pgpMIMEPost wraps an encrypted OpenPGP message as RFC 3156 §4.
func pgpMIMEPost(t testing.TB, header string, bin []byte) []byte {
	t.Helper()
	const b = "enc-b"
	return []byte(header + "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"" + b + "\"\r\n\r\n" +
		"--" + b + "\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--" + b + "\r\nContent-Type: application/octet-stream\r\n\r\n" + armorBlock(t, "PGP MESSAGE", bin) + "\r\n--" + b + "--\r\n")
}

// signedMultipart builds multipart/signed around first with the given
// boundary, wrapper header fields, preamble and epilogue.
func signedMultipart(wrapperFields, boundary, preamble, first, sig, epilogue string) string {
	return wrapperFields + "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"" + boundary + "\"\r\n\r\n" +
		preamble + "--" + boundary + "\r\n" + first + "\r\n--" + boundary + "\r\nContent-Type: application/pgp-signature\r\n\r\n" + sig +
		"\r\n--" + boundary + "--\r\n" + epilogue
}

// memberView is what one member reads of a delivered post.
type memberView struct {
	header textproto.Header
	notice string
	entity []byte
	all    []byte // the whole decrypted payload
}

// copyFor decrypts the copy the transaction reinjected for member.
func (f *fixture) copyFor(t testing.TB, r result, member *openpgp.Entity) memberView {
	t.Helper()
	var body []byte
	for _, id := range member.Identities {
		if body = r.copyTo(id.UserId.Email); body != nil {
			break
		}
	}
	if body == nil {
		t.Fatalf("no copy reinjected for %s", keyring.Fingerprint(member))
	}
	pt := milterfix.DecryptCopy(t, body, member, f.site.ListKey)
	h, n, e, err := outbound.PayloadParts(pt)
	if err != nil {
		t.Fatalf("%v:\n%s", err, pt)
	}
	return memberView{header: h, notice: string(n), entity: e, all: pt}
}

// payloadFields are the only header fields listcrypt writes above the
// entity it carries byte for byte.
var payloadFields = map[string]bool{"Date": true, "From": true, "Reply-To": true, "To": true, "Cc": true, "Subject": true,
	"Message-Id": true, "In-Reply-To": true, "References": true, "Hp-Outer": true, "Mime-Version": true, "Content-Type": true}

func checkPayloadFields(t testing.TB, h textproto.Header) {
	t.Helper()
	fs := h.Fields()
	for fs.Next() {
		if !payloadFields[nettextproto.CanonicalMIMEHeaderKey(fs.Key())] {
			t.Errorf("unlisted payload header field %q", fs.Key())
		}
	}
}

// Finding 1: the bytes members receive are cut from the post only once,
// by the parser that checked the signature. An outsider holding one part
// Alice signed anywhere wraps it with text of his own in the preamble,
// epilogue, wrapper header or sibling parts.
func TestDistributedBytesAreVerifiedBytes(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep_sender_signature=%v", keep), func(t *testing.T) {
			f := newFixture(t, "encrypted = \"allow\"")
			if keep {
				f.site.EditPolicy(t, "keep_sender_signature = false", "keep_sender_signature = true")
				if err := f.d.Reload(); err != nil {
					t.Fatal(err)
				}
			}
			const evil = "ATTACKER-TEXT"
			injected := "Content-Type: text/plain\r\n\r\n" + evil + " wire the money\r\n"
			cases := []struct {
				name string
				// build returns the whole post around Alice's signed part.
				build   func(first, sig string) []byte
				encrypt bool
			}{
				{"boundary mid-line in the preamble", func(first, sig string) []byte {
					return []byte(signedMultipart("", "B", "see --B\r\n"+injected, first, sig, ""))
				}, true},
				{"boundary prefix in the preamble", func(first, sig string) []byte {
					return []byte(signedMultipart("", "B", "--BX\r\n"+injected, first, sig, ""))
				}, true},
				{"delimiter line in the preamble", func(first, sig string) []byte {
					return []byte(signedMultipart("", "B", "--B\r\n"+injected, first, sig, ""))
				}, true},
				{"epilogue", func(first, sig string) []byte {
					return []byte(signedMultipart("", "B", "", first, sig, injected))
				}, true},
				{"other boundary, quoted specials", func(first, sig string) []byte {
					return []byte(signedMultipart("", "=_a.b:c", "x--=_a.b:c\r\n"+injected, first, sig, evil))
				}, true},
				{"wrapper header fields", func(first, sig string) []byte {
					return []byte(signedMultipart("Subject: "+evil+"\r\nFrom: Bob <bob@example.org>\r\n", "B", "", first, sig, ""))
				}, true},
				{"signed part inside multipart/mixed", func(first, sig string) []byte {
					return []byte("Content-Type: multipart/mixed; boundary=M\r\n\r\n" + evil + "\r\n--M\r\n" +
						signedMultipart("", "B", "see --B\r\n"+injected, first, sig, "") + "\r\n--M--\r\n" + evil + "\r\n")
				}, true},
				{"nested multipart/signed", func(first, sig string) []byte {
					return []byte(signedMultipart("", "OUTER", "", signedMultipart("", "B", "see --B\r\n"+injected, first, sig, ""), sig, ""))
				}, true},
				{"sibling part", func(first, sig string) []byte {
					return []byte("Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\n" +
						signedMultipart("", "B", "", first, sig, "") + "\r\n--M\r\n" + injected + "\r\n--M--\r\n")
				}, true},
				{"not encrypted: boundary mid-line", func(first, sig string) []byte {
					return []byte(signedMultipart("", "B", "see --B\r\n"+injected, first, sig, ""))
				}, false},
			}
			accepted := 0
			for i, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					first := fmt.Sprintf("Content-Type: text/plain; charset=utf-8\r\n\r\nAlice's real words, number %d.\r\n", i)
					sig := detachSig(t, f.alice, []byte(first), nil)
					entity := tc.build(first, sig)
					var msg []byte
					if tc.encrypt {
						msg = pgpMIMEPost(t, outerHeader("alice@example.org", "hello"), encryptEntity(t, entity, []*openpgp.Entity{f.site.ListKey}, nil, false))
					} else {
						msg = append([]byte(outerHeader("alice@example.org", "hello")), entity...)
					}
					r := f.mta.send("mallory@evil.example", []string{milterfix.List}, msg)
					if !r.delivered() {
						t.Logf("refused: %d %s", r.code(), r.action.SMTPText)
						return
					}
					accepted++
					v := f.copyFor(t, r, f.bob)
					if bytes.Contains(v.all, []byte(evil)) {
						t.Fatalf("members read the attacker's text:\n%s", v.all)
					}
					want := []byte(first)
					got := v.entity
					if keep {
						var ok bool
						if got, ok = milterfix.FirstSignedPart(v.entity); !ok {
							t.Fatalf("no multipart/signed:\n%s", v.entity)
						}
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("members read\n%q\nbut the signature covers\n%q", got, want)
					}
					checkPayloadFields(t, v.header)
				})
			}
			if accepted < 4 {
				t.Fatalf("only %d variants accepted: the test no longer exercises delivery", accepted)
			}
		})
	}
}

// Finding 2: the author members see is the checked sender. A member
// signing with her own key cannot make copies read as another member's,
// whether by signed protected headers, by fields on an unsigned wrapper,
// or by the outer display name.
func TestAuthorIsTheCheckedSender(t *testing.T) {
	f := newFixture(t, "")
	list := []*openpgp.Entity{f.site.ListKey}
	refused := []struct{ name, entity string }{
		{"protected-headers v1 From Bob", "Content-Type: text/plain; protected-headers=\"v1\"\r\nFrom: \"Bob\" <bob@example.org>\r\nReply-To: bob@example.org\r\nSubject: from bob\r\n\r\nI am Bob.\r\n"},
		{"RFC 9788 hp=cipher From Bob", "Content-Type: text/plain; hp=\"cipher\"\r\nFrom: bob@example.org\r\nTo: devs@lists.example.org\r\n\r\nI am Bob.\r\n"},
		{"unmarked From Bob", "From: bob@example.org\r\nContent-Type: text/plain\r\n\r\nI am Bob.\r\n"},
		{"two From fields", "Content-Type: text/plain; hp=\"cipher\"\r\nFrom: alice@example.org\r\nFrom: bob@example.org\r\n\r\nWho am I.\r\n"},
		{"From group of two", "Content-Type: text/plain; hp=\"cipher\"\r\nFrom: alice@example.org, bob@example.org\r\n\r\nWho am I.\r\n"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			msg := pgpMIMEPost(t, outerHeader("alice@example.org", "..."), encryptEntity(t, []byte(tc.entity), list, f.alice, true))
			r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
			if r.code() != 550 || !strings.Contains(r.action.SMTPText, "only post as themself") {
				t.Fatalf("got %d %q, want 550 for a signed From of someone else", r.code(), r.action.SMTPText)
			}
		})
	}

	// A signed From in another case is the same address; its name is not
	// used (the sender picks it per post): the name is the one of the
	// member's registered key.
	t.Run("signed From with name", func(t *testing.T) {
		entity := "Content-Type: text/plain; hp=\"cipher\"\r\nFrom: \"Alice A.\" <Alice@Example.org>\r\nTo: devs@lists.example.org\r\nSubject: the real subject\r\nReply-To: alice-replies@example.org\r\n\r\nhello\r\n"
		msg := pgpMIMEPost(t, outerHeader("\"Bob\" <alice@example.org>", "..."), encryptEntity(t, []byte(entity), list, f.alice, true))
		r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
		if !r.delivered() {
			t.Fatalf("%d %s", r.code(), r.action.SMTPText)
		}
		v := f.copyFor(t, r, f.bob)
		if got := v.header.Get("From"); got != `"alice" <alice@example.org>` {
			t.Fatalf("From %q", got)
		}
		if v.header.Get("Subject") != "the real subject" || v.header.Get("Reply-To") != "alice-replies@example.org" || v.notice != "" {
			t.Fatalf("header %v notice %q", v.header, v.notice)
		}
		if !bytes.Equal(v.entity, []byte(entity)) {
			t.Fatalf("entity %q", v.entity)
		}
	})

	// No signed header: the outer display name, Reply-To and the wrapper's
	// fields are not the author's words.
	t.Run("unsigned wrapper and outer fields", func(t *testing.T) {
		first := "Content-Type: text/plain\r\n\r\nhello from alice\r\n"
		sig := detachSig(t, f.alice, []byte(first), nil)
		inner := signedMultipart("From: \"Bob\" <bob@example.org>\r\nReply-To: bob@example.org\r\nSubject: fake\r\n", "B", "", first, sig, "")
		inner = strings.Replace(inner, "micalg=pgp-sha256;", "micalg=pgp-sha256; protected-headers=\"v1\";", 1)
		hdr := strings.Replace(outerHeader("\"Bob via devs\" <alice@example.org>", "outer subject"), "MIME-Version", "Reply-To: bob@example.org\r\nMIME-Version", 1)
		msg := pgpMIMEPost(t, hdr, encryptEntity(t, []byte(inner), list, nil, false))
		r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
		if !r.delivered() {
			t.Fatalf("%d %s", r.code(), r.action.SMTPText)
		}
		v := f.copyFor(t, r, f.bob)
		if from := v.header.Get("From"); strings.Contains(strings.ToLower(from), "bob") || !strings.Contains(from, "alice@example.org") {
			t.Fatalf("members see From %q", from)
		}
		if v.header.Get("Reply-To") != "" || strings.Contains(string(v.all), "bob@example.org") {
			t.Fatalf("Bob reaches the members:\n%s", v.all)
		}
		if !strings.Contains(v.notice, "Subject was not covered") || !strings.Contains(v.notice, "does not say it was written for this list") {
			t.Fatalf("notice %q", v.notice)
		}
	})
}

// gpgMember is a member (or an outsider) using GnuPG 2.2 in its own home.
type gpgMember struct {
	g    *pgptest.GPG
	fpr  string
	addr string
}

func newGPGMember(t *testing.T, addr string) *gpgMember {
	g := pgptest.NewGPG(t)
	return &gpgMember{g: g, fpr: g.GenKey(addr), addr: addr}
}

func (m *gpgMember) entity(t *testing.T) *openpgp.Entity {
	t.Helper()
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(m.g.Export(m.fpr)))
	if err != nil {
		t.Fatal(err)
	}
	return el[0]
}

// Finding 3: surreptitious forwarding. Dave (a member) sends Eve (not a
// member) a private mail, signed with GnuPG 2.2 (no Intended Recipient
// Fingerprint). Eve strips the encryption and re-encrypts what Dave
// signed to the list key, as Dave's post.
func TestSurreptitiousForwarding(t *testing.T) {
	pgptest.RequireTool(t, "gpg")
	dave, eve := newGPGMember(t, "dave@example.org"), newGPGMember(t, "eve@outside.example")
	dave.g.Import(eve.g.Export(eve.fpr))
	private := func(extra string) []byte {
		return []byte("Content-Type: text/plain; charset=utf-8" + extra + "\r\n\r\nEve, the launch code is 1234. Dave\r\n")
	}
	// forwarded builds Eve's post from Dave's private mail in one shape.
	shapes := []struct {
		name  string
		build func(t *testing.T, f *fixture, entity []byte) []byte
	}{
		{"signed inside the encryption (gpg --sign --encrypt, unwrapped)", func(t *testing.T, f *fixture, entity []byte) []byte {
			ct, _ := dave.g.Run(entity, "--sign", "--encrypt", "-r", eve.fpr, "-u", dave.fpr)
			signed, _ := eve.g.Run(ct, "--unwrap")
			return pgpMIMEPost(t, outerHeader(dave.addr, "..."), sealPackets(t, signed, f.site.ListKey))
		}},
		{"multipart/signed inside the encryption", func(t *testing.T, f *fixture, entity []byte) []byte {
			sig, _ := dave.g.Run(entity, "--armor", "--detach-sign", "-u", dave.fpr)
			mime := signedMultipart("", "ds", "", string(entity), strings.ReplaceAll(string(sig), "\n", "\r\n"), "")
			ct, _ := dave.g.Run([]byte(mime), "--encrypt", "-r", eve.fpr)
			pt, _ := eve.g.Run(ct, "--decrypt")
			return pgpMIMEPost(t, outerHeader(dave.addr, "..."), encryptEntity(t, pt, []*openpgp.Entity{f.site.ListKey}, nil, false))
		}},
		{"cleartext signature inside the encryption", func(t *testing.T, f *fixture, entity []byte) []byte {
			_, body, _ := bytes.Cut(entity, []byte("\r\n\r\n"))
			cs, _ := dave.g.Run(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")), "--clearsign", "-u", dave.fpr)
			pt := append([]byte("Content-Type: text/plain\r\n\r\n"), bytes.ReplaceAll(cs, []byte("\n"), []byte("\r\n"))...)
			return pgpMIMEPost(t, outerHeader(dave.addr, "..."), encryptEntity(t, pt, []*openpgp.Entity{f.site.ListKey}, nil, false))
		}},
	}
	for _, shape := range shapes {
		t.Run(shape.name, func(t *testing.T) {
			for _, tc := range []struct {
				policy string
				extra  string // protected headers in Dave's signed entity
				code   int    // 0: accepted with the unbound notice; 1: held
				text   string
			}{
				{"accept", "", 0, ""},
				{"hold", "", 1, ""},
				{"reject", "", 550, "does not show it was written for"},
				{"accept", "; hp=\"cipher\"\r\nTo: eve@outside.example\r\nSubject: private", 550, "names other recipients"},
			} {
				if tc.extra != "" && strings.HasPrefix(shape.name, "cleartext") {
					continue // a cleartext signature covers no header
				}
				t.Run(tc.policy+map[bool]string{true: " with signed To", false: ""}[tc.extra != ""], func(t *testing.T) {
					f := newFixture(t, "unbound_signature = \""+tc.policy+"\"")
					f.site.Register(t, dave.addr, dave.entity(t))
					r := f.mta.send("eve@outside.example", []string{milterfix.List}, shape.build(t, f, private(tc.extra)))
					switch tc.code {
					case 0:
						if !r.delivered() {
							t.Fatalf("%d %s", r.code(), r.action.SMTPText)
						}
						v := f.copyFor(t, r, f.bob)
						if !strings.Contains(v.notice, "does not say it was written for this list") {
							t.Fatalf("no notice for members: %q", v.notice)
						}
					case 1:
						if r.action.Code != gomilter.ActDiscard || !strings.Contains(f.logs.String(), "reason=unbound-signature") {
							t.Fatalf("want held: %+v", r.action)
						}
					default:
						if r.code() != tc.code || !strings.Contains(r.action.SMTPText, tc.text) {
							t.Fatalf("got %d %q, want %d ...%s", r.code(), r.action.SMTPText, tc.code, tc.text)
						}
					}
				})
			}
		})
	}

	// A signature that names its recipients (Intended Recipient
	// Fingerprint) is refused for the list wherever it sits, whatever
	// post.unbound_signature says; naming the list is fine.
	t.Run("intended recipient fingerprint", func(t *testing.T) {
		f := newFixture(t, "")
		eveKey := milterfix.NewKey(t, "eve@outside.example")
		for _, tc := range []struct {
			name string
			to   []*openpgp.Entity
			ok   bool
		}{
			{"names Eve", []*openpgp.Entity{eveKey}, false},
			{"names Eve and the list", []*openpgp.Entity{eveKey, f.site.ListKey}, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				inner := []byte("Content-Type: text/plain\r\n\r\n" + tc.name + "\r\n")
				bin := encryptEntity(t, inner, tc.to, f.alice, true)
				// Strip the encryption as a recipient can, re-encrypt to the list.
				signed := decryptPackets(t, bin, eveKey)
				msg := pgpMIMEPost(t, outerHeader("alice@example.org", "..."), sealPackets(t, signed, f.site.ListKey))
				r := f.mta.send("eve@outside.example", []string{milterfix.List}, msg)
				if tc.ok != (r.accepted()) {
					t.Fatalf("accepted=%v, want %v: %d %s", r.accepted(), tc.ok, r.code(), r.action.SMTPText)
				}
				if !tc.ok && !strings.Contains(r.action.SMTPText, "names other recipients") {
					t.Fatalf("%q", r.action.SMTPText)
				}
			})
		}
	})
}

// decryptPackets returns the decrypted packet stream of an encrypted
// message (what gpg --unwrap prints), opened with key.
func decryptPackets(t *testing.T, bin []byte, key *openpgp.Entity) []byte {
	t.Helper()
	cfg := pgpConfig(false)
	pr := packet.NewReader(bytes.NewReader(bin))
	var eks []*packet.EncryptedKey
	for {
		p, err := pr.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			eks = append(eks, p)
			continue
		case *packet.SymmetricallyEncrypted:
			for _, ek := range eks {
				for _, k := range key.DecryptionKeys(ek.KeyId, time.Now(), cfg) {
					if ek.Decrypt(k.PrivateKey, cfg) != nil {
						continue
					}
					rc, err := p.Decrypt(ek.CipherFunc, ek.Key)
					if err != nil {
						continue
					}
					out, err := io.ReadAll(rc)
					if err != nil {
						t.Fatal(err)
					}
					if err := rc.Close(); err != nil {
						t.Fatal(err)
					}
					return out
				}
			}
			t.Fatal("no key packet opens")
		}
	}
}

// inlineSigned builds an inline signed OpenPGP message (one-pass
// signature, literal data, signature; what gpg --sign writes) around a
// signature made elsewhere: the attacker's re-packing of a member's
// signed text. format is the literal data format ('b', 't' or 'u').
func inlineSigned(t *testing.T, sigArmored []byte, content []byte, format byte, fileName string, compress bool) []byte {
	t.Helper()
	blk, err := armor.Decode(bytes.NewReader(sigArmored))
	if err != nil {
		t.Fatal(err)
	}
	sigBin, err := io.ReadAll(blk.Body)
	if err != nil {
		t.Fatal(err)
	}
	p, err := packet.Read(bytes.NewReader(sigBin))
	if err != nil {
		t.Fatal(err)
	}
	sig := p.(*packet.Signature)
	var b bytes.Buffer
	var w io.Writer = &b
	var cw io.WriteCloser
	if compress {
		if cw, err = packet.SerializeCompressed(nopWC{&b}, packet.CompressionZLIB, nil); err != nil {
			t.Fatal(err)
		}
		w = cw
	}
	ops := &packet.OnePassSignature{Version: 3, SigType: sig.SigType, Hash: sig.Hash, PubKeyAlgo: sig.PubKeyAlgo, KeyId: *sig.IssuerKeyId, IsLast: true}
	if err := ops.Serialize(w); err != nil {
		t.Fatal(err)
	}
	lw, err := packet.SerializeLiteral(nopWC{w}, format == 'b', fileName, uint32(time.Now().Unix()))
	if err != nil {
		t.Fatal(err)
	}
	if format == 'u' {
		// SerializeLiteral writes 'b' or 't'; patch the format octet.
		lw.Write(content)
		lw.Close()
		t.Fatal("format u not supported by this helper")
	}
	lw.Write(content)
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	w.Write(sigBin)
	if cw != nil {
		if err := cw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

type nopWC struct{ io.Writer }

func (nopWC) Close() error { return nil }

// Finding 4: a text-mode signature (gpg --textmode, mutt's default)
// verifies over canonical text, so the same signature over the same text
// with other line ends, packed, compressed or wrapped otherwise is the
// same post: refused as a replay.
func TestTextModeSignatureReplay(t *testing.T) {
	pgptest.RequireTool(t, "gpg")
	carol := newGPGMember(t, "carol@example.org")
	carolKey := carol.entity(t)
	text := []byte("Meet at noon.\nBring the keys.")
	sig, _ := carol.g.Run(text, "--textmode", "--armor", "--detach-sign", "-u", carol.fpr)
	crlf := bytes.ReplaceAll(text, []byte("\n"), []byte("\r\n"))
	cleartext := func(lines string) []byte {
		return []byte("Content-Type: text/plain\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\n" + lines +
			strings.ReplaceAll(string(sig), "\n", "\r\n"))
	}
	// Each post as the attacker writes it, encrypted to the list key.
	type build func(t *testing.T, list *openpgp.Entity) []byte
	inline := func(content []byte, format byte, name string, compress bool) build {
		return func(t *testing.T, list *openpgp.Entity) []byte {
			return append([]byte(outerHeader(carol.addr, "...")+"Content-Type: text/plain\r\n\r\n"),
				armorBlock(t, "PGP MESSAGE", sealPackets(t, inlineSigned(t, sig, content, format, name, compress), list))...)
		}
	}
	entity := func(e []byte) build {
		return func(t *testing.T, list *openpgp.Entity) []byte {
			return pgpMIMEPost(t, outerHeader(carol.addr, "..."), encryptEntity(t, e, []*openpgp.Entity{list}, nil, false))
		}
	}
	original := inline(text, 't', "", false)
	// Every variant is sent after the original alone (a fresh list each
	// time), so none is refused only because an earlier variant got in.
	for _, tc := range []struct {
		name    string
		variant build
		refusal string
	}{
		{"same post again", original, "already sent"},
		{"CRLF line ends", inline(crlf, 't', "", false), "already sent"},
		{"CRLF, binary literal", inline(crlf, 'b', "", false), "already sent"},
		{"compressed", inline(text, 't', "", true), "already sent"},
		{"CRLF, compressed, file name", inline(crlf, 't', "notes.txt", true), "already sent"},
		{"as cleartext signature, CRLF", entity(cleartext("Meet at noon.\r\nBring the keys.\r\n")), "already sent"},
		{"as cleartext signature, trailing spaces", entity(cleartext("Meet at noon.  \r\nBring the keys.\t\r\n")), "already sent"},
		// Text that is no MIME entity: refused before the replay check.
		{"as PGP/MIME", func(t *testing.T, list *openpgp.Entity) []byte {
			return pgpMIMEPost(t, outerHeader(carol.addr, "..."), sealPackets(t, inlineSigned(t, sig, text, 't', "", false), list))
		}, "cannot be read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "")
			f.site.Register(t, carol.addr, carolKey)
			if r := f.mta.send(carol.addr, []string{milterfix.List}, original(t, f.site.ListKey)); !r.delivered() {
				t.Fatalf("the post itself: %d %s", r.code(), r.action.SMTPText)
			}
			r := f.mta.send("mallory@evil.example", []string{milterfix.List}, tc.variant(t, f.site.ListKey))
			if r.code() < 500 || !strings.Contains(r.action.SMTPText, tc.refusal) {
				t.Fatalf("got %d %q, want a refusal (%s)", r.code(), r.action.SMTPText, tc.refusal)
			}
		})
	}
}

// Finding 11: a member key is judged now, not only at the signature's
// own (sender-chosen) creation time: a backdated signature by a key that
// expired since is refused.
func TestExpiredKeyBackdatedSignature(t *testing.T) {
	f := newFixture(t, "")
	now := time.Now()
	cfg := keyring.PacketConfig(keyring.DefaultLimits, func() time.Time { return now.Add(-3 * time.Hour) })
	cfg.Algorithm, cfg.Curve, cfg.KeyLifetimeSecs = packet.PubKeyAlgoEdDSA, packet.Curve25519, 2*3600
	cfg.AEADConfig = nil
	key, err := openpgp.NewEntity("Erin", "", "erin@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Registered while the key was valid.
	f.site.Admin.Now = func() time.Time { return now.Add(-150 * time.Minute) }
	f.site.Register(t, "erin@example.org", key)
	f.site.Admin.Now = time.Now
	for _, tc := range []struct {
		name   string
		signed time.Time
	}{
		{"signed while valid (backdated)", now.Add(-2 * time.Hour)},
		{"signed a minute before expiry", now.Add(-61 * time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := keyring.PacketConfig(keyring.DefaultLimits, func() time.Time { return tc.signed })
			first := "Content-Type: text/plain\r\n\r\nstill me, " + tc.name + "\r\n"
			inner := signedMultipart("", "B", "", first, detachSig(t, key, []byte(first), sc), "")
			msg := pgpMIMEPost(t, outerHeader("erin@example.org", "..."), encryptEntity(t, []byte(inner), []*openpgp.Entity{f.site.ListKey}, nil, false))
			r := f.mta.send("erin@example.org", []string{milterfix.List}, msg)
			if r.code() != 550 || !strings.Contains(r.action.SMTPText, "expired or revoked") {
				t.Fatalf("got %d %q, want 550 key not valid", r.code(), r.action.SMTPText)
			}
		})
	}
}

// TestMembersReadExactlyTheSignedBytes is the property behind finding 1,
// over every shape of signed post listcrypt accepts: for each accepted
// post and each member, the entity the member decrypts is byte for byte
// the data whose signature was verified (for inline PGP: after the
// text/plain header listcrypt writes), under only the listed header
// fields; with keep_sender_signature the author's signature over exactly
// those bytes travels along and verifies.
func TestMembersReadExactlyTheSignedBytes(t *testing.T) {
	entity := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCorpus post =E2=9C=93\r\n-- \r\nalice\r\n"
	text := "Corpus text.\r\n- a dashed line\r\nlast line"
	type shape struct {
		name string
		// build returns the post and the bytes members must read.
		build func(t *testing.T, f *fixture, n int) (msg []byte, want []byte)
	}
	list := func(f *fixture) []*openpgp.Entity { return []*openpgp.Entity{f.site.ListKey} }
	hdr := func(n int) string { return outerHeader("alice@example.org", fmt.Sprintf("corpus %d", n)) }
	uniq := func(s string, n int) string { return strings.Replace(s, "Corpus", fmt.Sprintf("Corpus %d", n), 1) }
	shapes := []shape{
		{"signed inside the encryption (§6.2)", func(t *testing.T, f *fixture, n int) ([]byte, []byte) {
			e := uniq(entity, n)
			return pgpMIMEPost(t, hdr(n), encryptEntity(t, []byte(e), list(f), f.alice, true)), []byte(e)
		}},
		{"multipart/signed inside the encryption (§6.1)", func(t *testing.T, f *fixture, n int) ([]byte, []byte) {
			e := uniq(entity, n)
			inner := signedMultipart("", "b1", "preamble\r\n", e, detachSig(t, f.alice, []byte(e), nil), "epilogue\r\n")
			return pgpMIMEPost(t, hdr(n), encryptEntity(t, []byte(inner), list(f), nil, false)), []byte(e)
		}},
		{"multipart/signed, not encrypted (§5)", func(t *testing.T, f *fixture, n int) ([]byte, []byte) {
			e := uniq(entity, n)
			return []byte(hdr(n) + signedMultipart("", "b1", "", e, detachSig(t, f.alice, []byte(e), nil), "")), []byte(e)
		}},
		{"LF line ends on the wire (§5)", func(t *testing.T, f *fixture, n int) ([]byte, []byte) {
			e := uniq(entity, n)
			m := hdr(n) + signedMultipart("", "b1", "", e, detachSig(t, f.alice, []byte(e), nil), "")
			return []byte(strings.ReplaceAll(m, "\r\n", "\n")), []byte(e)
		}},
		{"inline PGP, encrypted and signed", func(t *testing.T, f *fixture, n int) ([]byte, []byte) {
			tx := uniq(text, n)
			return append([]byte(hdr(n)+"Content-Type: text/plain\r\n\r\n"), armorBlock(t, "PGP MESSAGE", encryptEntity(t, []byte(tx), list(f), f.alice, true))...),
				[]byte(inbound.TextHeader + tx)
		}},
		{"cleartext signature inside the encryption", func(t *testing.T, f *fixture, n int) ([]byte, []byte) {
			tx := uniq(text, n)
			return pgpMIMEPost(t, hdr(n), encryptEntity(t, []byte("Content-Type: text/plain\r\n\r\n"+clearsignText(t, f.alice, tx)), list(f), nil, false)),
				[]byte(inbound.TextHeader + tx)
		}},
		{"cleartext signature, not encrypted", func(t *testing.T, f *fixture, n int) ([]byte, []byte) {
			tx := uniq(text, n)
			return []byte(hdr(n) + "Content-Type: text/plain\r\n\r\n" + clearsignText(t, f.alice, tx)), []byte(inbound.TextHeader + tx)
		}},
		{"signed PGP MESSAGE, not encrypted", func(t *testing.T, f *fixture, n int) ([]byte, []byte) {
			tx := uniq(text, n)
			var b bytes.Buffer
			w, err := openpgp.SignWithParams(&b, []*openpgp.Entity{f.alice}, &openpgp.SignParams{Config: pgpConfig(false)})
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte(tx))
			w.Close()
			return []byte(hdr(n) + "Content-Type: text/plain\r\n\r\n" + armorBlock(t, "PGP MESSAGE", b.Bytes())), []byte(inbound.TextHeader + tx)
		}},
	}
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep_sender_signature=%v", keep), func(t *testing.T) {
			f := newFixture(t, "encrypted = \"allow\"")
			if keep {
				f.site.EditPolicy(t, "keep_sender_signature = false", "keep_sender_signature = true")
				if err := f.d.Reload(); err != nil {
					t.Fatal(err)
				}
			}
			for n, sh := range shapes {
				t.Run(sh.name, func(t *testing.T) {
					msg, want := sh.build(t, f, n)
					r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
					if !r.delivered() {
						t.Fatalf("refused: %d %s", r.code(), r.action.SMTPText)
					}
					for name, member := range map[string]*openpgp.Entity{"alice": f.alice, "bob": f.bob} {
						v := f.copyFor(t, r, member)
						checkPayloadFields(t, v.header)
						got := v.entity
						if keep {
							got = keptPart(t, v.entity, f.alice)
						}
						if !bytes.Equal(got, want) {
							t.Fatalf("%s reads\n%q\nsigned bytes\n%q", name, got, want)
						}
						if v.header.Get("From") != `"alice" <alice@example.org>` {
							t.Fatalf("%s sees From %q", name, v.header.Get("From"))
						}
					}
				})
			}
		})
	}
}

// clearsign returns text in the cleartext signature framework, CRLF.
func clearsignText(t *testing.T, signer *openpgp.Entity, text string) string {
	t.Helper()
	var b bytes.Buffer
	w, err := clearsign.Encode(&b, signer.PrivateKey, keyring.PacketConfig(keyring.DefaultLimits, nil))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(text))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(strings.ReplaceAll(b.String(), "\r\n", "\n"), "\n", "\r\n")
}

// keptPart checks the author's signature a member's copy carries and
// returns the bytes it covers, as the member's client would show them:
// the first part of a multipart/signed, or the header listcrypt wrote
// and the text of a cleartext signature.
func keptPart(t *testing.T, entity []byte, author *openpgp.Entity) []byte {
	t.Helper()
	cfg := keyring.PacketConfig(keyring.DefaultLimits, nil)
	if first, ok := milterfix.FirstSignedPart(entity); ok {
		i := bytes.Index(entity, []byte("-----BEGIN PGP SIGNATURE-----"))
		j := bytes.Index(entity, []byte("-----END PGP SIGNATURE-----"))
		if _, _, err := openpgp.VerifyArmoredDetachedSignature(openpgp.EntityList{author}, bytes.NewReader(first),
			bytes.NewReader(entity[i:j+len("-----END PGP SIGNATURE-----")]), cfg); err != nil {
			t.Fatalf("author's signature does not verify: %v", err)
		}
		return first
	}
	if bytes.HasPrefix(entity, []byte(inbound.TextHeader+"-----BEGIN PGP SIGNED MESSAGE-----")) {
		b, _ := clearsign.Decode(entity[len(inbound.TextHeader):])
		if b == nil {
			t.Fatalf("cleartext block does not parse:\n%s", entity)
		}
		if _, _, err := openpgp.VerifyDetachedSignature(openpgp.EntityList{author}, bytes.NewReader(b.Bytes), b.ArmoredSignature.Body, cfg); err != nil {
			t.Fatalf("author's cleartext signature does not verify: %v", err)
		}
		return append([]byte(inbound.TextHeader), b.Bytes...)
	}
	return entity // inline PGP MESSAGE: the list's signature only
}

// compressedPost encrypts size bytes of one repeated line to keys, ZLIB
// compressed at the best level (signed inside when signer is set): a
// small post that inflates a lot. Built by hand: go-crypto compresses
// only for keys that advertise it.
func compressedPost(t *testing.T, from string, size int, signer *openpgp.Entity, to ...*openpgp.Entity) []byte {
	t.Helper()
	var inner bytes.Buffer
	cw, err := packet.SerializeCompressed(nopWC{&inner}, packet.CompressionZLIB, &packet.CompressionConfig{Level: 9})
	if err != nil {
		t.Fatal(err)
	}
	var w io.WriteCloser
	if signer != nil {
		w, err = openpgp.SignWithParams(cw, []*openpgp.Entity{signer}, &openpgp.SignParams{Config: pgpConfig(false)})
	} else {
		w, err = packet.SerializeLiteral(nopWC{cw}, true, "", 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Content-Type: text/plain\r\n\r\n"))
	line := []byte("the same line again and again, as a compression bomb writes it\r\n")
	for n := 0; n < size; n += len(line) {
		w.Write(line)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	return pgpMIMEPost(t, outerHeader(from, "..."), sealPackets(t, inner.Bytes(), to...))
}

// Finding 5: the work a post causes before its decision is bounded by
// the list's own max_size: the plaintext may not grow past it, whoever
// sent it, in bounded memory; a post that passes goes out compressed
// again, never as a copy many times its own size.
func TestBoundedWork(t *testing.T) {
	f := newFixture(t, `max_size = "1MB"`)
	list := []*openpgp.Entity{f.site.ListKey}
	bomb := compressedPost(t, "mallory@evil.example", 64<<20, nil, list...)
	t.Logf("bomb: %d bytes, 64 MiB inside", len(bomb))
	for _, tc := range []struct {
		name string
		from string
		msg  []byte
	}{
		{"non-member, unsigned", "mallory@evil.example", bomb},
		{"member, signed", "alice@example.org", compressedPost(t, "alice@example.org", 64<<20, f.alice, list...)},
		{"just over max_size", "alice@example.org", compressedPost(t, "alice@example.org", 1<<20+4096, f.alice, list...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			r := f.mta.send(tc.from, []string{milterfix.List}, tc.msg)
			runtime.ReadMemStats(&after)
			if r.code() != 552 || !strings.Contains(r.action.SMTPText, "5.3.4") {
				t.Fatalf("got %d %q, want 552 5.3.4", r.code(), r.action.SMTPText)
			}
			// TotalAlloc counts every allocation of the process during the
			// transaction (milter and the test's MTA client): an upper
			// bound of the peak heap the post caused.
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%s: %.1f MiB allocated for a %d byte post", tc.name, float64(alloc)/(1<<20), len(tc.msg))
			if bound := uint64(12 << 20); alloc > bound {
				t.Fatalf("allocated %d bytes, bound %d", alloc, bound)
			}
		})
	}
	t.Run("member post under max_size goes out compressed", func(t *testing.T) {
		msg := compressedPost(t, "alice@example.org", 900<<10, f.alice, list...)
		r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
		if !r.delivered() {
			t.Fatalf("%d %s", r.code(), r.action.SMTPText)
		}
		_, cp, _ := bytes.Cut(r.copyTo("bob@example.org"), []byte("\r\n\r\n"))
		body := len(cp)
		t.Logf("post %d bytes (900 KiB inside), copy %d bytes", len(msg), body)
		if body > 4*len(msg)+16<<10 {
			t.Fatalf("a %d byte post goes out as a %d byte copy", len(msg), body)
		}
		if v := f.copyFor(t, r, f.bob); len(v.entity) < 900<<10 {
			t.Fatalf("copy holds %d bytes", len(v.entity))
		}
	})
}

// Several lists in one transaction: the post is decrypted once, and each
// list decides on its own key packet and its own members.
func TestSeveralListsOneTransaction(t *testing.T) {
	sink := rig.NewSink(t)
	site := milterfix.New(t, milterfix.Options{Reinject: sink.Addr()})
	f := &fixture{site: site}
	f.alice = site.AddMember(t, "alice@example.org")
	f.bob = site.AddMember(t, "bob@example.org")
	const ops = "ops@lists.example.org"
	ctx := context.Background()
	if _, err := site.Admin.CreateList(ctx, ops, "owner@example.org", keyring.KeyEd25519); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(site.Config.PolicyDir, ops+".toml"), []byte(policy.Template(ops, "owner@example.org")), 0o644); err != nil {
		t.Fatal(err)
	}
	armored, err := site.Admin.ExportListKey(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	opsKey := el[0]
	for _, m := range []struct {
		addr string
		e    *openpgp.Entity
	}{{"alice@example.org", f.alice}, {"carol@example.org", milterfix.NewKey(t, "carol@example.org")}} {
		k, _ := keyring.ArmorPublicKey(m.e)
		if _, err := site.Admin.AddMember(ctx, ops, m.addr, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	f.d, f.logs = startDaemon(t, site)
	f.mta = newMTA(t, f.d)
	rcpts := []string{milterfix.List, ops}

	// To both lists, naming both in the signature: each list's members
	// get it, through the reinjection listener.
	msg := pgpMIMEPost(t, outerHeader("alice@example.org", "..."), encryptEntity(t, []byte("Content-Type: text/plain\r\n\r\nto both\r\n"),
		[]*openpgp.Entity{site.ListKey, opsKey}, f.alice, true))
	if r := f.mta.send("alice@example.org", rcpts, msg); r.action.Code != gomilter.ActDiscard {
		t.Fatalf("%+v", r.action)
	}
	got := map[string]bool{}
	for _, d := range sink.Messages() {
		for _, rc := range d.To {
			got[rc] = true
		}
	}
	for _, want := range []string{"alice@example.org", "bob@example.org", "carol@example.org"} {
		if !got[want] {
			t.Errorf("%s got no copy: %v", want, got)
		}
	}
	if n := strings.Count(f.logs.String(), "action=accept"); n != 2 {
		t.Fatalf("%d accept lines, want one per list:\n%s", n, f.logs.String())
	}

	// Encrypted to one list only: the other list refuses the transaction.
	msg = pgpMIMEPost(t, outerHeader("alice@example.org", "..."), encryptEntity(t, []byte("Content-Type: text/plain\r\n\r\nto devs only\r\n"),
		[]*openpgp.Entity{site.ListKey}, f.alice, true))
	if r := f.mta.send("alice@example.org", rcpts, msg); r.code() != 550 || !strings.Contains(r.action.SMTPText, "list key of "+ops) {
		t.Fatalf("got %d %q", r.code(), r.action.SMTPText)
	}
	// The author fixes the mistake and sends the same signed content to
	// devs alone, under a new Message-ID: devs never distributed the
	// refused transaction, so it is not a replay there.
	first := msg
	corrected := bytes.Replace(first, []byte("@attack.example>"), []byte(".corrected@attack.example>"), 1)
	if r := f.mta.send("alice@example.org", []string{milterfix.List}, corrected); !r.delivered() {
		t.Fatalf("corrected re-send to devs: %d %q", r.code(), r.action.SMTPText)
	}
	// Signed for devs only (its intended recipients name devs' key) but
	// encrypted to both: ops refuses it.
	eve := milterfix.NewKey(t, "eve@example.net")
	bin := encryptEntity(t, []byte("Content-Type: text/plain\r\n\r\nsigned for devs\r\n"), []*openpgp.Entity{site.ListKey, eve}, f.alice, true)
	signed := decryptPackets(t, bin, eve)
	msg = pgpMIMEPost(t, outerHeader("alice@example.org", "..."), sealPackets(t, signed, site.ListKey, opsKey))
	if r := f.mta.send("alice@example.org", rcpts, msg); r.code() != 550 || !strings.Contains(r.action.SMTPText, "names other recipients, not "+ops) {
		t.Fatalf("got %d %q", r.code(), r.action.SMTPText)
	}
	// A bomb to both lists is refused once, for both.
	if r := f.mta.send("mallory@evil.example", rcpts, compressedPost(t, "mallory@evil.example", 64<<20, nil, site.ListKey, opsKey)); r.code() != 552 {
		t.Fatalf("bomb: %d %q", r.code(), r.action.SMTPText)
	}
}

// A post the policy holds reaches the moderators as a notice (hold id,
// commands), never with its content, sent right after the transaction.
func TestHeldPostNotifiesModerators(t *testing.T) {
	sink := rig.NewSink(t)
	site := milterfix.New(t, milterfix.Options{Reinject: sink.Addr(), Policy: `signed = "hold"`})
	f := &fixture{site: site}
	f.alice = site.AddMember(t, "alice@example.org")
	site.EditPolicy(t, "moderators = []", `moderators = ["alice@example.org", "mod@example.net"]`)
	f.d, f.logs = startDaemon(t, site)
	f.mta = newMTA(t, f.d)
	const canary = "CANARY-held-8d1e"
	r := f.post(milterfix.Post{From: "alice@example.org", EncryptTo: []*openpgp.Entity{site.ListKey}, Body: canary})
	if r.action.Code != gomilter.ActDiscard || !strings.Contains(f.logs.String(), "action=hold") {
		t.Fatalf("want held: %+v\n%s", r.action, f.logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := sink.Wait(ctx, 2)
	if err != nil {
		t.Fatalf("notices: %v", err)
	}
	to := map[string]string{}
	for _, m := range msgs {
		if bytes.Contains(m.Data, []byte(canary)) {
			t.Fatalf("the held post's content is in a notice:\n%s", m.Data)
		}
		for _, rc := range m.To {
			to[rc] = string(m.Data)
		}
	}
	// The member moderator's notice is encrypted; the other is plain and
	// names the commands.
	if !strings.Contains(to["alice@example.org"], "-----BEGIN PGP MESSAGE-----") {
		t.Fatalf("member moderator's notice not encrypted:\n%s", to["alice@example.org"])
	}
	if n := to["mod@example.net"]; !strings.Contains(n, "hold approve 1") {
		t.Fatalf("moderator notice:\n%s", n)
	}
}
