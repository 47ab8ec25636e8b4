package keyring

import (
	"bytes"
	"reflect"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// compactEntity shrinks a parsed key that the member cache keeps resident
// (issue 9: the milter holds every member's key, 10,000 and more), without
// changing what go-crypto answers about it at any time.
//
// go-crypto verifies a self-signature (user ID certification, subkey
// binding, direct-key signature, revocation) once and records the result
// in VerifiableSignature.Valid; every later validity check (key selection
// for encryption, the signer checks when a post is verified) reads that
// result and re-checks only the signature's time fields (creation,
// expiry, key expiry) against the date asked about. compactEntity first
// has every signature verified with no date (so the recorded result is
// the cryptographic check plus go-crypto's date-independent policy checks,
// hash algorithm and critical notations; the date checks stay at the time
// of use), then replaces each verified signature packet by a copy without
// what only the verification needed: the signature value, the hashed
// suffix and the raw subpackets (which keep the 512-byte read buffers of
// the parser alive). A signature go-crypto did not verify (one never
// reached, such as an older self-signature superseded by a newer one) is
// kept whole.
//
// A compacted Entity must not be serialized (its signatures lack their
// values): the store keeps the key's bytes for that.
func compactEntity(e *openpgp.Entity, cfg *packet.Config) {
	var never time.Time // zero: no date checks, see above
	for _, id := range e.Identities {
		sig, _ := id.LatestValidSelfCertification(never, cfg)
		id.Revoked(sig, never, cfg)
		compactSigs(id.SelfCertifications)
		compactSigs(id.Revocations)
	}
	if len(e.DirectSignatures) > 0 {
		e.LatestValidDirectSignature(never, cfg) //nolint:errcheck // records Valid
		compactSigs(e.DirectSignatures)
	}
	e.Revoked(never)
	compactSigs(e.Revocations)
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		sig, _ := sk.LatestValidBindingSignature(never, cfg)
		sk.Revoked(sig, never)
		compactSigs(sk.Bindings)
		compactSigs(sk.Revocations)
	}
}

func compactSigs(sigs []*packet.VerifiableSignature) {
	for _, s := range sigs {
		if s.Valid != nil && s.Packet != nil {
			s.Packet = compactSig(s.Packet)
		}
	}
}

// verificationOnly names the exported Signature fields that only the
// verification of the signature itself reads.
var verificationOnly = map[string]bool{
	"HashSuffix": true, "Metadata": true,
	"RSASignature": true, "DSASigR": true, "DSASigS": true,
	"ECDSASigR": true, "ECDSASigS": true, "EdDSASigR": true, "EdDSASigS": true,
	"EdSig": true, "MldsaSig": true, "SlhdsaSig": true,
}

var sigFields = func() []int {
	t := reflect.TypeFor[packet.Signature]()
	var keep []int
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && !verificationOnly[f.Name] {
			keep = append(keep, i)
		}
	}
	return keep
}()

// compactSig copies every exported field of s but the verification-only
// ones; unexported fields (the raw subpackets, the v6 salt) are left out.
// An embedded signature (a signing subkey's back-signature, checked when
// the binding was) is compacted too.
func compactSig(s *packet.Signature) *packet.Signature {
	c := new(packet.Signature)
	src, dst := reflect.ValueOf(s).Elem(), reflect.ValueOf(c).Elem()
	for _, i := range sigFields {
		dst.Field(i).Set(src.Field(i))
	}
	// A notation's value is a slice of the parser's read buffer: copy it
	// (go-crypto adds a salt notation to the signatures it makes).
	if len(c.Notations) > 0 {
		ns := make([]*packet.Notation, len(c.Notations))
		for i, n := range c.Notations {
			cp := *n
			cp.Value = bytes.Clone(n.Value)
			ns[i] = &cp
		}
		c.Notations = ns
	}
	if c.EmbeddedSignature != nil {
		c.EmbeddedSignature = compactSig(c.EmbeddedSignature)
	}
	return c
}
