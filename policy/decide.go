package policy

import (
	"fmt"
	"time"
)

// Action is what the milter does with a post.
type Action string

// The actions.
const (
	Accept   Action = "accept"
	Reject   Action = "reject"
	TempFail Action = "tempfail"
	Discard  Action = "discard"
	Hold     Action = "hold"
)

// Signature is what the inbound examination found out about a post's
// signature.
type Signature int

// Signature states.
const (
	// Unsigned: no signature at all.
	Unsigned Signature = iota
	// SignedValid: a valid signature by a key registered for a member.
	SignedValid
	// SignedBad: a signature that does not verify (tampered).
	SignedBad
	// SignedUnknown: a signature by a key no member registered.
	SignedUnknown
	// SignedKeyInvalid: a signature that verifies, by a member's key that
	// is not valid now (expired or revoked since it signed).
	SignedKeyInvalid
)

// Binding is what a valid signature shows about whom it was made for.
type Binding int

// Binding states.
const (
	// Unbound: the signature names no recipient (no Intended Recipient
	// Fingerprint subpacket, no signed To/Cc): post.unbound_signature
	// decides.
	Unbound Binding = iota
	// BoundToList: the signature names this list.
	BoundToList
	// BoundElsewhere: the signature names recipients and this list is
	// not among them (a message written for someone else, re-sent to the
	// list): always refused.
	BoundElsewhere
)

// Problem is a structural fault of a post found before any policy applies:
// the post is refused whatever the policy says.
type Problem struct {
	// Code and Enhanced are the SMTP reply code and RFC 3463 status.
	Code     int
	Enhanced string
	// Text is the sentence the sender reads.
	Text string
	// Reason is the short word for the log line.
	Reason string
}

// Findings is everything the inbound stage found out about a post.
type Findings struct {
	// Problem, when set, refuses the post (mixed parts, no integrity
	// protection, not encrypted to the list key, malformed, over a limit).
	Problem *Problem
	// Encrypted: the post was encrypted to the list key.
	Encrypted bool
	// Signature: see the Signature states.
	Signature Signature
	// SignerBoundToFrom: the signing key is the registered key of the
	// member whose address is the From address.
	SignerBoundToFrom bool
	// Binding: whom the valid signature was made for (SignedValid only).
	Binding Binding
	// SigTime is the signature's creation time (zero when unsigned).
	SigTime time.Time
	// FromMember: the From address is an active member of the list.
	FromMember bool
	// Replay: a signature or ciphertext of the post was seen on an earlier
	// post of this list.
	Replay bool
}

// Decision is an action with the reply the sender gets.
type Decision struct {
	Action   Action
	Code     int    // SMTP reply code for Reject/TempFail
	Enhanced string // RFC 3463 enhanced status code
	Text     string // the sentence the sender reads
	Reason   string // short word for the log line: what decided it
}

