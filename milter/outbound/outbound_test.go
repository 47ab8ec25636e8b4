package outbound

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/listcrypt/listcrypt/keyring"
)

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

// seeded returns a deterministic random source.
func seeded(seed uint64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return rand.NewChaCha8(s)
}

// keyKind selects the member keys the tests generate.
type keyKind int

const (
	legacyX25519 keyKind = iota // v4 EdDSA + ECDH Curve25519, SEIPDv1 only (what gpg 2.2 makes)
	v6X25519                    // v6 Ed25519 + X25519, advertises SEIPDv2 (RFC 9580)
	rsa3072                     // v4 RSA-3072, SEIPDv1 only
	rsa2048                     // v4 RSA-2048: PKESK lengths that need Marker padding
)

var (
	keyMu    sync.Mutex
	keyCache = map[string]*openpgp.Entity{}
)

// memberKey returns a deterministic go-crypto key (cached per name).
func memberKey(t testing.TB, name string, kind keyKind) *openpgp.Entity {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	ck := fmt.Sprintf("%s/%d", name, kind)
	if e := keyCache[ck]; e != nil {
		return e
	}
	seed := uint64(0)
	for _, c := range ck {
		seed = seed*31 + uint64(c)
	}
	cfg := keyring.PacketConfig(keyring.DefaultLimits, fixedNow)
	cfg.Rand = seeded(seed)
	switch kind {
	case legacyX25519:
		cfg.Algorithm, cfg.Curve, cfg.AEADConfig = packet.PubKeyAlgoEdDSA, packet.Curve25519, nil
	case v6X25519:
		cfg.Algorithm, cfg.V6Keys = packet.PubKeyAlgoEd25519, true
	case rsa3072:
		cfg.Algorithm, cfg.RSABits, cfg.AEADConfig = packet.PubKeyAlgoRSA, 3072, nil
	case rsa2048:
		cfg.Algorithm, cfg.RSABits, cfg.AEADConfig = packet.PubKeyAlgoRSA, 2048, nil
	}
	e, err := openpgp.NewEntity(name, "", name+"@example.net", cfg)
	if err != nil {
		t.Fatal(err)
	}
	keyCache[ck] = e
	return e
}

var (
	listKeyOnce sync.Once
	listKey     *openpgp.Entity
)

func testListKey(t testing.TB) *openpgp.Entity {
	t.Helper()
	listKeyOnce.Do(func() {
		var err error
		listKey, err = keyring.GenerateListKey("devs@lists.example.org", keyring.KeyEd25519, testNow.Add(-time.Hour), seeded(99))
		if err != nil {
			t.Fatal(err)
		}
	})
	return listKey
}

