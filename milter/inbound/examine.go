package inbound

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/listcrypt/listcrypt/keyring"
)

// decompressHeadroom is what go-crypto's decompression limit allows above
// Limits.MaxDecompressed (see verifyConfig).
const decompressHeadroom = 64 << 10

type examiner struct {
	in      Input
	lim     Limits
	res     *Result
	w       *walker
	signers openpgp.KeyRing
	cfg     *packet.Config // decryption: Input.Now as the clock
	vcfg    *packet.Config // verification: see verifyConfig
	valid   *sigOutcome    // the signature Result.Sig == SigValid rests on
}

// verifyConfig is the packet.Config for signature verification. Its clock
// returns the zero time, which makes go-crypto skip the check of the
// message signature's own creation/expiry time against "now" (a signature
// a minute in the future would otherwise fail as expired): the replay
// window on Result.SigTime is the caller's decision. Key validity is still
// checked at the signature's creation time. Intended recipients are
// checked here against the list key (evalSignatures), not by go-crypto,
// because decryption and verification are separate steps.
//
// Its decompression limit sits a little above MaxDecompressed (room for
// the literal data header and trailing signature packets): go-crypto
// reports its own limit inside unsigned data as a generic parsing error,
// so the plaintext limit is enforced by counting (readBounded), which
// gives a clear LimitError.
func verifyConfig(l Limits) *packet.Config {
	kl := l.Limits
	kl.MaxDecompressed += decompressHeadroom
	c := keyring.PacketConfig(kl, func() time.Time { return time.Time{} })
	no := false
	c.CheckIntendedRecipients = &no
	return c
}

func (ex *examiner) run() {
	now := ex.in.Now
	ex.cfg = keyring.PacketConfig(ex.lim.Limits, func() time.Time { return now })
	ex.vcfg = verifyConfig(ex.lim)
	ex.signers = ex.in.Signers
	if ex.signers == nil {
		ex.signers = openpgp.EntityList(nil)
	}
	ex.w = &walker{lim: ex.lim}
	t, _, err := ex.w.walkMessage(ex.in.Message, 0)
	if err != nil {
		ex.res.addProblem(err)
		return
	}
	ex.decideOuter(t)
	ex.buildContent()
}

func countKinds(t *tree) (enc []leaf, clear []leaf, meaningful int) {
	for _, l := range t.leaves {
		switch l.kind {
		case leafEncMIME, leafInlineMsg:
			enc = append(enc, l)
		case leafInlineSigned:
			clear = append(clear, l)
		}
		if l.kind != leafEmpty {
			meaningful++
		}
	}
	return enc, clear, meaningful
}

// decideOuter judges the structure of the received message before any
// OpenPGP work: one encrypted part and nothing else meaningful (RFC 3156
// §4 or inline), one signed part covering everything, or plain.
func (ex *examiner) decideOuter(t *tree) {
	res := ex.res
	enc, clear, meaningful := countKinds(t)
	switch {
	case len(enc) > 0:
		l := enc[0]
		res.Kind, res.Encrypted = PGPMIMEEncrypted, true
		if l.kind == leafInlineMsg {
			res.Kind = InlineEncrypted
		}
		switch {
		case len(enc) > 1:
			res.addProblem(wrap(ErrMixed, "the message has %d encrypted parts", len(enc)))
		case meaningful > 1:
			res.addProblem(wrap(ErrMixed, "the encrypted part comes with %d unencrypted parts", meaningful-1))
		case l.mixedText:
			res.addProblem(wrap(ErrMixed, "the armored PGP message is surrounded by other text"))
		case l.signed != nil:
			res.addProblem(malformed("an encrypted part inside multipart/signed; sign inside the encryption (RFC 3156 §6)"))
		default:
			ex.openMessage(l)
		}
	case len(t.signed) > 0:
		res.Kind = PGPMIMESigned
		if len(t.signed) > 1 {
			res.addProblem(wrap(ErrMixed, "the message has %d separately signed parts", len(t.signed)))
			return
		}
		for _, l := range t.leaves {
			if l.kind != leafEmpty && l.signed == nil {
				res.addProblem(wrap(ErrMixed, "a %s part is outside the signed part", l.ctype))
				return
			}
		}
		ex.apply(ex.verifyDetached(t.signed[0].signed, t.signed[0].signature))
	case len(clear) > 0:
		res.Kind = InlineSigned
		switch {
		case meaningful > 1:
			res.addProblem(wrap(ErrMixed, "the signed text comes with %d unsigned parts", meaningful-1))
		case clear[0].mixedText:
			res.addProblem(wrap(ErrMixed, "the signed text is surrounded by unsigned text"))
		default:
			ex.apply(ex.verifyClearsigned(clear[0].data))
		}
	default:
		res.Kind = Plain
	}
}

