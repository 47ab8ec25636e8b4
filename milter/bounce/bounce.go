// Package bounce reads the mail that arrives at a list's bounce address
// (LIST-bounces@DOMAIN): delivery status notifications (RFC 3464) and the
// common non-standard bounce shapes, for which member failed and how.
// It makes no decision: scores and member state come later (docs/bounces.md).
package bounce

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// Kind says what a message at the bounce address is.
type Kind string

const (
	// KindBounce: a delivery report naming at least one recipient that
	// failed or is delayed.
	KindBounce Kind = "bounce"
	// KindAutoReply: an automatic reply (RFC 3834 Auto-Submitted, vacation
	// and out-of-office replies); it goes to the owners.
	KindAutoReply Kind = "auto-reply"
	// KindOther: anything else (a success DSN, a human's mail, garbage);
	// it goes to the owners.
	KindOther Kind = "other"
)

// Shape names the form a bounce was read from.
type Shape string

const (
	ShapeDSN       Shape = "dsn"       // RFC 3464 message/delivery-status
	ShapePostfix   Shape = "postfix"   // Postfix text without a DSN part
	ShapeSendmail  Shape = "sendmail"  // Sendmail text without a DSN part
	ShapeExim      Shape = "exim"      // Exim's "mail delivery software" text
	ShapeGmail     Shape = "gmail"     // Gmail-style "Address not found"
	ShapeMicrosoft Shape = "microsoft" // Exchange/Outlook "Undeliverable:"
	ShapeQmail     Shape = "qmail"     // qmail-send's "Hi. This is the qmail-send program"
)

// Report is what Parse found.
type Report struct {
	Kind  Kind  `json:"kind"`
	Shape Shape `json:"shape,omitempty"` // set for KindBounce (and a DSN without failures)
	// Recipients are the failed or delayed recipients, in the order the
	// report lists them, at most Limits.MaxRecipients.
	Recipients []Recipient `json:"recipients,omitempty"`
	// Incomplete: the MIME structure broke off (a truncated message); the
	// recipients are those read before the break.
	Incomplete bool `json:"incomplete,omitempty"`
}

// Recipient is one recipient a report says failed or is delayed.
type Recipient struct {
	// Address is the recipient the report names (a DSN's
	// Final-Recipient), normalised to lower case as member addresses are.
	Address string `json:"address"`
	// Original is a DSN's Original-Recipient, when it differs.
	Original string `json:"original,omitempty"`
	// Action is a DSN's Action ("failed", "delayed"); for text shapes
	// "failed", or "delayed" for a warning.
	Action string `json:"action"`
	// Permanent: a 5.x.x failure. A 4.x.x status (a delay, or a message
	// that expired in a queue after temporary failures) is temporary.
	Permanent bool `json:"permanent"`
	// Status is the enhanced status code (RFC 3463), "5.1.1"; "" when the
	// report has none.
	Status string `json:"status,omitempty"`
	// Diagnostic is the remote server's or MTA's text, one printable line
	// of at most Limits.MaxDiagnostic bytes. It is the remote side's
	// words: log it, never act on it.
	Diagnostic string `json:"diagnostic,omitempty"`
}

// Limits bound the work Parse does. A zero field takes its default
// (DefaultLimits).
type Limits struct {
	MaxSize       int // bytes of the whole message; larger is ErrTooLarge
	MaxDepth      int // MIME nesting; deeper is ErrTooComplex
	MaxParts      int // MIME parts in all; more is ErrTooComplex
	MaxLineLength int // longer lines are cut before they are read
	MaxLines      int // lines of text read per part
	MaxRecipients int // recipients reported
	MaxDiagnostic int // bytes of a Diagnostic
}