// publicOnly returns e without secret parts.
func publicOnly(t testing.TB, e *openpgp.Entity) *openpgp.Entity {
	t.Helper()
	var b bytes.Buffer
	if err := e.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	p, err := openpgp.ReadEntity(packet.NewReader(&b))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const testInner = "Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Hello list, the canary is CANARY-7f3a.\r\n"

func testPost() Post {
	return Post{
		Inner: []byte(testInner),
		Header: Header{
			From:      `"Alice Example" <alice@example.com>`,
			To:        "devs@lists.example.org",
			Cc:        "carol@example.com",
			Date:      "Sat, 01 Mar 2025 11:59:00 +0000",
			MessageID: "<post-1@example.com>",
			InReplyTo: "<post-0@example.com>",
			Subject:   "Secret plans for the release",
		},
	}
}

func testParams(t testing.TB) Params {
	return Params{
		ListAddress:    "devs@lists.example.org",
		ListKey:        testListKey(t),
		BatchSize:      50,
		HideRecipients: true,
		Now:            fixedNow,
		Rand:           seeded(7),
		Workers:        2,
	}
}

// parsed is one delivered message taken apart.
type parsed struct {
	header textproto.Header
	pgp    []byte // binary OpenPGP message (dearmored)
}

func parseMessage(t testing.TB, msg []byte) parsed {
	t.Helper()
	if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("bare LF in message")
	}
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/encrypted" || params["protocol"] != "application/pgp-encrypted" {
		t.Fatalf("outer Content-Type %q", h.Get("Content-Type"))
	}
	mr := textproto.NewMultipartReader(br, params["boundary"])
	var parts [][]byte
	var types []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, b)
		types = append(types, p.Header.Get("Content-Type"))
	}
	if len(parts) != 2 || types[0] != "application/pgp-encrypted" || !strings.HasPrefix(types[1], "application/octet-stream") {
		t.Fatalf("parts %q", types)
	}
	if !strings.Contains(string(parts[0]), "Version: 1") {
		t.Fatalf("version part %q", parts[0])
	}
	blk, err := armor.Decode(bytes.NewReader(parts[1]))
	if err != nil {
		t.Fatal(err)
	}
	if blk.Type != "PGP MESSAGE" {
		t.Fatalf("armor type %q", blk.Type)
	}
	bin, err := io.ReadAll(blk.Body)
	if err != nil {
		t.Fatalf("dearmor (checksum?): %v", err)
	}
	return parsed{header: h, pgp: bin}
}

// pkesks returns the key packets of a binary message.
func pkesks(t testing.TB, bin []byte) (keys []*packet.EncryptedKey, data *packet.SymmetricallyEncrypted) {
	t.Helper()
	r := packet.NewReader(bytes.NewReader(bin))
	for {
		p, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			keys = append(keys, p)
		case *packet.SymmetricallyEncrypted:
			return keys, p
		default:
			t.Fatalf("unexpected packet %T", p)
		}
	}
}

// decrypt decrypts bin with key only and checks the list signature;
// it returns the inner entity.
func decrypt(t testing.TB, bin []byte, key *openpgp.Entity) ([]byte, error) {
	t.Helper()
	ring := openpgp.EntityList{key, publicOnly(t, testListKey(t))}
	md, err := openpgp.ReadMessage(bytes.NewReader(bin), ring, nil, keyring.PacketConfig(keyring.DefaultLimits, fixedNow))
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(md.UnverifiedBody)
	if err != nil {
		return nil, err
	}
	if md.SignatureError != nil {
		return nil, fmt.Errorf("signature: %w", md.SignatureError)
	}
	if !md.IsSigned || md.SignedBy == nil || md.SignedBy.PublicKey.KeyId != testListKey(t).PrimaryKey.KeyId {
		return nil, fmt.Errorf("not signed by the list key")
	}
	return b, nil
}

func recipients(t testing.TB, n int, kind keyKind) []Recipient {
	rs := make([]Recipient, n)
	for i := range rs {
		name := fmt.Sprintf("m%03d", i)
		rs[i] = Recipient{Address: name + "@example.net", Key: keyring.EntityKey(memberKey(t, name, kind))}
	}
	return rs
}

