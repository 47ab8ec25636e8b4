// Package outbound is where a post is encrypted for the members of a list
// (DESIGN.md step 4): the post is signed once by the list key and
// encrypted once under a fresh session key; each batch of recipients then
// gets only its own public-key packets (PKESK) in front of the shared
// encrypted data. The result is PGP/MIME (RFC 3156 §4, combined
// sign+encrypt as in §6.2) with protected headers inside the encryption
// (RFC 9788) and the list headers outside (RFC 2369, 2919, 8058).
//
// It is pure: bytes and keys in, messages out. No store, no network, no
// logging, no clock other than Params.Now. The plaintext lives only in
// memory.
//
// # Cost
//
// One signature, one symmetric encryption per data-packet variant
// actually needed (SEIPDv1 with MDC for batches with any legacy key;
// SEIPDv2 AEAD, GCM where the keys list it, only if some batch consists
// only of keys that advertise SEIPDv2), and one PKESK per recipient,
// spread over Params.Workers goroutines. Every batch shares the armored
// encrypted data (armor.go), so a batch costs its key packets, not a
// re-encoding of the post, and all batches together hold the post once.
// Each member key (keyring.StoredKey) remembers its encryption key
// choice, so the self-signature checks of a key are paid once, not per
// post.
//
// # Message shape (decisions)
//
//   - Inside, signed by the list key (and compressed when that makes it
//     a tenth smaller): the RFC 9788 cryptographic payload, a
//     multipart/mixed with hp="cipher" whose header carries Date, From,
//     Reply-To, To, Cc, Subject, Message-ID, In-Reply-To, References as
//     the caller decided them (Post.Header) and an HP-Outer field for
//     each that also appears outside; its parts are an optional notice
//     and the post's entity (Post.Inner, or Post.SenderSigned), byte for
//     byte. The entity's own header fields are never read: what members
//     see of the author is decided by the caller from what was verified.
//   - Outside: From per FromMode ("Alice via devs" <list> with Reply-To:
//     the author, the default, so the list's mail passes DMARC; or the
//     author's From), To: the list, Subject "[NAME] Encrypted message" by
//     default (not the real one; "keep" or a fixed text are the
//     alternatives), the original Date, Message-ID (generated at the
//     list's domain if the post has none, and then the same inside),
//     In-Reply-To and References (threading and duplicate detection keep
//     working in clients that do not read protected headers; RFC 9788's
//     baseline policy leaves these outside too), List-Id, List-Post,
//     List-Help, List-Subscribe, List-Unsubscribe (+ List-Unsubscribe-Post
//     with an https URL), Precedence: list, MIME-Version, and
//     multipart/encrypted with a random boundary. Cc stays inside only.
//   - Envelope sender: the bounce address (LOCAL-bounces@DOMAIN).
//   - Hidden recipients (wildcard key IDs): GnuPG and Sequoia try every
//     secret key; RNP 0.16 cannot decrypt such messages at all (0.17 needs
//     --allow-hidden, which Thunderbird sets). A list with RNP 0.16 users
//     needs hide_recipients = false.
//   - A member whose key advertises SEIPDv2 still gets SEIPDv1 when
//     anyone in its batch does not: the data packet is shared by the batch.
//
// # Batch size
//
// With hidden recipients a member's client tries its key on every PKESK
// of its batch until one opens: up to BatchSize private-key operations
// (measured with go-crypto: X25519 ~34 µs, RSA-4096 ~5.8 ms each, so 50
// cost a member at most ~2 ms, or ~0.3 s with RSA-4096). The sender side
// does not depend on the batch size (the data is shared), only the number
// of SMTP transactions does. DefaultBatchSize = 50 keeps the worst case
// for an RSA-4096 member under a third of a second and a 10,000-member
// post at 200 messages.
package outbound

import (
	"bytes"
	"compress/flate"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
)

// Policy values for Params.Subject and Params.FromMode.
const (
	// SubjectKeep puts the real Subject in the outer header too.
	SubjectKeep = "keep"
	// FromVia rewrites the outer From to the list address with the
	// author's name ("Alice via devs" <devs@...>) and sets Reply-To to
	// the author, so the list's mail passes DMARC for the author's domain.
	FromVia = "via"
	// FromKeep leaves the author's From in the outer header.
	FromKeep = "keep"
)

// DefaultBatchSize is used when Params.BatchSize is zero.
const DefaultBatchSize = 50