// openMessage handles the one armored OpenPGP message of the post.
func (ex *examiner) openMessage(l leaf) {
	res := ex.res
	bin, err := dearmor(l.data, openpgp.MessageType)
	if err != nil {
		res.addProblem(err)
		return
	}
	sc, err := scanPackets(bin, ex.lim.MaxPKESK)
	if err != nil {
		res.addProblem(err)
		return
	}
	if sc.data.end == 0 {
		if l.kind == leafEncMIME {
			res.addProblem(malformed("multipart/encrypted holds an OpenPGP message that is not encrypted"))
			return
		}
		res.Kind, res.Encrypted = InlineSigned, false
		ex.readSignedOnly(bin)
		return
	}
	res.CiphertextDigest = sc.digest
	pt, ok := ex.decrypt(bin, sc)
	if !ok {
		return
	}
	res.Plaintext = pt
	if l.kind == leafEncMIME {
		ex.examineInner(pt, l.depth+1)
	}
}

// decrypt opens the session key with the list key only, decrypts, reads
// the plaintext (bounded), checks integrity to the end and verifies an
// embedded signature (RFC 3156 §6.2) against Signers only.
func (ex *examiner) decrypt(bin []byte, sc *scanResult) ([]byte, bool) {
	res := ex.res
	rc, err := ex.openData(bin, sc)
	if err != nil {
		res.addProblem(err)
		return nil, false
	}
	// finish drains the decrypted stream and checks its integrity (MDC or
	// the final AEAD tag), whatever happened above it.
	finish := func() error {
		_, err := io.Copy(io.Discard, rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return wrap(ErrTampered, "integrity check failed: %v", err)
		}
		return nil
	}

	// The decrypted stream must be a signed or literal message. Anything
	// else (key packets, nested encryption) would make ReadMessage look for
	// decryption keys in Signers.
	var first [1]byte
	if _, err := io.ReadFull(rc, first[:]); err != nil {
		if ferr := finish(); ferr != nil {
			res.addProblem(ferr)
		} else {
			res.addProblem(malformed("OpenPGP: empty encrypted data"))
		}
		return nil, false
	}
	if tag := innerTag(first[0]); tag != tagCompressed && tag != tagLiteral && tag != tagOnePass && tag != tagSignature {
		if ferr := finish(); ferr != nil {
			res.addProblem(ferr)
		} else {
			res.addProblem(malformed("OpenPGP: unexpected packet (tag %d) inside the encryption", tag))
		}
		return nil, false
	}
	md, err := openpgp.ReadMessage(io.MultiReader(bytes.NewReader(first[:]), rc), ex.signers, nil, ex.vcfg)
	if err != nil {
		ex.readFailed(err, finish)
		return nil, false
	}
	if len(md.SignatureCandidates) > ex.lim.MaxSignatures {
		res.addProblem(&LimitError{What: LimitSignatures, Limit: int64(ex.lim.MaxSignatures)})
		return nil, false
	}
	pt, over, err := readBounded(md.UnverifiedBody, ex.lim.MaxDecompressed)
	switch {
	case over:
		if ferr := finish(); ferr != nil {
			res.addProblem(ferr)
			return nil, false
		}
		res.Integrity = true
		res.addProblem(&LimitError{What: LimitDecompressedSize, Limit: ex.lim.MaxDecompressed})
		return nil, false
	case err != nil:
		ex.readFailed(err, finish)
		return nil, false
	}
	if ferr := finish(); ferr != nil {
		res.addProblem(ferr)
		return nil, false
	}
	res.Integrity = true
	form := formText
	if ex.res.Kind == PGPMIMEEncrypted {
		form = formEntity
	}
	ex.apply(ex.evalSignatures(md, pt, form))
	return pt, true
}

