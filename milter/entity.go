package milter

import (
	"bufio"
	"bytes"
	"fmt"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/milter/outbound"
)

// outboundPost turns the examined post into what members read: the
// decrypted inner entity (without the sender's signature wrapper unless
// the policy keeps it) and the original header fields.
func outboundPost(msg []byte, res *inbound.Result) (outbound.Post, error) {
	var post outbound.Post
	hdr, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return post, fmt.Errorf("read post header: %w", err)
	}
	h := hdr.Header
	post.Header = outbound.Header{From: h.Get("From"), ReplyTo: h.Get("Reply-To"), To: h.Get("To"), Cc: h.Get("Cc"),
		Date: h.Get("Date"), MessageID: h.Get("Message-Id"), InReplyTo: h.Get("In-Reply-To"),
		References: h.Get("References"), Subject: h.Get("Subject")}
	var entity []byte
	switch res.Kind {
	case inbound.PGPMIMEEncrypted:
		entity = res.Plaintext
	case inbound.InlineEncrypted:
		entity = append([]byte("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"), res.Plaintext...)
	case inbound.InlineSigned:
		if len(res.Plaintext) > 0 { // a signed (not cleartext-signed) PGP MESSAGE
			entity = append([]byte("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"), res.Plaintext...)
			break
		}
		entity = contentEntity(msg) // the cleartext-signed text as sent
	default: // plain and PGP/MIME signed: the message's own MIME entity
		entity = contentEntity(msg)
	}
	if first, ok := FirstSignedPart(entity); ok {
		post.SenderSigned = entity
		entity = first
	} else if res.Kind == inbound.PGPMIMEEncrypted && res.Sig == inbound.SigValid {
		// Signed inside the encryption (RFC 3156 §6.2): the signature is
		// a detached one over the inner entity.
		post.SenderSignature = res.SignaturePacket
	}
	post.Inner = entity
	return post, nil
}

// contentEntity keeps the Content-* fields of msg's header and its body.
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
	out.Write(body)
	return out.Bytes()
}

// FirstSignedPart returns the signed (first) part of a multipart/signed
// entity, raw (RFC 3156 §5).
func FirstSignedPart(entity []byte) ([]byte, bool) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(entity)))
	if err != nil {
		return nil, false
	}
	ct := strings.ToLower(h.Get("Content-Type"))
	if !strings.HasPrefix(ct, "multipart/signed") {
		return nil, false
	}
	_, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		return nil, false
	}
	delim := []byte("--" + params["boundary"])
	i := bytes.Index(entity, delim)
	if i < 0 {
		return nil, false
	}
	rest := entity[i+len(delim):]
	nl := bytes.IndexByte(rest, '\n')
	if nl < 0 {
		return nil, false
	}
	rest = rest[nl+1:]
	j := bytes.Index(rest, append([]byte("\r\n"), delim...))
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}