func TestBatchSplitAndDecrypt(t *testing.T) {
	for _, n := range []int{1, 49, 50, 51} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rs := recipients(t, n, legacyX25519)
			pr, err := Prepare(testPost(), testParams(t))
			if err != nil {
				t.Fatal(err)
			}
			bs, err := pr.Batches(rs)
			if err != nil {
				t.Fatal(err)
			}
			if want := (n + 49) / 50; len(bs) != want {
				t.Fatalf("%d batches, want %d", len(bs), want)
			}
			where := map[string]int{}
			for i, b := range bs {
				if b.Number != i+1 || b.EnvelopeFrom != "devs-bounces@lists.example.org" || b.AEAD {
					t.Fatalf("batch %d: %+v", i, b)
				}
				for _, a := range b.Recipients {
					if _, dup := where[a]; dup {
						t.Fatalf("%s in two batches", a)
					}
					where[a] = i
				}
			}
			if len(where) != n {
				t.Fatalf("%d recipients in batches, want %d", len(where), n)
			}
			msgs := make([]parsed, len(bs))
			var sharedData []byte
			for i, b := range bs {
				msgs[i] = parseMessage(t, b.Message())
				keys, _ := pkesks(t, msgs[i].pgp)
				if len(keys) != len(b.Recipients) {
					t.Fatalf("batch %d: %d PKESKs for %d recipients", i+1, len(keys), len(b.Recipients))
				}
				for _, k := range keys {
					if k.KeyId != 0 {
						t.Fatalf("hidden recipients but PKESK key ID %X", k.KeyId)
					}
				}
				// The encrypted data is shared: every batch ends with the same bytes.
				tail := msgs[i].pgp[len(msgs[i].pgp)-len(testInner):]
				if sharedData == nil {
					sharedData = tail
				} else if !bytes.Equal(sharedData, tail) {
					t.Fatal("batches do not share the encrypted data")
				}
			}
			// Each member decrypts its own copy with only its key, and not another batch's.
			for _, r := range rs {
				b := where[r.Address]
				inner, err := decrypt(t, msgs[b].pgp, ent(r.Key))
				if err != nil {
					t.Fatalf("%s: %v", r.Address, err)
				}
				if !bytes.Contains(inner, []byte("CANARY-7f3a")) {
					t.Fatalf("%s: inner %q", r.Address, inner)
				}
				if len(bs) > 1 {
					if _, err := decrypt(t, msgs[(b+1)%len(bs)].pgp, ent(r.Key)); err == nil {
						t.Fatalf("%s decrypts another batch", r.Address)
					}
				}
			}
			stranger := memberKey(t, "mallory", legacyX25519)
			for i, m := range msgs {
				if _, err := decrypt(t, m.pgp, stranger); err == nil {
					t.Fatalf("non-member decrypts batch %d", i+1)
				}
			}
		})
	}
}

func TestVisibleKeyIDs(t *testing.T) {
	rs := recipients(t, 3, legacyX25519)
	p := testParams(t)
	p.HideRecipients = false
	pr, err := Prepare(testPost(), p)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := pr.Batches(rs)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := pkesks(t, parseMessage(t, bs[0].Message()).pgp)
	for i, k := range keys {
		want, ok := ent(rs[i].Key).EncryptionKey(testNow, nil)
		if !ok || k.KeyId != want.PublicKey.KeyId {
			t.Fatalf("PKESK %d key ID %X, want %X", i, k.KeyId, want.PublicKey.KeyId)
		}
	}
}

