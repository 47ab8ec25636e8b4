package keyring

import (
	"context"
	"fmt"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// RetiredKey is a list key retired by a rotation or an import.
type RetiredKey struct {
	Fingerprint string
	RetiredAt   time.Time
	// InGrace: retired less than the grace period ago. Entity then has
	// its secret parts open (posts encrypted to it still open); after
	// the grace period it is the public key only, to recognise posts
	// encrypted to it.
	InGrace bool
	Entity  *openpgp.Entity
}

// OldListKeys returns the list's retired keys at now, most recently
// retired first: those retired less than grace ago with their secret
// parts open, the others public only. Opened keys are kept in the cache
// (a retired key never changes under its fingerprint).
func (c *Cache) OldListKeys(ctx context.Context, list string, now time.Time, grace time.Duration) ([]RetiredKey, error) {
	old, err := c.st.OldListKeys(ctx, list)
	if err != nil {
		return nil, err
	}
	if len(old) == 0 {
		return nil, nil
	}
	out := make([]RetiredKey, 0, len(old))
	for _, o := range old {
		rk := RetiredKey{Fingerprint: o.Fingerprint, RetiredAt: o.RetiredAt, InGrace: now.Sub(o.RetiredAt) < grace}
		kind := "public"
		if rk.InGrace {
			kind = "secret"
		}
		id := list + "\x00" + o.Fingerprint + "\x00" + kind
		c.mu.Lock()
		e := c.oldKeys[id]
		c.mu.Unlock()
		if e == nil {
			if rk.InGrace {
				e, err = OpenSecretKey(o.SecretKey, c.passphrase)
			} else {
				e, err = ParseStoredKey(o.PublicKey, *c.limits)
			}
			if err != nil {
				return nil, fmt.Errorf("old list key %s of %s: %w", o.Fingerprint, list, err)
			}
			c.mu.Lock()
			c.oldKeys[id] = e
			c.mu.Unlock()
		}
		rk.Entity = e
		out = append(out, rk)
		if !rk.InGrace {
			// Past its grace the secret is no longer needed: the cache
			// drops it (a long-running milter keeps no retired key open).
			c.mu.Lock()
			delete(c.oldKeys, list+"\x00"+o.Fingerprint+"\x00secret")
			c.mu.Unlock()
		}
	}
	return out, nil
}

// RetiredSecretKeys opens every retired key of the list, whatever its
// grace, without keeping them: a post held before a rotation is sealed
// to the key of that time, and "hold show" and "hold approve" must still
// open it.
func (c *Cache) RetiredSecretKeys(ctx context.Context, list string) ([]*openpgp.Entity, error) {
	old, err := c.st.OldListKeys(ctx, list)
	if err != nil {
		return nil, err
	}
	out := make([]*openpgp.Entity, 0, len(old))
	for _, o := range old {
		e, err := OpenSecretKey(o.SecretKey, c.passphrase)
		if err != nil {
			return nil, fmt.Errorf("old list key %s of %s: %w", o.Fingerprint, list, err)
		}
		out = append(out, e)
	}
	return out, nil
}
