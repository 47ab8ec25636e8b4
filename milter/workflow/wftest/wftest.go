// Package wftest plays the subscriber's mail client in tests of the
// command responder: it writes command mails (plain, with a key attached,
// cleartext-signed) and opens the responder's replies (decrypts, checks
// the list's signature, returns the text).
package wftest

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/milter/workflow"
)

// Sent is one message a Capture received.
type Sent struct {
	From string
	To   []string
	Data []byte
}

// Capture is a workflow.Mailer that records what it is given.
type Capture struct {
	mu   sync.Mutex
	msgs []Sent
	// Err, when set, is returned by Send (and nothing is recorded).
	Err error
}

// Send implements workflow.Mailer.
func (c *Capture) Send(_ context.Context, from string, to []string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Err != nil {
		return c.Err
	}
	c.msgs = append(c.msgs, Sent{From: from, To: append([]string(nil), to...), Data: append([]byte(nil), data...)})
	return nil
}

// Messages returns what was sent so far.
func (c *Capture) Messages() []Sent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Sent(nil), c.msgs...)
}

// To returns the messages sent to addr.
func (c *Capture) To(addr string) []Sent {
	var out []Sent
	for _, m := range c.Messages() {
		for _, t := range m.To {
			if t == addr {
				out = append(out, m)
			}
		}
	}
	return out
}

// Mail writes a command mail: text/plain body, and each attachment as an
// application/pgp-keys part (multipart/mixed).
func Mail(from, to, subject, body string, attachments ...[]byte) []byte {
	hdr := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d.cmd@example.org>\r\nDate: %s\r\nMIME-Version: 1.0\r\n",
		from, to, subject, time.Now().UnixNano(), time.Now().UTC().Format(time.RFC1123Z))
	text := "Content-Type: text/plain; charset=utf-8\r\n\r\n" + crlf(body) + "\r\n"
	if len(attachments) == 0 {
		return []byte(hdr + text)
	}
	const b = "wftest-mixed"
	var m strings.Builder
	m.WriteString(hdr + "Content-Type: multipart/mixed; boundary=\"" + b + "\"\r\n\r\n--" + b + "\r\n" + text)
	for i, a := range attachments {
		fmt.Fprintf(&m, "--%s\r\nContent-Type: application/pgp-keys; name=\"key%d.asc\"\r\nContent-Disposition: attachment; filename=\"key%d.asc\"\r\n\r\n%s\r\n", b, i, i, crlf(string(a)))
	}
	m.WriteString("--" + b + "--\r\n")
	return []byte(m.String())
}

// Clearsigned writes a command mail whose body is body cleartext-signed
// (RFC 9580 §7) by signer, as "gpg --clearsign" does.
func Clearsigned(t testing.TB, from, to, body string, signer *openpgp.Entity) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := clearsign.Encode(&out, signer.PrivateKey, keyring.PacketConfig(keyring.DefaultLimits, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return Mail(from, to, "confirm", out.String())
}

func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// Open opens a reply: decrypts it with key (if it is encrypted; key may
// be nil for a signed-only reply), checks that it is signed by the list
// key listPub and returns the text of the inner entity.
func Open(t testing.TB, data []byte, key, listPub *openpgp.Entity) string {
	t.Helper()
	text, err := OpenErr(data, key, listPub)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	return text
}

var throwaway struct {
	once sync.Once
	key  *openpgp.Entity
}

// OpenErr is Open returning the error.
func OpenErr(data []byte, key, listPub *openpgp.Entity) (string, error) {
	if key == nil {
		throwaway.once.Do(func() {
			throwaway.key, _ = keyring.GenerateListKey("nobody@example.invalid", keyring.KeyEd25519, time.Now().Add(-time.Hour), randReader{})
		})
		key = throwaway.key
	}
	res, err := inbound.Examine(inbound.Input{Message: data, ListKey: key, Signers: openpgp.EntityList{listPub}, Now: time.Now()})
	if err != nil {
		return "", err
	}
	if len(res.Problems) > 0 || res.Sig != inbound.SigValid || res.SignerFingerprint != keyring.Fingerprint(listPub) {
		return "", fmt.Errorf("reply: kind %v sig %v problems %v", res.Kind, res.Sig, res.Problems)
	}
	entity := data
	if res.Encrypted {
		entity = res.Plaintext
	}
	return workflow.EntityText(entity)
}

var tokenLine = regexp.MustCompile(`(?m)^(key set|key confirm|unsubscribe) ([A-Z2-7]{32})\s*$`)

// Token returns the token of the first "key set", "key confirm" or
// "unsubscribe" line in text.
func Token(t testing.TB, text string) string {
	t.Helper()
	m := tokenLine.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no token line in:\n%s", text)
	}
	return m[2]
}

// Statement returns the statement of a key confirm reply: the lines
// between the two "-----" lines.
func Statement(t testing.TB, text string) string {
	t.Helper()
	_, rest, ok := strings.Cut(text, "-----\n")
	if !ok {
		t.Fatalf("no statement in:\n%s", text)
	}
	st, _, ok := strings.Cut(rest, "-----\n")
	if !ok {
		t.Fatalf("no statement end in:\n%s", text)
	}
	return st
}

// randReader is crypto/rand for the throw-away key.
type randReader struct{}

func (randReader) Read(p []byte) (int, error) { return cryptorand.Read(p) }
