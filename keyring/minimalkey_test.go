package keyring

import (
	"bytes"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// The minimal key keeps the primary key, the one user ID for the address
// with its self-signature and the encryption subkey with its binding:
// another user ID and a third party's certification are left out.
func TestMinimalPublicKey(t *testing.T) {
	now := testNow
	e, err := GenerateListKey("devs@lists.example.org", KeyEd25519, now.Add(-time.Hour), &seeded{n: 3})
	if err != nil {
		t.Fatal(err)
	}
	cfg := PacketConfig(DefaultLimits, func() time.Time { return now.Add(-time.Minute) })
	cfg.Rand = &seeded{n: 5}
	if err := e.AddUserId("Other", "", "other@lists.example.org", cfg); err != nil {
		t.Fatal(err)
	}
	third, err := GenerateListKey("notary@example.net", KeyEd25519, now.Add(-time.Hour), &seeded{n: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SignIdentity("devs <devs@lists.example.org>", third, cfg); err != nil {
		t.Fatal(err)
	}
	full := PublicKeyBytes(e)

	check := PacketConfig(DefaultLimits, func() time.Time { return now })
	for _, addr := range []string{"devs@lists.example.org", "DEVS@Lists.Example.org"} {
		minimal, err := MinimalPublicKey(e, addr, now, check)
		if err != nil {
			t.Fatal(err)
		}
		if len(minimal) >= len(full) {
			t.Errorf("minimal key %d bytes, the full one %d", len(minimal), len(full))
		}
		var kinds []string
		r := packet.NewReader(bytes.NewReader(minimal))
		for {
			p, err := r.Next()
			if err != nil {
				break
			}
			switch p := p.(type) {
			case *packet.PublicKey:
				if p.IsSubkey {
					kinds = append(kinds, "subkey")
				} else {
					kinds = append(kinds, "primary")
				}
			case *packet.UserId:
				kinds = append(kinds, "uid "+p.Id)
			case *packet.Signature:
				kinds = append(kinds, "sig")
			default:
				kinds = append(kinds, "other")
			}
		}
		want := []string{"primary", "uid devs <devs@lists.example.org>", "sig", "subkey", "sig"}
		if len(kinds) != len(want) {
			t.Fatalf("packets %q, want %q", kinds, want)
		}
		for i := range want {
			if kinds[i] != want[i] {
				t.Fatalf("packets %q, want %q", kinds, want)
			}
		}
		m, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(minimal)))
		if err != nil {
			t.Fatal(err)
		}
		if Fingerprint(m) != Fingerprint(e) {
			t.Fatal("another key")
		}
		if _, err := m.EncryptionKeyWithError(now, check); err != nil {
			t.Fatalf("minimal key cannot be encrypted to: %v", err)
		}
	}
	if _, err := MinimalPublicKey(e, "nobody@lists.example.org", now, check); err == nil {
		t.Fatal("a minimal key for an address the key does not name")
	}
}
