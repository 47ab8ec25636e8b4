package inbound

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// leafKind classifies a non-multipart entity (or a multipart/encrypted,
// which is opaque to the walk).
type leafKind int

const (
	leafEmpty        leafKind = iota // no content but whitespace
	leafPlain                        // anything else not protected
	leafEncMIME                      // multipart/encrypted, RFC 3156 §4
	leafInlineMsg                    // text/plain holding an armored PGP MESSAGE
	leafInlineSigned                 // text/plain holding a cleartext signature
)

type leaf struct {
	kind leafKind
	// data: the armored OpenPGP message (leafEncMIME, leafInlineMsg) or
	// the armored cleartext-signed block (leafInlineSigned).
	data []byte
	// mixedText: an inline block has non-whitespace text around it.
	mixedText bool
	// signed is the multipart/signed whose first part holds this leaf.
	signed *signedNode
	depth  int
	ctype  string
}

// signedNode is a multipart/signed with protocol application/pgp-signature
// (RFC 3156 §5). Only the outermost one on a path is verified; signed parts
// nested inside its first part are walked as plain multiparts.
type signedNode struct {
	// signed is the first body part exactly as transmitted, header and
	// body, with CRLF line ends (RFC 3156 §5, "Note:" on canonical form).
	signed []byte
	// signature is the second body part (transfer encoding removed).
	signature []byte
}

// tree is what the walk learned about one MIME entity.
type tree struct {
	leaves []leaf
	signed []*signedNode
}

// walker walks MIME entities within the limits. One walker serves the
// whole post (outer message and decrypted entity), so part counts add up.
type walker struct {
	lim          Limits
	parts        int
	headerTooBig bool // a headerGuard tripped
}

// errHeaderTooBig is returned by a headerGuard; the walk maps it (and any
// error seen after a guard tripped) to a LimitError.
var errHeaderTooBig = errors.New("part header too large")

// walkMessage parses a whole message (top-level header and body).
func (w *walker) walkMessage(msg []byte, depth int) (*tree, textproto.Header, error) {
	end, ok := headerEnd(msg, w.lim.MaxHeaderBytes)
	if !ok {
		return nil, textproto.Header{}, &LimitError{What: LimitHeaderSize, Limit: int64(w.lim.MaxHeaderBytes)}
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg[:end])))
	if err != nil {
		return nil, h, malformed("message header: %v", err)
	}
	t := &tree{}
	if err := w.entity(h, bytes.NewReader(msg[end:]), depth, nil, t); err != nil {
		return t, h, err
	}
	return t, h, nil
}

// headerEnd returns the offset of the body (just after the blank line
// that ends the header section), or len(b) if there is no body. It looks
// at no more than max bytes; ok is false if the header is larger.
func headerEnd(b []byte, max int) (int, bool) {
	i := 0
	for i < len(b) {
		if i > max {
			return 0, false
		}
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			if len(b) > max {
				return 0, false
			}
			return len(b), true
		}
		line := b[i : i+j]
		i += j + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			if i > max+2 {
				return 0, false
			}
			return i, true
		}
	}
	return len(b), true
}

// contentType returns the media type (lower case) and parameters, with
// the RFC 2045 §5.2 default text/plain.
func contentType(h textproto.Header) (string, map[string]string, error) {
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return "text/plain", map[string]string{}, nil
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		return "", nil, malformed("Content-Type %q: %v", truncate(v, 80), err)
	}
	return mt, params, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// entity walks one entity whose header is h and whose raw body is body.
