package keyring

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Reasons a member key is refused. ParseMemberKey and OnlyAddress return a
// *KeyRefusedError that wraps one of these, so callers test with
// errors.Is(err, ErrKeyExpired) and show the subscriber err.Error().
var (
	ErrKeyTooLarge        = errors.New("key too large")
	ErrTooManySignatures  = errors.New("key carries too many signatures")
	ErrNoKey              = errors.New("no OpenPGP public key found")
	ErrSeveralKeys        = errors.New("more than one key supplied")
	ErrSecretKey          = errors.New("secret key material supplied")
	ErrMalformedKey       = errors.New("malformed OpenPGP key")
	ErrUnsupportedKey     = errors.New("unsupported OpenPGP key")
	ErrWeakRSA            = errors.New("RSA key shorter than 2048 bits")
	ErrObsoleteAlgorithm  = errors.New("obsolete public-key algorithm")
	ErrWeakSelfSignatures = errors.New("self-signatures use only SHA-1 or weaker")
	ErrKeyRevoked         = errors.New("key revoked")
	ErrKeyExpired         = errors.New("key expired")
	ErrNoValidUserID      = errors.New("no valid user ID with a mail address")
	ErrNoEncryptionKey    = errors.New("no valid encryption-capable key")
	ErrAddressNotInKey    = errors.New("no user ID for the address")
)

// KeyRefusedError says why a member key was refused, in a sentence the
// subscriber can act on (Error), and which reason it is (Reason, matched
// by errors.Is).
type KeyRefusedError struct {
	Reason error  // one of the Err* reasons above
	Text   string // sentence for the subscriber
}

func (e *KeyRefusedError) Error() string { return e.Text }
func (e *KeyRefusedError) Unwrap() error { return e.Reason }

func refuse(reason error, format string, args ...any) error {
	return &KeyRefusedError{Reason: reason, Text: fmt.Sprintf(format, args...)}
}

// MemberKey is a subscriber's public key, validated and pruned.
type MemberKey struct {
	// Entity is the pruned key (what Binary holds). go-crypto caches
	// signature validity on it as evaluated at the parse time; to use the
	// key at another time, re-read Binary with ParseStoredKey.
	Entity *openpgp.Entity
	// Fingerprint is the primary key's fingerprint, upper-case hex.
	Fingerprint string
	// KeyIDs are the key IDs of the primary key and every kept subkey.
	KeyIDs []uint64
	// Addresses are the lower-cased mail addresses of the kept user IDs.
	Addresses []string
	// Binary is the re-serialized minimal transferable public key: primary
	// key, kept user IDs with their latest self-signature, kept subkeys
	// with their latest binding signature. No third-party certifications.
	Binary []byte
}

// maxKeyBits is the largest RSA, DSA or ElGamal key accepted (GnuPG's own
// maximum); the cost of a signature check grows with the cube of it.
const maxKeyBits = 16384

// weakHashes are refused in key self-signatures (and, through
// PacketConfig, ignored when go-crypto validates keys).
var weakHashes = map[crypto.Hash]bool{crypto.MD5: true, crypto.RIPEMD160: true, crypto.SHA1: true}

// ParseMemberKey reads one subscriber public key (ASCII-armored or binary),
// checks it against l and evaluates it at now: it must be one public key,
// not revoked or expired, with a strong algorithm, at least one user ID
// with a mail address, and an encryption-capable (sub)key. The result is
// pruned to what listcrypt needs (see MemberKey.Binary). Refusals are
// *KeyRefusedError values wrapping an Err* reason.
func ParseMemberKey(data []byte, l Limits, now time.Time) (*MemberKey, error) {
	raw, err := prescanKey(data, l, true)
	if err != nil {
		return nil, err
	}
	cfg := PacketConfig(l, func() time.Time { return now })
	e, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(raw)))
	if err != nil {
		var unsupported pgperrors.UnsupportedError
		if errors.As(err, &unsupported) {
			return nil, refuse(ErrUnsupportedKey, "Your key uses an algorithm or format listcrypt does not support (%s). Please send an Ed25519/Curve25519 or RSA (3072 bits or more) key.", err)
		}
		if strings.Contains(err.Error(), "without any identities") {
			return nil, refuse(ErrNoValidUserID, "Your key has no user ID signed by the key itself. Add one (gpg --quick-add-uid YOUR-FINGERPRINT 'Your Name <you@example.org>') and send the key again.")
		}
		return nil, refuse(ErrMalformedKey, "Your key could not be read (%s). Please export it again, for example with: gpg --armor --export YOUR-ADDRESS", err)
	}
	if err := checkMemberKey(e, now, cfg); err != nil {
		return nil, err
	}
	pruneEntity(e, now, cfg)
	mk, err := newMemberKey(e, now, cfg)
	if err != nil {
		return nil, err
	}
	return mk, nil
}

