package outbound

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
)

// oneCopy is the copy of post for one member.
func oneCopy(t *testing.T, post Post, p Params) []byte {
	t.Helper()
	pr, err := Prepare(post, p)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := pr.Batches(recipients(t, 1, legacyX25519))
	if err != nil {
		t.Fatal(err)
	}
	return bs[0].Message()
}

// rawField returns the raw lines (folded, without CRLF) of the one field
// name in the header of msg, failing unless there is exactly one.
func rawField(t *testing.T, msg []byte, name string) []string {
	t.Helper()
	head, _, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		t.Fatal("no end of header")
	}
	var fields [][]string
	for _, l := range strings.Split(string(head), "\r\n") {
		switch {
		case l != "" && (l[0] == ' ' || l[0] == '\t'):
			if len(fields) > 0 {
				fields[len(fields)-1] = append(fields[len(fields)-1], l)
			}
		default:
			fields = append(fields, []string{l})
		}
	}
	var found []string
	n := 0
	for _, f := range fields {
		if k, _, _ := strings.Cut(f[0], ":"); strings.EqualFold(k, name) {
			found, n = f, n+1
		}
	}
	if n != 1 {
		t.Fatalf("%d %s fields, want 1", n, name)
	}
	return found
}

// parseAutocrypt parses an unfolded Autocrypt header value as a consumer
// does (Autocrypt Level 1 §2.1): attributes separated by ";", keydata
// last, whitespace in keydata ignored, unknown attributes without a
// leading underscore make the header invalid.
func parseAutocrypt(t *testing.T, value string) (attrs map[string]string, keydata []byte) {
	t.Helper()
	attrs = map[string]string{}
	parts := strings.Split(value, ";")
	for i, p := range parts {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			t.Fatalf("attribute %q without =", p)
		}
		switch k {
		case "addr", "prefer-encrypt":
		case "keydata":
			if i != len(parts)-1 {
				t.Fatalf("keydata is attribute %d of %d, must be last", i+1, len(parts))
			}
		default:
			if !strings.HasPrefix(k, "_") {
				t.Fatalf("unknown critical attribute %q", k)
			}
		}
		attrs[k] = v
	}
	kd := strings.Join(strings.Fields(attrs["keydata"]), "")
	keydata, err := base64.StdEncoding.DecodeString(kd)
	if err != nil {
		t.Fatalf("keydata is not base64: %v", err)
	}
	return attrs, keydata
}

// A copy carries, in its outer header, one Autocrypt field for the list
// address: folded into lines of at most 78 characters, valid attributes,
// keydata that decodes into the list key with exactly one user ID and
// the encryption subkey, and nothing else; gpg imports it as the list
// key with the list's user ID.
func TestAutocryptHeader(t *testing.T) {
	p := testParams(t)
	msg := oneCopy(t, testPost(), p)
	lines := rawField(t, msg, "Autocrypt")
	if len(lines) < 3 {
		t.Fatalf("Autocrypt field on %d lines, want it folded", len(lines))
	}
	for i, l := range lines {
		if len(l) > 78 {
			t.Errorf("line %d of the field is %d characters: %q", i, len(l), l)
		}
		if i > 0 && !strings.HasPrefix(l, " ") {
			t.Errorf("continuation line %d does not start with a space: %q", i, l)
		}
	}
	// What a consumer gets after unfolding (RFC 5322 §2.2.3).
	m := parseMessage(t, msg)
	value := m.header.Get("Autocrypt")
	if unfolded := strings.TrimPrefix(strings.Join(lines, ""), "Autocrypt: "); unfolded != value {
		t.Fatalf("unfolded field %q differs from the parsed header %q", unfolded, value)
	}
	attrs, keydata := parseAutocrypt(t, value)
	if attrs["addr"] != "devs@lists.example.org" || attrs["prefer-encrypt"] != "mutual" {
		t.Errorf("attributes %v", attrs)
	}
	if !strings.Contains(m.header.Get("From"), "<devs@lists.example.org>") {
		t.Fatalf("outer From %q is not the Autocrypt addr", m.header.Get("From"))
	}

	// The keydata is the minimal key: exactly the five packets.
	var tags []packet.Packet
	pr2 := packet.NewReader(bytes.NewReader(keydata))
	for {
		pk, err := pr2.Next()
		if err != nil {
			break
		}
		tags = append(tags, pk)
	}
	if len(tags) != 5 {
		t.Fatalf("keydata has %d packets, want 5 (primary, user ID, self-signature, subkey, binding)", len(tags))
	}
	e, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(keydata)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keyring.Fingerprint(e), keyring.Fingerprint(p.ListKey); got != want {
		t.Fatalf("keydata fingerprint %s, want the list key %s", got, want)
	}
	if len(e.Identities) != 1 || len(e.Subkeys) != 1 {
		t.Fatalf("keydata: %d user IDs, %d subkeys; want 1 and 1", len(e.Identities), len(e.Subkeys))
	}
	cfg := keyring.PacketConfig(keyring.DefaultLimits, fixedNow)
	enc, ok := e.EncryptionKey(testNow, cfg)
	if !ok || enc.PublicKey.KeyId != p.ListKey.Subkeys[0].PublicKey.KeyId {
		t.Fatal("keydata has no valid encryption subkey, or not the list's")
	}

	// A real consumer: gpg imports it as the list key, one user ID, one
	// encryption subkey.
	g := pgptest.NewGPG(t)
	g.Import(keydata)
	out, _ := g.Run(nil, "--with-colons", "--fixed-list-mode", "--list-keys")
	var fprs, uids, subs []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Split(l, ":")
		switch {
		case f[0] == "fpr" && len(f) > 9 && len(subs) == 0:
			fprs = append(fprs, f[9])
		case f[0] == "uid" && len(f) > 9:
			uids = append(uids, f[9])
		case f[0] == "sub" && len(f) > 11:
			subs = append(subs, f[11])
		}
	}
	if len(fprs) != 1 || fprs[0] != keyring.Fingerprint(p.ListKey) {
		t.Errorf("gpg sees primary keys %v, want %s", fprs, keyring.Fingerprint(p.ListKey))
	}
	if len(uids) != 1 || uids[0] != "devs <devs@lists.example.org>" {
		t.Errorf("gpg sees user IDs %q, want the list's only", uids)
	}
	if len(subs) != 1 || !strings.Contains(subs[0], "e") {
		t.Errorf("gpg sees subkeys with capabilities %q, want one encryption subkey", subs)
	}
}

