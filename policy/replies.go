package policy

import "fmt"

// Every SMTP reply a sender can read from listcrypt is written here, and
// only here: the policy's refusals (Decide), the milter's refusals of
// posts it cannot read or that exceed a limit, and its temporary
// failures. Each reply is short and says what the sender can do; the
// detail goes to the log line (Reason, and the error there). A reply
// never quotes the post: after decryption any text of it may be
// plaintext. The milter keeps replies on one line of printable ASCII
// (deliver.OneLine). Changing a text here changes what senders read (and
// what tooling may match): keep codes and Reason words stable.
//
// A reply is a Problem: code, RFC 3463 enhanced status, the sentence the
// sender reads, and the short word for the log line. TestRepliesInOneFile
// keeps it so. (Not SMTP replies, and written elsewhere: the bounce text
// of the listcrypt-refuse route in contrib/postfix/master.cf.snippet,
// and the responder's mail in milter/workflow/texts.go.)

// Temporary failures: the sender's MTA retries.

// ReplyTempFail answers an internal failure (store, reinjection,
// timeout): nothing is lost, the retry resumes.
func ReplyTempFail() Problem {
	return Problem{Code: 451, Enhanced: "4.3.0", Reason: "tempfail",
		Text: "temporary failure processing the list post; please try again later"}
}

// ReplyClaimedElsewhere answers an attempt at a post another attempt (on
// this host or another) is delivering right now.
func ReplyClaimedElsewhere() Problem {
	return Problem{Code: 451, Enhanced: "4.3.0", Reason: "claimed-elsewhere",
		Text: "the same post is being delivered by another server; try again later"}
}

// Size and structure, before any policy applies.

// ReplyHeaderTooLarge refuses a header block over limits.max_header_size.
func ReplyHeaderTooLarge(limit int64) Problem {
	return Problem{Code: 552, Enhanced: "5.3.4", Reason: "limit-header-size",
		Text: fmt.Sprintf("message header too large (limit %d bytes)", limit)}
}

// ReplyTooBig refuses a message over the smallest size limit of the
// lists it addresses.
func ReplyTooBig(limit int64) Problem {
	return Problem{Code: 552, Enhanced: "5.3.4", Reason: "limit-message-size",
		Text: fmt.Sprintf("message too big for the list (limit %d bytes)", limit)}
}

// ReplyDecompressed refuses a post whose compressed data expands past
// limit.
func ReplyDecompressed(limit int64) Problem {
	return Problem{Code: 552, Enhanced: "5.3.4", Reason: "limit-decompressed-size",
		Text: fmt.Sprintf("the post's compressed data expands beyond %d bytes", limit)}
}

// ReplyLimit refuses a post over an inbound limit named what (MIME
// depth, parts, header bytes, key size...).
func ReplyLimit(what string, limit int64) Problem {
	return Problem{Code: 554, Enhanced: "5.6.0", Reason: "limit-" + what,
		Text: fmt.Sprintf("the post exceeds the %s limit (%d)", what, limit)}
}

// ReplyTooManySignatures refuses a post with more than max signatures.
func ReplyTooManySignatures(max int) Problem {
	return Problem{Code: 554, Enhanced: "5.6.0", Reason: "limit-signatures",
		Text: fmt.Sprintf("the post carries more than %d signatures", max)}
}

// ReplyMixedParts refuses a post mixing encrypted and plain parts.
func ReplyMixedParts() Problem {
	return Problem{Code: 554, Enhanced: "5.6.0", Reason: "mixed-parts",
		Text: "the post mixes encrypted and plain parts; send the whole post encrypted to the list key"}
}

// ReplyNoIntegrity refuses encryption without MDC or AEAD.
func ReplyNoIntegrity() Problem {
	return Problem{Code: 554, Enhanced: "5.7.5", Reason: "no-integrity",
		Text: "the post's encryption has no integrity protection (MDC/AEAD); use a current OpenPGP program"}
}

// ReplyTampered refuses encrypted data that fails its integrity check.
func ReplyTampered() Problem {
	return Problem{Code: 554, Enhanced: "5.7.5", Reason: "tampered",
		Text: "the post's encrypted data fails its integrity check; the message was altered in transit"}
}

// ReplyNotForListKey refuses a post not encrypted to p's list key.
func (p *Policy) ReplyNotForListKey() Problem {
	return Problem{Code: 550, Enhanced: "5.7.5", Reason: "not-for-list-key",
		Text: fmt.Sprintf("the post is not encrypted to the list key of %s; send \"key get\" to %s for the list key", p.Address, p.RequestAddress())}
}

