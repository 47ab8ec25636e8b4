package keyring

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// StoredKey is a member key as the member cache keeps it resident (issue
// 9: the milter holds every member of every list, 10,000 and more): the
// key's bytes as the store holds them (MemberKey.Binary) and, once the key
// was used, which of its (sub)keys go-crypto picks to encrypt to it and
// what the key advertises, remembered for exactly as long as go-crypto's
// answer cannot change. The remembered choice is a place in the bytes,
// not a parsed key: a parsed key (an *openpgp.Entity, ten times the size
// of the bytes) is made only when it is needed and not kept: to choose
// the encryption key when the remembered choice no longer holds, to
// verify a member's signature (MemberKeyRing), to encrypt with go-crypto's
// own writer (Entity); the chosen encryption key alone is parsed for each
// post (EncryptionKey.PublicKey, a few microseconds).
//
// A StoredKey is immutable but for the remembered choice; it is safe for
// concurrent use.
type StoredKey struct {
	fingerprint string
	bin         []byte          // the stored key (nil for EntityKey)
	entity      *openpgp.Entity // EntityKey only
	limits      *Limits         // for parsing bin

	mu  sync.Mutex
	res resolution // the last choice (res.set: there is one)
}

// EncryptionKey is the (sub)key go-crypto picks to encrypt to a member at
// some time (Entity.EncryptionKeyWithError) and what the key's primary
// self-signature at that time advertises for the encrypted data. Ciphers
// and Suites are shared: do not modify them.
type EncryptionKey struct {
	KeyId   uint64
	SEIPDv2 bool       // SEIPDv2 (AEAD) in the key's features
	Ciphers []uint8    // preferred symmetric ciphers
	Suites  [][2]uint8 // preferred AEAD cipher suites (cipher, mode)

	// The chosen key: its packet at src[off:end], the key's stored
	// bytes; or pub itself (EntityKey).
	src      []byte
	off, end int32
	pub      *packet.PublicKey
}

// PublicKey returns the chosen key, parsed from the stored bytes on each
// call (a StoredKey keeps no parsed key).
func (k EncryptionKey) PublicKey() (*packet.PublicKey, error) {
	if k.pub != nil {
		return k.pub, nil
	}
	if k.src == nil {
		return nil, errors.New("keyring: no encryption key")
	}
	p, err := packet.Read(bytes.NewReader(k.src[k.off:k.end]))
	if err != nil {
		return nil, fmt.Errorf("keyring: stored encryption key: %w", err)
	}
	pk, ok := p.(*packet.PublicKey)
	if !ok || pk.KeyId != k.KeyId {
		return nil, errors.New("keyring: stored encryption key moved")
	}
	return pk, nil
}

// resolution is go-crypto's answer for a key over the Unix seconds
// [from, until): the encryption key, or why there is none.
type resolution struct {
	set         bool
	from, until int64
	err         error
	keyID       uint64
	off, end    int32             // the chosen key's packet in the stored bytes
	pub         *packet.PublicKey // EntityKey: the chosen key
	prefs       *keyPrefs
}

func (r *resolution) holds(t int64) bool { return r.set && r.from <= t && t < r.until }

// keyPrefs is what a primary self-signature advertises for encryption.
// Keys made by one tool advertise the same: the values are interned.
type keyPrefs struct {
	seipdv2 bool
	ciphers []uint8
	suites  [][2]uint8
}

var (
	prefsMu sync.Mutex
	prefsOf = map[string]*keyPrefs{}
)

func internPrefs(seipdv2 bool, ciphers []uint8, suites [][2]uint8) *keyPrefs {
	name := make([]byte, 0, 2+len(ciphers)+2*len(suites))
	if seipdv2 {
		name = append(name, 1)
	} else {
		name = append(name, 0)
	}
	name = append(name, byte(len(ciphers)))
	name = append(name, ciphers...)
	for _, s := range suites {
		name = append(name, s[0], s[1])
	}
	prefsMu.Lock()
	defer prefsMu.Unlock()
	if p := prefsOf[string(name)]; p != nil {
		return p
	}
	p := &keyPrefs{seipdv2: seipdv2, ciphers: slices.Clone(ciphers), suites: slices.Clone(suites)}
	prefsOf[string(name)] = p
	return p
}

// entityLocks serialise go-crypto's key selection on the entities of
// EntityKeys (striped by key ID).
var entityLocks [64]sync.Mutex

// EntityKey makes a StoredKey of a key that exists only parsed (a key
// under test, a key being registered). The entity is used, not copied:
// go-crypto records signature checks in it, so do not use it from
// several goroutines at once elsewhere.
func EntityKey(e *openpgp.Entity) *StoredKey {
	return &StoredKey{fingerprint: Fingerprint(e), entity: e}
}