// readFailed reports an error from parsing or reading the decrypted
// stream: a failed integrity check wins (the data was changed), then the
// decompression limit, then a malformed message from an honest sender.
func (ex *examiner) readFailed(err error, finish func() error) {
	if ferr := finish(); ferr != nil {
		ex.res.addProblem(ferr)
		return
	}
	ex.res.Integrity = true
	if errors.Is(err, pgperrors.ErrMessageTooLarge) {
		ex.res.addProblem(&LimitError{What: LimitDecompressedSize, Limit: ex.lim.MaxDecompressed})
		return
	}
	ex.res.addProblem(malformed("OpenPGP content: %v", err))
}

// innerTag is the packet tag encoded in a packet's first octet.
func innerTag(b byte) int {
	if b&0x80 == 0 {
		return -1
	}
	if b&0x40 != 0 {
		return int(b & 0x3f)
	}
	return int(b>>2) & 0xf
}

// openData finds, for the list key and every key of Input.AlsoFor, a
// PKESK it opens, decrypts the data once with the first session key that
// fits, and records in Result.ForList / Result.AlsoFor which keys opened
// that same session key.
func (ex *examiner) openData(bin []byte, sc *scanResult) (io.ReadCloser, error) {
	lk := ex.in.ListKey
	if len(sc.pkesks) == 0 {
		return nil, wrap(ErrNotForList, "the message is encrypted with a passphrase only")
	}
	keys := append([]*openpgp.Entity{lk}, ex.in.AlsoFor...)
	ex.res.listKeys = append([]*openpgp.Entity(nil), keys...)
	// Retired keys in their grace period open posts for their list.
	listOf := make([]int, len(keys), len(keys)+len(ex.in.OldKeys))
	for i := range listOf {
		listOf[i] = i
	}
	for _, o := range ex.in.OldKeys {
		if o.InGrace && o.Key != nil && o.List >= 0 && o.List < len(listOf) {
			keys = append(keys, o.Key)
			listOf = append(listOf, o.List)
		}
	}
	opened := make([]*packet.EncryptedKey, len(keys))
	for i, k := range keys {
		if k != nil {
			opened[i] = ex.sessionKey(k, bin, sc)
		}
	}
	dp, err := packet.Read(bytes.NewReader(bin[sc.data.start:sc.data.end]))
	if err != nil {
		return nil, malformed("OpenPGP encrypted data: %v", err)
	}
	edp, ok := dp.(packet.EncryptedDataPacket)
	if !ok {
		return nil, malformed("OpenPGP: unexpected encrypted data packet %T", dp)
	}
	if se, ok := dp.(*packet.SymmetricallyEncrypted); ok && !se.IntegrityProtected {
		return nil, wrap(ErrNoIntegrity, "Symmetrically Encrypted Data packet (tag 9)")
	}
	for _, ek := range opened {
		if ek == nil {
			continue
		}
		rc, err := edp.Decrypt(ek.CipherFunc, ek.Key)
		if errors.Is(err, pgperrors.ErrKeyIncorrect) {
			continue
		}
		if err != nil {
			return nil, wrap(ErrTampered, "cannot decrypt the data: %v", err)
		}
		ex.res.AlsoFor = make([]bool, len(ex.in.AlsoFor))
		for j, other := range opened {
			same := other != nil && other.CipherFunc == ek.CipherFunc && bytes.Equal(other.Key, ek.Key)
			if !same {
				continue
			}
			if j > len(ex.in.AlsoFor) {
				ex.res.oldOpened = append(ex.res.oldOpened, openedOld{list: listOf[j], key: keys[j]})
			}
			if l := listOf[j]; l == 0 {
				ex.res.ForList = true
			} else {
				ex.res.AlsoFor[l-1] = true
			}
		}
		return rc, nil
	}
	if ex.forRetiredKey(sc, bin) {
		return nil, wrap(ErrOldListKey, "the key packets are for list keys retired past their grace period")
	}
	return nil, wrap(ErrNotForList, "none of the %d key packets is for the list key %s", len(sc.pkesks), fingerprint(lk))
}