// sn is the outermost multipart/signed this entity is inside, if any.
func (w *walker) entity(h textproto.Header, body io.Reader, depth int, sn *signedNode, t *tree) error {
	mt, params, err := contentType(h)
	if err != nil {
		return err
	}
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	switch {
	case mt == "multipart/encrypted":
		return w.encrypted(params, body, depth, sn, t)
	case mt == "multipart/signed" && sn == nil &&
		strings.EqualFold(params["protocol"], "application/pgp-signature"):
		return w.signed(params, body, depth, t)
	case strings.HasPrefix(mt, "multipart/"):
		return w.multipart(params["boundary"], body, depth, func(_ int, p *textproto.Part) error {
			return w.entity(p.Header, p, depth+1, sn, t)
		})
	case mt == "text/plain":
		text, err := readDecoded(body, cte)
		if err != nil {
			return w.mapErr(err, "text/plain part")
		}
		l := classifyText(text)
		l.signed, l.depth, l.ctype = sn, depth, mt
		t.leaves = append(t.leaves, l)
		return nil
	default:
		empty, err := onlySpace(body)
		if err != nil {
			return w.mapErr(err, mt+" part")
		}
		k := leafPlain
		if empty {
			k = leafEmpty
		}
		t.leaves = append(t.leaves, leaf{kind: k, signed: sn, depth: depth, ctype: mt})
		return nil
	}
}

// multipart walks the body parts of a multipart entity at depth, calling
// fn for each. It enforces depth, part count and part header size before
// any part is handed to fn.
func (w *walker) multipart(boundary string, body io.Reader, depth int, fn func(i int, p *textproto.Part) error) error {
	if boundary == "" {
		return malformed("multipart without boundary parameter")
	}
	if depth+1 > w.lim.MaxMIMEDepth {
		return &LimitError{What: LimitMIMEDepth, Limit: int64(w.lim.MaxMIMEDepth)}
	}
	g := &headerGuard{r: body, dash: []byte("--" + boundary), max: w.lim.MaxHeaderBytes, w: w}
	mr := textproto.NewMultipartReader(g, boundary)
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			if i == 0 {
				return malformed("multipart with no body part")
			}
			return nil
		}
		if err != nil {
			return w.mapErr(err, "multipart")
		}
		w.parts++
		if w.parts > w.lim.MaxMIMEParts {
			return &LimitError{What: LimitMIMEParts, Limit: int64(w.lim.MaxMIMEParts)}
		}
		if err := fn(i, p); err != nil {
			return err
		}
	}
}

// mapErr turns a read or parse error into a problem.
func (w *walker) mapErr(err error, where string) error {
	var le *LimitError
	var me *MalformedError
	switch {
	case w.headerTooBig || errors.Is(err, errHeaderTooBig):
		return &LimitError{What: LimitHeaderSize, Limit: int64(w.lim.MaxHeaderBytes)}
	case errors.As(err, &le), errors.As(err, &me):
		return err
	}
	return malformed("%s: %v", where, err)
}

// encrypted handles multipart/encrypted (RFC 3156 §4): exactly two parts,
// application/pgp-encrypted ("Version: 1") and application/octet-stream
// holding the armored OpenPGP message. The walk does not look into the
// ciphertext; the decision to decrypt comes later.
func (w *walker) encrypted(params map[string]string, body io.Reader, depth int, sn *signedNode, t *tree) error {
	if !strings.EqualFold(params["protocol"], "application/pgp-encrypted") {
		return malformed("multipart/encrypted with protocol %q, want application/pgp-encrypted (RFC 3156 §4)", truncate(params["protocol"], 60))
	}
	l := leaf{kind: leafEncMIME, signed: sn, depth: depth, ctype: "multipart/encrypted"}
	err := w.multipart(params["boundary"], body, depth, func(i int, p *textproto.Part) error {
		mt, _, err := contentType(p.Header)
		if err != nil {
			return err
		}
		switch i {
		case 0:
			if mt != "application/pgp-encrypted" {
				return malformed("first part of multipart/encrypted is %s, want application/pgp-encrypted (RFC 3156 §4)", mt)
			}
			v, err := readDecoded(p, p.Header.Get("Content-Transfer-Encoding"))
			if err != nil {
				return w.mapErr(err, "application/pgp-encrypted part")
			}
			if !bytes.Contains(v, []byte("Version: 1")) {
				return malformed("application/pgp-encrypted part without \"Version: 1\" (RFC 3156 §4)")
			}
			return nil
		case 1:
			if mt != "application/octet-stream" {
				return malformed("second part of multipart/encrypted is %s, want application/octet-stream (RFC 3156 §4)", mt)
			}
			v, err := readDecoded(p, p.Header.Get("Content-Transfer-Encoding"))
			if err != nil {
				return w.mapErr(err, "encrypted part")
			}
			l.data = v
			return nil
		default:
			return malformed("multipart/encrypted with more than two parts (RFC 3156 §4)")
		}
	})
	if err != nil {
		return err
	}
	if l.data == nil {
		return malformed("multipart/encrypted without the encrypted part (RFC 3156 §4)")
	}
	t.leaves = append(t.leaves, l)
	return nil
}

