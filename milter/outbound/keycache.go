package outbound

import (
	"sync"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// KeyCache remembers, per parsed member key, which (sub)key encrypts and
// what the key advertises, so that the self-signature checks go-crypto
// makes when it selects an encryption key (one Ed25519 or RSA
// verification per signature, about a third of the work of a post to
// X25519 keys) are paid once per key and not once per post.
//
// An entry is keyed by the *openpgp.Entity pointer: the member cache
// (keyring.Cache) re-parses a key when it changes, which gives a new
// pointer, so a revoked or replaced key is never served from here. Do not
// modify an Entity after handing it to a Prepared that uses a KeyCache.
// An entry holds while the clock is between the check and the earliest
// expiry of the keys and signatures involved, and at most an hour (a
// subkey whose binding signature is dated in the future becomes the
// choice only later).
//
// The zero value is not usable; call NewKeyCache. Safe for concurrent use.
type KeyCache struct {
	mu sync.Mutex
	m  map[*openpgp.Entity]cachedKey
}

type cachedKey struct {
	m           member // addr unset
	from, until time.Time
}

// keyCacheMax bounds the entries; past it the cache starts over (entries
// of replaced keys are never looked up again).
const keyCacheMax = 1 << 17

// keyCacheTTL bounds how long a choice is trusted.
const keyCacheTTL = time.Hour

// NewKeyCache returns an empty cache.
func NewKeyCache() *KeyCache {
	return &KeyCache{m: map[*openpgp.Entity]cachedKey{}}
}

func (c *KeyCache) get(e *openpgp.Entity, now time.Time) (member, bool) {
	if c == nil {
		return member{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.m[e]
	if !ok || now.Before(k.from) || !now.Before(k.until) {
		return member{}, false
	}
	return k.m, true
}

func (c *KeyCache) put(e *openpgp.Entity, m member, now time.Time, k openpgp.Key) {
	if c == nil {
		return
	}
	until := now.Add(keyCacheTTL)
	expire := func(created time.Time, secs *uint32) {
		if secs != nil && *secs != 0 {
			until = minTime(until, created.Add(time.Duration(*secs)*time.Second))
		}
	}
	if s := k.PrimarySelfSignature; s != nil {
		expire(e.PrimaryKey.CreationTime, s.KeyLifetimeSecs)
		expire(s.CreationTime, s.SigLifetimeSecs)
	}
	if s := k.SelfSignature; s != nil && k.PublicKey != e.PrimaryKey {
		expire(k.PublicKey.CreationTime, s.KeyLifetimeSecs)
		expire(s.CreationTime, s.SigLifetimeSecs)
	}
	m.addr = ""
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= keyCacheMax {
		clear(c.m)
	}
	c.m[e] = cachedKey{m: m, from: now, until: until}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