// prescanKey enforces the limits before go-crypto builds an entity: the
// input size, the number of signature packets, exactly one key, and no
// secret key material. It returns the binary key (dearmored).
func prescanKey(data []byte, l Limits, allowArmor bool) ([]byte, error) {
	maxSize := l.MaxKeySize
	if maxSize <= 0 {
		maxSize = DefaultLimits.MaxKeySize
	}
	maxSigs := l.MaxKeySignatures
	if maxSigs <= 0 {
		maxSigs = DefaultLimits.MaxKeySignatures
	}
	if int64(len(data)) > maxSize {
		return nil, refuse(ErrKeyTooLarge, "Your key is %d KiB, more than the %d KiB this list accepts. Please send a minimal export of your key: gpg --armor --export-options export-minimal --export YOUR-ADDRESS", (len(data)+1023)/1024, maxSize/1024)
	}
	raw := data
	if allowArmor && isArmored(data) {
		if n := bytes.Count(data, []byte("-----BEGIN PGP ")); n > 1 {
			if bytes.Contains(data, []byte("-----BEGIN PGP PRIVATE KEY BLOCK")) {
				return nil, refuseSecret()
			}
			return nil, refuse(ErrSeveralKeys, "You sent %d OpenPGP blocks; please send exactly one public key.", n)
		}
		block, err := armor.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, refuse(ErrMalformedKey, "Your key's ASCII armor could not be read (%s). Please export it again, for example with: gpg --armor --export YOUR-ADDRESS", err)
		}
		switch block.Type {
		case openpgp.PublicKeyType:
		case openpgp.PrivateKeyType:
			return nil, refuseSecret()
		default:
			return nil, refuse(ErrNoKey, "You sent a %q block, not a public key. Please send your public key, for example with: gpg --armor --export YOUR-ADDRESS", block.Type)
		}
		raw, err = io.ReadAll(io.LimitReader(block.Body, maxSize+1))
		if err != nil {
			return nil, refuse(ErrMalformedKey, "Your key's ASCII armor could not be read (%s). Please export it again, for example with: gpg --armor --export YOUR-ADDRESS", err)
		}
		if int64(len(raw)) > maxSize {
			return nil, refuse(ErrKeyTooLarge, "Your key is more than the %d KiB this list accepts. Please send a minimal export of your key: gpg --armor --export-options export-minimal --export YOUR-ADDRESS", maxSize/1024)
		}
	}
	var keys, sigs int
	r := packet.NewReader(bytes.NewReader(raw))
	for {
		p, err := r.NextWithUnsupported()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, refuse(ErrMalformedKey, "Your key could not be read (%s). Please export it again, for example with: gpg --armor --export YOUR-ADDRESS", err)
		}
		// An unsupported packet is only partly parsed: look at its type,
		// never at its fields.
		complete := true
		if u, ok := p.(*packet.UnsupportedPacket); ok {
			p, complete = u.IncompletePacket, false
		}
		switch p := p.(type) {
		case *packet.Signature:
			sigs++
			if sigs > maxSigs {
				return nil, refuse(ErrTooManySignatures, "Your key carries more than %d signatures (certifications by other keys, possibly a flooding attack). Please send a minimal export of your key: gpg --armor --export-options export-minimal --export YOUR-ADDRESS", maxSigs)
			}
		case *packet.PrivateKey:
			return nil, refuseSecret()
		case *packet.PublicKey:
			if !p.IsSubkey {
				keys++
			}
			// Verifying with a huge RSA (or DSA) key costs ~200 ms per
			// signature at 65535 bits: refuse before any verification.
			if !complete {
				continue
			}
			if bits, err := p.BitLength(); err == nil && bits > maxKeyBits {
				return nil, refuse(ErrUnsupportedKey, "Your key (or one of its subkeys) has %d bits; listcrypt accepts at most %d. Please send an Ed25519/Curve25519 or RSA (3072 or 4096 bits) key.", bits, maxKeyBits)
			}
		}
	}
	switch {
	case keys == 0:
		return nil, refuse(ErrNoKey, "No OpenPGP public key was found in what you sent. Please send your public key, for example with: gpg --armor --export YOUR-ADDRESS")
	case keys > 1:
		return nil, refuse(ErrSeveralKeys, "You sent %d keys; please send exactly one public key.", keys)
	}
	return raw, nil
}

