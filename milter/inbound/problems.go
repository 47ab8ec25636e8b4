package inbound

import (
	"errors"
	"fmt"
)

// The problems Examine reports in Result.Problems. Each is matchable with
// errors.Is (sentinels) or errors.As (types); the text is written for the
// sender of the post, who reads it in the SMTP reply or a bounce. Wrapped
// sentinels carry a detail after a colon.
var (
	// ErrMixed: the message mixes an encrypted (or signed) part with parts
	// outside the encryption (or signature), at any MIME level, or an inline
	// armor block sits in other text. Nothing is decrypted when this is
	// reported: an outsider who wraps a captured list ciphertext in their
	// own message must not get it decrypted and redistributed.
	ErrMixed = errors.New("the message mixes protected and unprotected parts; send the whole post as one encrypted (or signed) PGP/MIME message, without added text or attachments outside it")

	// ErrNoIntegrity: the encrypted data has no integrity protection
	// (Symmetrically Encrypted Data packet, tag 9, without MDC). Detected
	// by a packet scan before any decryption; such data is never decrypted.
	ErrNoIntegrity = errors.New("the message is encrypted without integrity protection (no MDC); use a current OpenPGP program and do not use legacy (RFC 2440) mode")

	// ErrNotForList: the message is not encrypted to the list key (no PKESK
	// the list key can open), or only to a passphrase.
	ErrNotForList = errors.New("the message is not encrypted to the list's key; fetch the current list key and encrypt to it")
	// ErrOldListKey: the message is encrypted only to a list key retired
	// longer ago than the grace period ([keys] old_key_grace).
	ErrOldListKey = errors.New("the message is encrypted to a retired list key; fetch the current list key and encrypt to it")

	// ErrTampered: the encrypted data failed its integrity check (MDC
	// mismatch, AEAD tag failure, damaged ciphertext) or a signature does
	// not verify over the data it covers. Integrity failures of protected
	// data are reported here, not as ErrNoIntegrity: the sender used
	// integrity protection, the data was changed on the way.
	ErrTampered = errors.New("the message was modified after it was encrypted or signed (integrity or signature check failed); send it again unmodified")

	// ErrBadSignature: the signature is well formed and the signer's key is
	// known, but it cannot be accepted for a reason other than tampering:
	// the key was expired or revoked when signing, the signing key is not
	// valid for signing, a rejected (weak) algorithm, or the signature names
	// other intended recipients (a signed message re-encrypted to the list).
	ErrBadSignature = errors.New("the signature cannot be accepted")

	// ErrKeyNotValid: the signature verifies, but the signer's key is not
	// valid now (expired or revoked since it signed); also matches
	// ErrBadSignature. go-crypto checks a key at the signature's own,
	// sender-chosen time only: a backdated signature must not outlive
	// the key.
	ErrKeyNotValid = fmt.Errorf("%w: the signing key is expired, revoked or not valid for signing now", ErrBadSignature)

	// ErrMalformed matches every *MalformedError.
	ErrMalformed = errors.New("malformed message")

	// ErrLimit matches every *LimitError.
	ErrLimit = errors.New("message exceeds a limit")
)

// MalformedError: the message (or the decrypted entity) violates MIME,
// RFC 3156 or OpenPGP structure in a way that stops the examination.
type MalformedError struct {
	Detail string
}

func (e *MalformedError) Error() string {
	return "malformed message: " + e.Detail
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }

// Limit names used in LimitError.What.
const (
	LimitMIMEDepth        = "mime-depth"
	LimitMIMEParts        = "mime-parts"
	LimitHeaderSize       = "header-size"
	LimitDecompressedSize = "decompressed-size"
	LimitPKESKCount       = "pkesk-count"
	LimitSignatures       = "signatures"
)

// LimitError: the message exceeds one of Limits; the examination stopped
// there and did no further work.
type LimitError struct {
	What  string // one of the Limit* constants
	Limit int64
}

func (e *LimitError) Error() string {
	var what string
	switch e.What {
	case LimitMIMEDepth:
		what = "MIME parts are nested more than %d levels deep"
	case LimitMIMEParts:
		what = "the message has more than %d MIME parts"
	case LimitHeaderSize:
		what = "a header section is larger than %d bytes"
	case LimitDecompressedSize:
		what = "the content expands to more than %d bytes"
	case LimitPKESKCount:
		what = "the message is encrypted to more than %d keys"
	case LimitSignatures:
		what = "the message carries more than %d signatures"
	default:
		what = e.What + " over %d"
	}
	return "message too large or complex: " + fmt.Sprintf(what, e.Limit)
}

// Is makes errors.Is(err, ErrLimit) true.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

func malformed(format string, args ...any) error {
	return &MalformedError{Detail: fmt.Sprintf(format, args...)}
}

func wrap(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
