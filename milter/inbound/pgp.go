package inbound

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// OpenPGP packet tags (RFC 9580 §5).
const (
	tagPKESK      = 1
	tagSignature  = 2
	tagSKESK      = 3
	tagOnePass    = 4
	tagCompressed = 8
	tagSED        = 9 // Symmetrically Encrypted Data: no integrity protection
	tagMarker     = 10
	tagLiteral    = 11
	tagSEIPD      = 18
	tagAEAD       = 20 // draft AEAD Encrypted Data (rnp --aead, gpg 2.3 OCB)
	tagPadding    = 21
)

type span struct{ start, end int }

// scanResult is what the pre-decryption packet scan learned.
type scanResult struct {
	pkesks []span // PKESK packets (whole packet, header included)
	skesks int
	data   span // the encrypted data packet; data.end == 0 if none
	tag    int  // its tag
	digest []byte
}

// scanPackets walks the top-level packet framing of an OpenPGP message
// without parsing any packet body and without any key operation: it counts
// the PKESK packets (stopping as soon as there are more than maxPKESK),
// refuses data without integrity protection (tag 9), checks the sequence
// ESK* followed by one encrypted data packet (RFC 9580 §10.3), and hashes
// the encrypted data packet's tag and body for the replay table.
// A message with no ESK and no encrypted data (signed or literal only) is
// returned with data.end == 0.
func scanPackets(bin []byte, maxPKESK int) (*scanResult, error) {
	sc := &scanResult{}
	other := false // saw a signed/literal packet: not an encrypted message
	for i := 0; i < len(bin); {
		start := i
		h := sha256.New()
		tag, next, err := packetAt(bin, i, h)
		if err != nil {
			return nil, err
		}
		switch {
		case tag == tagPKESK:
			if sc.data.end != 0 || other {
				return nil, malformed("OpenPGP: key packet after the data")
			}
			sc.pkesks = append(sc.pkesks, span{start, next})
			if len(sc.pkesks) > maxPKESK {
				return nil, &LimitError{What: LimitPKESKCount, Limit: int64(maxPKESK)}
			}
		case tag == tagSKESK:
			if sc.data.end != 0 || other {
				return nil, malformed("OpenPGP: key packet after the data")
			}
			sc.skesks++
		case tag == tagSED:
			return nil, wrap(ErrNoIntegrity, "Symmetrically Encrypted Data packet (tag 9)")
		case tag == tagSEIPD || tag == tagAEAD:
			if sc.data.end != 0 || other {
				return nil, malformed("OpenPGP: more than one encrypted data packet")
			}
			sc.data, sc.tag, sc.digest = span{start, next}, tag, h.Sum(nil)
		case tag == tagMarker || tag == tagPadding:
		case tag == tagSignature || tag == tagOnePass || tag == tagCompressed || tag == tagLiteral:
			if sc.data.end != 0 || len(sc.pkesks)+sc.skesks > 0 {
				return nil, malformed("OpenPGP: unexpected packet (tag %d) in an encrypted message", tag)
			}
			other = true
		default:
			return nil, malformed("OpenPGP: unexpected packet (tag %d)", tag)
		}
		i = next
	}
	if sc.data.end == 0 && !other {
		if len(sc.pkesks)+sc.skesks > 0 {
			return nil, malformed("OpenPGP: key packets without encrypted data")
		}
		return nil, malformed("OpenPGP: empty message")
	}
	return sc, nil
}