func refuseSecret() error {
	return refuse(ErrSecretKey, "You sent a SECRET key. listcrypt did not keep it, but anyone who saw this mail may have it: consider the key compromised, revoke it, and send only your public key (gpg --armor --export YOUR-ADDRESS).")
}

// isArmored tells armor from binary: a binary key starts with a packet
// tag, whose high bit is set; armor (and any text around it) does not.
func isArmored(data []byte) bool {
	return len(data) > 0 && data[0]&0x80 == 0 && bytes.Contains(data, []byte("-----BEGIN PGP "))
}

// checkMemberKey refuses keys that are revoked, expired, weak, or unusable
// for encryption at now.
func checkMemberKey(e *openpgp.Entity, now time.Time, cfg *packet.Config) error {
	fpr := Fingerprint(e)
	if err := checkAlgorithm(e.PrimaryKey, cfg, "Your key "+fpr); err != nil {
		return err
	}
	if e.Revoked(now) {
		return refuse(ErrKeyRevoked, "Your key %s has been revoked. Please send a new key.", fpr)
	}
	primarySig, err := e.VerifyPrimaryKey(now, cfg)
	switch {
	case errors.Is(err, pgperrors.ErrKeyExpired):
		when := "already"
		if primarySig != nil && primarySig.KeyLifetimeSecs != nil && *primarySig.KeyLifetimeSecs != 0 {
			when = "on " + e.PrimaryKey.CreationTime.Add(time.Duration(*primarySig.KeyLifetimeSecs)*time.Second).UTC().Format("2006-01-02")
		}
		return refuse(ErrKeyExpired, "Your key %s expired %s. Extend its expiry date (gpg --quick-set-expire %s 1y '*' and gpg --quick-set-expire %s 1y) and send it again.", fpr, when, fpr, fpr)
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return refuse(ErrKeyRevoked, "Your key %s has been revoked. Please send a new key.", fpr)
	case err != nil:
		if onlyWeakSelfSignatures(e) {
			return refuse(ErrWeakSelfSignatures, "Your key %s is bound to its user IDs only by SHA-1 signatures, which can be forged. Renew the self-signatures with SHA-256 or better (for example: gpg --cert-digest-algo SHA256 --quick-set-expire %s never) and send the key again.", fpr, fpr)
		}
		return refuse(ErrNoValidUserID, "Your key %s has no user ID with a valid self-signature at this time (%s). Please check the key (and your computer's clock) and send it again.", fpr, err)
	}
	if _, err := e.EncryptionKeyWithError(now, cfg); err != nil {
		return explainNoEncryptionKey(e, now, cfg, fpr, err)
	}
	return nil
}

// checkAlgorithm refuses obsolete algorithms and short RSA keys; what
// names the key in the message.
func checkAlgorithm(pk *packet.PublicKey, cfg *packet.Config, what string) error {
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoDSA, packet.PubKeyAlgoElGamal:
		name := "DSA"
		if pk.PubKeyAlgo == packet.PubKeyAlgoElGamal {
			name = "ElGamal"
		}
		return refuse(ErrObsoleteAlgorithm, "%s uses %s, which is obsolete and no longer accepted. Please create a new key (Ed25519/Curve25519, or RSA 3072) and send that.", what, name)
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoRSASignOnly:
		bits, err := pk.BitLength()
		// go-crypto's floor is 2047: GnuPG once made 2047-bit "2048" keys.
		if err != nil || bits < cfg.MinimumRSABits() {
			return refuse(ErrWeakRSA, "%s is RSA with %d bits; at least 2048 bits are required. Please create a new key (Ed25519/Curve25519, or RSA 3072) and send that.", what, bits)
		}
	}
	if cfg.RejectPublicKeyAlgorithm(pk.PubKeyAlgo) {
		return refuse(ErrObsoleteAlgorithm, "%s uses public-key algorithm %d, which is not accepted. Please create a new key (Ed25519/Curve25519, or RSA 3072) and send that.", what, pk.PubKeyAlgo)
	}
	if curve, err := pk.Curve(); err == nil && cfg.RejectCurve(curve) {
		return refuse(ErrObsoleteAlgorithm, "%s uses the elliptic curve %s, which is not accepted. Please create a new key (Ed25519/Curve25519, or RSA 3072) and send that.", what, curve)
	}
	return nil
}