// ReplyOldListKey refuses a post encrypted to a list key retired longer
// ago than keys.old_key_grace.
func (p *Policy) ReplyOldListKey() Problem {
	return Problem{Code: 550, Enhanced: "5.7.5", Reason: "old-list-key",
		Text: fmt.Sprintf("the list key of %s has changed and the post is encrypted to the old one; send \"key get\" to %s for the new list key", p.Address, p.RequestAddress())}
}

// ReplyMalformed refuses a post whose MIME or OpenPGP structure cannot be
// read.
func ReplyMalformed() Problem {
	return Problem{Code: 554, Enhanced: "5.6.0", Reason: "malformed",
		Text: "the post's MIME or OpenPGP structure cannot be read; send it again from a standard mail client"}
}

// ReplyBadHeader refuses a post whose header cannot be parsed.
func ReplyBadHeader() Problem {
	return Problem{Code: 554, Enhanced: "5.6.0", Reason: "malformed", Text: "the message header cannot be parsed"}
}

// ReplyNotOneFrom refuses a post without exactly one From address.
func ReplyNotOneFrom() Problem {
	return Problem{Code: 554, Enhanced: "5.6.0", Reason: "malformed", Text: "the message needs exactly one From address"}
}

// ReplySignedFromMismatch refuses a signed From that is not the sender's
// address from.
func ReplySignedFromMismatch(from string) Problem {
	return Problem{Code: 550, Enhanced: "5.7.1", Reason: "signed-from-mismatch",
		Text: "the From inside the signed message is not the sender's address " + from + "; a member can only post as themself"}
}

// The policy's refusals (Decide).

func (p *Policy) keyHint() string {
	return fmt.Sprintf("send \"key get\" to %s for the list key", p.RequestAddress())
}

func (p *Policy) replyNotEncrypted() Problem {
	return Problem{Code: 550, Enhanced: "5.7.1", Reason: "not-encrypted",
		Text: fmt.Sprintf("%s accepts only posts encrypted to the list key; %s", p.Address, p.keyHint())}
}

func (p *Policy) replyNonMember() Problem {
	return Problem{Code: 550, Enhanced: "5.7.1", Reason: "non-member",
		Text: fmt.Sprintf("the From address is not a member of %s; to subscribe, send \"subscribe\" to %s", p.Address, p.RequestAddress())}
}

func replyBadSignature() Problem {
	return Problem{Code: 550, Enhanced: "5.7.7", Reason: "bad-signature",
		Text: "the post's signature does not verify; the message may have been altered in transit"}
}

func (p *Policy) replyKeyNotValid() Problem {
	return Problem{Code: 550, Enhanced: "5.7.7", Reason: "key-not-valid",
		Text: fmt.Sprintf("the key that signed the post is expired or revoked; renew it (or send \"key change\" with a new key to %s) and sign the post again", p.RequestAddress())}
}

func (p *Policy) replyUnknownSigner() Problem {
	return Problem{Code: 550, Enhanced: "5.7.7", Reason: "unknown-signer",
		Text: fmt.Sprintf("the post is signed by a key that is not registered for the From address; send \"key show\" to %s to see your registered key", p.RequestAddress())}
}

func replySignerNotFrom() Problem {
	return Problem{Code: 550, Enhanced: "5.7.7", Reason: "signer-not-from",
		Text: "the post is signed by a member key that is not registered for the From address"}
}

func (p *Policy) replySignedForOthers() Problem {
	return Problem{Code: 550, Enhanced: "5.7.1", Reason: "signed-for-others",
		Text: fmt.Sprintf("the post's signature names other recipients, not %s: it was written for someone else; sign a new post to the list", p.Address)}
}

func replySignatureInFuture() Problem {
	return Problem{Code: 550, Enhanced: "5.7.7", Reason: "signature-in-future",
		Text: "the post's signature is dated in the future; check your computer's clock"}
}

func (p *Policy) replySignatureTooOld() Problem {
	return Problem{Code: 550, Enhanced: "5.7.1", Reason: "signature-too-old",
		Text: fmt.Sprintf("the post's signature is older than %s and is taken for a replay; sign a new post", p.Post.ReplayWindow.Raw)}
}

func (p *Policy) replyUnboundSignature() Problem {
	return Problem{Code: 550, Enhanced: "5.7.1", Reason: "unbound-signature",
		Text: fmt.Sprintf("the post's signature does not show it was written for %s; put the list address in To or Cc and use a mail client that protects headers (or encrypt and sign with a current OpenPGP program)", p.Address)}
}

func (p *Policy) replyNotSigned() Problem {
	return Problem{Code: 550, Enhanced: "5.7.1", Reason: "not-signed",
		Text: fmt.Sprintf("%s accepts only posts signed with your registered key; sign the post", p.Address)}
}

func replyReplay() Problem {
	return Problem{Code: 550, Enhanced: "5.7.1", Reason: "replay",
		Text: "this post (its signature or ciphertext) was already sent to the list; a replayed post is not distributed again"}
}