// DefaultLimits: a bounce carries the returned message, so the size is
// that of a post (Postfix's message_size_limit default); the rest is
// far beyond any real report.
func DefaultLimits() Limits {
	return Limits{
		MaxSize:       10 << 20,
		MaxDepth:      8,
		MaxParts:      100,
		MaxLineLength: 1000, // RFC 5322 §2.1.1: 998 and CRLF
		MaxLines:      5000,
		MaxRecipients: 100,
		MaxDiagnostic: 300,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	for _, f := range []struct{ v, d *int }{
		{&l.MaxSize, &d.MaxSize}, {&l.MaxDepth, &d.MaxDepth}, {&l.MaxParts, &d.MaxParts},
		{&l.MaxLineLength, &d.MaxLineLength}, {&l.MaxLines, &d.MaxLines},
		{&l.MaxRecipients, &d.MaxRecipients}, {&l.MaxDiagnostic, &d.MaxDiagnostic},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	l.MaxDiagnostic = max(l.MaxDiagnostic, 16)
	return l
}

// Errors of Parse; test with errors.Is.
var (
	ErrTooLarge   = errors.New("bounce: message larger than the size limit")
	ErrTooComplex = errors.New("bounce: too many or too deeply nested MIME parts")
	ErrMalformed  = errors.New("bounce: unreadable message")
)

// Parse reads msg, a whole message as it arrived at the bounce address.
// A message that is no bounce is no error: it is KindAutoReply or
// KindOther. Errors are ErrTooLarge, ErrTooComplex and ErrMalformed (no
// readable header, or a MIME structure broken before anything was read).
// Parse never panics and reads nothing beyond lim.
func Parse(msg []byte, lim Limits) (Report, error) {
	lim = lim.withDefaults()
	if len(msg) > lim.MaxSize {
		return Report{}, fmt.Errorf("%w (%d bytes, limit %d)", ErrTooLarge, len(msg), lim.MaxSize)
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil {
		return Report{}, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	w := walker{lim: lim}
	e, err := message.Read(bytes.NewReader(msg))
	var walkErr error
	if err != nil && !lenient(err) {
		walkErr = fmt.Errorf("MIME header: %w", err)
	} else {
		walkErr = w.walk(e, 0)
	}
	if errors.Is(walkErr, ErrTooComplex) {
		return Report{}, walkErr
	}
	r := w.report(subject(h))
	if walkErr != nil {
		if r.Kind != KindBounce {
			return Report{}, fmt.Errorf("%w: %v", ErrMalformed, walkErr)
		}
		r.Incomplete = true
	}
	// A delivery report without failures (a success DSN) is no
	// auto-reply, though it says Auto-Submitted.
	if r.Kind != KindBounce && r.Shape == "" && isAutoReply(h) {
		r = Report{Kind: KindAutoReply}
	}
	return r, nil
}

// walker collects the parts of a report: the delivery-status bodies and
// the text a human reads. The returned message (message/rfc822,
// text/rfc822-headers) is never looked into: it may itself be a bounce.
type walker struct {
	lim    Limits
	parts  int
	status [][]byte // message/delivery-status bodies
	texts  [][]byte // text/plain bodies (and a body without a type)
}

func (w *walker) walk(e *message.Entity, depth int) error {
	w.parts++
	if depth > w.lim.MaxDepth || w.parts > w.lim.MaxParts {
		return fmt.Errorf("%w (limits: depth %d, parts %d)", ErrTooComplex, w.lim.MaxDepth, w.lim.MaxParts)
	}
	mt, _, perr := e.Header.ContentType()
	if perr != nil {
		mt = "text/plain"
	}
	if mr := e.MultipartReader(); mr != nil {
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return nil
			}
			if err != nil && (p == nil || !lenient(err)) {
				return fmt.Errorf("multipart: %w", err)
			}
			if err := w.walk(p, depth+1); err != nil {
				return err
			}
		}
	}
	if strings.HasPrefix(mt, "multipart/") {
		return errors.New("multipart without boundary")
	}
	switch mt {
	case "message/delivery-status", "message/global-delivery-status", "text/delivery-status":
		body, err := io.ReadAll(io.LimitReader(e.Body, int64(w.lim.MaxSize)))
		if err != nil {
			return fmt.Errorf("delivery-status: %w", err)
		}
		w.status = append(w.status, body)
	case "text/plain":
		// Only the first few text parts: the explanation comes first.
		if len(w.texts) >= 3 {
			return nil
		}
		body, err := io.ReadAll(io.LimitReader(e.Body, int64(w.lim.MaxSize)))
		if err != nil && len(body) == 0 {
			return fmt.Errorf("text: %w", err)
		}
		w.texts = append(w.texts, body)
	}
	return nil
}

// lenient: an unknown charset or transfer encoding leaves the body as
// it is; the markers looked for are ASCII.
func lenient(err error) bool {
	return message.IsUnknownCharset(err) || message.IsUnknownEncoding(err)
}

// report reads what the walk collected: a DSN is authoritative; without
// one, the text is matched against the known shapes.
func (w *walker) report(subject string) Report {
	if len(w.status) > 0 {
		var rcpts []Recipient
		for _, s := range w.status {
			rcpts = append(rcpts, parseDeliveryStatus(s, w.lim)...)
		}
		rcpts = w.cap(rcpts)
		if len(rcpts) == 0 {
			return Report{Kind: KindOther, Shape: ShapeDSN}
		}
		return Report{Kind: KindBounce, Shape: ShapeDSN, Recipients: rcpts}
	}
	for _, t := range w.texts {
		lines := splitLines(t, w.lim)
		if shape, rcpts := parseText(subject, lines, w.lim); len(rcpts) > 0 {
			return Report{Kind: KindBounce, Shape: shape, Recipients: w.cap(rcpts)}
		}
	}
	return Report{Kind: KindOther}
}

// cap drops duplicates (the same address and action) and keeps at most
// MaxRecipients.
func (w *walker) cap(rcpts []Recipient) []Recipient {
	var out []Recipient
	seen := map[string]bool{}
	for _, r := range rcpts {
		k := r.Address + " " + r.Action
		if seen[k] {
			continue
		}
		seen[k] = true
		if len(out) == w.lim.MaxRecipients {
			break
		}
		out = append(out, r)
	}
	return out
}

// splitLines turns a body into at most MaxLines lines, each cut to
// MaxLineLength bytes, line ends removed.
func splitLines(body []byte, lim Limits) []string {
	var lines []string
	for len(body) > 0 && len(lines) < lim.MaxLines {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) > lim.MaxLineLength {
			line = line[:lim.MaxLineLength]
		}
		lines = append(lines, string(line))
	}
	return lines
}

// subject is the decoded Subject (RFC 2047), "" if none.
func subject(h textproto.Header) string {
	s := h.Get("Subject")
	dec := mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil }}
	if d, err := dec.DecodeHeader(s); err == nil {
		s = d
	}
	return oneLine(s, 200)
}

// isAutoReply: RFC 3834 §5 Auto-Submitted other than "no", and the
// headers and subjects that vacation programs and Exchange use instead.
func isAutoReply(h textproto.Header) bool {
	if as := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted"))); as != "" && !strings.HasPrefix(as, "no") {
		return true
	}
	for _, k := range []string{"X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation"} {
		if h.Has(k) {
			return true
		}
	}
	if strings.EqualFold(strings.TrimSpace(h.Get("Precedence")), "auto_reply") {
		return true
	}
	if h.Has("X-Auto-Response-Suppress") && h.Has("In-Reply-To") {
		return true // Exchange marks its automatic replies so
	}
	s := strings.ToLower(subject(h))
	for _, p := range []string{"auto:", "automatic reply:", "autoreply", "auto-reply", "out of office", "out of the office", "abwesenheitsnotiz", "réponse automatique"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
