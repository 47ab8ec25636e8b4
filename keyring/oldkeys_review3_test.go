package keyring

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// Found in review (it failed before the fix): Cache.OldListKeys caches a retired key under
// list/fingerprint/"secret" while it is in its grace period and under
// ".../public" after it, but never drops the "secret" entry: a
// long-running milter keeps the retired key's secret parts open in
// memory for ever (and grows by one opened key per rotation), though
// after the grace period they are no longer used.
func TestReview3CacheDropsOldSecretAfterGrace(t *testing.T) {
	ctx := context.Background()
	st := storetest.SQLite(t)
	const list = "devs@lists.example.org"
	pass := []byte("site passphrase")
	k1, err := GenerateListKey(list, KeyEd25519, testNow, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := GenerateListKey(list, KeyEd25519, testNow, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s1, err := SealSecretKey(k1, pass)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := SealSecretKey(k2, pass)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateList(ctx, store.List{Address: list, KeyFingerprint: Fingerprint(k1), PublicKey: PublicKeyBytes(k1), SecretKey: s1, CreatedAt: testNow}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReplaceListKey(ctx, list, Fingerprint(k1), Fingerprint(k2), PublicKeyBytes(k2), s2, testNow, nil); err != nil {
		t.Fatal(err)
	}
	c := NewCache(st, pass, DefaultLimits)
	grace := 24 * time.Hour
	rks, err := c.OldListKeys(ctx, list, testNow.Add(time.Hour), grace)
	if err != nil || len(rks) != 1 || !rks[0].InGrace || rks[0].Entity.PrivateKey == nil {
		t.Fatalf("in grace: %v %+v", err, rks)
	}
	rks, err = c.OldListKeys(ctx, list, testNow.Add(48*time.Hour), grace)
	if err != nil || len(rks) != 1 || rks[0].InGrace || rks[0].Entity.PrivateKey != nil {
		t.Fatalf("after grace: %v %+v", err, rks)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range c.oldKeys {
		if e.PrivateKey != nil && !e.PrivateKey.Encrypted {
			t.Errorf("after the grace period the cache still holds the retired key's open secret (%q)", id)
		}
	}
}