// onlyWeakSelfSignatures reports whether e has self-certifications or
// direct-key signatures but all of them use a weak hash.
func onlyWeakSelfSignatures(e *openpgp.Entity) bool {
	n := 0
	for _, id := range e.Identities {
		for _, s := range id.SelfCertifications {
			n++
			if !weakHashes[s.Packet.Hash] {
				return false
			}
		}
	}
	for _, s := range e.DirectSignatures {
		n++
		if !weakHashes[s.Packet.Hash] {
			return false
		}
	}
	return n > 0
}

// explainNoEncryptionKey turns go-crypto's encryption-key selection error
// into a reason the subscriber can act on.
func explainNoEncryptionKey(e *openpgp.Entity, now time.Time, cfg *packet.Config, fpr string, selErr error) error {
	var expired, weakHash bool
	var algErr error
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		if !sk.PublicKey.PubKeyAlgo.CanEncrypt() {
			continue
		}
		what := fmt.Sprintf("The encryption subkey %X of your key %s", sk.PublicKey.KeyId, fpr)
		if err := checkAlgorithm(sk.PublicKey, cfg, what); err != nil && algErr == nil {
			algErr = err
		}
		if _, err := sk.Verify(now, cfg); errors.Is(err, pgperrors.ErrKeyExpired) {
			expired = true
		}
		allWeak := len(sk.Bindings) > 0
		for _, b := range sk.Bindings {
			if !weakHashes[b.Packet.Hash] {
				allWeak = false
			}
		}
		weakHash = weakHash || allWeak
	}
	switch {
	case algErr != nil:
		return algErr
	case expired:
		return refuse(ErrKeyExpired, "The encryption subkey of your key %s has expired. Extend its expiry date (gpg --quick-set-expire %s 1y '*') and send the key again.", fpr, fpr)
	case weakHash:
		return refuse(ErrWeakSelfSignatures, "The encryption subkey of your key %s is bound only by a SHA-1 signature, which can be forged. Renew the binding with SHA-256 or better and send the key again.", fpr)
	}
	return refuse(ErrNoEncryptionKey, "Your key %s has no valid encryption subkey, so the list cannot encrypt to you. Add one (gpg --quick-add-key %s cv25519 encr) and send the key again.", fpr, fpr)
}

// pruneEntity drops everything listcrypt does not need from a validated e:
// user IDs without a valid self-certification at now or without a mail
// address, third-party certifications, superseded self-signatures, key and
// subkey revocations (a kept key or subkey is not revoked at now), and
// subkeys that are not valid at now.
func pruneEntity(e *openpgp.Entity, now time.Time, cfg *packet.Config) {
	for name, id := range e.Identities {
		sig, err := id.Verify(now, cfg)
		if err != nil || normalizeEmail(id.UserId.Email) == "" {
			delete(e.Identities, name)
			continue
		}
		id.SelfCertifications = keepSig(id.SelfCertifications, sig)
		id.OtherCertifications = nil
		id.Revocations = nil
	}
	e.Revocations = nil
	if len(e.DirectSignatures) > 0 {
		// Verified against the primary key, so a self-signature; it may
		// carry the key's expiry and must stay.
		if sig, err := e.LatestValidDirectSignature(now, cfg); err == nil {
			e.DirectSignatures = keepSig(e.DirectSignatures, sig)
		} else {
			e.DirectSignatures = nil
		}
	}
	kept := e.Subkeys[:0]
	for _, sk := range e.Subkeys {
		sig, err := sk.Verify(now, cfg)
		if err != nil || checkAlgorithm(sk.PublicKey, cfg, "") != nil {
			continue
		}
		sk.Bindings = keepSig(sk.Bindings, sig)
		sk.Revocations = nil
		kept = append(kept, sk)
	}
	e.Subkeys = kept
}

func keepSig(sigs []*packet.VerifiableSignature, keep *packet.Signature) []*packet.VerifiableSignature {
	for _, s := range sigs {
		if s.Packet == keep {
			return []*packet.VerifiableSignature{s}
		}
	}
	return nil
}

