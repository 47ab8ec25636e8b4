package inbound

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"mime"
	"net/mail"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"
)

// TextHeader is the header listcrypt writes above signed text that has no
// MIME header of its own (inline PGP): the only bytes in Result.Content
// that the author did not sign.
const TextHeader = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"

// SignedHeader holds the header fields at the top of the signed bytes:
// the author signed them. Values are raw and unfolded ("" when absent).
type SignedHeader struct {
	// Protected: the signed entity's Content-Type marks its header fields
	// as the message's header (RFC 9788 hp="cipher" or hp="clear", or the
	// older protected-headers="v1").
	Protected bool
	// Froms is every From field (a header may, wrongly, carry several).
	Froms                          []string
	ReplyTo, To, Cc, Subject, Date string
}

// buildContent fills Result.Content, KeptSigned and Signed once the
// verdict is known: from the signed bytes of the valid signature only,
// never from a second parse of the message.
func (ex *examiner) buildContent() {
	res := ex.res
	if res.Sig == SigValid && ex.valid != nil {
		o := ex.valid
		res.ContentSigned = true
		switch o.form {
		case formEntity:
			res.Content = toCRLF(o.data)
			res.Signed = readSignedHeader(res.Content, ex.lim.MaxHeaderBytes)
			res.KeptSigned = keptMultipart(res.Content, o.packet)
		case formText:
			res.Content = append([]byte(TextHeader), toCRLF(o.data)...)
		case formCleartext:
			res.Content = append([]byte(TextHeader), o.data...)
			if block := cleartextBlock(o.data, o.packet); block != nil {
				res.KeptSigned = append([]byte(TextHeader), block...)
			}
		}
		return
	}
	if res.Kind == Unknown {
		return
	}
	switch {
	case res.Kind == PGPMIMEEncrypted:
		if res.Plaintext != nil {
			res.Content = toCRLF(res.Plaintext)
		}
	case res.Plaintext != nil: // inline encrypted, or a signed PGP MESSAGE
		res.Content = append([]byte(TextHeader), toCRLF(res.Plaintext)...)
	case !res.Encrypted:
		res.Content = contentEntity(ex.in.Message)
	}
}

// readSignedHeader reads the header fields at the top of a signed entity.
func readSignedHeader(entity []byte, max int) *SignedHeader {
	end, ok := headerEnd(entity, max)
	if !ok {
		return nil
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(entity[:end])))
	if err != nil {
		return nil
	}
	sh := &SignedHeader{
		ReplyTo: unfold(h.Get("Reply-To")), To: unfold(h.Get("To")), Cc: unfold(h.Get("Cc")),
		Subject: unfold(h.Get("Subject")), Date: unfold(h.Get("Date")),
	}
	for _, v := range h.Values("From") {
		sh.Froms = append(sh.Froms, unfold(v))
	}
	if _, params, err := mime.ParseMediaType(h.Get("Content-Type")); err == nil {
		_, hp := params["hp"]
		sh.Protected = hp || strings.EqualFold(params["protected-headers"], "v1")
	}
	return sh
}

func unfold(v string) string {
	v = strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(v)
	return strings.TrimSpace(v)
}

// Binding says whether the valid signature shows it was made for a list.
type Binding int

const (
	// BindingNone: the signature names no recipient (no Intended
	// Recipient Fingerprint, no signed To/Cc): GnuPG 2.2 and most
	// clients today. post.unbound_signature decides.
	BindingNone Binding = iota
	// BindingList: the signature names this list (its key among the
	// intended recipients, or its address in the signed To/Cc).
	BindingList
	// BindingOther: the signature names recipients and the list is not
	// among them: a message written for someone else, re-sent to the list
	// (surreptitious forwarding). Always refused.
	BindingOther
)

// Binding checks the valid signature against the list with key listKey
// and address listAddr (lower case): Intended Recipient Fingerprints
// first (the list's primary key or any of its subkeys must be named; or
// those of a retired list key in its grace period that opened the post),
// then the To and Cc among signed protected headers.
func (r *Result) Binding(listKey *openpgp.Entity, listAddr string) Binding {
	if r.Sig != SigValid {
		return BindingNone
	}
	if len(r.IntendedRecipients) > 0 {
		if listKey != nil && namesKey(r.IntendedRecipients, listKey) {
			return BindingList
		}
		// A retired key of this list (in its grace period) that opened
		// the post; another list's retired key binds to that list only.
		list := -1
		for i, k := range r.listKeys {
			if k == listKey {
				list = i
			}
		}
		for _, o := range r.oldOpened {
			if o.list == list && namesKey(r.IntendedRecipients, o.key) {
				return BindingList
			}
		}
		return BindingOther
	}
	sh := r.Signed
	if sh == nil || !sh.Protected || (sh.To == "" && sh.Cc == "") {
		return BindingNone
	}
	for _, field := range []string{sh.To, sh.Cc} {
		if field == "" {
			continue
		}
		for _, a := range addressesIn(field) {
			if a == strings.ToLower(listAddr) {
				return BindingList
			}
		}
	}
	return BindingOther
}