func TestHeaders(t *testing.T) {
	p := testParams(t)
	p.ListHeaders.UnsubscribeURL = "https://lists.example.org/u/devs"
	pr, err := Prepare(testPost(), p)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := pr.Batches(recipients(t, 1, legacyX25519))
	if err != nil {
		t.Fatal(err)
	}
	m := parseMessage(t, bs[0].Message())
	want := map[string]string{
		"From":                  `"Alice Example via devs" <devs@lists.example.org>`,
		"Reply-To":              `"Alice Example" <alice@example.com>`,
		"To":                    "devs@lists.example.org",
		"Subject":               "[devs] Encrypted message",
		"Date":                  "Sat, 01 Mar 2025 11:59:00 +0000",
		"Message-Id":            "<post-1@example.com>",
		"In-Reply-To":           "<post-0@example.com>",
		"List-Id":               "devs <devs.lists.example.org>",
		"List-Post":             "<mailto:devs@lists.example.org>",
		"List-Help":             "<mailto:devs-request@lists.example.org?subject=help>",
		"List-Subscribe":        "<mailto:devs-request@lists.example.org?subject=subscribe>",
		"List-Unsubscribe":      "<https://lists.example.org/u/devs>, <mailto:devs-request@lists.example.org?subject=unsubscribe>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
		"Precedence":            "list",
		"MIME-Version":          "1.0",
		"Cc":                    "",
	}
	for k, v := range want {
		if got := m.header.Get(k); got != v {
			t.Errorf("outer %s = %q, want %q", k, got, v)
		}
	}
	if bytes.Contains(bs[0].Message(), []byte("Secret plans")) || bytes.Contains(bs[0].Message(), []byte("CANARY")) {
		t.Fatal("real subject or body outside the encryption")
	}

	inner, err := decrypt(t, m.pgp, memberKey(t, "m000", legacyX25519))
	if err != nil {
		t.Fatal(err)
	}
	ih, notice, entity, err := PayloadParts(inner)
	if err != nil {
		t.Fatal(err)
	}
	if notice != nil {
		t.Errorf("notice %q without one asked for", notice)
	}
	if !bytes.Equal(entity, []byte(testInner)) {
		t.Errorf("entity not carried byte for byte:\n%q\nwant\n%q", entity, testInner)
	}
	wantInner := map[string]string{
		"From":        `"Alice Example" <alice@example.com>`,
		"To":          "devs@lists.example.org",
		"Cc":          "carol@example.com",
		"Subject":     "Secret plans for the release",
		"Date":        "Sat, 01 Mar 2025 11:59:00 +0000",
		"Message-Id":  "<post-1@example.com>",
		"In-Reply-To": "<post-0@example.com>",
	}
	for k, v := range wantInner {
		if got := ih.Get(k); got != v {
			t.Errorf("inner %s = %q, want %q", k, got, v)
		}
	}
	// RFC 9788 §2.2: what the outside carried, for each protected field.
	outer := map[string]bool{}
	for _, v := range ih.Values("HP-Outer") {
		outer[v] = true
	}
	for _, v := range []string{"Subject: [devs] Encrypted message", "To: devs@lists.example.org", `From: "Alice Example via devs" <devs@lists.example.org>`} {
		if !outer[v] {
			t.Errorf("no HP-Outer %q in %q", v, ih.Values("HP-Outer"))
		}
	}
}

// TestEntityHeadersNotRead: protected headers inside the entity (the
// author's own, or an attacker's) never replace the header the caller
// decided; the entity travels unchanged below it.
func TestEntityHeadersNotRead(t *testing.T) {
	post := testPost()
	post.Header.Subject = "Decided by the caller"
	post.Inner = []byte("Content-Type: text/plain; protected-headers=\"v1\"\r\nFrom: Bob <bob@example.com>\r\nSubject: The attacker's\r\n\r\nbody\r\n")
	h, _, entity := payloadFor(t, post, testParams(t))
	if h.Get("Subject") != "Decided by the caller" || h.Get("From") != post.Header.From || !bytes.Equal(entity, post.Inner) {
		t.Fatalf("payload header %v, entity %q", h, entity)
	}
}

func TestNotice(t *testing.T) {
	post := testPost()
	post.Notice = "The author's signature does not name this list."
	_, notice, entity := payloadFor(t, post, testParams(t))
	if string(notice) != post.Notice || !bytes.Equal(entity, post.Inner) {
		t.Fatalf("notice %q entity %q", notice, entity)
	}
}

// TestCopiesNoLargerThanPlaintext: a post that compresses well (here
// 4 MiB of one repeated line) goes out compressed, so a copy costs about
// what the sender's compressed ciphertext did; one that does not (random
// bytes) goes out uncompressed, never larger than plaintext and armor.
func TestCopiesNoLargerThanPlaintext(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		max  int
	}{
		{"compressible", bytes.Repeat([]byte("all work and no play makes a dull list\r\n"), 4<<20/40), 64 << 10},
		{"incompressible", randomText(t, 1<<20), 1<<20*4/3 + 64<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			post := testPost()
			post.Inner = append([]byte("Content-Type: text/plain\r\n\r\n"), tc.body...)
			msg := oneCopy(t, post, testParams(t))
			if len(msg) > tc.max {
				t.Fatalf("copy is %d bytes for %d bytes of plaintext (max %d)", len(msg), len(tc.body), tc.max)
			}
			inner, err := decrypt(t, parseMessage(t, msg).pgp, memberKey(t, "m000", legacyX25519))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, entity, err := PayloadParts(inner); err != nil || !bytes.Equal(entity, post.Inner) {
				t.Fatalf("entity changed: %v", err)
			}
		})
	}
}

