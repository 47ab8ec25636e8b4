package keyring

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// fixture returns testdata/keys/NAME (see testdata/keys/README.md).
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "keys", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dearmor returns the binary body of an armored fixture.
func dearmor(t testing.TB, armored []byte) []byte {
	t.Helper()
	block, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(block.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sigPackets counts the signature packets in a binary key.
func sigPackets(t testing.TB, bin []byte) int {
	t.Helper()
	n := 0
	r := packet.NewReader(bytes.NewReader(bin))
	for {
		p, err := r.Next()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := p.(*packet.Signature); ok {
			n++
		}
	}
}

func TestParseMemberKey(t *testing.T) {
	alicePub := fixture(t, "alice.pub.asc")
	bobPub := fixture(t, "bob.pub.asc")
	for _, tc := range []struct {
		name   string
		data   []byte
		limits *Limits
		now    time.Time
		// success
		addrs   []string
		subkeys int
		// refusal
		reason error
		text   string // substring of the subscriber message
	}{
		{name: "alice", data: alicePub, addrs: []string{"alice@example.org", "alice@work.example"}, subkeys: 1},
		{name: "alice binary", data: dearmor(t, alicePub), addrs: []string{"alice@example.org", "alice@work.example"}, subkeys: 1},
		{name: "alice with text around", data: append(append([]byte("Here is my key:\n\n"), alicePub...), "\n-- \nAlice\n"...), addrs: []string{"alice@example.org", "alice@work.example"}, subkeys: 1},
		{name: "bob", data: bobPub, addrs: []string{"bob@example.org"}, subkeys: 1},
		{name: "mallory", data: fixture(t, "mallory.pub.asc"), addrs: []string{"mallory@evil.example"}, subkeys: 1},
		{name: "dave rsa3072", data: fixture(t, "dave.pub.asc"), addrs: []string{"dave@example.org"}, subkeys: 1},
		{name: "expired key is fine before it expired", data: fixture(t, "expired.pub.asc"), now: time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC), addrs: []string{"expired@example.org"}, subkeys: 1},

		{name: "secret key armored", data: fixture(t, "alice.sec.asc"), reason: ErrSecretKey, text: "SECRET key"},
		{name: "secret key binary", data: dearmor(t, fixture(t, "bob.sec.asc")), reason: ErrSecretKey, text: "compromised"},
		{name: "public and secret blocks", data: append(append([]byte{}, alicePub...), fixture(t, "alice.sec.asc")...), reason: ErrSecretKey},
		{name: "rsa1024", data: fixture(t, "weak-rsa1024.pub.asc"), reason: ErrWeakRSA, text: "RSA with 1024 bits"},
		{name: "dsa elgamal", data: fixture(t, "dsa-elgamal.pub.asc"), reason: ErrObsoleteAlgorithm, text: "uses DSA"},
		{name: "no encryption subkey", data: fixture(t, "signonly.pub.asc"), reason: ErrNoEncryptionKey, text: "no valid encryption subkey"},
		{name: "sha1 self-signatures", data: fixture(t, "sha1.pub.asc"), reason: ErrWeakSelfSignatures, text: "SHA-1"},
		{name: "revoked", data: fixture(t, "revoked.pub.asc"), reason: ErrKeyRevoked, text: "has been revoked"},
		{name: "expired", data: fixture(t, "expired.pub.asc"), reason: ErrKeyExpired, text: "expired on 2024-12-31"},
		{name: "flooded", data: fixture(t, "flood.pub.asc"), reason: ErrTooManySignatures, text: "more than 256 signatures"},
		{name: "huge", data: fixture(t, "huge.pub.asc"), reason: ErrKeyTooLarge, text: "more than the 256 KiB"},
		{name: "huge binary", data: dearmor(t, fixture(t, "huge.pub.asc")), reason: ErrKeyTooLarge, text: "more than the 256 KiB"},
		{name: "signature limit", data: bobPub, limits: &Limits{MaxKeySignatures: 3}, reason: ErrTooManySignatures, text: "more than 3 signatures"},
		{name: "two keys armored", data: append(append([]byte{}, alicePub...), bobPub...), reason: ErrSeveralKeys, text: "exactly one"},
		{name: "two keys binary", data: append(dearmor(t, alicePub), dearmor(t, bobPub)...), reason: ErrSeveralKeys, text: "You sent 2 keys"},
		{name: "empty", data: nil, reason: ErrNoKey},
		{name: "text", data: []byte("hello, here is no key"), reason: ErrMalformedKey},
		{name: "signature block", data: []byte("-----BEGIN PGP SIGNATURE-----\n\nwnUEARYKAB0WIQQ=\n-----END PGP SIGNATURE-----\n"), reason: ErrNoKey, text: "not a public key"},
		{name: "broken armor", data: []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n"), reason: ErrMalformedKey},
		{name: "truncated", data: dearmor(t, alicePub)[:100], reason: ErrMalformedKey},
		{name: "user ID without self-signature", data: noSelfSig(t, dearmor(t, fixture(t, "signonly.pub.asc"))), reason: ErrNoValidUserID, text: "no user ID signed by the key itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := DefaultLimits
			if tc.limits != nil {
				if tc.limits.MaxKeySize != 0 {
					l.MaxKeySize = tc.limits.MaxKeySize
				}
				if tc.limits.MaxKeySignatures != 0 {
					l.MaxKeySignatures = tc.limits.MaxKeySignatures
				}
			}
			now := testNow
			if !tc.now.IsZero() {
				now = tc.now
			}
			mk, err := ParseMemberKey(tc.data, l, now)
			if tc.reason != nil {
				if !errors.Is(err, tc.reason) {
					t.Fatalf("err = %v, want %v", err, tc.reason)
				}
				var kre *KeyRefusedError
				if !errors.As(err, &kre) || kre.Text == "" {
					t.Fatalf("err %T is not a *KeyRefusedError", err)
				}
				if !strings.Contains(err.Error(), tc.text) {
					t.Errorf("message %q does not mention %q", err, tc.text)
				}
				if mk != nil {
					t.Error("key returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(mk.Addresses, tc.addrs) {
				t.Errorf("addresses %v, want %v", mk.Addresses, tc.addrs)
			}
			if len(mk.Entity.Subkeys) != tc.subkeys || len(mk.KeyIDs) != tc.subkeys+1 {
				t.Errorf("%d subkeys, %d key IDs", len(mk.Entity.Subkeys), len(mk.KeyIDs))
			}
			if mk.Fingerprint != Fingerprint(mk.Entity) || !fprRE.MatchString(mk.Fingerprint) {
				t.Errorf("fingerprint %q", mk.Fingerprint)
			}
			if mk.KeyIDs[0] != mk.Entity.PrimaryKey.KeyId {
				t.Error("first key ID is not the primary's")
			}
			// Binary is a minimal, stable, public-only key.
			e, err := ParseStoredKey(mk.Binary, DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if Fingerprint(e) != mk.Fingerprint || e.PrivateKey != nil {
				t.Error("Binary does not hold the same public key")
			}
			if want := len(tc.addrs) + tc.subkeys; sigPackets(t, mk.Binary) != want {
				t.Errorf("Binary has %d signatures, want %d", sigPackets(t, mk.Binary), want)
			}
			again, err := ParseMemberKey(mk.Binary, l, now)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again.Binary, mk.Binary) {
				t.Error("re-parsing Binary changes it")
			}
		})
	}
}

// craftHugeRSAKey builds a v4 key with an RSA modulus of the given size
// and a (bogus) self-signature of the same size: it costs a modular
// exponentiation of that size to find out the signature is bad.
func craftHugeRSAKey(t testing.TB, bits int) []byte {
	t.Helper()
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Add(n, big.NewInt(12345677))
	pk := packet.NewRSAPublicKey(time.Unix(1735689600, 0), &rsa.PublicKey{N: n, E: 65537})
	var b bytes.Buffer
	if err := pk.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	if err := packet.NewUserId("Huge", "", "h@example.org").Serialize(&b); err != nil {
		t.Fatal(err)
	}
	// v4 signature 0x13, RSA, SHA-256, hashed: creation time; unhashed: issuer.
	body := []byte{4, 0x13, 1, 8, 0, 6, 5, 2, 0x67, 0x74, 0x85, 0x80, 0, 10, 9, 16}
	body = append(body, pk.Fingerprint[12:20]...)
	body = append(body, 0xab, 0xcd)
	sig := new(big.Int).Sub(n, big.NewInt(99))
	l := sig.BitLen()
	body = append(body, byte(l>>8), byte(l))
	body = append(body, sig.Bytes()...)
	b.WriteByte(0xc2) // new-format tag 2
	b.WriteByte(0xff)
	ln := len(body)
	b.Write([]byte{byte(ln >> 24), byte(ln >> 16), byte(ln >> 8), byte(ln)})
	b.Write(body)
	return b.Bytes()
}

// noSelfSig drops the signature packets that follow user ID packets.
func noSelfSig(t testing.TB, bin []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	r := packet.NewReader(bytes.NewReader(bin))
	afterUID := false
	for {
		p, err := r.Next()
		if err == io.EOF {
			return out.Bytes()
		}
		if err != nil {
			t.Fatal(err)
		}
		switch p := p.(type) {
		case *packet.PublicKey:
			afterUID = false
			err = p.Serialize(&out)
		case *packet.UserId:
			afterUID = true
			err = p.Serialize(&out)
		case *packet.Signature:
			if !afterUID {
				err = p.Serialize(&out)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseMemberKeyRefusesHugeRSA(t *testing.T) {
	data := craftHugeRSAKey(t, 65535)
	start := time.Now()
	_, err := ParseMemberKey(data, DefaultLimits, testNow)
	if !errors.Is(err, ErrUnsupportedKey) || !strings.Contains(err.Error(), "65535 bits") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("refusal took %v: the signature was checked", d)
	}
	// 16384 bits is still read (and refused for its bad signature).
	if _, err := ParseMemberKey(craftHugeRSAKey(t, 16384), DefaultLimits, testNow); !errors.Is(err, ErrNoValidUserID) {
		t.Errorf("16384 bits: %v", err)
	}
}

func TestParseMemberKeyStripsThirdPartyCertifications(t *testing.T) {
	raw := fixture(t, "bob.pub.asc")
	// The fixture carries two certifications by Alice and Mallory.
	if n := sigPackets(t, dearmor(t, raw)); n != 4 {
		t.Fatalf("fixture has %d signatures, want 4 (README)", n)
	}
	mk, err := ParseMemberKey(raw, DefaultLimits, testNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range mk.Entity.Identities {
		if len(id.OtherCertifications) != 0 {
			t.Errorf("%s keeps %d third-party certifications", id.Name, len(id.OtherCertifications))
		}
	}
	e, err := ParseStoredKey(mk.Binary, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	id := e.Identities["Bob <bob@example.org>"]
	if id == nil || len(id.OtherCertifications) != 0 || len(id.SelfCertifications) != 1 {
		t.Fatalf("stored identity: %+v", id)
	}
	if n := sigPackets(t, mk.Binary); n != 2 {
		t.Errorf("stored key has %d signatures, want 2", n)
	}
}

func TestOnlyAddress(t *testing.T) {
	mk, err := ParseMemberKey(fixture(t, "alice.pub.asc"), DefaultLimits, testNow)
	if err != nil {
		t.Fatal(err)
	}
	before := append([]byte(nil), mk.Binary...)
	err = mk.OnlyAddress("nobody@example.org")
	if !errors.Is(err, ErrAddressNotInKey) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "no user ID for nobody@example.org") || !strings.Contains(err.Error(), "alice@work.example") {
		t.Errorf("message: %v", err)
	}
	if !bytes.Equal(before, mk.Binary) || len(mk.Entity.Identities) != 2 {
		t.Fatal("refused OnlyAddress changed the key")
	}

	if err := mk.OnlyAddress(" Alice@Work.Example "); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(mk.Addresses, []string{"alice@work.example"}) {
		t.Errorf("addresses %v", mk.Addresses)
	}
	e, err := ParseStoredKey(mk.Binary, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Identities) != 1 || e.Identities["Alice Work <alice@work.example>"] == nil {
		t.Errorf("stored identities: %v", e.Identities)
	}
	if _, err := e.EncryptionKeyWithError(testNow, PacketConfig(DefaultLimits, nil)); err != nil {
		t.Errorf("filtered key unusable: %v", err)
	}
	again, err := ParseMemberKey(mk.Binary, DefaultLimits, testNow)
	if err != nil || !slices.Equal(again.Addresses, []string{"alice@work.example"}) {
		t.Errorf("re-parse: %v %v", again, err)
	}
}

func TestParseStoredKey(t *testing.T) {
	mk, err := ParseMemberKey(fixture(t, "bob.pub.asc"), DefaultLimits, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseStoredKey(mk.Binary, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		data   []byte
		l      Limits
		reason error
	}{
		{"armored", fixture(t, "bob.pub.asc"), DefaultLimits, ErrMalformedKey},
		{"secret", dearmor(t, fixture(t, "bob.sec.asc")), DefaultLimits, ErrSecretKey},
		{"size", mk.Binary, Limits{MaxKeySize: 100}, ErrKeyTooLarge},
		{"signatures", mk.Binary, Limits{MaxKeySignatures: 1}, ErrTooManySignatures},
		{"two", append(append([]byte{}, mk.Binary...), mk.Binary...), DefaultLimits, ErrSeveralKeys},
	} {
		if _, err := ParseStoredKey(tc.data, tc.l); !errors.Is(err, tc.reason) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.reason)
		}
	}
}

func TestMemberKeyRing(t *testing.T) {
	var reg []RegisteredKey
	mks := map[string]*MemberKey{}
	for _, tc := range []struct{ file, addr string }{
		{"alice.pub.asc", "alice@example.org"},
		{"alice.pub.asc", "Alice@Work.example"}, // same key, second address
		{"bob.pub.asc", "bob@example.org"},
		{"dave.pub.asc", "dave@example.org"},
	} {
		mk, err := ParseMemberKey(fixture(t, tc.file), DefaultLimits, testNow)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ParseStoredKey(mk.Binary, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		mks[tc.file] = mk
		reg = append(reg, RegisteredKey{Address: tc.addr, Fingerprint: mk.Fingerprint, Entity: e})
	}
	ring := NewMemberKeyRing(reg)
	var _ openpgp.KeyRing = ring

	bob := mks["bob.pub.asc"]
	sub := bob.KeyIDs[1]
	keys := ring.KeysById(sub)
	if len(keys) != 1 || keys[0].PublicKey.KeyId != sub || Fingerprint(keys[0].Entity) != bob.Fingerprint {
		t.Fatalf("KeysById(bob's subkey) = %v", keys)
	}
	if ents := ring.EntitiesById(sub); len(ents) != 1 || Fingerprint(ents[0]) != bob.Fingerprint {
		t.Errorf("EntitiesById(bob's subkey) = %v", ents)
	}
	if ents := ring.EntitiesById(bob.KeyIDs[0]); len(ents) != 1 {
		t.Errorf("EntitiesById(bob's primary) = %v", ents)
	}
	if len(ring.KeysById(0x1234)) != 0 || len(ring.EntitiesById(0x1234)) != 0 {
		t.Error("unknown key ID found")
	}
	// A signature that names no key (ID 0) is tried with the first key
	// only, as go-crypto would try it: the ring parses no other.
	if ents := ring.EntitiesById(0); len(ents) != 1 || Fingerprint(ents[0]) != mks["alice.pub.asc"].Fingerprint {
		t.Errorf("EntitiesById(0) = %v, want alice's key", ents)
	}
	if n := len(ring.KeysById(0)); n != 2 {
		t.Errorf("KeysById(0) = %d keys, want alice's 2", n)
	}
	alice := mks["alice.pub.asc"]
	if got := ring.AddressesOf(alice.Fingerprint); !slices.Equal(got, []string{"alice@example.org", "alice@work.example"}) {
		t.Errorf("AddressesOf(alice) = %v", got)
	}
	if got := ring.AddressesOf(strings.ToLower(bob.Fingerprint)); !slices.Equal(got, []string{"bob@example.org"}) {
		t.Errorf("AddressesOf(bob, lower-case) = %v", got)
	}
	if got := ring.AddressesOf("0000"); len(got) != 0 {
		t.Errorf("AddressesOf(unknown) = %v", got)
	}

	// A signature by Bob's secret key verifies against the ring and names
	// Bob's address; Mallory's does not verify.
	for _, tc := range []struct {
		sec   string
		addrs []string
	}{
		{"bob.sec.asc", []string{"bob@example.org"}},
		{"mallory.sec.asc", nil},
	} {
		el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(fixture(t, tc.sec)))
		if err != nil {
			t.Fatal(err)
		}
		cfg := PacketConfig(DefaultLimits, nil)
		var sig bytes.Buffer
		if err := openpgp.DetachSign(&sig, el[:1], strings.NewReader("a post"), cfg); err != nil {
			t.Fatal(err)
		}
		_, signer, err := openpgp.VerifyDetachedSignature(ring, strings.NewReader("a post"), &sig, cfg)
		if tc.addrs == nil {
			if err == nil {
				t.Errorf("%s: signature verified against the ring", tc.sec)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.sec, err)
		}
		if got := ring.AddressesOf(Fingerprint(signer)); !slices.Equal(got, tc.addrs) {
			t.Errorf("%s: signer addresses %v", tc.sec, got)
		}
	}
}

func TestMemberKeyRingSkipsEmpty(t *testing.T) {
	e, err := GenerateListKey("x@example.org", KeyEd25519, testNow, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ring := NewMemberKeyRing([]RegisteredKey{{Address: "nil@example.org"}, {Address: "x@example.org", Entity: e}})
	if n := len(ring.EntitiesById(0)); n != 1 {
		t.Errorf("%d entities", n)
	}
}

func FuzzParseMemberKey(f *testing.F) {
	for _, name := range []string{"alice.pub.asc", "bob.pub.asc", "signonly.pub.asc", "revoked.pub.asc"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "keys", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(dearmor(f, b))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mk, err := ParseMemberKey(data, DefaultLimits, testNow)
		if err != nil {
			var kre *KeyRefusedError
			if !errors.As(err, &kre) && !strings.HasPrefix(err.Error(), "keyring:") {
				t.Fatalf("unexpected error kind %T: %v", err, err)
			}
			return
		}
		if _, err := ParseStoredKey(mk.Binary, DefaultLimits); err != nil {
			t.Fatalf("accepted key does not re-parse: %v", err)
		}
	})
}