// addressesIn returns the lower-cased addresses of an address list field;
// a field net/mail cannot parse yields what looks like addresses in it.
func addressesIn(field string) []string {
	var out []string
	if list, err := mail.ParseAddressList(field); err == nil {
		for _, a := range list {
			out = append(out, strings.ToLower(a.Address))
		}
		return out
	}
	for _, w := range strings.FieldsFunc(field, func(r rune) bool { return strings.ContainsRune(" ,;<>\"\t", r) }) {
		if strings.Contains(w, "@") {
			out = append(out, strings.ToLower(w))
		}
	}
	return out
}

// contentEntity keeps the Content-* fields of msg's header and its body:
// what members read of a post that has no valid signature.
func contentEntity(msg []byte) []byte {
	head, body, found := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !found {
		head, body, _ = bytes.Cut(msg, []byte("\n\n"))
	}
	var out bytes.Buffer
	keep := false
	for _, line := range strings.SplitAfter(string(head), "\n") {
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			name, _, _ := strings.Cut(line, ":")
			keep = strings.HasPrefix(strings.ToLower(name), "content-")
		}
		if keep {
			out.WriteString(strings.TrimRight(line, "\r\n") + "\r\n")
		}
	}
	if out.Len() == 0 {
		out.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	}
	out.WriteString("\r\n")
	out.Write(toCRLF(body))
	return out.Bytes()
}

var micalgs = map[crypto.Hash]string{
	crypto.SHA256: "pgp-sha256", crypto.SHA384: "pgp-sha384", crypto.SHA512: "pgp-sha512",
	crypto.SHA224: "pgp-sha224", crypto.SHA3_256: "pgp-sha3-256", crypto.SHA3_512: "pgp-sha3-512",
}

var hashNames = map[crypto.Hash]string{
	crypto.SHA256: "SHA256", crypto.SHA384: "SHA384", crypto.SHA512: "SHA512",
	crypto.SHA224: "SHA224", crypto.SHA3_256: "SHA3-256", crypto.SHA3_512: "SHA3-512",
}

// parseSig reads one signature packet.
func parseSig(sigPkt []byte) *packet.Signature {
	p, err := packet.NewReader(bytes.NewReader(sigPkt)).Next()
	if err != nil {
		return nil
	}
	s, _ := p.(*packet.Signature)
	return s
}

// armorSig armors a signature packet with CRLF line ends.
func armorSig(sigPkt []byte) []byte {
	var a bytes.Buffer
	w, err := armor.Encode(&a, "PGP SIGNATURE", nil)
	if err != nil {
		return nil
	}
	if _, err := w.Write(sigPkt); err != nil {
		return nil
	}
	if err := w.Close(); err != nil {
		return nil
	}
	return toCRLF(a.Bytes())
}

// keptMultipart builds a fresh RFC 3156 §5 multipart/signed around the
// signed entity and its signature. The boundary is derived from both, so
// the author cannot have put it in the entity.
func keptMultipart(entity, sigPkt []byte) []byte {
	s := parseSig(sigPkt)
	if s == nil || micalgs[s.Hash] == "" {
		return nil
	}
	sum := sha256.Sum256(append(append([]byte{}, entity...), sigPkt...))
	b := "lcs-" + hex.EncodeToString(sum[:16])
	arm := armorSig(sigPkt)
	if arm == nil {
		return nil
	}
	var out bytes.Buffer
	out.Grow(len(entity) + len(arm) + 512)
	out.WriteString("Content-Type: " + mime.FormatMediaType("multipart/signed", map[string]string{
		"micalg": micalgs[s.Hash], "protocol": "application/pgp-signature", "boundary": b}) + "\r\n\r\n")
	out.WriteString("--" + b + "\r\n")
	out.Write(entity)
	out.WriteString("\r\n--" + b + "\r\n")
	out.WriteString("Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n")
	out.WriteString("Content-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n")
	out.Write(arm)
	out.WriteString("\r\n--" + b + "--\r\n")
	return out.Bytes()
}

// cleartextBlock writes the signed text again in the cleartext signature
// framework (RFC 9580 §7): dash-escaped text and the signature, no armor
// header but Hash (nothing the author did not sign but the framing).
func cleartextBlock(text, sigPkt []byte) []byte {
	s := parseSig(sigPkt)
	if s == nil || hashNames[s.Hash] == "" {
		return nil
	}
	arm := armorSig(sigPkt)
	if arm == nil {
		return nil
	}
	var out bytes.Buffer
	out.WriteString(beginSigned + "\r\n")
	if s.Version < 6 {
		out.WriteString("Hash: " + hashNames[s.Hash] + "\r\n")
	}
	out.WriteString("\r\n")
	for _, line := range bytes.Split(text, []byte("\r\n")) {
		if bytes.HasPrefix(line, []byte("-")) {
			out.WriteString("- ")
		}
		out.Write(line)
		out.WriteString("\r\n")
	}
	out.Write(arm)
	return out.Bytes()
}

// namesKey reports whether one of fingerprints is k's primary key or
// one of its subkeys.
func namesKey(fingerprints [][]byte, k *openpgp.Entity) bool {
	for _, fp := range fingerprints {
		if bytes.Equal(fp, k.PrimaryKey.Fingerprint) {
			return true
		}
		for _, sk := range k.Subkeys {
			if bytes.Equal(fp, sk.PublicKey.Fingerprint) {
				return true
			}
		}
	}
	return false
}