// Decide maps the findings of a post through the list policy at now.
// Checks run in this order: structural problem, replay, encryption,
// membership, signature, binding to other recipients, signature age,
// unbound signature; the first that does not accept decides.
func (p *Policy) Decide(f Findings, now time.Time) Decision {
	if f.Problem != nil {
		return Decision{Action: Reject, Code: f.Problem.Code, Enhanced: f.Problem.Enhanced, Text: f.Problem.Text, Reason: f.Problem.Reason}
	}
	// A replay gets post.replay whatever else the post is: holding or
	// accepting it again under another rule would redistribute it.
	if f.Replay {
		return p.replay(f)
	}
	keyHint := fmt.Sprintf("send \"key get\" to %s for the list key", p.RequestAddress())
	if !f.Encrypted && p.Post.Encrypted == "require" {
		return Decision{Action: Reject, Code: 550, Enhanced: "5.7.1",
			Text:   fmt.Sprintf("%s accepts only posts encrypted to the list key; %s", p.Address, keyHint),
			Reason: "not-encrypted"}
	}
	if !f.FromMember {
		// A non-member has no registered key, so signature rules cannot
		// apply: non_member alone decides, then the replay check.
		d := p.act(p.Post.NonMember, "non-member", 550, "5.7.1",
			fmt.Sprintf("the From address is not a member of %s; to subscribe, send \"subscribe\" to %s", p.Address, p.RequestAddress()))
		if d.Action != Accept {
			return d
		}
		return p.replay(f)
	}
	switch f.Signature {
	case SignedBad:
		return p.act(p.Post.BadSignature, "bad-signature", 550, "5.7.7",
			"the post's signature does not verify; the message may have been altered in transit")
	case SignedKeyInvalid:
		return p.act(p.Post.BadSignature, "key-not-valid", 550, "5.7.7",
			fmt.Sprintf("the key that signed the post is expired or revoked; renew it (or send \"key change\" with a new key to %s) and sign the post again", p.RequestAddress()))
	case SignedUnknown:
		return p.act(p.Post.BadSignature, "unknown-signer", 550, "5.7.7",
			fmt.Sprintf("the post is signed by a key that is not registered for the From address; send \"key show\" to %s to see your registered key", p.RequestAddress()))
	case SignedValid:
		if !f.SignerBoundToFrom {
			return p.act(p.Post.BadSignature, "signer-not-from", 550, "5.7.7",
				"the post is signed by a member key that is not registered for the From address")
		}
		if f.Binding == BoundElsewhere {
			return Decision{Action: Reject, Code: 550, Enhanced: "5.7.1", Reason: "signed-for-others",
				Text: fmt.Sprintf("the post's signature names other recipients, not %s: it was written for someone else; sign a new post to the list", p.Address)}
		}
		if f.SigTime.After(now.Add(p.Post.ClockSkew.D)) {
			return p.act(p.Post.BadSignature, "signature-in-future", 550, "5.7.7",
				"the post's signature is dated in the future; check your computer's clock")
		}
		if f.SigTime.Before(now.Add(-p.Post.ReplayWindow.D)) {
			return p.act(p.Post.Replay, "signature-too-old", 550, "5.7.1",
				fmt.Sprintf("the post's signature is older than %s and is taken for a replay; sign a new post", p.Post.ReplayWindow.Raw))
		}
		if f.Binding == Unbound && p.Post.UnboundSignature != "accept" {
			return p.act(p.Post.UnboundSignature, "unbound-signature", 550, "5.7.1",
				fmt.Sprintf("the post's signature does not show it was written for %s; put the list address in To or Cc and use a mail client that protects headers (or encrypt and sign with a current OpenPGP program)", p.Address))
		}
	case Unsigned:
		switch p.Post.Signed {
		case "require":
			return Decision{Action: Reject, Code: 550, Enhanced: "5.7.1",
				Text:   fmt.Sprintf("%s accepts only posts signed with your registered key; sign the post", p.Address),
				Reason: "not-signed"}
		case "hold":
			return Decision{Action: Hold, Reason: "not-signed"}
		}
	}
	return p.replay(f)
}

func (p *Policy) replay(f Findings) Decision {
	if f.Replay {
		return p.act(p.Post.Replay, "replay", 550, "5.7.1",
			"this post (its signature or ciphertext) was already sent to the list; a replayed post is not distributed again")
	}
	return Decision{Action: Accept, Reason: "ok"}
}

// act turns a policy word into a decision; the reply is used for reject.
func (p *Policy) act(word, reason string, code int, enhanced, text string) Decision {
	d := Decision{Reason: reason}
	switch word {
	case "accept":
		d.Action = Accept
	case "hold":
		d.Action = Hold
	case "discard":
		d.Action = Discard
	default: // "reject"; validation allows nothing else
		d.Action, d.Code, d.Enhanced, d.Text = Reject, code, enhanced, text
	}
	return d
}
