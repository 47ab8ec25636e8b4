package admin

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
)

// KeyChange says what RotateListKey or ImportListKey did.
type KeyChange struct {
	List           string
	OldFingerprint string
	NewFingerprint string
	// Notices: members the notice was written for; Sent of them the MTA
	// took, the others wait in the outbox for the next run.
	Notices, Sent int
	// NoKey: active members without a usable key (no notice).
	NoKey int
}

// RotateListKey makes a new list key of the same type as the current
// one and switches the list to it (see replaceKey).
func (s *Site) RotateListKey(ctx context.Context, list string) (KeyChange, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return KeyChange{}, err
	}
	old, err := keyring.ParseStoredKey(l.PublicKey, keyring.ConfigLimits(s.Config))
	if err != nil {
		return KeyChange{}, fmt.Errorf("list key of %s: %w", l.Address, err)
	}
	kt, err := keyTypeOf(old)
	if err != nil {
		return KeyChange{}, fmt.Errorf("rotate the key of %s: %w", l.Address, err)
	}
	e, err := keyring.GenerateListKey(l.Address, kt, s.Now(), rand.Reader)
	if err != nil {
		return KeyChange{}, err
	}
	return s.replaceKey(ctx, l, e)
}

// keyTypeOf is the KeyType a list key was made as (RSA keys by their
// size). Keys of other types (an imported NIST or Ed448 key) are not
// made here: rotate keeps the type, so it refuses, and the owner imports
// a new key of that type instead.
func keyTypeOf(e *openpgp.Entity) (keyring.KeyType, error) {
	switch e.PrimaryKey.PubKeyAlgo {
	case packet.PubKeyAlgoRSA:
		if bits, err := e.PrimaryKey.BitLength(); err == nil && bits >= 4096 {
			return keyring.KeyRSA4096, nil
		}
		return keyring.KeyRSA3072, nil
	case packet.PubKeyAlgoEdDSA, packet.PubKeyAlgoEd25519:
		return keyring.KeyEd25519, nil
	}
	return "", fmt.Errorf("its key type (algorithm %d) is not one listcrypt makes (Ed25519, RSA 3072, RSA 4096): make a new key of that type and run \"listcrypt list key import\"", e.PrimaryKey.PubKeyAlgo)
}

// ImportListKey switches the list to the owner-generated secret key in
// file (see keyring.ReadListSecretKey for what is accepted: unprotected,
// v4, strong, a user ID for the list, an encryption subkey). The file
// must not be readable by other users: it holds a secret key in clear.
func (s *Site) ImportListKey(ctx context.Context, list, file string) (KeyChange, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return KeyChange{}, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return KeyChange{}, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return KeyChange{}, fmt.Errorf("%s holds a secret key and is readable by other users (mode %04o); chmod 600 it first", file, fi.Mode().Perm())
	}
	lim := keyring.ConfigLimits(s.Config)
	data, err := os.ReadFile(file)
	if err != nil {
		return KeyChange{}, err
	}
	e, err := keyring.ReadListSecretKey(data, l.Address, lim, s.Now())
	if err != nil {
		return KeyChange{}, fmt.Errorf("key in %s refused: %w", file, err)
	}
	fpr := keyring.Fingerprint(e)
	if fpr == l.KeyFingerprint {
		return KeyChange{}, fmt.Errorf("key in %s is the list's key already", file)
	}
	// A list key belongs to one list: posts encrypted and signed for one
	// would open and bind on the other.
	owners, err := s.Store.ListsWithKey(ctx, fpr)
	if err != nil {
		return KeyChange{}, err
	}
	for _, o := range owners {
		if o != l.Address {
			return KeyChange{}, fmt.Errorf("key in %s refused: it is (or was) the key of list %s; every list needs a key of its own", file, o)
		}
	}
	// Since the expiry could not be refreshed without the owner, an
	// expiring list key would stop the list on its day: refused.
	if exp, ok := keyring.ExpiresAt(e); ok {
		return KeyChange{}, fmt.Errorf("key in %s refused: it expires (%s); a list key must not expire (gpg --quick-set-expire FINGERPRINT 0, for the key and its subkeys)", file, exp.UTC().Format(time.RFC3339))
	}
	return s.replaceKey(ctx, l, e)
}

// replaceKey switches list l to key e (secret parts open): e is sealed
// with the site passphrase; the notices to the members are composed
// (encrypted to each, signed by the old and the new key, the new key
// attached); one transaction moves the current key to the old keys (kept
// for [keys] old_key_grace), puts e in its place and writes the notices
// into the outbox; then the notices are sent, envelope sender the list's
// bounce address.
func (s *Site) replaceKey(ctx context.Context, l store.List, e *openpgp.Entity) (KeyChange, error) {
	set, err := s.Policies()
	if err != nil {
		return KeyChange{}, err
	}
	p := set.Lookup(l.Address)
	if p == nil {
		return KeyChange{}, fmt.Errorf("no policy file defines list %s", l.Address)
	}
	pass, err := s.Passphrase()
	if err != nil {
		return KeyChange{}, err
	}
	oldE, err := keyring.OpenSecretKey(l.SecretKey, pass)
	if err != nil {
		return KeyChange{}, fmt.Errorf("list key of %s: %w", l.Address, err)
	}
	sealed, err := keyring.SealSecretKey(e, pass)
	if err != nil {
		return KeyChange{}, err
	}
	r, err := s.responder()
	if err != nil {
		return KeyChange{}, err
	}
	now := s.Now()
	notices, noKey, err := r.KeyChangeNotices(ctx, p, oldE, e, now)
	if err != nil {
		return KeyChange{}, err
	}
	kc := KeyChange{List: l.Address, OldFingerprint: l.KeyFingerprint, NewFingerprint: keyring.Fingerprint(e),
		Notices: len(notices), NoKey: noKey}
	ids, err := s.Store.ReplaceListKey(ctx, l.Address, l.KeyFingerprint, kc.NewFingerprint,
		keyring.PublicKeyBytes(e), sealed, now, notices)
	if err != nil {
		return KeyChange{}, err
	}
	kc.Sent = r.SendQueued(ctx, p, ids)
	return kc, nil
}
