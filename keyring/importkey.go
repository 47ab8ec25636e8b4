package keyring

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Reasons ReadListSecretKey refuses an owner's key with, besides the
// member-key reasons (ErrWeakRSA, ErrObsoleteAlgorithm, ErrKeyExpired,
// ErrKeyRevoked, ErrNoEncryptionKey, ErrAddressNotInKey...).
var (
	ErrNotSecretKey       = errors.New("not a secret key")
	ErrProtectedSecretKey = errors.New("secret key is passphrase-protected")
)

// ReadListSecretKey reads an owner-generated list key for address
// (armored or binary transferable secret key, "gpg --export-secret-keys")
// and checks it at now as a member key is checked (one key, size and
// signature limits, strong algorithms, not revoked or expired, an
// encryption-capable subkey) and, as a list key, that it is a v4 key
// (GnuPG 2.2, sq 0.27 and RNP 0.16 read what is encrypted to it), has a
// valid user ID for address, and carries every secret part, unprotected:
// the key is sealed with the site passphrase at once, so an owner removes
// its own passphrase on an export kept only for the import (listcrypt
// never asks for a second passphrase). Refusals are *KeyRefusedError.
func ReadListSecretKey(data []byte, address string, l Limits, now time.Time) (*openpgp.Entity, error) {
	maxSize := l.MaxKeySize
	if maxSize <= 0 {
		maxSize = DefaultLimits.MaxKeySize
	}
	// A secret key is a little larger than its public key: twice the
	// public limit is room enough.
	if int64(len(data)) > 2*maxSize {
		return nil, refuse(ErrKeyTooLarge, "The key file is larger than %d bytes.", 2*maxSize)
	}
	var el openpgp.EntityList
	var err error
	if isArmored(data) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, refuse(ErrMalformedKey, "The key could not be read (%v). Export it with: gpg --export-secret-keys LIST-ADDRESS > FILE", err)
	}
	switch {
	case len(el) == 0:
		return nil, refuse(ErrNoKey, "The file holds no OpenPGP key.")
	case len(el) > 1:
		return nil, refuse(ErrSeveralKeys, "The file holds %d keys; give exactly one.", len(el))
	}
	e := el[0]
	fpr := Fingerprint(e)
	nsig := len(e.Revocations) + len(e.DirectSignatures)
	for _, id := range e.Identities {
		nsig += len(id.SelfCertifications) + len(id.OtherCertifications) + len(id.Revocations)
	}
	for _, sk := range e.Subkeys {
		nsig += len(sk.Bindings) + len(sk.Revocations)
	}
	maxSigs := l.MaxKeySignatures
	if maxSigs <= 0 {
		maxSigs = DefaultLimits.MaxKeySignatures
	}
	if nsig > maxSigs {
		return nil, refuse(ErrTooManySignatures, "The key %s carries %d signatures (limit %d).", fpr, nsig, maxSigs)
	}
	if e.PrimaryKey.Version != 4 {
		return nil, refuse(ErrUnsupportedKey, "The key %s is a version %d key; list keys are version 4 keys, which every member's client reads.", fpr, e.PrimaryKey.Version)
	}
	if e.PrivateKey == nil || e.PrivateKey.Dummy() {
		return nil, refuse(ErrNotSecretKey, "The file holds the public key %s only; give the secret key (gpg --export-secret-keys).", fpr)
	}
	if e.PrivateKey.Encrypted {
		return nil, refuse(ErrProtectedSecretKey, "The secret key %s is protected by a passphrase; export a copy without it for the import (listcrypt seals it with the site passphrase at once).", fpr)
	}
	cfg := PacketConfig(l, func() time.Time { return now })
	if err := checkMemberKey(e, now, cfg); err != nil {
		return nil, err
	}
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		if err := checkAlgorithm(sk.PublicKey, cfg, "The subkey "+fmt.Sprintf("%X", sk.PublicKey.KeyId)); err != nil {
			return nil, err
		}
		if sk.PublicKey.Version != 4 {
			return nil, refuse(ErrUnsupportedKey, "The subkey %X is not a version 4 key.", sk.PublicKey.KeyId)
		}
	}
	enc, ok := e.EncryptionKey(now, cfg)
	if !ok || enc.PrivateKey == nil || enc.PrivateKey.Dummy() {
		return nil, refuse(ErrNoEncryptionKey, "The key %s has no encryption subkey with its secret part.", fpr)
	}
	if enc.PrivateKey.Encrypted {
		return nil, refuse(ErrProtectedSecretKey, "The encryption subkey of %s is protected by a passphrase; export a copy without it.", fpr)
	}
	if _, ok := e.SigningKey(now, cfg); !ok {
		return nil, refuse(ErrUnsupportedKey, "The key %s cannot sign; a list key signs what the list sends.", fpr)
	}
	addr := normalizeEmail(address)
	found := false
	for _, id := range e.Identities {
		if id.UserId == nil || normalizeEmail(id.UserId.Email) != addr {
			continue
		}
		if sig, err := id.Verify(now, cfg); err == nil && !id.Revoked(sig, now, cfg) {
			found = true
		}
	}
	if !found {
		return nil, refuse(ErrAddressNotInKey, "The key %s has no user ID for %s; add one (gpg --quick-add-uid %s %s).", fpr, addr, fpr, addr)
	}
	// The secret parts of the other subkeys must be there too: a sealed
	// list key carries all (OpenSecretKey wants every one).
	for _, sk := range e.Subkeys {
		if sk.PrivateKey == nil || sk.PrivateKey.Dummy() || sk.PrivateKey.Encrypted {
			return nil, refuse(ErrProtectedSecretKey, "The secret part of subkey %X is missing or protected; export every subkey without a passphrase.", sk.PublicKey.KeyId)
		}
	}
	return e, nil
}

// ExpiresAt reports when e stops being usable by itself: the earliest
// expiry of its primary key (its user IDs' self-signatures) and of its
// encryption subkeys; false when nothing in it expires.
func ExpiresAt(e *openpgp.Entity) (time.Time, bool) {
	var first time.Time
	note := func(created time.Time, lifetime *uint32) {
		if lifetime == nil || *lifetime == 0 {
			return
		}
		t := created.Add(time.Duration(*lifetime) * time.Second)
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	for _, id := range e.Identities {
		for _, sig := range id.SelfCertifications {
			if sig.Packet != nil {
				note(e.PrimaryKey.CreationTime, sig.Packet.KeyLifetimeSecs)
			}
		}
	}
	for _, sk := range e.Subkeys {
		for _, b := range sk.Bindings {
			if b.Packet != nil {
				note(sk.PublicKey.CreationTime, b.Packet.KeyLifetimeSecs)
			}
		}
	}
	return first, !first.IsZero()
}