// signed handles multipart/signed with protocol application/pgp-signature
// (RFC 3156 §5). The first part is kept exactly as transmitted (header as
// read, line ends made CRLF) for verification and is walked for its
// content; the second part must be application/pgp-signature.
func (w *walker) signed(params map[string]string, body io.Reader, depth int, t *tree) error {
	sn := &signedNode{}
	err := w.multipart(params["boundary"], body, depth, func(i int, p *textproto.Part) error {
		switch i {
		case 0:
			raw, err := io.ReadAll(p)
			if err != nil {
				return w.mapErr(err, "signed part")
			}
			var b bytes.Buffer
			if err := textproto.WriteHeader(&b, p.Header); err != nil {
				return malformed("signed part header: %v", err)
			}
			b.Write(toCRLF(raw))
			sn.signed = b.Bytes()
			return w.entity(p.Header, bytes.NewReader(raw), depth+1, sn, t)
		case 1:
			mt, _, err := contentType(p.Header)
			if err != nil {
				return err
			}
			if mt != "application/pgp-signature" {
				return malformed("second part of multipart/signed is %s, want application/pgp-signature (RFC 3156 §5)", mt)
			}
			sig, err := readDecoded(p, p.Header.Get("Content-Transfer-Encoding"))
			if err != nil {
				return w.mapErr(err, "signature part")
			}
			sn.signature = sig
			return nil
		default:
			return malformed("multipart/signed with more than two parts (RFC 3156 §5)")
		}
	})
	if err != nil {
		return err
	}
	if sn.signature == nil {
		return malformed("multipart/signed without a signature part (RFC 3156 §5)")
	}
	t.signed = append(t.signed, sn)
	return nil
}

// toCRLF makes every line end CRLF (RFC 3156 §5: the signed data is
// canonicalised to CRLF line ends before hashing).
func toCRLF(b []byte) []byte {
	n := bytes.Count(b, []byte{'\n'})
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return append(out, b...)
		}
		if i > 0 && b[i-1] == '\r' {
			out = append(out, b[:i+1]...)
		} else {
			out = append(out, b[:i]...)
			out = append(out, '\r', '\n')
		}
		b = b[i+1:]
	}
}

// readDecoded reads a part body and removes the transfer encoding
// (RFC 2045 §6). Charsets are left alone: signatures cover the bytes.
func readDecoded(r io.Reader, cte string) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "", "7bit", "8bit", "binary":
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &skipSpace{r: r})
	default:
		return nil, malformed("unknown Content-Transfer-Encoding %q", truncate(cte, 40))
	}
	return io.ReadAll(r)
}

// skipSpace drops the white space base64 bodies carry between lines
// (encoding/base64 only skips CR and LF).
type skipSpace struct{ r io.Reader }

