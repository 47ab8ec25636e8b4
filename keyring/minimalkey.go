package keyring

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// MinimalPublicKey returns the smallest transferable public key (binary)
// that lets a mail client encrypt to e for address: the primary key, the
// one user ID whose address is address with its current self-signature,
// and the encryption subkey go-crypto chooses at now with its current
// binding signature. Nothing else: no other user IDs, no third-party
// certifications, no older self-signatures, no other subkeys. This is
// the key Autocrypt Level 1 asks for ("keydata", §2.1 of the spec) and
// what a Web Key Directory serves.
//
// It checks the signatures it keeps (go-crypto records the checks in e:
// callers that share e serialise the call as they do for signing). An
// error means e has no valid user ID for address or no usable
// encryption key at now.
func MinimalPublicKey(e *openpgp.Entity, address string, now time.Time, cfg *packet.Config) ([]byte, error) {
	if e == nil || e.PrimaryKey == nil {
		return nil, fmt.Errorf("keyring: minimal key: no key")
	}
	addr := strings.ToLower(strings.TrimSpace(address))
	var (
		uid     *openpgp.Identity
		uidSig  *packet.Signature
		uidName string
	)
	for name, id := range e.Identities {
		if id.UserId == nil || strings.ToLower(id.UserId.Email) != addr {
			continue
		}
		sig, err := id.Verify(now, cfg)
		if err != nil {
			continue
		}
		// Several user IDs for the address: the primary one, else the
		// newest, else the first by name (stable output).
		if uid == nil || betterUID(sig, name, uidSig, uidName) {
			uid, uidSig, uidName = id, sig, name
		}
	}
	if uid == nil {
		return nil, fmt.Errorf("keyring: minimal key %s: no valid user ID for %s", Fingerprint(e), addr)
	}
	enc, err := e.EncryptionKeyWithError(now, cfg)
	if err != nil {
		return nil, fmt.Errorf("keyring: minimal key %s: %w", Fingerprint(e), err)
	}
	var b bytes.Buffer
	if err := e.PrimaryKey.Serialize(&b); err != nil {
		return nil, fmt.Errorf("keyring: minimal key: %w", err)
	}
	if err := uid.UserId.Serialize(&b); err != nil {
		return nil, fmt.Errorf("keyring: minimal key: %w", err)
	}
	if err := uidSig.Serialize(&b); err != nil {
		return nil, fmt.Errorf("keyring: minimal key: %w", err)
	}
	// The primary key itself may be the encryption key (no subkey): then
	// the user ID's self-signature carries the flags and nothing follows.
	if enc.PublicKey != e.PrimaryKey {
		if err := enc.PublicKey.Serialize(&b); err != nil {
			return nil, fmt.Errorf("keyring: minimal key: %w", err)
		}
		if err := enc.SelfSignature.Serialize(&b); err != nil {
			return nil, fmt.Errorf("keyring: minimal key: %w", err)
		}
	}
	return b.Bytes(), nil
}

// betterUID reports whether the user ID name with self-signature sig is
// preferred over the one chosen so far: a primary one, else the newest,
// else the first by name.
func betterUID(sig *packet.Signature, name string, chosen *packet.Signature, chosenName string) bool {
	primary := func(s *packet.Signature) bool { return s.IsPrimaryId != nil && *s.IsPrimaryId }
	if primary(sig) != primary(chosen) {
		return primary(sig)
	}
	if !sig.CreationTime.Equal(chosen.CreationTime) {
		return sig.CreationTime.After(chosen.CreationTime)
	}
	return name < chosenName
}