// Params is the list policy and context for one post.
type Params struct {
	// ListAddress is the list's posting address, devs@lists.example.org.
	ListAddress string
	// ListName is the list's display name (List-Id phrase, "via" name,
	// default Subject tag). Default: the local part of ListAddress.
	ListName string
	// ListKey signs every post; its secret signing key must be decrypted.
	ListKey *openpgp.Entity
	// BounceAddress is the envelope sender of every batch (Batch.EnvelopeFrom).
	// Default: LOCAL-bounces@DOMAIN.
	BounceAddress string
	// BatchSize is the number of recipients per delivered message
	// (policy distribute.batch_size). Default DefaultBatchSize.
	BatchSize int
	// HideRecipients writes wildcard (zero) key IDs in the PKESK packets
	// (RFC 9580 §5.1.1): a member's client tries its key on every packet
	// of its batch, and no member learns the others' keys.
	HideRecipients bool
	// Subject is the outer Subject. "" gives "[NAME] Encrypted message";
	// "keep" (SubjectKeep) keeps the real Subject outside too; any other
	// text is used as is (RFC 2047 encoded if not ASCII). The real Subject
	// is always inside, among the protected headers.
	Subject string
	// FromMode is "via" (FromVia, the default) or "keep" (FromKeep).
	FromMode string
	// KeepSenderSignature makes the sender's own signature travel inside
	// the encryption (Post.SenderSigned), so members can verify the author
	// end to end.
	KeepSenderSignature bool
	// ListHeaders configures the RFC 2369/2919/8058 header fields.
	ListHeaders ListHeaders
	// Now is the clock (signature time, key validity, Date when the post
	// has none). Default time.Now.
	Now func() time.Time
	// Rand is the randomness source (session keys, PKESK ephemeral keys,
	// MIME boundary, Message-ID). Default crypto/rand.Reader. It is used
	// from several goroutines under a lock.
	Rand io.Reader
	// Limits are the OpenPGP limits (keyring.PacketConfig).
	Limits keyring.Limits
	// Workers is the number of goroutines computing PKESK packets.
	// Default runtime.GOMAXPROCS(0).
	Workers int
}

// ListHeaders configures the List-* header fields. The defaults derive
// from Params.ListAddress LOCAL@DOMAIN.
type ListHeaders struct {
	// ID is the List-Id label (RFC 2919). Default LOCAL.DOMAIN.
	ID string
	// RequestAddress receives commands (List-Help, List-Subscribe,
	// List-Unsubscribe as mailto: with ?subject=...). Default
	// LOCAL-request@DOMAIN.
	RequestAddress string
	// UnsubscribeURL is an optional https: one-click unsubscribe URL. When
	// set, it is listed in List-Unsubscribe and List-Unsubscribe-Post:
	// List-Unsubscribe=One-Click is added (RFC 8058; receivers honour it
	// only with a DKIM signature covering both fields, which is the MTA's
	// job).
	UnsubscribeURL string
	// ArchiveURL, when set, is given as List-Archive.
	ArchiveURL string
}

// Header holds the header fields members see, raw (unfolded, RFC 2047
// encoded words left encoded). Empty means absent. The caller decides
// them (for a signed post: from the checked sender and the signed header
// fields only); Prepare writes them as they are, inside the encryption
// and, as the policy says, outside.
type Header struct {
	From, ReplyTo, To, Cc, Date, MessageID, InReplyTo, References, Subject string
}

// Post is one accepted post.
type Post struct {
	// Inner is the MIME entity the member reads, carried byte for byte
	// (CRLF; bare LF is converted) as the last part of the payload: for a
	// signed post exactly the bytes whose signature was verified.
	Inner []byte
	// Header is what members see (see Header).
	Header Header
	// SenderSigned is the author's signature in a form members can
	// verify (a multipart/signed around Inner, or a cleartext-signed
	// text/plain entity), carried instead of Inner when
	// Params.KeepSenderSignature is set. Nil: Inner is carried.
	SenderSigned []byte
	// Notice, when not empty, is shown to members as a first text/plain
	// part inside the encryption (for example: the author's signature
	// does not show the post was written for this list).
	Notice string
}

// Recipient is one member to deliver to.
type Recipient struct {
	Address string
	// Key is the member's key: a stored key of the member cache, or
	// keyring.EntityKey of a parsed one.
	Key *keyring.StoredKey
}

