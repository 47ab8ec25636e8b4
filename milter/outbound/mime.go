package outbound

import (
	"bufio"
	"bytes"
	"encoding/base32"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

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

// payload builds the cryptographic payload (RFC 9788 §2): a
// multipart/mixed whose own header carries the header fields members see
// (h), one HP-Outer field for each of those that also appear outside,
// with the outer value (RFC 9788 §2.2), and hp="cipher" on its
// Content-Type; its parts are the notice (when there is one) and the
// entity, byte for byte. The entity's own header and body are never
// touched, so a signed entity still verifies and the members read
// exactly the bytes whose signature the list checked.
func payload(entity []byte, h Header, outer []Field, notice string, r io.Reader) ([]byte, error) {
	b, err := randomToken(r, 18)
	if err != nil {
		return nil, err
	}
	b = "lcm-" + b
	out := make([]byte, 0, len(entity)+2048)
	for _, name := range protectedFields {
		if v := *h.field(name); v != "" {
			out = appendField(out, name, v)
		}
	}
	for _, f := range outer {
		if isProtected(f.Name) {
			out = appendField(out, "HP-Outer", f.Name+": "+f.Value)
		}
	}
	out = append(out, "MIME-Version: 1.0\r\n"...)
	out = appendField(out, "Content-Type", `multipart/mixed; boundary="`+b+`"; hp="cipher"`)
	out = append(out, "\r\n"...)
	if notice != "" {
		out = append(out, "--"+b+"\r\n"...)
		out = append(out, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nContent-Disposition: inline\r\n\r\n"...)
		out = append(out, toCRLF([]byte(strings.TrimRight(notice, "\r\n")))...)
		out = append(out, "\r\n"...)
	}
	out = append(out, "--"+b+"\r\n"...)
	out = append(out, entity...)
	out = append(out, "\r\n--"+b+"--\r\n"...)
	return out, nil
}

// PayloadParts splits a payload built by Prepare (after decryption) into
// its header fields, its notice and the entity carried byte for byte.
// Tests and tools use it to check what members read.
func PayloadParts(pt []byte) (header textproto.Header, notice, entity []byte, err error) {
	rd := bytes.NewReader(pt)
	br := bufio.NewReader(rd)
	header, err = textproto.ReadHeader(br)
	if err != nil {
		return header, nil, nil, fmt.Errorf("payload header: %w", err)
	}
	mt, params, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["hp"] != "cipher" || params["boundary"] == "" {
		return header, nil, nil, fmt.Errorf("payload: Content-Type %q is not listcrypt's", header.Get("Content-Type"))
	}
	body := pt[len(pt)-rd.Len()-br.Buffered():]
	delim := "--" + params["boundary"]
	closing := []byte("\r\n" + delim + "--\r\n")
	if !bytes.HasPrefix(body, []byte(delim+"\r\n")) || !bytes.HasSuffix(body, closing) {
		return header, nil, nil, fmt.Errorf("payload: not framed by its boundary")
	}
	parts := bytes.Split(body[:len(body)-len(closing)], []byte("\r\n"+delim+"\r\n"))
	parts[0] = parts[0][len(delim)+2:]
	switch len(parts) {
	case 1:
		return header, nil, parts[0], nil
	case 2:
		_, n, _ := bytes.Cut(parts[0], []byte("\r\n\r\n"))
		return header, n, parts[1], nil
	}
	return header, nil, nil, fmt.Errorf("payload: %d parts", len(parts))
}

func isProtected(name string) bool {
	for _, p := range protectedFields {
		if strings.EqualFold(p, name) {
			return true
		}
	}
	return false
}

// outerHeader returns the header fields outside the encryption.
//
// Outside: From (the list "via" the author, or the author), Reply-To,
// To: the list, the outer Subject, Date, Message-ID, In-Reply-To and
// References (so threading and duplicate detection work in clients that
// do not read protected headers; RFC 9788's baseline policy leaves them
// outside too), the list fields, Precedence: list, Autocrypt (the list
// key, when From is the list address), and the MIME fields.
// Not outside: Cc (inside only: the member's client shows it from the
// protected headers) and the real Subject (unless "keep").
func outerHeader(h Header, p *Params, boundary, autocrypt string) []Field {
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
	// Autocrypt Level 1 §2.1: the list's key for the list address (the
	// From above), keydata pre-cut at spaces where foldField folds.
	if autocrypt != "" {
		f = append(f, Field{"Autocrypt", autocrypt})
	}
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
