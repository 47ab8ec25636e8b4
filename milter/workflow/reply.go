package workflow

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	netmail "net/mail"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/reinject"
)

// Mailer submits a message. ReinjectMailer is the production one.
type Mailer interface {
	Send(ctx context.Context, from string, to []string, data []byte) error
}

// ReinjectMailer submits to the MTA's listener with milters off
// ([reinject] address).
type ReinjectMailer struct{ Address string }

// Send implements Mailer.
func (m ReinjectMailer) Send(ctx context.Context, from string, to []string, data []byte) error {
	return reinject.Send(ctx, m.Address, from, to, data)
}

// mail is one message the responder writes: a reply to a command, or a
// notice to a moderator or subscriber.
type mail struct {
	From      string // header From (the list's request address)
	FromName  string
	To        string
	Subject   string
	Text      string
	KeyName   string // file name of the attached key
	Key       string // armored key to attach ("key get"), or ""
	InReplyTo string // Message-ID of the command mail, or ""
	// Attach is a mail attached whole (message/rfc822): mail at the
	// bounce address forwarded to an owner. Only with EncryptTo: the
	// attachment may be 8bit or binary, which only encryption carries
	// unchanged.
	Attach []byte
	// AlsoSignedBy, when set, signs the mail too, beside the list key:
	// the old list key on the notice of a key change (keynotice.go).
	AlsoSignedBy *openpgp.Entity
	// EncryptTo, when set, gets the mail encrypted (PGP/MIME, RFC 3156 §4,
	// signed inside, §6.2); otherwise it is only signed (RFC 3156 §5).
	EncryptTo *openpgp.Entity
}

// compose writes m as an RFC 5322 message with CRLF line ends, signed by
// signer (the list key, secret parts open) and by m.AlsoSignedBy if set.
func compose(m mail, signer *openpgp.Entity, now time.Time, rand io.Reader, l keyring.Limits) ([]byte, error) {
	signers := []*openpgp.Entity{signer}
	if m.AlsoSignedBy != nil {
		signers = append(signers, m.AlsoSignedBy)
	}
	cfg := keyring.PacketConfig(l, func() time.Time { return now })
	cfg.Rand = rand
	boundary := func(prefix string) (string, error) {
		b := make([]byte, 12)
		if _, err := io.ReadFull(rand, b); err != nil {
			return "", err
		}
		return prefix + hex.EncodeToString(b), nil
	}
	inner, err := innerEntity(m, boundary)
	if err != nil {
		return nil, err
	}
	var h strings.Builder
	fmt.Fprintf(&h, "From: %s\r\n", (&netmail.Address{Name: m.FromName, Address: m.From}).String())
	fmt.Fprintf(&h, "To: %s\r\n", (&netmail.Address{Address: m.To}).String())
	fmt.Fprintf(&h, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", m.Subject))
	fmt.Fprintf(&h, "Date: %s\r\n", now.UTC().Format(time.RFC1123Z))
	id, err := boundary("")
	if err != nil {
		return nil, err
	}
	_, domain, _ := strings.Cut(m.From, "@")
	fmt.Fprintf(&h, "Message-ID: <%s@%s>\r\n", id, domain)
	if m.InReplyTo != "" && !strings.ContainsAny(m.InReplyTo, "\r\n") && len(m.InReplyTo) < 500 {
		fmt.Fprintf(&h, "In-Reply-To: %s\r\nReferences: %s\r\n", m.InReplyTo, m.InReplyTo)
	}
	// RFC 3834: an automatic reply; mail software must not answer it.
	h.WriteString("Auto-Submitted: auto-replied\r\n")
	h.WriteString("MIME-Version: 1.0\r\n")

	var out bytes.Buffer
	out.WriteString(h.String())
	if m.EncryptTo != nil {
		b, err := boundary("enc-")
		if err != nil {
			return nil, err
		}
		var ct bytes.Buffer
		aw, err := armor.Encode(&ct, "PGP MESSAGE", nil)
		if err != nil {
			return nil, err
		}
		w, err := openpgp.EncryptWithParams(aw, []*openpgp.Entity{m.EncryptTo}, nil,
			&openpgp.EncryptParams{Signers: signers, Config: cfg})
		if err != nil {
			return nil, fmt.Errorf("encrypt reply to %s: %w", keyring.Fingerprint(m.EncryptTo), err)
		}
		if _, err := w.Write(inner); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		if err := aw.Close(); err != nil {
			return nil, err
		}
		// RFC 3156 §4.
		fmt.Fprintf(&out, "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"%s\"\r\n\r\n", b)
		out.WriteString("This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n")
		fmt.Fprintf(&out, "--%s\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n", b)
		fmt.Fprintf(&out, "--%s\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n", b)
		out.Write(crlf(ct.Bytes()))
		fmt.Fprintf(&out, "\r\n--%s--\r\n", b)
		return out.Bytes(), nil
	}
	// RFC 3156 §5: sign the first part exactly as sent, CRLF line ends.
	b, err := boundary("sig-")
	if err != nil {
		return nil, err
	}
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, signers, bytes.NewReader(inner), &openpgp.SignParams{Config: cfg}); err != nil {
		return nil, fmt.Errorf("sign reply: %w", err)
	}
	micalg, err := micalgOf(sig.Bytes())
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(&out, "Content-Type: multipart/signed; micalg=%s; protocol=\"application/pgp-signature\"; boundary=\"%s\"\r\n\r\n", micalg, b)
	out.WriteString("This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n")
	fmt.Fprintf(&out, "--%s\r\n", b)
	out.Write(inner)
	fmt.Fprintf(&out, "\r\n--%s\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\nContent-Description: OpenPGP digital signature\r\nContent-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n", b)
	out.Write(crlf(sig.Bytes()))
	fmt.Fprintf(&out, "\r\n--%s--\r\n", b)
	return out.Bytes(), nil
}

