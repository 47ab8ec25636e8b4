// Package inbound examines a post sent to a list: it classifies the MIME
// structure (RFC 3156 PGP/MIME, inline PGP, plain), enforces the limits,
// decrypts with the list key, verifies the sender's signature against the
// member keys and computes the digests the replay table is keyed on.
//
// It is pure: bytes in, findings out. No store, no network, no logging, no
// clock other than Input.Now. The plaintext it returns lives only in memory.
//
// The order of work is fixed so that an attacker's input buys no
// decryption it should not: the whole MIME structure is walked (within
// the limits) and judged first; only a post whose single meaningful part
// is encrypted is decrypted; the OpenPGP packets are scanned (PKESK count,
// integrity protection) before any private-key operation.
package inbound

import (
	"errors"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/listcrypt/listcrypt/keyring"
)

// Limits bounds the work one post can cause. Zero fields take the value in
// DefaultLimits.
type Limits struct {
	// MaxMIMEDepth is the deepest multipart nesting walked; the top-level
	// entity is depth 0. The walk stops at the first part deeper than this.
	MaxMIMEDepth int
	// MaxMIMEParts is the most body parts (over all levels) walked.
	MaxMIMEParts int
	// MaxHeaderBytes is the largest header section, top-level or part,
	// in bytes as transmitted.
	MaxHeaderBytes int
	// MaxSignatures is the most signatures one signed object may carry.
	// It is checked as soon as they are known and before the signed data
	// is read: go-crypto hashes the data once per signature.
	MaxSignatures int
	// MaxDecompressed bounds the plaintext (after decryption and
	// decompression); MaxPKESK the key packets one message may carry.
	keyring.Limits
}

// DefaultLimits are used for Limits fields left zero.
var DefaultLimits = Limits{
	MaxMIMEDepth:   32,
	MaxMIMEParts:   1000,
	MaxHeaderBytes: 64 << 10,
	MaxSignatures:  16,
	Limits:         keyring.DefaultLimits,
}

func (l Limits) withDefaults() Limits {
	if l.MaxMIMEDepth <= 0 {
		l.MaxMIMEDepth = DefaultLimits.MaxMIMEDepth
	}
	if l.MaxMIMEParts <= 0 {
		l.MaxMIMEParts = DefaultLimits.MaxMIMEParts
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultLimits.MaxHeaderBytes
	}
	if l.MaxSignatures <= 0 {
		l.MaxSignatures = DefaultLimits.MaxSignatures
	}
	if l.MaxDecompressed <= 0 {
		l.MaxDecompressed = DefaultLimits.MaxDecompressed
	}
	if l.MaxPKESK <= 0 {
		l.MaxPKESK = DefaultLimits.MaxPKESK
	}
	return l
}

// Input is one post to examine.
type Input struct {
	// Message is the whole RFC 5322 message as received, CRLF or LF.
	Message []byte
	// ListKey is the list key with decrypted secret parts. It is used for
	// decryption only, never to verify a signature.
	ListKey *openpgp.Entity
	// AlsoFor holds the keys of the other lists the same transaction
	// addresses. The post is decrypted once: for each of these keys,
	// Result.AlsoFor says whether the post carries a key packet that key
	// opens to the same session key. A post not for ListKey itself is
	// opened with the first of these that fits.
	AlsoFor []*openpgp.Entity
	// OldKeys are retired keys of these lists (list key rotation),
	// for decryption only. A post that a key of OldKeys with InGrace
	// opens counts as for its list (Result.ForList or AlsoFor) like one
	// for the current key. A post whose key packets name only retired
	// keys past their grace period gets ErrOldListKey instead of
	// ErrNotForList; those keys are never used to decrypt.
	OldKeys []OldKey
	// Signers holds the member keys. It is used to verify signatures only,
	// never to decrypt.
	Signers openpgp.KeyRing
	// Now is the examination time: key validity for decryption, and the
	// signer's key must be valid (not expired, not revoked) now as well
	// as when it signed. Signature times are not judged here: see
	// Result.SigTime.
	Now    time.Time
	Limits Limits
}

// openedOld is a retired key that opened the post, and its list's index.
type openedOld struct {
	list int
	key  *openpgp.Entity
}

// OldKey is a retired list key (Input.OldKeys).
type OldKey struct {
	// List is the key's list: 0 for ListKey's, i for AlsoFor[i-1]'s.
	List int
	// Key has its secret parts open when InGrace; otherwise only its
	// key IDs are read.
	Key     *openpgp.Entity
	InGrace bool
}

// Kind is the shape of a post.
type Kind int

const (
	// Unknown: the examination stopped (a limit, a malformed structure)
	// before the shape was known. Problems says why.
	Unknown Kind = iota
	// Plain: no OpenPGP protection (RFC 5322/MIME only).
	Plain
	// PGPMIMEEncrypted: multipart/encrypted, RFC 3156 §4 (maybe signed
	// inside, §6.1 or §6.2).
	PGPMIMEEncrypted
	// PGPMIMESigned: multipart/signed, RFC 3156 §5, not encrypted.
	PGPMIMESigned
	// InlineEncrypted: a text/plain body holding one armored
	// "PGP MESSAGE" that is encrypted (maybe signed inside).
	InlineEncrypted
	// InlineSigned: a text/plain body holding a cleartext signature
	// ("PGP SIGNED MESSAGE") or a signed, unencrypted "PGP MESSAGE".
	InlineSigned
)

var kindNames = [...]string{"unknown", "plain", "pgp-mime-encrypted", "pgp-mime-signed", "inline-encrypted", "inline-signed"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "kind(?)"
	}
	return kindNames[k]
}