// Fingerprint is the key's fingerprint, upper-case hex.
func (k *StoredKey) Fingerprint() string { return k.fingerprint }

// Entity parses the key from its stored bytes, afresh on every call: the
// caller has it to itself (go-crypto writes signature checks into it).
// For an EntityKey it is that entity.
func (k *StoredKey) Entity() (*openpgp.Entity, error) {
	if k.entity != nil {
		return k.entity, nil
	}
	l := DefaultLimits
	if k.limits != nil {
		l = *k.limits
	}
	return ParseStoredKey(k.bin, l)
}

// sameBytes reports whether k was made from bin (a key changed under the
// same fingerprint is a new StoredKey).
func (k *StoredKey) sameBytes(bin []byte) bool {
	return k.entity == nil && bytes.Equal(k.bin, bin)
}

// remembered returns k's remembered choice, to carry it over to a copy
// of k made from the same bytes.
func (k *StoredKey) remembered() resolution {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.res
}

// EncryptionKey returns the key to encrypt to at now, chosen exactly as
// go-crypto's Entity.EncryptionKeyWithError(now, cfg) chooses it on the
// parsed key, or its error (the key expired, was revoked, has no valid
// encryption subkey at now). The choice is remembered: go-crypto judges
// validity only by comparing now, in whole seconds, with the creation
// and expiry times of the key, its subkeys and their self-signatures, so
// the answer found at now holds until the next of those instants, and the
// key is parsed and checked again only after it (or before the instant
// the answer was found for). cfg must be the same policy each time
// (PacketConfig with the cache's limits); only its clock may differ.
func (k *StoredKey) EncryptionKey(now time.Time, cfg *packet.Config) (EncryptionKey, error) {
	t := now.Unix()
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.res.holds(t) {
		e, err := k.Entity()
		if err != nil {
			// Not remembered: the bytes passed the same checks when the
			// key was registered, so this is no answer about the key.
			return EncryptionKey{}, err
		}
		if k.entity != nil {
			// go-crypto records signature checks in the entity, which
			// other EntityKeys may share.
			mu := &entityLocks[int(k.entity.PrimaryKey.KeyId%uint64(len(entityLocks)))]
			mu.Lock()
			k.res = k.resolveAt(e, t, cfg)
			mu.Unlock()
		} else {
			k.res = k.resolveAt(e, t, cfg)
		}
	}
	r := &k.res
	if r.err != nil {
		return EncryptionKey{}, r.err
	}
	return EncryptionKey{KeyId: r.keyID, SEIPDv2: r.prefs.seipdv2, Ciphers: r.prefs.ciphers, Suites: r.prefs.suites,
		src: k.bin, off: r.off, end: r.end, pub: r.pub}, nil
}

// CanEncrypt reports why the key cannot encrypt at now (nil: it can).
func (k *StoredKey) CanEncrypt(now time.Time, cfg *packet.Config) error {
	if k == nil {
		return errors.New("no key")
	}
	_, err := k.EncryptionKey(now, cfg)
	return err
}

// resolveAt asks go-crypto for e's encryption key at Unix second t, finds
// the seconds around t for which its answer is the same, and where the
// chosen key is in k's bytes.
func (k *StoredKey) resolveAt(e *openpgp.Entity, t int64, cfg *packet.Config) resolution {
	r := resolution{set: true}
	r.from, r.until = certainAround(e, t)
	key, err := e.EncryptionKeyWithError(time.Unix(t, 0), cfg)
	if err != nil {
		r.err = fmt.Errorf("key %s cannot encrypt: %w", k.fingerprint, err)
		return r
	}
	if key.PrimarySelfSignature == nil {
		r.err = fmt.Errorf("key %s has no valid self-signature", k.fingerprint)
		return r
	}
	sig := key.PrimarySelfSignature
	r.keyID = key.PublicKey.KeyId
	r.prefs = internPrefs(sig.SEIPDv2, sig.PreferredSymmetric, sig.PreferredCipherSuites)
	if k.entity != nil {
		r.pub = key.PublicKey
		return r
	}
	off, end, ok := keyPacketOf(k.bin, key.PublicKey)
	if !ok {
		r.err = errors.New("keyring: the chosen encryption key is not in the stored key")
		return r
	}
	r.off, r.end = int32(off), int32(end)
	return r
}

