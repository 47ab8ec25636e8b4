package deliver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/mail"
	"strings"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
)

// Examination is one examination of a post for every list a
// transaction addresses: the post is decrypted once, with the first list
// key that opens it, and its signature verified once against the members
// of all those lists together.
type Examination struct {
	Result   *inbound.Result
	ListKeys []*openpgp.Entity    // per list, in the order given
	Members  []*keyring.MemberSet // per list, in the order given
}

// Examine examines msg for lists (the caller serialises work on their
// keys). The plaintext may not grow past the smallest post.max_size of
// the lists (nor the site's max_decompressed_size): a post that inflates
// beyond what the list would accept in clear is refused before any
// policy check, whoever sent it.
func Examine(ctx context.Context, keys *keyring.Cache, cfg *config.Config, now time.Time, lists []*policy.Policy, msg []byte) (*Examination, error) {
	return examine(ctx, keys, cfg, now, now, lists, msg)
}

// examine is Examine with the list keys' grace periods judged at
// graceAt: a held post is judged as of when it was held.
func examine(ctx context.Context, keys *keyring.Cache, cfg *config.Config, now, graceAt time.Time, lists []*policy.Policy, msg []byte) (*Examination, error) {
	ex := &Examination{}
	lim := InboundLimits(cfg)
	rings := make(unionRing, 0, len(lists))
	var old []inbound.OldKey
	for i, p := range lists {
		k, err := keys.ListKey(ctx, p.Address)
		if err != nil {
			return nil, err
		}
		m, err := keys.Members(ctx, p.Address)
		if err != nil {
			return nil, err
		}
		// Keys retired by a rotation: in their grace period they still
		// open posts for the list; after it they are only recognised.
		rks, err := keys.OldListKeys(ctx, p.Address, graceAt, p.Keys.OldKeyGrace.D)
		if err != nil {
			return nil, err
		}
		for _, rk := range rks {
			old = append(old, inbound.OldKey{List: i, Key: rk.Entity, InGrace: rk.InGrace})
		}
		ex.ListKeys = append(ex.ListKeys, k)
		ex.Members = append(ex.Members, m)
		rings = append(rings, m.Ring)
		if b := p.Post.MaxSize.Bytes; b > 0 && b < lim.MaxDecompressed {
			lim.MaxDecompressed = b
		}
	}
	var signers openpgp.KeyRing = rings
	if len(rings) == 1 {
		signers = rings[0]
	}
	res, err := inbound.Examine(inbound.Input{Message: msg, ListKey: ex.ListKeys[0], AlsoFor: ex.ListKeys[1:],
		OldKeys: old, Signers: signers, Now: now, Limits: lim})
	if err != nil {
		return nil, fmt.Errorf("examine post: %w", err)
	}
	ex.Result = res
	return ex, nil
}

// unionRing verifies against the members of several lists at once.
type unionRing []*keyring.MemberKeyRing

func (u unionRing) KeysById(id uint64) []openpgp.Key {
	var out []openpgp.Key
	for _, r := range u {
		out = append(out, r.KeysById(id)...)
	}
	return out
}

func (u unionRing) EntitiesById(id uint64) []*openpgp.Entity {
	var out []*openpgp.Entity
	for _, r := range u {
		out = append(out, r.EntitiesById(id)...)
	}
	return out
}

// InboundLimits are the site's limits for examining a post.
func InboundLimits(c *config.Config) inbound.Limits {
	l := c.Limits
	return inbound.Limits{MaxMIMEDepth: l.MaxMIMEDepth, MaxMIMEParts: l.MaxMIMEParts,
		MaxHeaderBytes: int(l.MaxHeaderSize.Bytes), Limits: keyring.ConfigLimits(c)}
}

// PostID returns the id of the post msg (see PostIDOf).
func PostID(msg []byte) ([]byte, error) {
	hdr, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return nil, err
	}
	return PostIDOf(hdr, msg), nil
}

// PostIDOf identifies a post by what the sender sent: its Message-ID,
// From and body, not the headers our own MTA adds (a retried transaction
// gets a new Received: line and queue id but is the same post). hdr is
// msg's header, read.
func PostIDOf(hdr *mail.Message, msg []byte) []byte {
	h := sha256.New()
	h.Write([]byte(strings.TrimSpace(hdr.Header.Get("Message-Id"))))
	h.Write([]byte{0})
	h.Write([]byte(strings.TrimSpace(hdr.Header.Get("From"))))
	h.Write([]byte{0})
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		h.Write(msg[i+4:])
	}
	return h.Sum(nil)
}