func randomText(t *testing.T, n int) []byte {
	b := make([]byte, n*3/4)
	if _, err := io.ReadFull(seeded(99), b); err != nil {
		t.Fatal(err)
	}
	s := base64.StdEncoding.EncodeToString(b)
	var out bytes.Buffer
	for len(s) > 76 {
		out.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	out.WriteString(s + "\r\n")
	return out.Bytes()
}

func TestAEADOnlyWhenEveryKeyAdvertisesIt(t *testing.T) {
	v6a, v6b := memberKey(t, "six-a", v6X25519), memberKey(t, "six-b", v6X25519)
	legacy := memberKey(t, "legacy", legacyX25519)
	rs := []Recipient{
		{"six-a@example.net", keyring.EntityKey(v6a)}, {"six-b@example.net", keyring.EntityKey(v6b)}, // batch 1: all v6 -> SEIPDv2
		{"six-c@example.net", keyring.EntityKey(memberKey(t, "six-c", v6X25519))}, {"legacy@example.net", keyring.EntityKey(legacy)}, // batch 2: mixed -> SEIPDv1
	}
	p := testParams(t)
	p.BatchSize = 2
	pr, err := Prepare(testPost(), p)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := pr.Batches(rs)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 || !bs[0].AEAD || bs[1].AEAD {
		t.Fatalf("AEAD flags %v %v", bs[0].AEAD, bs[1].AEAD)
	}
	for i, b := range bs {
		m := parseMessage(t, b.Message())
		keys, data := pkesks(t, m.pgp)
		wantV := map[bool]int{true: 6, false: 3}[b.AEAD]
		for _, k := range keys {
			if k.Version != wantV {
				t.Fatalf("batch %d: PKESK v%d, want v%d", i+1, k.Version, wantV)
			}
		}
		if want := map[bool]int{true: 2, false: 1}[b.AEAD]; data.Version != want {
			t.Fatalf("batch %d: SEIPD v%d, want v%d", i+1, data.Version, want)
		}
		if b.AEAD && data.Mode != packet.AEADModeGCM {
			t.Fatalf("AEAD mode %v, want GCM", data.Mode)
		}
		for j := range b.Recipients {
			if _, err := decrypt(t, m.pgp, ent(rs[i*2+j].Key)); err != nil {
				t.Fatalf("batch %d %s: %v", i+1, b.Recipients[j], err)
			}
		}
	}
	// Only the variants needed are made: one each here; an all-legacy
	// post makes no SEIPDv2 variant.
	if len(pr.variants) != 2 {
		t.Fatalf("%d variants", len(pr.variants))
	}
	pr2, err := Prepare(testPost(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pr2.Batches([]Recipient{{"legacy@example.net", keyring.EntityKey(legacy)}}); err != nil {
		t.Fatal(err)
	}
	for s := range pr2.variants {
		if s.aead {
			t.Fatal("SEIPDv2 made for a legacy-only post")
		}
	}
}

func TestRecipientErrors(t *testing.T) {
	pr, err := Prepare(testPost(), testParams(t))
	if err != nil {
		t.Fatal(err)
	}
	// A sign-only key: no encryption subkey.
	cfg := keyring.PacketConfig(keyring.DefaultLimits, fixedNow)
	cfg.Algorithm, cfg.Curve, cfg.AEADConfig, cfg.Rand = packet.PubKeyAlgoEdDSA, packet.Curve25519, nil, seeded(3)
	signOnly, err := openpgp.NewEntity("so", "", "so@example.net", cfg)
	if err != nil {
		t.Fatal(err)
	}
	signOnly.Subkeys = nil
	rs := append(recipients(t, 3, legacyX25519), Recipient{"so@example.net", keyring.EntityKey(signOnly)})
	if _, err := pr.Batches(rs); err == nil || !strings.Contains(err.Error(), "so@example.net") {
		t.Fatalf("sign-only key: %v", err)
	}
	if _, err := pr.Batches([]Recipient{{"nokey@example.net", nil}}); err == nil || !strings.Contains(err.Error(), "nokey@example.net") {
		t.Fatalf("no key: %v", err)
	}
	rs = recipients(t, 2, legacyX25519)
	rs[1].Address = strings.ToUpper(rs[0].Address)
	if _, err := pr.Batches(rs); err == nil {
		t.Fatal("duplicate recipient accepted")
	}
	if bs, err := pr.Batches(nil); err != nil || bs != nil {
		t.Fatalf("no recipients: %v %v", bs, err)
	}
}

func TestKeepSenderSignature(t *testing.T) {
	post := testPost()
	post.SenderSigned = []byte("Content-Type: multipart/signed; boundary=x; protocol=\"application/pgp-signature\"; micalg=pgp-sha256\r\n\r\n--x\r\n" + testInner + "\r\n--x\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--x--\r\n")
	for _, keep := range []bool{false, true} {
		p := testParams(t)
		p.KeepSenderSignature = keep
		_, _, entity := payloadFor(t, post, p)
		want := post.Inner
		if keep {
			want = post.SenderSigned
		}
		if !bytes.Equal(entity, want) {
			t.Fatalf("keep=%v: entity %q", keep, entity)
		}
	}
}

func TestBodyAccessorsAgree(t *testing.T) {
	pr, err := Prepare(testPost(), testParams(t))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := pr.Batches(recipients(t, 2, legacyX25519))
	if err != nil {
		t.Fatal(err)
	}
	b := bs[0]
	body := b.Body()
	r, _ := io.ReadAll(b.BodyReader())
	var w bytes.Buffer
	n, err := b.WriteTo(&w)
	if err != nil || int(n) != w.Len() || !bytes.Equal(body, r) || len(body) != b.BodyLen() || !bytes.Equal(w.Bytes(), b.Message()) || !bytes.HasSuffix(w.Bytes(), body) {
		t.Fatal("body accessors disagree")
	}
	for _, l := range bytes.Split(w.Bytes(), []byte("\r\n")) {
		if len(l) > 78 {
			t.Fatalf("line over 78: %q", l)
		}
	}
}

func TestCRCCombine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sizes := range [][2]int{{0, 0}, {1, 0}, {0, 1}, {3, 5}, {300, 70000}, {17, 1 << 20}} {
		a, b := make([]byte, sizes[0]), make([]byte, sizes[1])
		for i := range a {
			a[i] = byte(r.Uint32())
		}
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		want := crc24Update(crc24Init, append(append([]byte{}, a...), b...))
		got := newCRCShift(len(b)).apply(crc24Update(crc24Init, a)) ^ crc24Update(0, b)
		if got != want {
			t.Fatalf("sizes %v: %06x want %06x", sizes, got, want)
		}
	}
	// Against the armor encoder of go-crypto.
	data := []byte("hello, world")
	var buf bytes.Buffer
	w, _ := armor.Encode(&buf, "PGP MESSAGE", nil)
	w.Write(data)
	w.Close()
	line := string(appendCRCLine(nil, crc24Update(crc24Init, data)))
	if !strings.Contains(buf.String(), "\n"+strings.TrimSuffix(line, "\r\n")+"\n") {
		t.Fatalf("crc line %q not in %q", line, buf.String())
	}
}

func TestMarkersAlign(t *testing.T) {
	for n := range 10 {
		if (n+len(markersFor(n)))%3 != 0 {
			t.Fatalf("n=%d", n)
		}
	}
}

func TestKeyChoiceHonoursExpiry(t *testing.T) {
	cfg := keyring.PacketConfig(keyring.DefaultLimits, fixedNow)
	cfg.Algorithm, cfg.Curve, cfg.AEADConfig, cfg.Rand = packet.PubKeyAlgoEdDSA, packet.Curve25519, nil, seeded(11)
	cfg.KeyLifetimeSecs = 3600
	short, err := openpgp.NewEntity("short", "", "short@example.net", cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := testNow
	p := testParams(t)
	p.Now = func() time.Time { return now }
	rs := []Recipient{{"short@example.net", keyring.EntityKey(short)}}
	for _, at := range []time.Duration{0, 30 * time.Minute} {
		now = testNow.Add(at)
		pr, err := Prepare(testPost(), p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pr.Batches(rs); err != nil {
			t.Fatalf("at +%v: %v", at, err)
		}
	}
	now = testNow.Add(2 * time.Hour) // past the key's lifetime: the remembered choice no longer holds
	pr, err := Prepare(testPost(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pr.Batches(rs); err == nil || !strings.Contains(err.Error(), "short@example.net") {
		t.Fatalf("expired key: %v", err)
	}
}

func TestNoHeaderInjection(t *testing.T) {
	post := testPost()
	post.Header.Subject = "hi\r\nBcc: victim@example.com"
	post.Header.From = "Eve <eve@example.com>\nX-Evil: 1"
	p := testParams(t)
	p.Subject, p.ListName = SubjectKeep, `Dev "core", team`
	m := parseMessage(t, oneCopy(t, post, p))
	if m.header.Has("Bcc") || m.header.Has("X-Evil") {
		t.Fatal("header injected outside")
	}
	if got := m.header.Get("List-Id"); got != `"Dev \"core\", team" <devs.lists.example.org>` {
		t.Fatalf("List-Id %q", got)
	}
	inner, err := decrypt(t, m.pgp, memberKey(t, "m000", legacyX25519))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(inner, []byte("\r\nBcc:")) || bytes.Contains(inner, []byte("\r\nX-Evil:")) {
		t.Fatalf("header injected inside: %q", inner)
	}
}

// TestConcurrentPosts: sessions share the list key and member keys (the
// member cache hands out the same StoredKey, here one for two addresses);
// go-crypto writes into parsed keys while verifying, so the list key's
// use and each key's choice are serialised. Run with -race.
func TestConcurrentPosts(t *testing.T) {
	rs := recipients(t, 20, legacyX25519)
	sk := keyring.EntityKey(memberKey(t, "shared", legacyX25519)) // one key for two addresses
	rs = append(rs, Recipient{"alias1@example.net", sk}, Recipient{"alias2@example.net", sk})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			p := testParams(t)
			p.Rand, p.BatchSize = nil, 5
			pr, err := Prepare(testPost(), p)
			if err == nil {
				_, err = pr.Batches(rs)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// payloadFor prepares post with params, encrypts it to one member and
// returns what that member decrypts, split by PayloadParts.
func payloadFor(t *testing.T, post Post, params Params) (textproto.Header, []byte, []byte) {
	t.Helper()
	pt, err := decrypt(t, parseMessage(t, oneCopy(t, post, params)).pgp, memberKey(t, "m000", legacyX25519))
	if err != nil {
		t.Fatal(err)
	}
	h, notice, entity, err := PayloadParts(pt)
	if err != nil {
		t.Fatal(err)
	}
	return h, notice, entity
}

// ent is the parsed key of a recipient made with keyring.EntityKey.
func ent(k *keyring.StoredKey) *openpgp.Entity {
	e, err := k.Entity()
	if err != nil {
		panic(err)
	}
	return e
}
