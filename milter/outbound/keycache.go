package outbound

import (
	"errors"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/listcrypt/listcrypt/keyring"
)

// KeyCache is kept for its callers (milter/deliver, milter/holds): the
// encryption key choice of a member key, which it used to remember per
// parsed key, is now remembered by the key itself (keyring.StoredKey,
// for exactly as long as go-crypto's answer cannot change), so a KeyCache
// holds nothing. Its methods answer as the key does; a nil *KeyCache
// works too.
type KeyCache struct{}

// NewKeyCache returns a KeyCache.
func NewKeyCache() *KeyCache { return &KeyCache{} }

// CanEncrypt reports why key k cannot encrypt at now (nil: it can). The
// answer is the one Prepared's batches use, remembered by k, so expanding
// a list costs no signature checks for keys seen before.
func (c *KeyCache) CanEncrypt(k *keyring.StoredKey, now time.Time, cfg *packet.Config) error {
	if k == nil {
		return errors.New("no key")
	}
	return k.CanEncrypt(now, cfg)
}
