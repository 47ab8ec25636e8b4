package keyring

import (
	"context"
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
	listKey map[string]*openedKey // list address -> opened list key
	members map[string]*MemberSet // list address -> members at a version
	parsed  map[string]*parsedKey // fingerprint -> parsed member key
}

type openedKey struct {
	fingerprint string
	entity      *openpgp.Entity
}

type parsedKey struct {
	binary string
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
		parsed:  map[string]*parsedKey{},
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
	ms = &MemberSet{Version: v, Active: map[string]string{}, Entities: map[string]*openpgp.Entity{}}
	var reg []RegisteredKey
	for _, m := range members {
		if m.State != "active" || len(m.PublicKey) == 0 {
			continue
		}
		// Parsed keys are per list: go-crypto mutates an Entity while using
		// it, and the milter serialises work per list, not per key.
		e, err := c.parse(list+"\x00"+m.Fingerprint, m.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("key of %s on %s: %w", m.Address, list, err)
		}
		ms.Active[m.Address] = m.Fingerprint
		ms.Entities[m.Fingerprint] = e
		reg = append(reg, RegisteredKey{Address: m.Address, Fingerprint: m.Fingerprint, Entity: e})
	}
	ms.Ring = NewMemberKeyRing(reg)
	c.mu.Lock()
	c.members[list] = ms
	c.mu.Unlock()
	return ms, nil
}

func (c *Cache) parse(key string, bin []byte) (*openpgp.Entity, error) {
	c.mu.Lock()
	p := c.parsed[key]
	c.mu.Unlock()
	if p != nil && p.binary == string(bin) {
		return p.entity, nil
	}
	e, err := ParseStoredKey(bin, c.limits)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.parsed[key] = &parsedKey{binary: string(bin), entity: e}
	c.mu.Unlock()
	return e, nil
}