// keyPacketOf finds the public key or subkey packet of pk in bin, a
// sequence of OpenPGP packets, by walking the packet headers (RFC 9580
// §4.2) and reading only the key packets.
func keyPacketOf(bin []byte, pk *packet.PublicKey) (off, end int, ok bool) {
	for off < len(bin) {
		tag, _, next, ok := packetAt(bin, off)
		if !ok {
			return 0, 0, false
		}
		if tag == 6 || tag == 14 { // public key, public subkey
			if p, err := packet.Read(bytes.NewReader(bin[off:next])); err == nil {
				if q, isKey := p.(*packet.PublicKey); isKey && q.KeyId == pk.KeyId && bytes.Equal(q.Fingerprint, pk.Fingerprint) {
					return off, next, true
				}
			}
		}
		off = next
	}
	return 0, 0, false
}

// packetAt reads the packet header at bin[off:]: the packet's tag, where
// its body starts and where the next packet starts. Key packets have a
// definite length (no partial bodies).
func packetAt(bin []byte, off int) (tag, start, next int, ok bool) {
	if off >= len(bin) || bin[off]&0x80 == 0 {
		return 0, 0, 0, false
	}
	h := bin[off]
	var n int
	p := off + 1
	if h&0x40 != 0 { // new format
		tag = int(h & 0x3f)
		if p >= len(bin) {
			return 0, 0, 0, false
		}
		switch b := int(bin[p]); {
		case b < 192:
			n, p = b, p+1
		case b < 224:
			if p+1 >= len(bin) {
				return 0, 0, 0, false
			}
			n, p = (b-192)<<8+int(bin[p+1])+192, p+2
		case b == 255:
			if p+4 >= len(bin) {
				return 0, 0, 0, false
			}
			n, p = int(bin[p+1])<<24|int(bin[p+2])<<16|int(bin[p+3])<<8|int(bin[p+4]), p+5
		default: // partial body length
			return 0, 0, 0, false
		}
	} else { // old format
		tag = int(h>>2) & 0x0f
		switch h & 3 {
		case 0:
			if p >= len(bin) {
				return 0, 0, 0, false
			}
			n, p = int(bin[p]), p+1
		case 1:
			if p+1 >= len(bin) {
				return 0, 0, 0, false
			}
			n, p = int(bin[p])<<8|int(bin[p+1]), p+2
		case 2:
			if p+3 >= len(bin) {
				return 0, 0, 0, false
			}
			n, p = int(bin[p])<<24|int(bin[p+1])<<16|int(bin[p+2])<<8|int(bin[p+3]), p+4
		default: // indeterminate length
			return 0, 0, 0, false
		}
	}
	if n < 0 || n > len(bin)-p {
		return 0, 0, 0, false
	}
	return tag, p, p + n, true
}

// certainAround returns the Unix seconds [from, until) around t over
// which every time check go-crypto makes on e gives the same result.
// go-crypto compares the time asked about, in whole seconds, with the
// creation times of keys and signatures ("created after now": changes
// between c-1 and c; "now >= created": the same) and with expiry
// instants x = created + lifetime ("now > x": changes between x and
// x+1). So the answer can only change at a second c or x+1; from is the
// last such second at or before t, until the first after it. Every
// signature counts, verified or not, and a key lifetime counts from the
// primary key and from every subkey: more instants than needed only make
// the window shorter.
func certainAround(e *openpgp.Entity, t int64) (from, until int64) {
	from, until = math.MinInt64, math.MaxInt64
	edge := func(b int64) {
		if b <= t {
			from = max(from, b)
		} else {
			until = min(until, b)
		}
	}
	keys := []*packet.PublicKey{e.PrimaryKey}
	for _, sk := range e.Subkeys {
		keys = append(keys, sk.PublicKey)
	}
	for _, pk := range keys {
		if pk != nil {
			edge(pk.CreationTime.Unix())
		}
	}
	var sig func(s *packet.Signature)
	sig = func(s *packet.Signature) {
		if s == nil {
			return
		}
		c := s.CreationTime.Unix()
		edge(c)
		if s.SigLifetimeSecs != nil && *s.SigLifetimeSecs != 0 {
			edge(c + int64(*s.SigLifetimeSecs) + 1)
		}
		if s.KeyLifetimeSecs != nil && *s.KeyLifetimeSecs != 0 {
			for _, pk := range keys {
				if pk != nil {
					edge(pk.CreationTime.Unix() + int64(*s.KeyLifetimeSecs) + 1)
				}
			}
		}
		sig(s.EmbeddedSignature)
	}
	sigs := func(vs []*packet.VerifiableSignature) {
		for _, v := range vs {
			if v != nil {
				sig(v.Packet)
			}
		}
	}
	for _, id := range e.Identities {
		sigs(id.SelfCertifications)
		sigs(id.Revocations)
	}
	sigs(e.DirectSignatures)
	sigs(e.Revocations)
	for _, sk := range e.Subkeys {
		sigs(sk.Bindings)
		sigs(sk.Revocations)
	}
	return from, until
}
