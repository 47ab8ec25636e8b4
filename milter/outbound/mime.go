package outbound

import (
	"bufio"
	"bytes"
	"crypto"
	"encoding/base32"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message/textproto"
)

// toCRLF converts bare LF line ends to CRLF (RFC 3156 §5 canonical form).
// A signed part that verifies was already CRLF, so this does not change it.
func toCRLF(b []byte) []byte {
	n := bytes.Count(b, []byte("\n")) - bytes.Count(b, []byte("\r\n"))
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

var token32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// randomToken returns n random bytes as lower-case base32.
func randomToken(r io.Reader, n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("outbound: random: %w", err)
	}
	return strings.ToLower(token32.EncodeToString(b)), nil
}

// protectedFields are the header fields carried inside the encryption
// (RFC 9788 §2, "protected headers"), in the order written.
var protectedFields = []string{"Date", "From", "Reply-To", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References"}

func (h *Header) field(name string) *string {
	switch name {
	case "Date":
		return &h.Date
	case "From":
		return &h.From
	case "Reply-To":
		return &h.ReplyTo
	case "To":
		return &h.To
	case "Cc":
		return &h.Cc
	case "Subject":
		return &h.Subject
	case "Message-ID":
		return &h.MessageID
	case "In-Reply-To":
		return &h.InReplyTo
	case "References":
		return &h.References
	}
	panic("outbound: unknown protected field " + name)
}

// unfold removes folding (and any other CR or LF, so that no value can
// start a header field of its own) from a raw header value.
func unfold(v string) string {
	v = strings.ReplaceAll(v, "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(strings.ReplaceAll(v, "\r", ""))
}

// unfoldAll unfolds every field of h.
func (h Header) unfoldAll() Header {
	for _, name := range protectedFields {
		*h.field(name) = unfold(*h.field(name))
	}
	return h
}

// phrase returns s as an RFC 5322 phrase: RFC 2047 encoded if not ASCII,
// quoted if it has specials.
func phrase(s string) string {
	if e := encodeWord(s); e != s {
		return e
	}
	if !strings.ContainsAny(s, `()<>[]:;@\,."`) {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// protectHeaders returns entity with the protected header fields of h at
// its top and protected-headers="v1" on its Content-Type (RFC 9788 §2.1),
// and the header values finally used. If the entity already carries
// protected headers (the sender's client wrote them inside its own
// encryption), its values win over h: an encrypted post's outer Subject
// is often a placeholder like "...". Every other field of the entity is
// kept byte for byte, and the body is not touched (a multipart/signed
// body stays verifiable: RFC 3156 §5 signs the first body part only).
func protectHeaders(entity []byte, h Header) ([]byte, Header, error) {
	rd := bytes.NewReader(entity)
	br := bufio.NewReader(rd)
	ih, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, h, fmt.Errorf("outbound: post header: %w", err)
	}
	body := entity[len(entity)-rd.Len()-br.Buffered():]

	// The Content-Type keeps its original text (parameter order, quoting)
	// and gains protected-headers="v1" as RFC 9788 writes it.
	ct := unfold(ih.Get("Content-Type"))
	_, params, err := mime.ParseMediaType(ct)
	switch {
	case ct == "":
		ct = "text/plain; charset=us-ascii" // RFC 2045 §5.2
	case err != nil:
		return nil, h, fmt.Errorf("outbound: post Content-Type %q: %v", ct, err)
	}
	senderProtected := strings.EqualFold(params["protected-headers"], "v1")
	for _, name := range protectedFields {
		if v := unfold(ih.Get(name)); v != "" && (senderProtected || *h.field(name) == "") {
			*h.field(name) = v
		}
	}
	newCT := ct
	if !senderProtected {
		newCT = strings.TrimRight(ct, "; ") + `; protected-headers="v1"`
	}

	out := make([]byte, 0, len(entity)+1024)
	for _, name := range protectedFields {
		if v := *h.field(name); v != "" {
			out = appendField(out, name, v)
		}
	}
	out = appendField(out, "Content-Type", newCT)
	fields := ih.Fields()
	for fields.Next() {
		k := fields.Key()
		if strings.EqualFold(k, "Content-Type") || isProtected(k) {
			continue
		}
		raw, err := fields.Raw()
		if err != nil {
			return nil, h, err
		}
		out = append(out, toCRLF(raw)...)
	}
	out = append(out, '\r', '\n')
	out = append(out, body...)
	return out, h, nil
}

func isProtected(name string) bool {
	for _, p := range protectedFields {
		if strings.EqualFold(p, name) {
			return true
		}
	}
	return false
}

// wrapSigned builds an RFC 3156 §5 multipart/signed entity from entity
// and the sender's signature over it (binary packets, re-armored).
func wrapSigned(entity, sig []byte, r io.Reader) ([]byte, error) {
	pkt, err := packet.NewReader(bytes.NewReader(sig)).Next()
	if err != nil {
		return nil, fmt.Errorf("outbound: sender signature: %w", err)
	}
	s, ok := pkt.(*packet.Signature)
	if !ok {
		return nil, fmt.Errorf("outbound: sender signature: packet is %T, not a signature", pkt)
	}
	micalg := map[crypto.Hash]string{
		crypto.SHA256: "pgp-sha256", crypto.SHA384: "pgp-sha384", crypto.SHA512: "pgp-sha512",
		crypto.SHA224: "pgp-sha224", crypto.SHA3_256: "pgp-sha3-256", crypto.SHA3_512: "pgp-sha3-512",
	}[s.Hash]
	if micalg == "" {
		return nil, fmt.Errorf("outbound: sender signature uses hash %v", s.Hash)
	}
	b, err := randomToken(r, 18)
	if err != nil {
		return nil, err
	}
	b = "lcs-" + b
	var out bytes.Buffer
	out.WriteString(foldField("Content-Type", mime.FormatMediaType("multipart/signed", map[string]string{
		"micalg": micalg, "protocol": "application/pgp-signature", "boundary": b})))
	out.WriteString("\r\n--" + b + "\r\n")
	out.Write(entity)
	out.WriteString("\r\n--" + b + "\r\n")
	out.WriteString("Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n")
	out.WriteString("Content-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n")
	var a bytes.Buffer
	w, err := armor.Encode(&a, "PGP SIGNATURE", nil)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(sig); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	out.Write(toCRLF(a.Bytes()))
	out.WriteString("\r\n--" + b + "--\r\n")
	return out.Bytes(), nil
}

// outerHeader returns the header fields outside the encryption.
//
// Outside: From (the list "via" the author, or the author), Reply-To,
// To: the list, the outer Subject, Date, Message-ID, In-Reply-To and
// References (so threading and duplicate detection work in clients that
// do not read protected headers; RFC 9788's baseline policy leaves them
// outside too), the list fields, Precedence: list, and the MIME fields.
// Not outside: Cc (inside only: the member's client shows it from the
// protected headers) and the real Subject (unless "keep").
func outerHeader(h Header, p *Params, boundary string) []Field {
	var f []Field
	add := func(name, value string) {
		if value = unfold(value); value != "" {
			f = append(f, Field{name, value})
		}
	}
	switch p.FromMode {
	case FromVia:
		add("From", (&mail.Address{Name: authorName(h.From) + " via " + p.ListName, Address: p.ListAddress}).String())
		replyTo := h.ReplyTo
		if replyTo == "" {
			replyTo = h.From
		}
		add("Reply-To", replyTo)
	default:
		from := h.From
		if from == "" {
			from = p.ListAddress
		}
		add("From", from)
		add("Reply-To", h.ReplyTo)
	}
	add("To", p.ListAddress)
	var subject string
	switch p.Subject {
	case "":
		subject = encodeWord("[" + p.ListName + "] Encrypted message")
	case SubjectKeep:
		subject = h.Subject
	default:
		subject = encodeWord(p.Subject)
	}
	add("Subject", subject)
	add("Date", h.Date)
	add("Message-ID", h.MessageID)
	add("In-Reply-To", h.InReplyTo)
	add("References", h.References)

	// RFC 2919 §3: List-Id: phrase <label>; RFC 2369 §3.
	lh := p.ListHeaders
	add("List-Id", phrase(p.ListName)+" <"+lh.ID+">")
	add("List-Post", "<mailto:"+p.ListAddress+">")
	add("List-Help", "<mailto:"+lh.RequestAddress+"?subject=help>")
	add("List-Subscribe", "<mailto:"+lh.RequestAddress+"?subject=subscribe>")
	unsub := "<mailto:" + lh.RequestAddress + "?subject=unsubscribe>"
	if lh.UnsubscribeURL != "" {
		unsub = "<" + lh.UnsubscribeURL + ">, " + unsub // RFC 8058 §3.1
	}
	add("List-Unsubscribe", unsub)
	if lh.UnsubscribeURL != "" {
		add("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
	}
	if lh.ArchiveURL != "" {
		add("List-Archive", "<"+lh.ArchiveURL+">")
	}
	add("Precedence", "list")
	add("MIME-Version", "1.0")
	// RFC 3156 §4.
	add("Content-Type", `multipart/encrypted; protocol="application/pgp-encrypted"; boundary="`+boundary+`"`)
	return f
}

// authorName returns the display name of a From value, or its address
// when it has no name.
func authorName(from string) string {
	if a, err := mail.ParseAddress(from); err == nil {
		if a.Name != "" {
			return a.Name
		}
		return a.Address
	}
	s := strings.TrimSpace(from)
	if i := strings.IndexByte(s, '<'); i > 0 {
		s = s[:i]
	}
	s = strings.Trim(strings.TrimSpace(s), `"<>`)
	if s == "" {
		return "someone"
	}
	return s
}

// encodeWord RFC 2047-encodes s if it is not printable ASCII.
func encodeWord(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return mime.QEncoding.Encode("utf-8", s)
		}
	}
	return s
}

// appendField appends "Name: value" folded at spaces to lines of at most
// 78 characters where possible (RFC 5322 §2.2.3), with CRLF.
func appendField(dst []byte, name, value string) []byte {
	return append(dst, foldField(name, value)...)
}

func foldField(name, value string) string {
	var b strings.Builder
	line := name + ":"
	for _, w := range strings.Split(value, " ") {
		if len(line)+1+len(w) > 78 && len(line) > len(name)+1 {
			b.WriteString(line)
			b.WriteString("\r\n")
			line = ""
		}
		line += " " + w
	}
	b.WriteString(line)
	b.WriteString("\r\n")
	return b.String()
}

// mimeFrame returns the body before and after the armored OpenPGP message
// (RFC 3156 §4).
func mimeFrame(boundary string) (head, tail []byte) {
	head = []byte("This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n" +
		"--" + boundary + "\r\n" +
		"Content-Type: application/pgp-encrypted\r\n" +
		"Content-Description: PGP/MIME version identification\r\n" +
		"\r\n" +
		"Version: 1\r\n" +
		"\r\n" +
		"--" + boundary + "\r\n" +
		"Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n" +
		"Content-Description: OpenPGP encrypted message\r\n" +
		"Content-Disposition: inline; filename=\"encrypted.asc\"\r\n" +
		"\r\n" + armorHeader)
	tail = []byte(armorFooter + "\r\n--" + boundary + "--\r\n")
	return head, tail
}