// innerEntity is the MIME entity that is signed (and encrypted): the
// text, quoted-printable, and the attached key if any. CRLF line ends.
func innerEntity(m mail, boundary func(string) (string, error)) ([]byte, error) {
	body := strings.ReplaceAll(m.Text, "\r\n", "\n")
	var textPart string
	if plainASCII(body) {
		textPart = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" + string(crlf([]byte(body)))
	} else {
		var text bytes.Buffer
		qw := quotedprintable.NewWriter(&text)
		if _, err := qw.Write([]byte(body)); err != nil {
			return nil, err
		}
		if err := qw.Close(); err != nil {
			return nil, err
		}
		textPart = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + string(crlf(text.Bytes()))
	}
	if !strings.HasSuffix(textPart, "\r\n") {
		textPart += "\r\n"
	}
	if m.Key == "" && m.Attach == nil {
		return []byte(textPart), nil
	}
	b, err := boundary("mix-")
	if err != nil {
		return nil, err
	}
	var e bytes.Buffer
	fmt.Fprintf(&e, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n", b)
	fmt.Fprintf(&e, "--%s\r\n%s", b, textPart)
	if m.Key != "" {
		// RFC 3156 §7: keys travel as application/pgp-keys.
		fmt.Fprintf(&e, "--%s\r\nContent-Type: application/pgp-keys; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\n\r\n", b, m.KeyName, m.KeyName)
		e.Write(crlf([]byte(m.Key)))
		if !bytes.HasSuffix(e.Bytes(), []byte("\r\n")) {
			e.WriteString("\r\n")
		}
	}
	if m.Attach != nil {
		fmt.Fprintf(&e, "--%s\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"returned.eml\"\r\n\r\n", b)
		e.Write(crlf(m.Attach))
		if !bytes.HasSuffix(e.Bytes(), []byte("\r\n")) {
			e.WriteString("\r\n")
		}
	}
	fmt.Fprintf(&e, "--%s--\r\n", b)
	return e.Bytes(), nil
}

// plainASCII: 7-bit text with short lines, no trailing white space
// (which some MTAs strip), so it can go as 7bit under a signature.
func plainASCII(s string) bool {
	for _, line := range strings.Split(s, "\n") {
		if len(line) > 900 || strings.HasSuffix(line, " ") || strings.HasSuffix(line, "\t") || strings.HasPrefix(line, "From ") {
			return false
		}
		for i := 0; i < len(line); i++ {
			if c := line[i]; c >= 0x7f || (c < 0x20 && c != '\t') {
				return false
			}
		}
	}
	return true
}

// micalgOf names the hash of an armored signature for the micalg
// parameter (RFC 3156 §5).
func micalgOf(armored []byte) (string, error) {
	blk, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		return "", fmt.Errorf("read own signature: %w", err)
	}
	p, err := packet.Read(blk.Body)
	if err != nil {
		return "", fmt.Errorf("read own signature: %w", err)
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		return "", fmt.Errorf("read own signature: %T", p)
	}
	switch sig.Hash {
	case crypto.SHA256:
		return "pgp-sha256", nil
	case crypto.SHA384:
		return "pgp-sha384", nil
	case crypto.SHA512:
		return "pgp-sha512", nil
	case crypto.SHA224:
		return "pgp-sha224", nil
	case crypto.SHA3_256:
		return "pgp-sha3-256", nil
	case crypto.SHA3_512:
		return "pgp-sha3-512", nil
	}
	return "", fmt.Errorf("own signature uses unexpected hash %v", sig.Hash)
}

// crlf makes every line end CRLF.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}