// packetAt parses the packet header at bin[i] (RFC 9580 §4.2, both
// formats, partial lengths) and returns the tag and the offset after the
// packet. h receives the tag octet and the body with the framing removed
// (only the encrypted data packet's digest is used).
func packetAt(bin []byte, i int, h hash.Hash) (tag int, next int, err error) {
	trunc := malformed("OpenPGP: truncated packet")
	b := bin[i]
	if b&0x80 == 0 {
		return 0, 0, malformed("OpenPGP: not a packet (byte %#02x)", b)
	}
	i++
	if b&0x40 == 0 { // legacy format
		tag = int(b>>2) & 0xf
		var n int
		switch b & 3 {
		case 0:
			if i+1 > len(bin) {
				return 0, 0, trunc
			}
			n, i = int(bin[i]), i+1
		case 1:
			if i+2 > len(bin) {
				return 0, 0, trunc
			}
			n, i = int(binary.BigEndian.Uint16(bin[i:])), i+2
		case 2:
			if i+4 > len(bin) {
				return 0, 0, trunc
			}
			n, i = int(binary.BigEndian.Uint32(bin[i:])), i+4
		case 3:
			n = len(bin) - i
		}
		if n < 0 || n > len(bin)-i {
			return 0, 0, trunc
		}
		h.Write([]byte{byte(tag)})
		h.Write(bin[i : i+n])
		return tag, i + n, nil
	}
	tag = int(b & 0x3f)
	h.Write([]byte{byte(tag)})
	for {
		if i >= len(bin) {
			return 0, 0, trunc
		}
		o := int(bin[i])
		var n int
		partial := false
		switch {
		case o < 192:
			n, i = o, i+1
		case o < 224:
			if i+2 > len(bin) {
				return 0, 0, trunc
			}
			n, i = (o-192)<<8+int(bin[i+1])+192, i+2
		case o == 255:
			if i+5 > len(bin) {
				return 0, 0, trunc
			}
			n, i = int(binary.BigEndian.Uint32(bin[i+1:])), i+5
		default:
			n, i, partial = 1<<(o&0x1f), i+1, true
		}
		if n < 0 || n > len(bin)-i {
			return 0, 0, trunc
		}
		h.Write(bin[i : i+n])
		i += n
		if !partial {
			return tag, i, nil
		}
	}
}

// dearmor decodes one armored block of the given type.
func dearmor(data []byte, typ string) ([]byte, error) {
	blk, err := armor.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, malformed("OpenPGP armor: %v", err)
	}
	if blk.Type != typ {
		return nil, malformed("OpenPGP armor: got %q, want %q", blk.Type, typ)
	}
	bin, err := io.ReadAll(blk.Body)
	if err != nil {
		return nil, malformed("OpenPGP armor: %v", err)
	}
	return bin, nil
}

// sigDigest is the replay digest of one signature: SHA-256 over a label,
// the signature's hashed part as signed (version, type, algorithms and the
// hashed subpackets including the creation time: packet.Signature's
// HashSuffix), its v6 salt and SHA-256 of the data it covers. It leaves
// out what anyone can change without the signer's key (unhashed
// subpackets, packet framing, the encoding of the signature values, ECDSA
// s-malleability), so a replayed signature keeps its digest.
func sigDigest(sig *packet.Signature, contentDigest []byte) []byte {
	h := sha256.New()
	h.Write([]byte("listcrypt signature digest v1\x00"))
	writeField := func(b []byte) {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		h.Write(l[:])
		h.Write(b)
	}
	writeField(sig.HashSuffix)
	writeField(sig.Salt())
	writeField(contentDigest)
	return h.Sum(nil)
}

// contentForm says what the data a signature covers is.
type contentForm int

const (
	formEntity    contentForm = iota // a MIME entity (header and body)
	formText                         // text without a MIME header (inline PGP literal data)
	formCleartext                    // the text of a cleartext signature (RFC 9580 §7), canonical
)

// sigOutcome is the verdict on the signatures of one signed object.
type sigOutcome struct {
	status  SigStatus
	signer  *openpgp.Entity
	time    time.Time
	problem error
	digests [][]byte
	packet  []byte   // the valid signature, serialized (SigValid only)
	irfs    [][]byte // its Intended Recipient fingerprints
	data    []byte   // the bytes the signature covers (SigValid only)
	form    contentForm
}

