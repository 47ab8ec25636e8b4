package keyring

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// testNow is when the fixtures in testdata/keys are evaluated: they were
// made at 2025-01-01 (the expired one a year earlier, for one year).
var testNow = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

// seeded is a deterministic random stream for tests.
type seeded struct{ n byte }

func (s *seeded) Read(p []byte) (int, error) {
	for i := range p {
		s.n = s.n*151 + 17
		p[i] = s.n ^ byte(i>>3)
	}
	return len(p), nil
}

func TestParseKeyType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want KeyType
		ok   bool
	}{
		{"ed25519", KeyEd25519, true},
		{" RSA3072 ", KeyRSA3072, true},
		{"rsa4096", KeyRSA4096, true},
		{"rsa2048", "", false},
		{"", "", false},
		{"cv25519", "", false},
	} {
		got, err := ParseKeyType(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

var fprRE = regexp.MustCompile(`^[0-9A-F]{40}$`)

func TestGenerateListKey(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		kt      KeyType
		primary packet.PublicKeyAlgorithm
		sub     packet.PublicKeyAlgorithm
		bits    uint16
	}{
		{KeyEd25519, packet.PubKeyAlgoEdDSA, packet.PubKeyAlgoECDH, 0},
		{KeyRSA3072, packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSA, 3072},
		{KeyRSA4096, packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSA, 4096},
	} {
		t.Run(string(tc.kt), func(t *testing.T) {
			t.Parallel()
			if tc.kt == KeyRSA4096 && testing.Short() {
				t.Skip("RSA-4096 generation is slow")
			}
			e, err := GenerateListKey("Devs@Lists.Example.org", tc.kt, now, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if fpr := Fingerprint(e); !fprRE.MatchString(fpr) {
				t.Errorf("Fingerprint = %q", fpr)
			}
			if e.PrimaryKey.Version != 4 || e.PrimaryKey.PubKeyAlgo != tc.primary {
				t.Errorf("primary: v%d algo %d", e.PrimaryKey.Version, e.PrimaryKey.PubKeyAlgo)
			}
			if tc.bits != 0 {
				if bits, _ := e.PrimaryKey.BitLength(); bits != tc.bits {
					t.Errorf("primary bits %d, want %d", bits, tc.bits)
				}
			} else if curve, err := e.PrimaryKey.Curve(); err != nil || curve != packet.Curve25519 {
				t.Errorf("primary curve %q, %v", curve, err)
			}
			if !e.PrimaryKey.CreationTime.Equal(now) {
				t.Errorf("created %v, want %v", e.PrimaryKey.CreationTime, now)
			}
			if len(e.Identities) != 1 || e.Identities["devs <devs@lists.example.org>"] == nil {
				t.Fatalf("identities: %v", e.Identities)
			}
			cfg := PacketConfig(DefaultLimits, func() time.Time { return now })
			sig, err := e.VerifyPrimaryKey(now, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if sig.KeyLifetimeSecs != nil && *sig.KeyLifetimeSecs != 0 {
				t.Errorf("key expires after %ds", *sig.KeyLifetimeSecs)
			}
			if !sig.FlagSign || !sig.FlagCertify || sig.FlagEncryptCommunications {
				t.Errorf("primary flags: sign %v certify %v encrypt %v", sig.FlagSign, sig.FlagCertify, sig.FlagEncryptCommunications)
			}
			if len(sig.PreferredSymmetric) == 0 || sig.PreferredSymmetric[0] != uint8(packet.CipherAES256) {
				t.Errorf("preferred ciphers %v, want AES-256 first", sig.PreferredSymmetric)
			}
			if !sig.SEIPDv1 || sig.SEIPDv2 || len(sig.PreferredCipherSuites) != 0 {
				t.Errorf("features: SEIPDv1 %v SEIPDv2 %v suites %v; want SEIPDv1 only", sig.SEIPDv1, sig.SEIPDv2, sig.PreferredCipherSuites)
			}
			if string(sig.PreferredHash) != string([]uint8{10, 9, 8}) {
				t.Errorf("preferred hashes %v, want SHA-512, SHA-384, SHA-256", sig.PreferredHash)
			}
			// Far in the future the key is still valid: no expiry.
			later := now.AddDate(30, 0, 0)
			enc, err := e.EncryptionKeyWithError(later, PacketConfig(DefaultLimits, func() time.Time { return later }))
			if err != nil {
				t.Fatal(err)
			}
			if enc.PublicKey.PubKeyAlgo != tc.sub || enc.PublicKey == e.PrimaryKey {
				t.Errorf("encryption key algo %d (primary: %v)", enc.PublicKey.PubKeyAlgo, enc.PublicKey == e.PrimaryKey)
			}
			// Our own member-key checks accept it.
			mk, err := ParseMemberKey(PublicKeyBytes(e), DefaultLimits, now)
			if err != nil {
				t.Fatal(err)
			}
			if mk.Fingerprint != Fingerprint(e) || strings.Join(mk.Addresses, ",") != "devs@lists.example.org" {
				t.Errorf("member key view: %s %v", mk.Fingerprint, mk.Addresses)
			}
		})
	}
}

func TestGenerateListKeyRefuses(t *testing.T) {
	for _, addr := range []string{"", "devs", "@example.org", "devs@", "a b@example.org", "<x>@example.org"} {
		if _, err := GenerateListKey(addr, KeyEd25519, testNow, rand.Reader); err == nil {
			t.Errorf("GenerateListKey(%q) succeeded", addr)
		}
	}
	if _, err := GenerateListKey("devs@example.org", "dsa1024", testNow, rand.Reader); err == nil {
		t.Error("unknown key type accepted")
	}
}

func TestGenerateListKeyDeterministic(t *testing.T) {
	// Ed25519 keys come entirely from the supplied random source.
	a, err := GenerateListKey("devs@example.org", KeyEd25519, testNow, &seeded{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateListKey("devs@example.org", KeyEd25519, testNow, &seeded{})
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(a) != Fingerprint(b) || !bytes.Equal(PublicKeyBytes(a), PublicKeyBytes(b)) {
		t.Errorf("same seed, different keys: %s %s", Fingerprint(a), Fingerprint(b))
	}
}

func TestSealOpen(t *testing.T) {
	for _, kt := range []KeyType{KeyEd25519, KeyRSA3072} {
		t.Run(string(kt), func(t *testing.T) {
			t.Parallel()
			e, err := GenerateListKey("devs@example.org", kt, testNow, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			pass := []byte("correct horse battery staple")
			sealed, err := SealSecretKey(e, pass)
			if err != nil {
				t.Fatal(err)
			}
			// The caller's entity is left decrypted.
			if e.PrivateKey.Encrypted || e.Subkeys[0].PrivateKey.Encrypted {
				t.Error("SealSecretKey encrypted the caller's entity")
			}
			// Every secret packet is protected with AES-256, iterated S2K.
			checkSealedPackets(t, sealed)

			got, err := OpenSecretKey(sealed, pass)
			if err != nil {
				t.Fatal(err)
			}
			if Fingerprint(got) != Fingerprint(e) || len(got.Subkeys) != len(e.Subkeys) {
				t.Fatalf("opened %s with %d subkeys", Fingerprint(got), len(got.Subkeys))
			}
			if got.PrivateKey.Encrypted || got.Subkeys[0].PrivateKey.Encrypted {
				t.Fatal("opened key still encrypted")
			}
			// The opened key decrypts a message to the public key.
			msg := encryptTo(t, e, "hello list")
			if pt := decryptWith(t, got, msg); pt != "hello list" {
				t.Errorf("decrypted %q", pt)
			}

			_, err = OpenSecretKey(sealed, []byte("wrong"))
			if !errors.Is(err, ErrBadPassphrase) {
				t.Fatalf("wrong passphrase: %v", err)
			}
			if !strings.Contains(err.Error(), "wrong passphrase") {
				t.Errorf("wrong passphrase message: %v", err)
			}
		})
	}
}

func TestSealOpenRefuses(t *testing.T) {
	e, err := GenerateListKey("devs@example.org", KeyEd25519, testNow, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SealSecretKey(e, nil); err == nil {
		t.Error("empty passphrase accepted")
	}
	pub := PublicKeyBytes(e)
	if _, err := SealSecretKey(&openpgp.Entity{PrimaryKey: e.PrimaryKey}, []byte("x")); err == nil {
		t.Error("sealing a public key succeeded")
	}
	if _, err := OpenSecretKey(pub, []byte("x")); err == nil {
		t.Error("opening a public key succeeded")
	}
	// An unprotected secret key is not a sealed key.
	var clear bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&clear, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSecretKey(clear.Bytes(), []byte("x")); err == nil || errors.Is(err, ErrBadPassphrase) {
		t.Errorf("unprotected secret key: %v", err)
	}
	if _, err := OpenSecretKey([]byte("garbage"), []byte("x")); err == nil {
		t.Error("garbage opened")
	}
}

func checkSealedPackets(t *testing.T, sealed []byte) {
	t.Helper()
	r := packet.NewReader(bytes.NewReader(sealed))
	n := 0
	for {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if pk, ok := p.(*packet.PrivateKey); ok {
			n++
			if !pk.Encrypted {
				t.Errorf("secret key %X not encrypted", pk.KeyId)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d secret key packets, want 2", n)
	}
	// Packet bytes: usage 254 (SHA-1 check), AES-256 (9), S2K type 3
	// (iterated+salted), hash SHA-256 (8), salt, count 0xff (65011712).
	if !bytes.Contains(sealed, []byte{254, 9, 3, 8}) {
		t.Error("sealed key does not use AES-256 with iterated SHA-256 S2K")
	}
}

func encryptTo(t *testing.T, e *openpgp.Entity, text string) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := openpgp.EncryptWithParams(&b, []*openpgp.Entity{e}, nil, &openpgp.EncryptParams{Config: PacketConfig(DefaultLimits, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, text); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func decryptWith(t *testing.T, e *openpgp.Entity, msg []byte) string {
	t.Helper()
	md, err := openpgp.ReadMessage(bytes.NewReader(msg), openpgp.EntityList{e}, nil, PacketConfig(DefaultLimits, nil))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := io.ReadAll(md.UnverifiedBody)
	if err != nil {
		t.Fatal(err)
	}
	return string(pt)
}

func TestArmorPublicKey(t *testing.T) {
	e, err := GenerateListKey("devs@example.org", KeyEd25519, testNow, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ArmorPublicKey(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n") || !strings.HasSuffix(a, "-----END PGP PUBLIC KEY BLOCK-----\n") {
		t.Errorf("armor:\n%s", a)
	}
	if strings.Contains(a, "PRIVATE") {
		t.Error("armored public key mentions PRIVATE")
	}
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(a))
	if err != nil || len(el) != 1 || Fingerprint(el[0]) != Fingerprint(e) || el[0].PrivateKey != nil {
		t.Fatalf("re-read: %v %v", el, err)
	}
	if !bytes.Equal(PublicKeyBytes(e), PublicKeyBytes(el[0])) {
		t.Error("binary and armored public keys differ")
	}
}
