package keyring

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// secretBytes is e's transferable secret key, binary, unprotected.
func secretBytes(t *testing.T, e *openpgp.Entity) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&b, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// list key import: an owner's key is taken only when it is a strong,
// unprotected v4 secret key with a user ID for the list and an
// encryption subkey; armored and binary both read.
func TestReadListSecretKey(t *testing.T) {
	const list = "devs@lists.example.org"
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	good, err := GenerateListKey(list, KeyEd25519, now.Add(-time.Hour), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateListKey("other@lists.example.org", KeyEd25519, now.Add(-time.Hour), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := PacketConfig(DefaultLimits, func() time.Time { return now.Add(-time.Hour) })
	cfg.Algorithm, cfg.RSABits = packet.PubKeyAlgoRSA, 1024
	weak, err := openpgp.NewEntity("devs", "", list, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := SealSecretKey(good, []byte("owner passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	var armored bytes.Buffer
	w, err := armor.Encode(&armored, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(secretBytes(t, good))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	two := append(secretBytes(t, good), secretBytes(t, other)...)

	for _, tc := range []struct {
		name string
		data []byte
		want error // nil: accepted
	}{
		{"binary", secretBytes(t, good), nil},
		{"armored", armored.Bytes(), nil},
		{"RSA 1024", secretBytes(t, weak), ErrWeakRSA},
		{"no user ID for the list", secretBytes(t, other), ErrAddressNotInKey},
		{"public key only", PublicKeyBytes(good), ErrNotSecretKey},
		{"passphrase-protected", sealed, ErrProtectedSecretKey},
		{"two keys", two, ErrSeveralKeys},
		{"garbage", []byte("not a key"), ErrMalformedKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ReadListSecretKey(tc.data, "Devs@Lists.Example.org", DefaultLimits, now)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if Fingerprint(e) != Fingerprint(good) {
					t.Fatalf("read %s, want %s", Fingerprint(e), Fingerprint(good))
				}
				// What is accepted can be sealed and opened as a list key.
				s, err := SealSecretKey(e, []byte("site"))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := OpenSecretKey(s, []byte("site")); err != nil {
					t.Fatal(err)
				}
				return
			}
			var kr *KeyRefusedError
			if !errors.As(err, &kr) || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// An expired key is refused.
	life := uint32(60)
	cfg = PacketConfig(DefaultLimits, func() time.Time { return now.Add(-time.Hour) })
	cfg.KeyLifetimeSecs = life
	cfg.Algorithm, cfg.Curve = packet.PubKeyAlgoEdDSA, packet.Curve25519
	exp, err := openpgp.NewEntity("devs", "", list, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadListSecretKey(secretBytes(t, exp), list, DefaultLimits, now); !errors.Is(err, ErrKeyExpired) {
		t.Fatalf("expired key: %v", err)
	}
}
