package keyring

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// KeyType names the kind of key generated for a list.
type KeyType string

const (
	// KeyEd25519 is a v4 key with an Ed25519 primary key (signing,
	// certification) and a Curve25519 ECDH subkey (encryption), in the
	// "legacy" EdDSA/ECDH encoding of RFC 4880bis (public-key algorithms 22
	// and 18). That encoding is what GnuPG 2.2, Sequoia 0.27 and RNP 0.16
	// read; the RFC 9580 Ed25519/X25519 algorithms (27/25) are not
	// understood by GnuPG 2.2, which drops such a key as having no user ID.
	KeyEd25519 KeyType = "ed25519"
	// KeyRSA3072 is a v4 RSA-3072 primary key with an RSA-3072 encryption
	// subkey.
	KeyRSA3072 KeyType = "rsa3072"
	// KeyRSA4096 is a v4 RSA-4096 primary key with an RSA-4096 encryption
	// subkey.
	KeyRSA4096 KeyType = "rsa4096"
)

// KeyTypes lists the key types GenerateListKey accepts, default first.
var KeyTypes = []KeyType{KeyEd25519, KeyRSA3072, KeyRSA4096}

// ParseKeyType parses a key type name as written in a config file or on a
// command line ("ed25519", "rsa3072", "rsa4096"; case-insensitive).
func ParseKeyType(s string) (KeyType, error) {
	t := KeyType(strings.ToLower(strings.TrimSpace(s)))
	for _, k := range KeyTypes {
		if t == k {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown key type %q (want one of ed25519, rsa3072, rsa4096)", s)
}

// GenerateListKey generates a list key for address: a v4 key whose only
// user ID is "local <address>" (local is the address's local part), with
// no expiry, signed at now, and preferences for AES-256 and SHA-512/384/256
// and for SEIPDv1 (MDC) only, so GnuPG can read what is encrypted to it.
// rand is the source of randomness (crypto/rand.Reader in production).
// Note that since Go 1.26 crypto/rsa ignores a caller's random source, so
// RSA keys are not reproducible from rand; Ed25519 keys are.
func GenerateListKey(address string, t KeyType, now time.Time, rand io.Reader) (*openpgp.Entity, error) {
	addr := strings.ToLower(strings.TrimSpace(address))
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 || strings.ContainsAny(addr, " \t\r\n<>()\x00") {
		return nil, fmt.Errorf("keyring: generate list key: %q is not a plain mail address", address)
	}
	if rand == nil {
		return nil, errors.New("keyring: generate list key: no random source")
	}
	cfg := PacketConfig(DefaultLimits, func() time.Time { return now })
	cfg.Rand = rand
	cfg.DefaultHash = crypto.SHA256
	// Do not advertise SEIPDv2 (RFC 9580 AEAD): go-crypto would then
	// encrypt to the list key (holds, archive) with SEIPDv2 and v6 PKESKs,
	// which GnuPG (2.2, and 2.4, which follows LibrePGP) cannot decrypt.
	// With SEIPDv1 only, an admin can still read them with gpg.
	cfg.AEADConfig = nil
	switch t {
	case KeyEd25519:
		cfg.Algorithm = packet.PubKeyAlgoEdDSA
		cfg.Curve = packet.Curve25519
	case KeyRSA3072:
		cfg.Algorithm = packet.PubKeyAlgoRSA
		cfg.RSABits = 3072
	case KeyRSA4096:
		cfg.Algorithm = packet.PubKeyAlgoRSA
		cfg.RSABits = 4096
	default:
		return nil, fmt.Errorf("keyring: generate list key: unknown key type %q", t)
	}
	e, err := openpgp.NewEntity(addr[:at], "", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("keyring: generate list key for %s: %w", addr, err)
	}
	// go-crypto advertises only the configured hash (plus SHA-256); list
	// the strong SHA-2 family like GnuPG does, then re-sign.
	for _, id := range e.Identities {
		for _, sig := range id.SelfCertifications {
			sig.Packet.PreferredHash = []uint8{10, 9, 8} // SHA-512, SHA-384, SHA-256 (RFC 9580 §9.5)
		}
		if err := id.ReSign(cfg); err != nil {
			return nil, fmt.Errorf("keyring: generate list key for %s: %w", addr, err)
		}
	}
	return e, nil
}

// Fingerprint returns the fingerprint of e's primary key in upper-case hex
// without spaces.
func Fingerprint(e *openpgp.Entity) string {
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

// ErrBadPassphrase is returned (wrapped) by OpenSecretKey when the
// passphrase does not decrypt the sealed key.
var ErrBadPassphrase = errors.New("wrong passphrase for the sealed list key")

// sealS2K is the key protection SealSecretKey applies: iterated and salted
// SHA-256 at the highest count OpenPGP can encode, AES-256 in CFB mode
// with the SHA-1 integrity check (S2K usage 254, RFC 4880 §5.5.3).
//
// Argon2 (RFC 9580 §3.7.1.4) works in go-crypto for v4 keys, but only with
// AEAD key protection (S2K usage 253), which GnuPG 2.2, Sequoia 0.27 and
// RNP 0.16 all refuse to import; with iterated S2K an admin can still
// `gpg --import` a sealed list key in an emergency. The site passphrase is
// 256 random bits (CreatePassphraseFile), so a memory-hard KDF adds little.
var sealS2K = s2k.Config{
	S2KMode:  s2k.IteratedSaltedS2K,
	Hash:     crypto.SHA256,
	S2KCount: 65011712,
}

// SealSecretKey returns e's transferable secret key, binary, with every
// secret (sub)key encrypted under passphrase by OpenPGP's own key
// protection (see sealS2K). e must hold decrypted private keys; it is not
// modified.
func SealSecretKey(e *openpgp.Entity, passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("keyring: seal secret key: empty passphrase")
	}
	if e == nil || e.PrivateKey == nil {
		return nil, errors.New("keyring: seal secret key: no private key")
	}
	if e.PrivateKey.Encrypted {
		return nil, errors.New("keyring: seal secret key: private key is already encrypted")
	}
	for _, sk := range e.Subkeys {
		if sk.PrivateKey == nil || sk.PrivateKey.Encrypted {
			return nil, fmt.Errorf("keyring: seal secret key: subkey %X has no usable private key", sk.PublicKey.KeyId)
		}
	}
	// Work on a copy: EncryptPrivateKeys encrypts in place.
	var clear bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&clear, nil); err != nil {
		return nil, fmt.Errorf("keyring: seal secret key: %w", err)
	}
	c, err := openpgp.ReadEntity(packet.NewReader(&clear))
	if err != nil {
		return nil, fmt.Errorf("keyring: seal secret key: %w", err)
	}
	s := sealS2K
	cfg := &packet.Config{DefaultCipher: packet.CipherAES256, S2KConfig: &s}
	if err := c.EncryptPrivateKeys(passphrase, cfg); err != nil {
		return nil, fmt.Errorf("keyring: seal secret key: %w", err)
	}
	var out bytes.Buffer
	if err := c.SerializePrivateWithoutSigning(&out, cfg); err != nil {
		return nil, fmt.Errorf("keyring: seal secret key: %w", err)
	}
	return out.Bytes(), nil
}

// OpenSecretKey reads a key sealed by SealSecretKey and decrypts all its
// secret (sub)keys with passphrase. A passphrase that does not fit gives
// an error wrapping ErrBadPassphrase. A sealed key whose secret parts are
// not encrypted is refused: it was not written by SealSecretKey.
func OpenSecretKey(sealed, passphrase []byte) (*openpgp.Entity, error) {
	el, err := openpgp.ReadKeyRing(bytes.NewReader(sealed))
	if err != nil {
		return nil, fmt.Errorf("keyring: open sealed key: %w", err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("keyring: open sealed key: want one key, found %d", len(el))
	}
	e := el[0]
	if e.PrivateKey == nil || !e.PrivateKey.Encrypted {
		return nil, errors.New("keyring: open sealed key: primary secret key missing or not passphrase-protected")
	}
	for _, sk := range e.Subkeys {
		if sk.PrivateKey == nil || !sk.PrivateKey.Encrypted {
			return nil, fmt.Errorf("keyring: open sealed key: secret subkey %X missing or not passphrase-protected", sk.PublicKey.KeyId)
		}
	}
	if err := e.DecryptPrivateKeys(passphrase); err != nil {
		var invalid pgperrors.KeyInvalidError
		if errors.As(err, &invalid) {
			// Decrypted (the integrity check passed) but the key material
			// does not match the public key: damaged or tampered with.
			return nil, fmt.Errorf("keyring: open sealed key %s: %w", Fingerprint(e), err)
		}
		// A wrong passphrase fails the SHA-1 check (usage 254) or the AEAD
		// tag (usage 253); neither can tell it from a damaged blob.
		return nil, fmt.Errorf("keyring: open sealed key %s: %w (or the sealed key is damaged)", Fingerprint(e), ErrBadPassphrase)
	}
	return e, nil
}

// PublicKeyBytes returns e's transferable public key, binary, with user IDs
// in a stable order. It returns nil only for a malformed in-memory entity
// (one that go-crypto cannot serialize).
func PublicKeyBytes(e *openpgp.Entity) []byte {
	var b bytes.Buffer
	if err := serializePublic(&b, e); err != nil {
		return nil
	}
	return b.Bytes()
}

// ArmorPublicKey returns e's transferable public key, ASCII-armored.
func ArmorPublicKey(e *openpgp.Entity) (string, error) {
	var b strings.Builder
	w, err := armor.Encode(&b, openpgp.PublicKeyType, nil)
	if err != nil {
		return "", err
	}
	if err := serializePublic(w, e); err != nil {
		return "", fmt.Errorf("keyring: armor public key: %w", err)
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	b.WriteByte('\n')
	return b.String(), nil
}

// serializePublic writes what openpgp.Entity.Serialize writes, but with the
// user IDs sorted by name: go-crypto keeps them in a map, so its own order
// changes from run to run and stored keys would not be byte-stable.
func serializePublic(w io.Writer, e *openpgp.Entity) error {
	if e == nil || e.PrimaryKey == nil {
		return errors.New("no primary key")
	}
	if err := e.PrimaryKey.Serialize(w); err != nil {
		return err
	}
	for _, sig := range e.Revocations {
		if err := sig.Packet.Serialize(w); err != nil {
			return err
		}
	}
	for _, sig := range e.DirectSignatures {
		if err := sig.Packet.Serialize(w); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(e.Identities))
	for name := range e.Identities {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := e.Identities[name].Serialize(w); err != nil {
			return err
		}
	}
	for i := range e.Subkeys {
		if err := e.Subkeys[i].Serialize(w, false); err != nil {
			return err
		}
	}
	return nil
}