// evalSignatures reads the verdict from md after its body was read to
// EOF. data is the signed data exactly as verified, form what it is.
// A valid signature also needs its key to be valid at Input.Now (not
// expired, not revoked): go-crypto checks the key at the signature's own,
// sender-chosen creation time only, so a backdated signature by a key
// that expired since would pass.
func (ex *examiner) evalSignatures(md *openpgp.MessageDetails, data []byte, form contentForm) sigOutcome {
	var out sigOutcome
	if !md.IsSigned {
		return out
	}
	// The data's digest depends only on text or binary mode: compute
	// each once, not once per signature.
	var sums [2][]byte
	for _, c := range md.SignatureCandidates {
		if sig := c.CorrespondingSig; sig != nil {
			mode := 0
			if sig.SigType == packet.SigTypeText {
				mode = 1
			}
			if sums[mode] == nil {
				sums[mode] = contentDigest(sig, data)
			}
			out.digests = append(out.digests, sigDigest(sig, sums[mode]))
		}
	}
	if md.SignatureError == nil && md.Signature != nil && md.SignedBy != nil {
		out.status, out.signer, out.time = SigValid, md.SignedBy.Entity, md.Signature.CreationTime
		var b bytes.Buffer
		if md.Signature.Serialize(&b) == nil {
			out.packet = b.Bytes()
		}
		for _, r := range md.Signature.IntendedRecipients {
			out.irfs = append(out.irfs, append([]byte(nil), r.Fingerprint...))
		}
		out.data, out.form = data, form
		if _, ok := md.SignedBy.Entity.SigningKeyById(ex.in.Now, md.SignedBy.PublicKey.KeyId, ex.cfg); !ok {
			out.status, out.signer, out.data = SigBad, nil, nil
			out.problem = ErrKeyNotValid
		}
		return out
	}
	if c := md.SelectedCandidate; c != nil && c.CorrespondingSig != nil {
		out.time = c.CorrespondingSig.CreationTime
	}
	if md.SignatureError == nil || errors.Is(md.SignatureError, pgperrors.ErrUnknownIssuer) {
		// No candidate had a key in Signers.
		out.status = SigUnknownKey
		return out
	}
	out.status = SigBad
	out.problem = sigProblem(md.SignatureError)
	return out
}

// contentDigest is SHA-256 of the data as sig hashes it: for a text
// signature (type 0x01) in canonical text form (RFC 9580 §5.2.4, line
// ends made CRLF the way go-crypto does when verifying), so that every
// variant of the data the signature verifies over has one digest.
func contentDigest(sig *packet.Signature, data []byte) []byte {
	h := sha256.New()
	if sig.SigType == packet.SigTypeText {
		ch := openpgp.NewCanonicalTextHash(h)
		ch.Write(data)
		return ch.Sum(nil)
	}
	h.Write(data)
	return h.Sum(nil)
}

// sigProblem sorts a verification failure: the key's state or a rejected
// algorithm is ErrBadSignature; anything else means the signature does
// not match the data (ErrTampered).
func sigProblem(err error) error {
	switch {
	case errors.Is(err, pgperrors.ErrKeyExpired), errors.Is(err, pgperrors.ErrKeyRevoked),
		errors.Is(err, pgperrors.ErrSignatureOlderThanKey), errors.Is(err, pgperrors.ErrSignatureExpired):
		return wrap(ErrBadSignature, "%v", err)
	}
	var unsupported pgperrors.UnsupportedError
	if errors.As(err, &unsupported) {
		return wrap(ErrBadSignature, "%v", err)
	}
	msg := err.Error()
	for _, s := range []string{"insecure", "no valid signing keys", "unknown critical", "key expired", "revoked", "weak", "not valid"} {
		if strings.Contains(msg, s) {
			return wrap(ErrBadSignature, "%v", err)
		}
	}
	return wrap(ErrTampered, "signature does not verify: %v", err)
}

// fingerprint renders a primary key fingerprint as upper-case hex.
func fingerprint(e *openpgp.Entity) string {
	if e == nil || e.PrimaryKey == nil {
		return ""
	}
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

// readBounded reads r to EOF keeping at most max bytes. It reports
// over=true (and stops) when r holds more than max bytes. The buffer grows
// by doubling but never past max, so it allocates at most about 2*max.
func readBounded(r io.Reader, max int64) (data []byte, over bool, err error) {
	size := int64(32 << 10)
	if size > max {
		size = max
	}
	buf := make([]byte, 0, size)
	for {
		if int64(len(buf)) == int64(cap(buf)) {
			if int64(len(buf)) >= max {
				var probe [1]byte
				for {
					n, err := r.Read(probe[:])
					if n > 0 {
						return buf, true, nil
					}
					if err == io.EOF {
						return buf, false, nil
					}
					if err != nil {
						return buf, false, err
					}
				}
			}
			nc := 2 * int64(cap(buf))
			if nc > max {
				nc = max
			}
			nb := make([]byte, len(buf), nc)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, false, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
}