func (s *skipSpace) Read(p []byte) (int, error) {
	for {
		n, err := s.r.Read(p)
		j := 0
		for _, c := range p[:n] {
			if c != ' ' && c != '\t' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// onlySpace reads r to the end and reports whether it held only white space.
func onlySpace(r io.Reader) (bool, error) {
	buf := make([]byte, 4096)
	empty := true
	for {
		n, err := r.Read(buf)
		if empty && !isSpace(buf[:n]) {
			empty = false
		}
		if err == io.EOF {
			return empty, nil
		}
		if err != nil {
			return false, err
		}
	}
}

func isSpace(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n', '\f', '\v':
		default:
			return false
		}
	}
	return true
}

// Armor lines (RFC 9580 §6.2, §7).
const (
	beginMessage   = "-----BEGIN PGP MESSAGE-----"
	endMessage     = "-----END PGP MESSAGE-----"
	beginSigned    = "-----BEGIN PGP SIGNED MESSAGE-----"
	beginSignature = "-----BEGIN PGP SIGNATURE-----"
	endSignature   = "-----END PGP SIGNATURE-----"
)

// findLine returns the offsets of the first line at or after from whose
// content (trailing white space removed) is want: start of the line and
// the offset just after its line end.
func findLine(text []byte, from int, want string) (int, int, bool) {
	for i := from; i < len(text); {
		j := bytes.IndexByte(text[i:], '\n')
		end := len(text)
		if j >= 0 {
			end = i + j + 1
		}
		if string(bytes.TrimRight(text[i:end], " \t\r\n")) == want {
			return i, end, true
		}
		i = end
	}
	return 0, 0, false
}

// classifyText looks for inline PGP in a decoded text/plain body.
func classifyText(text []byte) leaf {
	ms, _, okM := findLine(text, 0, beginMessage)
	ss, _, okS := findLine(text, 0, beginSigned)
	switch {
	case okM && (!okS || ms < ss):
		_, e, ok := findLine(text, ms, endMessage)
		if !ok {
			// An unterminated block cannot be decrypted; it is text.
			return leaf{kind: leafPlain}
		}
		return leaf{kind: leafInlineMsg, data: text[ms:e], mixedText: !isSpace(text[:ms]) || !isSpace(text[e:])}
	case okS:
		bs, _, ok := findLine(text, ss, beginSignature)
		if !ok {
			return leaf{kind: leafPlain}
		}
		_, e, ok := findLine(text, bs, endSignature)
		if !ok {
			return leaf{kind: leafPlain}
		}
		return leaf{kind: leafInlineSigned, data: text[ss:e], mixedText: !isSpace(text[:ss]) || !isSpace(text[e:])}
	}
	if isSpace(text) {
		return leaf{kind: leafEmpty}
	}
	return leaf{kind: leafPlain}
}

// headerGuard sits between a multipart body and its MultipartReader and
// fails the read once a part header grows past max bytes, so a huge part
// header costs at most max bytes of parsing (go-message bounds only the
// top-level header). It recognises a superset of the delimiter lines the
// reader accepts ("--boundary" at a line start followed by white space or
// the line end), so it never under-counts a header the reader parses.
type headerGuard struct {
	r    io.Reader
	dash []byte
	max  int
	w    *walker
	err  error

	inHeader bool
	hdrBytes int
	lineLen  int  // header mode: bytes of the current line, without LF
	lastCR   bool // header mode: last byte of the line was CR

	// body mode: pos bytes of the current line matched dash; skip: the
	// current line cannot be a delimiter; cand: it can.
	pos  int
	skip bool
	cand bool
}

func (g *headerGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if g.scan(p[:n]) {
		g.err = errHeaderTooBig
		g.w.headerTooBig = true
		return 0, g.err
	}
	return n, err
}

// scan feeds b through the state machine; true means the limit tripped.
func (g *headerGuard) scan(b []byte) bool {
	for i := 0; i < len(b); {
		if g.inHeader {
			c := b[i]
			i++
			g.hdrBytes++
			if g.hdrBytes > g.max {
				return true
			}
			if c == '\n' {
				if g.lineLen == 0 || (g.lineLen == 1 && g.lastCR) {
					g.inHeader = false
					g.pos, g.skip, g.cand = 0, false, false
				}
				g.lineLen, g.lastCR = 0, false
				continue
			}
			g.lineLen++
			g.lastCR = c == '\r'
			continue
		}
		if g.skip {
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				return false
			}
			i += j
		}
		c := b[i]
		i++
		if c == '\n' {
			if g.cand || (!g.skip && g.pos == len(g.dash)) {
				g.inHeader, g.hdrBytes, g.lineLen, g.lastCR = true, 0, 0, false
			}
			g.pos, g.skip, g.cand = 0, false, false
			continue
		}
		switch {
		case g.cand:
		case g.pos < len(g.dash):
			if c == g.dash[g.pos] {
				g.pos++
			} else {
				g.skip = true
			}
		case c == ' ' || c == '\t' || c == '\r':
			g.cand = true
		default:
			g.skip = true
		}
	}
	return false
}