// The header is computed once per list key: a post pays a map lookup,
// no allocation; a new key (rotation) gives a new value.
func TestAutocryptCachedPerKey(t *testing.T) {
	key := testListKey(t)
	v1, err := AutocryptValue("devs@lists.example.org", key, testNow, keyring.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := AutocryptValue("devs@lists.example.org", key, testNow, keyring.DefaultLimits); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a cached Autocrypt value costs %v allocations, want 0", n)
	}
	rotated, err := keyring.GenerateListKey("devs@lists.example.org", keyring.KeyEd25519, testNow, seeded(7))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := AutocryptValue("devs@lists.example.org", rotated, testNow, keyring.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if v1 == v2 {
		t.Fatal("a rotated list key kept the old Autocrypt value")
	}
	// A key without a user ID for the address gives no value, and the
	// post still goes out, without the header.
	p := testParams(t)
	p.ListAddress = "other@lists.example.org"
	if _, err := AutocryptValue(p.ListAddress, p.ListKey, testNow, keyring.DefaultLimits); err == nil {
		t.Fatal("an Autocrypt value for an address the key does not name")
	}
	pr, err := Prepare(testPost(), p)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range pr.Header() {
		if f.Name == "Autocrypt" {
			t.Fatal("Autocrypt header for a key that does not name the list address")
		}
	}
}

// With distribute.from = "keep" the outer From is the author: an
// Autocrypt header for the list address would not match it (consumers
// ignore it, a lax one would file the list key under the author), so
// there is none.
func TestAutocryptNotWithAuthorFrom(t *testing.T) {
	p := testParams(t)
	p.FromMode = FromKeep
	pr, err := Prepare(testPost(), p)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range pr.Header() {
		if f.Name == "Autocrypt" {
			t.Fatalf("Autocrypt header with From: %s", testPost().Header.From)
		}
	}
}

// Folding: the keydata is cut into 76-character chunks, so every line of
// the folded field is at most 78 characters and continuation lines start
// with a space; unfolding and dropping whitespace gives the key back.
func TestAutocryptFolding(t *testing.T) {
	// Golden: a short key, every byte visible.
	key := bytes.Repeat([]byte{0xfb, 0xef, 0xbe}, 30) // 90 bytes: 120 base64 characters
	got := foldField("Autocrypt", autocryptFormat("devs@lists.example.org", key))
	b64 := base64.StdEncoding.EncodeToString(key)
	want := "Autocrypt: addr=devs@lists.example.org; prefer-encrypt=mutual; keydata=\r\n" +
		" " + b64[:76] + "\r\n" +
		" " + b64[76:] + "\r\n"
	if got != want {
		t.Errorf("folded field\n%s\nwant\n%s", got, want)
	}

	for _, tc := range []struct {
		addr string
		n    int // key bytes
	}{
		{"devs@lists.example.org", 0},
		{"devs@lists.example.org", 1},
		{"devs@lists.example.org", 57},  // exactly one line of base64
		{"devs@lists.example.org", 58},  // one character more
		{"devs@lists.example.org", 114}, // exactly two lines
		{"devs@lists.example.org", 1750},
		{"a-rather-long-list-name@lists.subdomain.example.org", 400},
	} {
		key := make([]byte, tc.n)
		for i := range key {
			key[i] = byte(i * 7)
		}
		field := foldField("Autocrypt", autocryptFormat(tc.addr, key))
		if !strings.HasSuffix(field, "\r\n") {
			t.Fatalf("%d bytes: no CRLF at the end", tc.n)
		}
		lines := strings.Split(strings.TrimSuffix(field, "\r\n"), "\r\n")
		for i, l := range lines {
			if len(l) > 78 {
				t.Errorf("%s, %d bytes: line %d is %d characters", tc.addr, tc.n, i, len(l))
			}
			if i > 0 && (len(l) < 2 || l[0] != ' ' || l[1] == ' ') {
				t.Errorf("%s, %d bytes: continuation line %d %q", tc.addr, tc.n, i, l)
			}
		}
		value := strings.TrimPrefix(strings.Join(lines, ""), "Autocrypt: ")
		attrs, kd := parseAutocrypt(t, value)
		if attrs["addr"] != tc.addr || !bytes.Equal(kd, key) {
			t.Errorf("%s, %d bytes: round trip gives %q and %d bytes", tc.addr, tc.n, attrs["addr"], len(kd))
		}
	}
}
