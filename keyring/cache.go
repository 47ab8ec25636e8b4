package keyring

import (
	"context"
	"fmt"
	"strings"
	"sync"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring/store"
)

// Cache keeps what the milter needs per list in memory: the list key with
// its secret parts opened (the passphrase's S2K work is paid once), and
// the active members with their keys as the store holds them
// (StoredKey: the bytes, parsed only when used; issue 9). Every lookup
// asks the store for the list's keys version (one cheap query), so a
// change made by the CLI, the responder or another milter host on the
// same PostgreSQL is seen on the next post.
type Cache struct {
	st         *store.Store
	passphrase []byte
	limits     *Limits // shared by the cache's stored keys

	mu      sync.Mutex
	listKey map[string]*openedKey      // list address -> opened list key
	oldKeys map[string]*openpgp.Entity // list, fingerprint, "secret"/"public" -> retired key (oldkeys.go)
	members map[string]*MemberSet      // list address -> members at a version
}

type openedKey struct {
	fingerprint string
	entity      *openpgp.Entity
}

// MemberSet is a list's active members at one keys version.
type MemberSet struct {
	Version int64
	// Active maps each active member's address to its key fingerprint.
	Active map[string]string
	// Ring holds the active members' keys for signature verification.
	Ring *MemberKeyRing
	// Keys maps fingerprints to the members' keys (for encryption).
	Keys map[string]*StoredKey
}

// NewCache returns a cache over st; passphrase opens list secret keys.
func NewCache(st *store.Store, passphrase []byte, l Limits) *Cache {
	return &Cache{
		st: st, passphrase: passphrase, limits: &l,
		listKey: map[string]*openedKey{},
		oldKeys: map[string]*openpgp.Entity{},
		members: map[string]*MemberSet{},
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

// build makes the MemberSet of the list's active members at version v.
// Nothing is parsed. A key whose bytes are those of the list's previous
// set carries over the encryption key choice it remembers; a key changed
// under the same fingerprint is read again when it is used.
//
// What the set keeps is copied out of the store's rows into a few large
// blocks (the keys, their bytes, the addresses and fingerprints): the
// rows are garbage once the set is made, and objects left behind one by
// one among them would keep most of their memory pages in use (issue 9).
func (c *Cache) build(list string, v int64, members []store.Member) (*MemberSet, error) {
	n, nbytes, nstr := 0, 0, 0
	for _, m := range members {
		if m.State == store.MemberActive && len(m.PublicKey) > 0 {
			n++
			nbytes += len(m.PublicKey)
			nstr += len(m.Address) + len(m.Fingerprint)
		}
	}
	c.mu.Lock()
	prev := c.members[list]
	c.mu.Unlock()
	ms := &MemberSet{Version: v, Active: make(map[string]string, n), Keys: make(map[string]*StoredKey, n)}
	keys := make([]StoredKey, 0, n)
	bins := make([]byte, 0, nbytes)
	var sb strings.Builder
	sb.Grow(nstr)
	for _, m := range members {
		if m.State == store.MemberActive && len(m.PublicKey) > 0 {
			sb.WriteString(m.Address)
			sb.WriteString(m.Fingerprint)
		}
	}
	strs := sb.String()
	entries := make([]ringEntry, 0, n)
	for _, m := range members {
		if m.State != store.MemberActive || len(m.PublicKey) == 0 {
			continue
		}
		addr := strs[:len(m.Address)]
		fpr := strs[len(m.Address) : len(m.Address)+len(m.Fingerprint)]
		strs = strs[len(m.Address)+len(m.Fingerprint):]
		// A key registered for several addresses is stored once for each
		// (with that address's user IDs only): the first is the key's.
		k := ms.Keys[fpr]
		if k == nil {
			start := len(bins)
			bins = append(bins, m.PublicKey...)
			keys = append(keys, StoredKey{fingerprint: fpr, bin: bins[start:len(bins):len(bins)], limits: c.limits})
			k = &keys[len(keys)-1]
			if prev != nil {
				if old := prev.Keys[fpr]; old != nil && old.sameBytes(m.PublicKey) {
					k.res = old.remembered()
				}
			}
		}
		ids := m.KeyIDs
		if len(ids) == 0 {
			// The store names every key's IDs; should a row lack them,
			// the key itself does.
			e, err := k.Entity()
			if err != nil {
				return nil, fmt.Errorf("key of %s on %s: %w", m.Address, list, err)
			}
			ids = []uint64{e.PrimaryKey.KeyId}
			for _, sk := range e.Subkeys {
				ids = append(ids, sk.PublicKey.KeyId)
			}
		}
		ms.Active[addr] = fpr
		ms.Keys[fpr] = k
		entries = append(entries, ringEntry{address: addr, key: k, keyIDs: ids})
	}
	ms.Ring = newRing(entries)
	return ms, nil
}
