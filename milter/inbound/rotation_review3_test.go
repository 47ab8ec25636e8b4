package inbound

import (
	"bytes"
	"io"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// reencryptAll decrypts bin with from and encrypts the raw decrypted
// packet stream (the signature and its Intended Recipient Fingerprints
// untouched) to every key of to under one session key.
func reencryptAll(t *testing.T, bin []byte, from *openpgp.Entity, to ...*openpgp.Entity) []byte {
	t.Helper()
	ex := &examiner{in: Input{ListKey: from}, cfg: fixedConfig("re3", tNow), res: &Result{}}
	sc, err := scanPackets(bin, 64)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ex.openData(bin, sc)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	cfg := fixedConfig("re3-enc", tSign)
	key := make([]byte, 32)
	io.ReadFull(cfg.Rand, key)
	var b bytes.Buffer
	for _, k := range to {
		if err := packet.SerializeEncryptedKey(&b, k.Subkeys[0].PublicKey, packet.CipherAES256, key, cfg); err != nil {
			t.Fatal(err)
		}
	}
	w, err := packet.SerializeSymmetricallyEncrypted(&b, packet.CipherAES256, false, packet.CipherSuite{}, key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(inner)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Found in review (it failed before the fix): Result.oldOpened is not per list. In a transaction for lists
// A and B, a signature whose only Intended Recipient is B's RETIRED key
// (in its grace period) counts as bound to A: Binding(A) checks A's key
// and every retired key that opened the post, whatever its list. With
// B's CURRENT key named instead, Binding(A) is BindingOther, as it must
// be (a signed post for B re-encrypted to A too: surreptitious
// forwarding, post.unbound_signature bypassed for A).
func TestReview3RetiredKeyOfOtherListBindsToThisList(t *testing.T) {
	f := getFixtures(t)
	listA := f.list
	bOld := newKey(t, "ListBOld")
	bNew := newKey(t, "ListBNew")

	// Control: Alice signs for B's current key; the stream is
	// re-encrypted to A and B.
	bin := encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{bNew}, signer: f.alice, seed: "r3-ctl"})
	msg := pgpMIME(armored(t, "PGP MESSAGE", reencryptAll(t, bin, bNew, listA, bNew)))
	in := f.input(msg)
	in.AlsoFor = []*openpgp.Entity{bNew}
	res, err := Examine(in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sig != SigValid || !res.ForList || !res.AlsoFor[0] {
		t.Fatalf("control: sig %v for %v %v problems %v", res.Sig, res.ForList, res.AlsoFor, res.Problems)
	}
	if b := res.Binding(listA, "list@example.org"); b != BindingOther {
		t.Fatalf("control: Binding(A) = %v, want BindingOther", b)
	}

	// The same with B's retired key, in its grace period.
	bin = encrypt(t, crlf(innerEntity), encOpts{to: []*openpgp.Entity{bOld}, signer: f.alice, seed: "r3-old"})
	msg = pgpMIME(armored(t, "PGP MESSAGE", reencryptAll(t, bin, bOld, listA, bOld)))
	in = f.input(msg)
	in.AlsoFor = []*openpgp.Entity{bNew}
	in.OldKeys = []OldKey{{List: 1, Key: bOld, InGrace: true}}
	res, err = Examine(in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sig != SigValid || !res.ForList || !res.AlsoFor[0] {
		t.Fatalf("sig %v for %v %v problems %v", res.Sig, res.ForList, res.AlsoFor, res.Problems)
	}
	if b := res.Binding(bNew, "listbnew@example.org"); b != BindingList {
		t.Fatalf("Binding(B) = %v, want BindingList", b)
	}
	if b := res.Binding(listA, "list@example.org"); b != BindingOther {
		t.Fatalf("a signature meant for B's retired key is bound to list A: Binding(A) = %v, want BindingOther (%v)", b, BindingOther)
	}
}