// newMemberKey fills a MemberKey from a pruned entity and re-checks that
// what will be stored still parses and is usable at now.
func newMemberKey(e *openpgp.Entity, now time.Time, cfg *packet.Config) (*MemberKey, error) {
	fpr := Fingerprint(e)
	mk := &MemberKey{Entity: e, Fingerprint: fpr}
	seen := map[string]bool{}
	for _, id := range e.Identities {
		a := normalizeEmail(id.UserId.Email)
		if !seen[a] {
			seen[a] = true
			mk.Addresses = append(mk.Addresses, a)
		}
	}
	if len(mk.Addresses) == 0 {
		return nil, refuse(ErrNoValidUserID, "Your key %s has no valid user ID with a mail address. Add one (gpg --quick-add-uid %s 'Your Name <you@example.org>') and send the key again.", fpr, fpr)
	}
	slices.Sort(mk.Addresses)
	mk.KeyIDs = append(mk.KeyIDs, e.PrimaryKey.KeyId)
	for _, sk := range e.Subkeys {
		mk.KeyIDs = append(mk.KeyIDs, sk.PublicKey.KeyId)
	}
	var b bytes.Buffer
	if err := serializePublic(&b, e); err != nil {
		return nil, fmt.Errorf("keyring: serialize member key %s: %w", fpr, err)
	}
	mk.Binary = b.Bytes()
	// Belt and braces: the minimal key must stand on its own.
	check, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(mk.Binary)))
	if err != nil {
		return nil, fmt.Errorf("keyring: re-read pruned member key %s: %w", fpr, err)
	}
	if _, err := check.EncryptionKeyWithError(now, cfg); err != nil {
		return nil, fmt.Errorf("keyring: pruned member key %s unusable: %w", fpr, err)
	}
	return mk, nil
}

// OnlyAddress keeps only the user IDs whose mail address is addr (compared
// lower-cased) and rebuilds Addresses and Binary. It refuses (wrapping
// ErrAddressNotInKey) when no user ID is for addr, leaving mk unchanged.
func (mk *MemberKey) OnlyAddress(addr string) error {
	want := normalizeEmail(addr)
	keep := map[string]bool{}
	for name, id := range mk.Entity.Identities {
		if want != "" && normalizeEmail(id.UserId.Email) == want {
			keep[name] = true
		}
	}
	if len(keep) == 0 {
		return refuse(ErrAddressNotInKey, "Your key %s has no user ID for %s (it has: %s). Add one (gpg --quick-add-uid %s 'Your Name <%s>') and send the key again.", mk.Fingerprint, want, strings.Join(mk.Addresses, ", "), mk.Fingerprint, want)
	}
	for name := range mk.Entity.Identities {
		if !keep[name] {
			delete(mk.Entity.Identities, name)
		}
	}
	var b bytes.Buffer
	if err := serializePublic(&b, mk.Entity); err != nil {
		return fmt.Errorf("keyring: serialize member key %s: %w", mk.Fingerprint, err)
	}
	mk.Binary = b.Bytes()
	mk.Addresses = []string{want}
	return nil
}

// ParseStoredKey reads a member key that ParseMemberKey validated earlier
// and the store kept (binary, as MemberKey.Binary). It is still checked
// against l (size, signature count, one public key, no secret parts), but
// not evaluated at a time: the caller's verification does that.
func ParseStoredKey(binary []byte, l Limits) (*openpgp.Entity, error) {
	raw, err := prescanKey(binary, l, false)
	if err != nil {
		return nil, fmt.Errorf("keyring: stored key: %w", err)
	}
	e, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, fmt.Errorf("keyring: stored key: %w", err)
	}
	return e, nil
}

func normalizeEmail(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if at := strings.LastIndexByte(s, '@'); at <= 0 || at == len(s)-1 {
		return ""
	}
	return s
}

// RegisteredKey is a member's key as the store holds it: the address it
// is registered for, its fingerprint, and the parsed key.
type RegisteredKey struct {
	Address     string
	Fingerprint string
	Entity      *openpgp.Entity
}

// MemberKeyRing is the set of registered member keys, for verifying the
// signature on a post (it implements go-crypto v2's openpgp.KeyRing) and
// for finding which member addresses registered the signing key. It is
// immutable after it is made and safe for concurrent use.
//
// The member cache's rings hold stored keys (StoredKey): a key is parsed
// from its bytes when a signature names it, afresh for each lookup (a
// post asks for one or two), and no parsed key stays resident (issue 9).
type MemberKeyRing struct {
	keys []*StoredKey // one per fingerprint
	// byKeyID maps primary and subkey IDs to the first key with that ID;
	// moreByKeyID holds the others (key IDs rarely collide). One entry
	// each keeps the ring small at 10,000 members (issue 9).
	byKeyID     map[uint64]*StoredKey
	moreByKeyID map[uint64][]*StoredKey
	// addresses maps a fingerprint to the first address that registered
	// it; moreAddresses to the others.
	addresses     map[string]string
	moreAddresses map[string][]string
}

