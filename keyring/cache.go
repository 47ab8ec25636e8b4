package keyring

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring/store"
)

// Cache keeps what the milter needs per list in memory: the list key with
// its secret parts opened (the passphrase's S2K work is paid once), and
// the members with their parsed keys. Every lookup asks the store for the
// list's keys version (one cheap query), so a change made by the CLI, the
// responder or another milter host on the same PostgreSQL is seen on the
// next post.
type Cache struct {
	st         *store.Store
	passphrase []byte
	limits     Limits

	mu      sync.Mutex
	listKey map[string]*openedKey     // list address -> opened list key
	members map[string]*MemberSet     // list address -> members at a version
	parsed  map[parsedName]*parsedKey // list and fingerprint -> parsed member key
}

type openedKey struct {
	fingerprint string
	entity      *openpgp.Entity
}

// parsedName names a parsed member key: parsed keys are per list, as
// go-crypto mutates an Entity while using it and the milter serialises
// work per list, not per key.
type parsedName struct{ list, fingerprint string }

// parsedKey is a member key parsed and compacted (compactEntity), with
// the digest of the stored bytes it was parsed from (to notice a changed
// key under the same fingerprint without keeping the bytes).
type parsedKey struct {
	digest [sha256.Size]byte
	entity *openpgp.Entity
}

// MemberSet is a list's active members at one keys version.
type MemberSet struct {
	Version int64
	// Active maps each active member's address to its key fingerprint.
	Active map[string]string
	// Ring holds the active members' keys for signature verification.
	Ring *MemberKeyRing
	// Entities maps fingerprints to parsed keys (for encryption later).
	Entities map[string]*openpgp.Entity
}

// NewCache returns a cache over st; passphrase opens list secret keys.
func NewCache(st *store.Store, passphrase []byte, l Limits) *Cache {
	return &Cache{
		st: st, passphrase: passphrase, limits: l,
		listKey: map[string]*openedKey{},
		members: map[string]*MemberSet{},
		parsed:  map[parsedName]*parsedKey{},
	}
}

// ListKey returns the list's key with its secret parts opened.
func (c *Cache) ListKey(ctx context.Context, list string) (*openpgp.Entity, error) {
	l, err := c.st.GetList(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", list, err)
	}
	c.mu.Lock()
	k := c.listKey[list]
	c.mu.Unlock()
	if k != nil && k.fingerprint == l.KeyFingerprint {
		return k.entity, nil
	}
	e, err := OpenSecretKey(l.SecretKey, c.passphrase)
	if err != nil {
		return nil, fmt.Errorf("open list key of %s: %w", list, err)
	}
	c.mu.Lock()
	c.listKey[list] = &openedKey{fingerprint: l.KeyFingerprint, entity: e}
	c.mu.Unlock()
	return e, nil
}

// Members returns the list's active members and their keys, rebuilt only
// when the store's keys version of the list has moved.
func (c *Cache) Members(ctx context.Context, list string) (*MemberSet, error) {
	v, err := c.st.KeysVersion(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("keys version of %s: %w", list, err)
	}
	c.mu.Lock()
	ms := c.members[list]
	c.mu.Unlock()
	if ms != nil && ms.Version == v {
		return ms, nil
	}
	members, err := c.st.Members(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", list, err)
	}
	ms, err = c.build(list, v, members)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.members[list] = ms
	c.mu.Unlock()
	return ms, nil
}

// build parses the active members' keys into a MemberSet at version v.
func (c *Cache) build(list string, v int64, members []store.Member) (*MemberSet, error) {
	n := 0
	for _, m := range members {
		if m.State == "active" && len(m.PublicKey) > 0 {
			n++
		}
	}
	ms := &MemberSet{Version: v, Active: make(map[string]string, n), Entities: make(map[string]*openpgp.Entity, n)}
	reg := make([]RegisteredKey, 0, n)
	for _, m := range members {
		if m.State != "active" || len(m.PublicKey) == 0 {
			continue
		}
		e, err := c.parse(parsedName{list, m.Fingerprint}, m.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("key of %s on %s: %w", m.Address, list, err)
		}
		ms.Active[m.Address] = m.Fingerprint
		ms.Entities[m.Fingerprint] = e
		reg = append(reg, RegisteredKey{Address: m.Address, Fingerprint: m.Fingerprint, Entity: e})
	}
	ms.Ring = NewMemberKeyRing(reg)
	// Forget the parsed keys of the list that are no longer its members'.
	c.mu.Lock()
	for k := range c.parsed {
		if k.list == list {
			if _, ok := ms.Entities[k.fingerprint]; !ok {
				delete(c.parsed, k)
			}
		}
	}
	c.mu.Unlock()
	return ms, nil
}

func (c *Cache) parse(key parsedName, bin []byte) (*openpgp.Entity, error) {
	digest := sha256.Sum256(bin)
	c.mu.Lock()
	p := c.parsed[key]
	c.mu.Unlock()
	if p != nil && p.digest == digest {
		return p.entity, nil
	}
	e, err := ParseStoredKey(bin, c.limits)
	if err != nil {
		return nil, err
	}
	compactEntity(e, PacketConfig(c.limits, nil))
	c.mu.Lock()
	c.parsed[key] = &parsedKey{digest: digest, entity: e}
	c.mu.Unlock()
	return e, nil
}
