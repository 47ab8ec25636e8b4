package deliver

import (
	"bytes"
	"fmt"
	"net/mail"
	"strings"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/milter/outbound"
	"github.com/listcrypt/listcrypt/policy"
)

// The lines members read inside the encryption when the author's
// signature leaves something they see unchecked.
const (
	noticeUnbound = "listcrypt: the author's signature does not say it was written for this list (it names no recipients). " +
		"It could be a signed message the author sent somewhere else, re-sent here by someone else."
	noticeSubject  = "listcrypt: the Subject was not covered by the author's signature."
	noticeUnsigned = "listcrypt: this post is not signed by a member's key; nothing shows who wrote it."
)

// Content turns the examined post msg into what members of the list
// listAddr (list key listKey) read. The entity is res.Content: for a
// signed post exactly the bytes whose signature was verified, never a
// second parse of the message. The header members see comes from the
// checked sender and the signed header fields only (see memberHeader).
func Content(msg []byte, res *inbound.Result, listKey *openpgp.Entity, listAddr string) (outbound.Post, error) {
	var post outbound.Post
	hdr, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return post, fmt.Errorf("read post header: %w", err)
	}
	if len(res.Content) == 0 {
		return post, fmt.Errorf("the examined post has no content to distribute")
	}
	h := hdr.Header
	// The From decide checked: exactly one address. Only its parsed
	// address and name go on; the raw field never does (net/mail would
	// carry unparsed text after the last "@" into the address).
	from, err := mail.ParseAddressList(h.Get("From"))
	if err != nil || len(from) != 1 {
		return post, fmt.Errorf("the post's From is not one address")
	}
	outer := outbound.Header{From: from[0].String(), ReplyTo: h.Get("Reply-To"), To: h.Get("To"), Cc: h.Get("Cc"),
		Date: h.Get("Date"), MessageID: h.Get("Message-Id"), InReplyTo: h.Get("In-Reply-To"),
		References: h.Get("References"), Subject: h.Get("Subject")}
	post.Inner = res.Content
	if res.Sig != inbound.SigValid || !res.ContentSigned {
		post.Header = outer
		post.Notice = noticeUnsigned
		return post, nil
	}
	var notes []string
	post.Header, notes = memberHeader(outer, policy.NormalizeAddress(from[0].Address), res, listKey, listAddr)
	post.SenderSigned = res.KeptSigned
	post.Notice = strings.Join(notes, "\n")
	return post, nil
}

// memberHeader decides the header fields members see of a post with a
// valid signature by the registered key of from, and the notices that go
// with them:
//
//   - From: the checked sender's address, with the name of the user ID
//     for that address in the member's registered key (what the
//     moderators saw when they approved the key), else no name. Neither
//     the outer display name nor the signed From's name is used: both are
//     the sender's choice for this one post ("Bob" <alice@...>). decide
//     refuses a signed From with another address.
//   - Reply-To: the signed one (protected headers) or none.
//   - Subject, To, Cc, Date: the signed ones when the signed entity
//     carries protected headers (RFC 9788 hp= or protected-headers="v1");
//     otherwise the outer ones, and for the Subject a notice says so.
//   - Message-ID, In-Reply-To, References: the outer ones (threading).
func memberHeader(outer outbound.Header, from string, res *inbound.Result, listKey *openpgp.Entity, listAddr string) (outbound.Header, []string) {
	h := outbound.Header{To: outer.To, Cc: outer.Cc, Date: outer.Date, Subject: outer.Subject,
		MessageID: outer.MessageID, InReplyTo: outer.InReplyTo, References: outer.References}
	h.From = (&mail.Address{Name: keyName(res.Signer, from), Address: from}).String()
	sh := res.Signed
	var notes []string
	if res.Binding(listKey, listAddr) == inbound.BindingNone {
		notes = append(notes, noticeUnbound)
	}
	if sh != nil && sh.Protected {
		h.ReplyTo = sh.ReplyTo
		for _, f := range []struct {
			dst *string
			v   string
		}{{&h.Subject, sh.Subject}, {&h.To, sh.To}, {&h.Cc, sh.Cc}, {&h.Date, sh.Date}} {
			if f.v != "" {
				*f.dst = f.v
			}
		}
		if sh.Subject == "" && outer.Subject != "" {
			notes = append(notes, noticeSubject)
		}
	} else if outer.Subject != "" {
		notes = append(notes, noticeSubject)
	}
	return h, notes
}

// keyName is the name of the user ID for addr in the member's key, if it
// is a plain name: one that looks like an address or carries angle
// brackets or quotes could pass for another member, and is left out.
func keyName(key *openpgp.Entity, addr string) string {
	if key == nil {
		return ""
	}
	for _, id := range key.Identities {
		if id.UserId == nil || !strings.EqualFold(id.UserId.Email, addr) {
			continue
		}
		name := strings.TrimSpace(id.UserId.Name)
		if strings.ContainsAny(name, "@<>\"\r\n") || len(name) > 64 {
			return ""
		}
		return name
	}
	return ""
}