var _ openpgp.KeyRing = (*MemberKeyRing)(nil)

// ringEntry is one registered key for newRing: the address, the key and
// the IDs of its primary key and subkeys.
type ringEntry struct {
	address string
	key     *StoredKey
	keyIDs  []uint64
}

// NewMemberKeyRing builds a ring from registered keys. Several addresses
// may register the same key; entries without an entity are skipped.
func NewMemberKeyRing(members []RegisteredKey) *MemberKeyRing {
	entries := make([]ringEntry, 0, len(members))
	for _, m := range members {
		if m.Entity == nil || m.Entity.PrimaryKey == nil {
			continue
		}
		ids := []uint64{m.Entity.PrimaryKey.KeyId}
		for _, sk := range m.Entity.Subkeys {
			ids = append(ids, sk.PublicKey.KeyId)
		}
		entries = append(entries, ringEntry{address: m.Address, key: EntityKey(m.Entity), keyIDs: ids})
	}
	return newRing(entries)
}

// newRing builds a ring from keys with their key IDs.
func newRing(entries []ringEntry) *MemberKeyRing {
	r := &MemberKeyRing{
		byKeyID:   make(map[uint64]*StoredKey, 2*len(entries)),
		addresses: make(map[string]string, len(entries)),
	}
	addID := func(id uint64, k *StoredKey) {
		first, ok := r.byKeyID[id]
		if !ok {
			r.byKeyID[id] = k
			return
		}
		if first == k || slices.Contains(r.moreByKeyID[id], k) {
			return
		}
		if r.moreByKeyID == nil {
			r.moreByKeyID = map[uint64][]*StoredKey{}
		}
		r.moreByKeyID[id] = append(r.moreByKeyID[id], k)
	}
	for _, m := range entries {
		fpr := m.key.fingerprint
		addr := strings.ToLower(strings.TrimSpace(m.address))
		first, seen := r.addresses[fpr]
		if !seen {
			r.keys = append(r.keys, m.key)
			for _, id := range m.keyIDs {
				addID(id, m.key)
			}
			r.addresses[fpr] = addr
			continue
		}
		if addr == "" || addr == first || slices.Contains(r.moreAddresses[fpr], addr) {
			continue
		}
		if first == "" {
			r.addresses[fpr] = addr
			continue
		}
		if r.moreAddresses == nil {
			r.moreAddresses = map[string][]string{}
		}
		r.moreAddresses[fpr] = append(r.moreAddresses[fpr], addr)
	}
	return r
}

// byID returns the keys with a primary key or subkey with key ID id. Id 0
// (a signature that names no key) gives the ring's first key only:
// go-crypto tries the first key it is given and no other, and parsing
// every member's key for it would let any sender make the milter parse
// the whole list.
func (r *MemberKeyRing) byID(id uint64) []*StoredKey {
	if id == 0 {
		if len(r.keys) == 0 {
			return nil
		}
		return r.keys[:1]
	}
	k, ok := r.byKeyID[id]
	if !ok {
		return nil
	}
	return append([]*StoredKey{k}, r.moreByKeyID[id]...)
}

// KeysById implements openpgp.KeyRing: the primary keys and subkeys with
// key ID id (for id 0, those of the first key: see byID). Like
// openpgp.EntityList it does not validate the keys; go-crypto's
// verification does.
func (r *MemberKeyRing) KeysById(id uint64) []openpgp.Key {
	return openpgp.EntityList(r.EntitiesById(id)).KeysById(id)
}

// EntitiesById implements openpgp.KeyRing: the keys that contain a primary
// key or subkey with key ID id (for id 0, the first key: see byID), each
// parsed afresh. A stored key that no longer parses is left out (it was
// checked when it was registered).
func (r *MemberKeyRing) EntitiesById(id uint64) []*openpgp.Entity {
	var out []*openpgp.Entity
	for _, k := range r.byID(id) {
		if e, err := k.Entity(); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// AddressesOf returns the member addresses (lower-cased) that registered
// the key with fingerprint fpr (hex, any case, spaces ignored).
func (r *MemberKeyRing) AddressesOf(fpr string) []string {
	fpr = strings.ToUpper(strings.ReplaceAll(fpr, " ", ""))
	first := r.addresses[fpr]
	if first == "" {
		return nil
	}
	return append([]string{first}, r.moreAddresses[fpr]...)
}