// forRetiredKey reports whether a key packet of the message names (by
// key ID) a retired list key past its grace period.
func (ex *examiner) forRetiredKey(sc *scanResult, bin []byte) bool {
	ids := map[uint64]bool{}
	for _, o := range ex.in.OldKeys {
		if o.InGrace || o.Key == nil {
			continue
		}
		ids[o.Key.PrimaryKey.KeyId] = true
		for _, sk := range o.Key.Subkeys {
			ids[sk.PublicKey.KeyId] = true
		}
	}
	if len(ids) == 0 {
		return false
	}
	for _, sp := range sc.pkesks {
		p, err := packet.Read(bytes.NewReader(bin[sp.start:sp.end]))
		if err != nil {
			continue
		}
		if ek, ok := p.(*packet.EncryptedKey); ok && ek.KeyId != 0 && ids[ek.KeyId] {
			return true
		}
	}
	return false
}

// sessionKey returns the first PKESK of the message that key opens, with
// its session key decrypted, or nil.
func (ex *examiner) sessionKey(key *openpgp.Entity, bin []byte, sc *scanResult) *packet.EncryptedKey {
	for _, sp := range sc.pkesks {
		p, err := packet.Read(bytes.NewReader(bin[sp.start:sp.end]))
		if err != nil {
			continue // unsupported algorithm or damaged: not ours to open
		}
		ek, ok := p.(*packet.EncryptedKey)
		if !ok {
			continue
		}
		for _, k := range key.DecryptionKeys(ek.KeyId, time.Time{}, ex.cfg) {
			if k.PrivateKey == nil || k.PrivateKey.Encrypted {
				continue
			}
			if ek.KeyId != 0 && k.PublicKey.KeyId != ek.KeyId {
				continue
			}
			if err := ek.Decrypt(k.PrivateKey, ex.cfg); err != nil {
				continue
			}
			return ek
		}
	}
	return nil
}

// readSignedOnly handles an inline PGP MESSAGE that is signed but not
// encrypted (gpg --sign --armor).
func (ex *examiner) readSignedOnly(bin []byte) {
	res := ex.res
	md, err := openpgp.ReadMessage(bytes.NewReader(bin), ex.signers, nil, ex.vcfg)
	if err != nil {
		if errors.Is(err, pgperrors.ErrMessageTooLarge) {
			res.addProblem(&LimitError{What: LimitDecompressedSize, Limit: ex.lim.MaxDecompressed})
		} else {
			res.addProblem(malformed("OpenPGP message: %v", err))
		}
		return
	}
	if len(md.SignatureCandidates) > ex.lim.MaxSignatures {
		res.addProblem(&LimitError{What: LimitSignatures, Limit: int64(ex.lim.MaxSignatures)})
		return
	}
	pt, over, err := readBounded(md.UnverifiedBody, ex.lim.MaxDecompressed)
	switch {
	case over || errors.Is(err, pgperrors.ErrMessageTooLarge):
		res.addProblem(&LimitError{What: LimitDecompressedSize, Limit: ex.lim.MaxDecompressed})
		return
	case err != nil:
		res.addProblem(malformed("OpenPGP message: %v", err))
		return
	}
	res.Plaintext = pt
	if !md.IsSigned {
		res.Kind = Plain
		return
	}
	ex.apply(ex.evalSignatures(md, pt, formText))
}