// Field is one outer header field, unfolded.
type Field struct {
	Name, Value string
}

// Prepared is a post signed and ready to be encrypted: the signature is
// made, the outer header fields are fixed, and the encrypted data packet
// of each variant is made at most once, when a batch first needs it.
// A Prepared is safe for concurrent use.
type Prepared struct {
	p        Params
	cfg      *packet.Config
	rand     io.Reader
	signed   []byte // the signed OpenPGP message (plaintext: memory only)
	header   []Field
	boundary string
	bodyHead []byte // MIME preamble, version part, data part header, armor header
	bodyTail []byte // armor footer, closing boundary

	mu       sync.Mutex
	variants map[suite]*variant
}

// lockedReader serialises reads of a random source that may not be safe
// for concurrent use.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(b)
}

func (p *Params) withDefaults() error {
	p.ListAddress = strings.TrimSpace(p.ListAddress)
	at := strings.LastIndexByte(p.ListAddress, '@')
	if at <= 0 || at == len(p.ListAddress)-1 || strings.ContainsAny(p.ListAddress, " \t\r\n<>()\"") {
		return fmt.Errorf("outbound: list address %q is not a plain mail address", p.ListAddress)
	}
	local, domain := p.ListAddress[:at], p.ListAddress[at+1:]
	if p.ListName == "" {
		p.ListName = local
	}
	if p.ListKey == nil {
		return errors.New("outbound: no list key")
	}
	if p.BounceAddress == "" {
		p.BounceAddress = local + "-bounces@" + domain
	}
	if p.BatchSize == 0 {
		p.BatchSize = DefaultBatchSize
	}
	if p.BatchSize < 0 {
		return fmt.Errorf("outbound: batch size %d is not positive", p.BatchSize)
	}
	switch p.FromMode {
	case "":
		p.FromMode = FromVia
	case FromVia, FromKeep:
	default:
		return fmt.Errorf("outbound: from mode %q is not %q or %q", p.FromMode, FromVia, FromKeep)
	}
	if p.ListHeaders.ID == "" {
		p.ListHeaders.ID = local + "." + domain
	}
	if p.ListHeaders.RequestAddress == "" {
		p.ListHeaders.RequestAddress = local + "-request@" + domain
	}
	if u := p.ListHeaders.UnsubscribeURL; u != "" && !strings.HasPrefix(strings.ToLower(u), "https://") {
		return fmt.Errorf("outbound: unsubscribe URL %q is not https (RFC 8058 §3.1)", u)
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Workers <= 0 {
		p.Workers = runtime.GOMAXPROCS(0)
	}
	return nil
}

// Prepare signs the post once with the list key (RFC 3156 §6.2: one
// OpenPGP message, signed inside the encryption) and fixes the outer
// header. The encryption happens in Batches.
func Prepare(post Post, params Params) (*Prepared, error) {
	if err := params.withDefaults(); err != nil {
		return nil, err
	}
	pr := &Prepared{p: params, variants: map[suite]*variant{}}
	switch {
	case params.Rand == nil || params.Rand == rand.Reader:
		pr.rand = rand.Reader
	default:
		pr.rand = &lockedReader{r: params.Rand}
	}
	pr.cfg = keyring.PacketConfig(params.Limits, params.Now)
	pr.cfg.Rand = pr.rand

	now := params.Now()
	h := post.Header.unfoldAll()
	entity := post.Inner
	if params.KeepSenderSignature && len(post.SenderSigned) > 0 {
		entity = post.SenderSigned
	}
	if len(entity) == 0 {
		return nil, errors.New("outbound: empty post")
	}
	if h.MessageID == "" {
		id, err := randomToken(pr.rand, 16)
		if err != nil {
			return nil, err
		}
		h.MessageID = "<" + id + "@" + params.ListAddress[strings.LastIndexByte(params.ListAddress, '@')+1:] + ">"
	}
	if h.Date == "" {
		h.Date = now.Format(time.RFC1123Z)
	}
	var err error
	if pr.boundary, err = randomToken(pr.rand, 18); err != nil {
		return nil, err
	}
	pr.boundary = "lc-" + pr.boundary
	// Autocrypt (autocrypt.go): only where the outer From is the list
	// address; computed once per list key, so a post pays a map lookup.
	var autocrypt string
	if params.FromMode == FromVia {
		autocrypt, _ = AutocryptValue(params.ListAddress, params.ListKey, now, params.Limits)
	}
	pr.header = outerHeader(h, &params, pr.boundary, autocrypt)
	pr.bodyHead, pr.bodyTail = mimeFrame(pr.boundary)

	inner, err := payload(toCRLF(entity), h, pr.header, post.Notice, pr.rand)
	if err != nil {
		return nil, err
	}

	var signed bytes.Buffer
	signed.Grow(len(inner) + 1024)
	// Signing selects (verifies) the signing key, which go-crypto records
	// in the Entity: serialise uses of the shared list key.
	mu := entityLock(params.ListKey)
	mu.Lock()
	err = sign(&signed, inner, params.ListKey, pr.cfg)
	mu.Unlock()
	if err != nil {
		return nil, err
	}
	if pr.signed, err = maybeCompress(signed.Bytes()); err != nil {
		return nil, err
	}
	return pr, nil
}

// EnvelopeFrom is the envelope sender (MAIL FROM) for every batch: the
// list's bounce address.
func (p *Prepared) EnvelopeFrom() string { return p.p.BounceAddress }

// Header returns the outer header fields every batch carries, in order.
// The milter sets these on batch 1 and removes every other field of the
// original message except trace fields (Received, Return-Path).
func (p *Prepared) Header() []Field { return append([]Field(nil), p.header...) }

// compressMin is the smallest signed message worth compressing: below
// it a copy is at most the plaintext plus armor anyway, and the deflate
// pass would be a fixed cost on every ordinary post.
const compressMin = 64 << 10

// flateWriters keeps deflate writers: making one costs more than
// compressing a small post.
var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

func deflate(dst *bytes.Buffer, src []byte) error {
	w := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(w)
	w.Reset(dst)
	if _, err := w.Write(src); err != nil {
		return err
	}
	return w.Close()
}

// maybeCompress returns the signed message in a ZIP (raw deflate; RFC
// 9580 §5.6, which every OpenPGP program reads) Compressed Data packet
// when that makes it at least a tenth smaller, else as it is. Decided
// per post, on a sample first: text shrinks to a third or less, already
// compressed attachments do not shrink at all. So a post that inflated
// a lot on the way in goes out about as small as it came, and no copy is
// larger than the signed plaintext plus armor.
func maybeCompress(signed []byte) ([]byte, error) {
	if len(signed) < compressMin {
		return signed, nil
	}
	var sample bytes.Buffer
	if err := deflate(&sample, signed[:compressMin]); err != nil {
		return nil, fmt.Errorf("outbound: compress: %w", err)
	}
	if sample.Len() > compressMin-compressMin/10 {
		return signed, nil
	}
	var z bytes.Buffer
	z.Grow(len(signed) / 3)
	if err := deflate(&z, signed); err != nil {
		return nil, fmt.Errorf("outbound: compress: %w", err)
	}
	if z.Len() > len(signed)-len(signed)/10 {
		return signed, nil
	}
	// New-format packet header, tag 8, five-octet length (RFC 9580 §4.2).
	n := z.Len() + 1
	out := make([]byte, 0, n+6)
	out = append(out, 0xC0|8, 0xFF, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), byte(packet.CompressionZIP))
	return append(out, z.Bytes()...), nil
}

// sign writes data as a signed OpenPGP message (one-pass signature,
// literal data, signature; RFC 9580 §10.3) by key to w.
func sign(w io.Writer, data []byte, key *openpgp.Entity, cfg *packet.Config) error {
	sw, err := openpgp.SignWithParams(w, []*openpgp.Entity{key}, &openpgp.SignParams{Config: cfg})
	if err != nil {
		return fmt.Errorf("outbound: sign with the list key: %w", err)
	}
	if _, err := sw.Write(data); err != nil {
		return fmt.Errorf("outbound: sign with the list key: %w", err)
	}
	if err := sw.Close(); err != nil {
		return fmt.Errorf("outbound: sign with the list key: %w", err)
	}
	return nil
}

// entityLocks serialise go-crypto's key selection per Entity (striped by
// fingerprint): signing with the list key records signature checks in it.
var entityLocks [64]sync.Mutex

func entityLock(e *openpgp.Entity) *sync.Mutex {
	var h byte
	if fp := e.PrimaryKey.Fingerprint; len(fp) > 0 {
		h = fp[len(fp)-1]
	}
	return &entityLocks[int(h)%len(entityLocks)]
}
