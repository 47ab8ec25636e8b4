package workflow

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/emersion/go-message/textproto"
)

// content is what a command mail carries once opened: its text (where
// commands and statements are read) and the OpenPGP key blocks attached
// or pasted into it.
type content struct {
	text []byte   // text/plain bodies, in order, cleartext-signed blocks decoded
	keys [][]byte // key blocks: application/pgp-keys parts, armored PUBLIC KEY / SIGNATURE blocks
}

// Walking limits for a command mail (it is small: a line and a key).
const (
	maxContentDepth = 8
	maxContentParts = 50
	maxKeyBlocks    = 4
)

var errTooComplex = errors.New("the message has too many or too deeply nested MIME parts for a command")

// readEntity walks a MIME entity (a whole message, or the decrypted
// inner entity of PGP/MIME) and collects its text and key blocks.
func readEntity(entity []byte) (*content, error) {
	c := &content{}
	parts := 0
	if err := c.walk(entity, 0, &parts); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *content) walk(entity []byte, depth int, parts *int) error {
	*parts++
	if depth > maxContentDepth || *parts > maxContentParts {
		return errTooComplex
	}
	br := bufio.NewReader(bytes.NewReader(entity))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return fmt.Errorf("MIME header: %w", err)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return err
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		mt, params = "text/plain", map[string]string{}
	}
	switch {
	case mt == "multipart/signed":
		// Only the signed content counts (RFC 3156 §5); the signature
		// part is not a key.
		return c.multipart(body, params["boundary"], depth, parts, true)
	case strings.HasPrefix(mt, "multipart/"):
		return c.multipart(body, params["boundary"], depth, parts, false)
	}
	data, err := decode(body, h.Get("Content-Transfer-Encoding"))
	if err != nil {
		return err
	}
	switch mt {
	case "text/plain":
		c.addText(data)
	case "application/pgp-keys":
		c.addKey(data)
	case "application/pgp-signature":
		// A detached signature of a multipart/signed is skipped above;
		// one on its own is a revocation certificate at most.
		c.addKey(data)
	default:
		// An attachment "key.asc" as application/octet-stream or text/x-...
		c.addArmoredBlocks(data)
	}
	return nil
}

func (c *content) multipart(body []byte, boundary string, depth int, parts *int, signedOnlyFirst bool) error {
	if boundary == "" {
		return errors.New("multipart without boundary")
	}
	mr := textproto.NewMultipartReader(bytes.NewReader(body), boundary)
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("multipart: %w", err)
		}
		var b bytes.Buffer
		if err := textproto.WriteHeader(&b, p.Header); err != nil {
			return err
		}
		if _, err := io.Copy(&b, p); err != nil {
			return fmt.Errorf("multipart: %w", err)
		}
		if signedOnlyFirst && i > 0 {
			continue
		}
		if err := c.walk(b.Bytes(), depth+1, parts); err != nil {
			return err
		}
	}
}

func decode(body []byte, cte string) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "", "7bit", "8bit", "binary":
		return body, nil
	case "quoted-printable":
		return io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, body)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil {
			return nil, fmt.Errorf("base64 body: %w", err)
		}
		return out[:n], nil
	}
	return nil, fmt.Errorf("unknown Content-Transfer-Encoding %q", shorten(cte, 40))
}

// addText adds a text/plain body: a cleartext-signed block (RFC 9580 §7)
// contributes its signed text, and pasted key blocks are collected.
func (c *content) addText(data []byte) {
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	if i := bytes.Index(data, []byte("-----BEGIN PGP SIGNED MESSAGE-----")); i >= 0 {
		if b, _ := clearsign.Decode(data[i:]); b != nil {
			c.text = append(c.text, b.Plaintext...)
			c.text = append(c.text, '\n')
			c.addArmoredBlocks(b.Plaintext)
			return
		}
	}
	c.text = append(c.text, data...)
	c.text = append(c.text, '\n')
	c.addArmoredBlocks(data)
}

// addKey adds an application/pgp-keys body: armored (one or more blocks)
// or binary.
func (c *content) addKey(data []byte) {
	if bytes.Contains(data, []byte("-----BEGIN PGP ")) {
		c.addArmoredBlocks(data)
		return
	}
	if len(data) > 0 && data[0]&0x80 != 0 && len(c.keys) < maxKeyBlocks {
		c.keys = append(c.keys, data)
	}
}

// addArmoredBlocks collects every armored PUBLIC KEY BLOCK, PRIVATE KEY
// BLOCK (refused later, with a warning) and SIGNATURE block in text.
func (c *content) addArmoredBlocks(text []byte) {
	for len(text) > 0 && len(c.keys) < maxKeyBlocks {
		i := bytes.Index(text, []byte("-----BEGIN PGP "))
		if i < 0 {
			return
		}
		rest := text[i:]
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return
		}
		head := strings.TrimSpace(string(rest[:nl]))
		kind := strings.TrimSuffix(strings.TrimPrefix(head, "-----BEGIN "), "-----")
		end := "-----END " + kind + "-----"
		j := bytes.Index(rest, []byte(end))
		if j < 0 {
			return
		}
		block := rest[:j+len(end)]
		text = rest[j+len(end):]
		switch kind {
		case "PGP PUBLIC KEY BLOCK", "PGP PRIVATE KEY BLOCK", "PGP SIGNATURE":
			c.keys = append(c.keys, append(bytes.Clone(block), '\n'))
		}
	}
}

// EntityText returns the text of a MIME entity the way the responder
// reads a command mail's content: the text/plain parts, transfer
// encodings removed, cleartext signatures unwrapped. Tests use it to read
// the responder's replies as a mail client would.
func EntityText(entity []byte) (string, error) {
	c, err := readEntity(entity)
	if err != nil {
		return "", err
	}
	return strings.ReplaceAll(string(c.text), "\r\n", "\n"), nil
}