// examineInner walks the decrypted MIME entity (same limits, counts go
// on) and verifies a multipart/signed inside it (RFC 3156 §6.1) or an
// inline cleartext signature that is its only content.
func (ex *examiner) examineInner(pt []byte, depth int) {
	res := ex.res
	t, h, err := ex.w.walkMessage(pt, depth)
	if err != nil {
		res.addProblem(err)
		return
	}
	// RFC 3156 §4: what is encrypted is a MIME entity. Without a
	// Content-Type the bytes could as well be the text of an inline post
	// re-framed by someone on the way (the same ciphertext and signature
	// in a multipart/encrypted): its first lines would be taken for
	// header fields and hidden from the members.
	if strings.TrimSpace(h.Get("Content-Type")) == "" {
		res.addProblem(malformed("the decrypted PGP/MIME content is not a MIME entity (no Content-Type; RFC 3156 §4)"))
		return
	}
	embedded := res.Sig != SigNone
	_, clear, meaningful := countKinds(t)
	switch {
	case len(t.signed) > 0:
		covered := len(t.signed) == 1
		for _, l := range t.leaves {
			if l.kind != leafEmpty && l.signed == nil {
				covered = false
			}
		}
		if !covered {
			if !embedded {
				res.addProblem(wrap(ErrMixed, "only part of the encrypted message is signed"))
			}
			return
		}
		ex.apply(ex.verifyDetached(t.signed[0].signed, t.signed[0].signature))
	case len(clear) == 1 && meaningful == 1 && !clear[0].mixedText:
		ex.apply(ex.verifyClearsigned(clear[0].data))
	}
}

// verifyDetached verifies an armored detached signature over signed
// (RFC 3156 §5: the first part, as transmitted, CRLF line ends).
func (ex *examiner) verifyDetached(signed, armored []byte) sigOutcome {
	sigBin, err := dearmor(armored, openpgp.SignatureType)
	if err != nil {
		return sigOutcome{problem: err}
	}
	return ex.verifyDetachedBin(signed, sigBin)
}

func (ex *examiner) verifyDetachedBin(signed, sigBin []byte) sigOutcome {
	return ex.verifyDetachedForm(signed, sigBin, formEntity)
}

func (ex *examiner) verifyDetachedForm(signed, sigBin []byte, form contentForm) sigOutcome {
	md, err := openpgp.VerifyDetachedSignatureReader(ex.signers, bytes.NewReader(signed), bytes.NewReader(sigBin), ex.vcfg)
	if err != nil {
		return sigOutcome{problem: malformed("signature: %v", err)}
	}
	if len(md.SignatureCandidates) > ex.lim.MaxSignatures {
		return sigOutcome{problem: &LimitError{What: LimitSignatures, Limit: int64(ex.lim.MaxSignatures)}}
	}
	if _, err := io.Copy(io.Discard, md.UnverifiedBody); err != nil {
		return sigOutcome{problem: malformed("signature: %v", err)}
	}
	return ex.evalSignatures(md, signed, form)
}

// verifyClearsigned verifies a cleartext signature (RFC 9580 §7).
func (ex *examiner) verifyClearsigned(block []byte) sigOutcome {
	b, _ := clearsign.Decode(block)
	if b == nil || b.ArmoredSignature == nil {
		return sigOutcome{problem: malformed("cleartext signature cannot be parsed")}
	}
	sigBin, err := io.ReadAll(b.ArmoredSignature.Body)
	if err != nil {
		return sigOutcome{problem: malformed("cleartext signature armor: %v", err)}
	}
	return ex.verifyDetachedForm(b.Bytes, sigBin, formCleartext)
}

// apply merges one signature verdict into the result. The worst verdict
// wins (bad, then unknown key, then valid); digests accumulate.
func (ex *examiner) apply(o sigOutcome) {
	res := ex.res
	res.addProblem(o.problem)
	res.SigDigests = append(res.SigDigests, o.digests...)
	rank := func(s SigStatus) int {
		return [...]int{SigNone: 0, SigValid: 1, SigUnknownKey: 2, SigBad: 3}[s]
	}
	if o.status == SigNone || rank(o.status) <= rank(res.Sig) {
		return
	}
	res.Sig, res.SigTime, res.Signer, res.SignerFingerprint, res.SignaturePacket = o.status, o.time, nil, "", nil
	res.IntendedRecipients, ex.valid = nil, nil
	if o.status == SigValid {
		res.Signer, res.SignerFingerprint, res.SignaturePacket = o.signer, fingerprint(o.signer), o.packet
		res.IntendedRecipients = o.irfs
		ex.valid = &o
	}
}