// SigStatus is the outcome of signature verification.
type SigStatus int

const (
	// SigNone: no signature on the post (or not examined because of a
	// problem reported earlier).
	SigNone SigStatus = iota
	// SigValid: a signature verifies with a key in Input.Signers.
	SigValid
	// SigBad: a signature by a key in Input.Signers does not verify or
	// cannot be accepted; Problems holds ErrTampered or ErrBadSignature.
	SigBad
	// SigUnknownKey: a well-formed signature by a key not in Input.Signers.
	SigUnknownKey
)

var sigNames = [...]string{"none", "valid", "bad", "unknown-key"}

func (s SigStatus) String() string {
	if s < 0 || int(s) >= len(sigNames) {
		return "sig(?)"
	}
	return sigNames[s]
}

// Result holds the findings about one post.
type Result struct {
	Kind Kind
	// Encrypted: the post carries an encrypted OpenPGP message (Kind is
	// PGPMIMEEncrypted or InlineEncrypted), whether or not it could be
	// decrypted.
	Encrypted bool
	// Integrity: the encrypted data was decrypted and its integrity
	// protection (SEIPDv1 MDC, or AEAD) checked to the end.
	Integrity bool
	Sig       SigStatus
	// Signer is the member key that made the valid signature (SigValid).
	Signer *openpgp.Entity
	// SignerFingerprint is Signer's primary key fingerprint, upper-case hex.
	SignerFingerprint string
	// SignaturePacket is the valid signature (SigValid), serialized: for a
	// post signed inside its encryption (RFC 3156 §6.2) it is a detached
	// signature over Plaintext, so the author's signature can travel on
	// to the members (distribute.keep_sender_signature).
	SignaturePacket []byte
	// SigTime is the signature creation time (SigValid, SigBad,
	// SigUnknownKey). Whether it is too old or in the future is the
	// caller's decision (replay window); it is not judged here.
	SigTime time.Time
	// SigDigests has one replay digest per signature packet on the post
	// (see sigDigest: SHA-256 over the signature's hashed part and the
	// signed data, so that re-encoding the packet does not change it).
	SigDigests [][]byte
	// CiphertextDigest is the replay digest of the encrypted data: SHA-256
	// over the encrypted data packet (tag and body, packet framing
	// removed), so that re-armoring, re-framing or adding/removing PKESK
	// packets does not change it. Nil if the post is not encrypted.
	CiphertextDigest []byte
	// Plaintext is the inner MIME entity after decryption (PGP/MIME), the
	// decrypted text (inline), or the literal content of a signed-only
	// inline PGP MESSAGE. Keep it in memory only. It is NOT what members
	// receive: see Content.
	Plaintext []byte
	// ForList: the post is encrypted to Input.ListKey (a key packet it
	// opens). AlsoFor[i]: the same for Input.AlsoFor[i]. Both false/nil
	// for a post that is not encrypted.
	ForList bool
	AlsoFor []bool
	// oldOpened are the retired keys (Input.OldKeys, in their grace
	// period) that opened the post, with the list each is a key of: a
	// signature naming one of them as intended recipient is bound to
	// that list (Binding), and to no other.
	oldOpened []openedOld
	// listKeys are Input.ListKey and Input.AlsoFor, by list index.
	listKeys []*openpgp.Entity
	// Content is the MIME entity members receive (see content.go). With
	// a valid signature it is exactly the bytes that signature covers (in
	// CRLF form): the signed first part of a multipart/signed (§5, §6.1),
	// the signed literal data of a signed+encrypted post (§6.2), or, for
	// inline PGP, a text/plain header written by listcrypt followed by the
	// signed text. Nothing outside the signed bytes (wrapper headers,
	// preamble, epilogue, sibling parts, armor headers) is in it. Without
	// a valid signature it is the decrypted entity, or the message's own
	// Content-* fields and body.
	Content []byte
	// ContentSigned: Content is the signed bytes of the valid signature
	// (plus, for inline PGP, the text/plain header listcrypt wrote).
	ContentSigned bool
	// KeptSigned is the author's signature in a form members can verify
	// themselves, built from Content and the signature only: a fresh
	// multipart/signed (RFC 3156 §5) around Content, or a regenerated
	// cleartext-signed text/plain entity. Nil when the post's shape cannot
	// carry it (inline PGP MESSAGE) or there is no valid signature.
	KeptSigned []byte
	// Signed holds the header fields found at the top of the signed
	// bytes (nil when the signed bytes have no MIME header of their own).
	Signed *SignedHeader
	// IntendedRecipients are the Intended Recipient Fingerprint
	// subpackets (RFC 9580 §5.2.3.36) of the valid signature.
	IntendedRecipients [][]byte
	// Problems lists what is wrong with the post; empty means clean. See
	// the Err* values, *MalformedError and *LimitError.
	Problems []error
}

// Has reports whether any problem matches target (errors.Is).
func (r *Result) Has(target error) bool {
	for _, p := range r.Problems {
		if errors.Is(p, target) {
			return true
		}
	}
	return false
}

func (r *Result) addProblem(err error) {
	if err != nil {
		r.Problems = append(r.Problems, err)
	}
}

// Examine examines one post. The error is for internal failures only
// (a missing list key); everything wrong with the message itself is in
// Result.Problems.
func Examine(in Input) (*Result, error) {
	if in.ListKey == nil {
		return nil, errors.New("inbound: no list key")
	}
	if in.ListKey.PrivateKey == nil {
		return nil, errors.New("inbound: list key has no secret part")
	}
	ex := &examiner{
		in:  in,
		lim: in.Limits.withDefaults(),
		res: &Result{},
	}
	ex.run()
	return ex.res, nil
}
