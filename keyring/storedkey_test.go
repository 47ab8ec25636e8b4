package keyring

import (
	"bytes"
	"io"
	mathrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring/store"
)

// keyConfig is a deterministic Ed25519/X25519 key generation config at
// when with a key lifetime (0: none).
func keyConfig(seed byte, when time.Time, lifetime time.Duration) *packet.Config {
	cfg := PacketConfig(DefaultLimits, func() time.Time { return when })
	cfg.Algorithm, cfg.Curve = packet.PubKeyAlgoEdDSA, packet.Curve25519
	cfg.Rand = mathrand.NewChaCha8([32]byte{seed})
	cfg.KeyLifetimeSecs = uint32(lifetime / time.Second)
	return cfg
}

func publicBytes(t *testing.T, e *openpgp.Entity) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := serializePublic(&b, e); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestStoredKeyChoosesAsGoCrypto: the encryption key a StoredKey hands
// out at any instant is the one go-crypto picks on the key parsed afresh
// at that instant (or both refuse), whichever instants were asked about
// before, forwards or backwards: around every creation and expiry of the
// key, its subkeys and their bindings.
func TestStoredKeyChoosesAsGoCrypto(t *testing.T) {
	t0 := testNow
	day := 24 * time.Hour
	e, err := openpgp.NewEntity("multi", "", "multi@example.org", keyConfig(1, t0, 30*day))
	if err != nil {
		t.Fatal(err)
	}
	// A newer encryption subkey that expires before the key, and one
	// that only begins later (its binding is dated then).
	if err := e.AddEncryptionSubkey(keyConfig(2, t0.Add(day), 10*day)); err != nil {
		t.Fatal(err)
	}
	if err := e.AddEncryptionSubkey(keyConfig(3, t0.Add(5*day), 0)); err != nil {
		t.Fatal(err)
	}
	bin := publicBytes(t, e)
	k := newStoredKey(Fingerprint(e), bin, &DefaultLimits)
	cfg := PacketConfig(DefaultLimits, nil)

	var instants []time.Time
	for _, edge := range []time.Time{t0, t0.Add(day), t0.Add(5 * day), t0.Add(11 * day), t0.Add(30 * day)} {
		for s := -2; s <= 2; s++ {
			instants = append(instants, edge.Add(time.Duration(s)*time.Second), edge.Add(time.Duration(s)*time.Second+500*time.Millisecond))
		}
	}
	instants = append(instants, t0.Add(-day), t0.Add(3*day), t0.Add(20*day), t0.Add(40*day))
	seen := map[uint64]bool{}
	check := func(at time.Time) {
		t.Helper()
		fresh, err := ParseStoredKey(bin, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := fresh.EncryptionKeyWithError(at, cfg)
		got, gotErr := k.EncryptionKey(at, cfg)
		switch {
		case (wantErr == nil) != (gotErr == nil):
			t.Errorf("at %v: error %v, go-crypto's %v", at.Sub(t0), gotErr, wantErr)
		case wantErr == nil && got.KeyId != want.PublicKey.KeyId:
			t.Errorf("at %v: key %X, go-crypto picks %X", at.Sub(t0), got.KeyId, want.PublicKey.KeyId)
		case wantErr == nil:
			seen[got.KeyId] = true
			if pk, err := got.PublicKey(); err != nil || !bytes.Equal(pk.Fingerprint, want.PublicKey.Fingerprint) {
				t.Errorf("at %v: the key read from the stored bytes: %v", at.Sub(t0), err)
			}
			if got.SEIPDv2 != want.PrimarySelfSignature.SEIPDv2 || !bytes.Equal(got.Ciphers, want.PrimarySelfSignature.PreferredSymmetric) {
				t.Errorf("at %v: preferences differ from the primary self-signature's", at.Sub(t0))
			}
		}
	}
	for _, at := range instants {
		check(at)
	}
	for i := len(instants) - 1; i >= 0; i-- {
		check(instants[i])
	}
	rnd := mathrand.New(mathrand.NewChaCha8([32]byte{4}))
	for range 200 {
		check(t0.Add(time.Duration(rnd.Int64N(int64(45*day))) - day))
	}
	if len(seen) != 3 {
		t.Errorf("%d subkeys chosen over the key's life, want all 3", len(seen))
	}
}

// TestStoredMemberKey: a member's stored key, as the cache holds it,
// encrypts, verifies the member's signature through the ring (parsed
// from its bytes on demand), and expires when it should: between two
// posts, and for a signature made after the expiry.
func TestStoredMemberKey(t *testing.T) {
	now := testNow
	const addr = "alice@example.org"
	e, err := openpgp.NewEntity("alice", "", addr, keyConfig(5, now.Add(-time.Hour), 2*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	a, err := ArmorPublicKey(e)
	if err != nil {
		t.Fatal(err)
	}
	mk, err := ParseMemberKey([]byte(a), DefaultLimits, now)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(nil, nil, DefaultLimits)
	ms, err := c.build("list@example.org", 1, []store.Member{{Address: addr, State: store.MemberActive,
		Fingerprint: mk.Fingerprint, PublicKey: mk.Binary, KeyIDs: mk.KeyIDs}})
	if err != nil {
		t.Fatal(err)
	}
	got := ms.Keys[mk.Fingerprint]
	if got == nil || ms.Active[addr] != mk.Fingerprint {
		t.Fatalf("member not in the set: %+v", ms.Active)
	}
	use := PacketConfig(DefaultLimits, func() time.Time { return now })
	k, err := got.EncryptionKey(now, use)
	if err != nil {
		t.Fatal(err)
	}
	if pk, err := k.PublicKey(); err != nil || k.KeyId != e.Subkeys[0].PublicKey.KeyId || pk.KeyId != k.KeyId {
		t.Errorf("encryption key %X (%v), want %X", k.KeyId, err, e.Subkeys[0].PublicKey.KeyId)
	}
	if err := got.CanEncrypt(now.Add(3*24*time.Hour), use); err == nil || !strings.Contains(err.Error(), pgperrors.ErrKeyExpired.Error()) {
		t.Errorf("3 days later: %v, want the key expired", err)
	}
	if err := got.CanEncrypt(now, use); err != nil {
		t.Errorf("back at the start: %v", err)
	}
	// A post signed by the member verifies against the ring.
	var signed bytes.Buffer
	w, err := openpgp.Sign(&signed, []*openpgp.Entity{e}, nil, use)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "hello")
	w.Close()
	md, err := openpgp.ReadMessage(bytes.NewReader(signed.Bytes()), ms.Ring, nil, use)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(md.UnverifiedBody); err != nil {
		t.Fatal(err)
	}
	if md.SignatureError != nil || md.SignedBy == nil || Fingerprint(md.SignedBy.Entity) != mk.Fingerprint {
		t.Errorf("signature: %v (signed by %v)", md.SignatureError, md.SignedBy)
	}
	if got := ms.Ring.AddressesOf(Fingerprint(md.SignedBy.Entity)); len(got) != 1 || got[0] != addr {
		t.Errorf("addresses of the signer: %v", got)
	}
	// Each lookup parses afresh: go-crypto's writes stay with the caller.
	if a, b := ms.Ring.EntitiesById(e.PrimaryKey.KeyId), ms.Ring.EntitiesById(e.PrimaryKey.KeyId); len(a) != 1 || len(b) != 1 || a[0] == b[0] {
		t.Errorf("EntitiesById: %v then %v, want one fresh key each time", a, b)
	}
	// Signed after the key expired: refused.
	late := PacketConfig(DefaultLimits, func() time.Time { return now.Add(3 * 24 * time.Hour) })
	signed.Reset()
	if w, err = openpgp.Sign(&signed, []*openpgp.Entity{e}, nil, late); err == nil {
		io.WriteString(w, "hello")
		w.Close()
		md, err = openpgp.ReadMessage(&signed, ms.Ring, nil, late)
		if err == nil {
			io.ReadAll(md.UnverifiedBody)
			if md.SignatureError == nil {
				t.Error("a signature made after the key expired verified")
			}
		}
	}
}

// TestMemberSetRereadsChangedKey: a key whose stored bytes are unchanged
// keeps its remembered choice when the keys version moves; a key changed
// under the same fingerprint (here: revoked) is read again, for
// encryption and for signatures.
func TestMemberSetRereadsChangedKey(t *testing.T) {
	now := testNow
	const list, addr = "list@example.org", "bob@example.org"
	gen := keyConfig(6, now.Add(-time.Hour), 0)
	e, err := openpgp.NewEntity("bob", "", addr, gen)
	if err != nil {
		t.Fatal(err)
	}
	before := publicBytes(t, e)
	fpr := Fingerprint(e)
	ids := []uint64{e.PrimaryKey.KeyId, e.Subkeys[0].PublicKey.KeyId}
	member := func(bin []byte) []store.Member {
		return []store.Member{{Address: addr, State: store.MemberActive, Fingerprint: fpr, PublicKey: bin, KeyIDs: ids}}
	}
	c := NewCache(nil, nil, DefaultLimits)
	build := func(v int64, bin []byte) *MemberSet {
		t.Helper()
		ms, err := c.build(list, v, member(bin))
		if err != nil {
			t.Fatal(err)
		}
		c.members[list] = ms
		return ms
	}
	use := PacketConfig(DefaultLimits, func() time.Time { return now })
	ms1 := build(1, bytes.Clone(before))
	if err := ms1.Keys[fpr].CanEncrypt(now, use); err != nil {
		t.Fatal(err)
	}
	ms2 := build(2, bytes.Clone(before))
	if r := ms2.Keys[fpr].remembered(); !r.set || r != ms1.Keys[fpr].remembered() {
		t.Error("an unchanged key did not keep its remembered choice across versions")
	}

	if err := e.Revoke(packet.KeySuperseded, "new key", gen); err != nil {
		t.Fatal(err)
	}
	revoked := publicBytes(t, e)
	if Fingerprint(e) != fpr || bytes.Equal(revoked, before) {
		t.Fatal("the revocation did not change the key's bytes under its fingerprint")
	}
	ms3 := build(3, revoked)
	k := ms3.Keys[fpr]
	if k.remembered().set {
		t.Fatal("a changed key kept the choice made for its old bytes")
	}
	if err := k.CanEncrypt(now, use); err == nil {
		t.Error("the revoked key still encrypts")
	}
	ents := ms3.Ring.EntitiesById(e.PrimaryKey.KeyId)
	if len(ents) != 1 || !ents[0].Revoked(now) {
		t.Errorf("the ring does not read the revoked key: %v", ents)
	}
	// The first set still answers for its own version.
	if err := ms1.Keys[fpr].CanEncrypt(now, use); err != nil {
		t.Errorf("version 1's key: %v", err)
	}
}

// TestMemberSetIDsFromKey: a stored row without key IDs still puts the
// key in the ring, under the IDs the key itself has.
func TestMemberSetIDsFromKey(t *testing.T) {
	e, err := openpgp.NewEntity("carol", "", "carol@example.org", keyConfig(7, testNow.Add(-time.Hour), 0))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(nil, nil, DefaultLimits)
	ms, err := c.build("list@example.org", 1, []store.Member{{Address: "carol@example.org", State: store.MemberActive,
		Fingerprint: Fingerprint(e), PublicKey: publicBytes(t, e)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{e.PrimaryKey.KeyId, e.Subkeys[0].PublicKey.KeyId} {
		if got := ms.Ring.EntitiesById(id); len(got) != 1 || Fingerprint(got[0]) != Fingerprint(e) {
			t.Errorf("key ID %X: %v", id, got)
		}
	}
}

// newStoredKey keeps a stored key as the cache's build does.
func newStoredKey(fingerprint string, bin []byte, l *Limits) *StoredKey {
	return &StoredKey{fingerprint: fingerprint, bin: bin, limits: l}
}
