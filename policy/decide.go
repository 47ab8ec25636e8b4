package policy

import (
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
		return f.Problem.Refusal()
	}
	// A replay gets post.replay whatever else the post is: holding or
	// accepting it again under another rule would redistribute it.
	if f.Replay {
		return p.replay(f)
	}
	if !f.Encrypted && p.Post.Encrypted == "require" {
		return p.replyNotEncrypted().Refusal()
	}
	if !f.FromMember {
		// A non-member has no registered key, so signature rules cannot
		// apply: non_member alone decides, then the replay check.
		d := act(p.Post.NonMember, p.replyNonMember())
		if d.Action != Accept {
			return d
		}
		return p.replay(f)
	}
	switch f.Signature {
	case SignedBad:
		return act(p.Post.BadSignature, replyBadSignature())
	case SignedKeyInvalid:
		return act(p.Post.BadSignature, p.replyKeyNotValid())
	case SignedUnknown:
		return act(p.Post.BadSignature, p.replyUnknownSigner())
	case SignedValid:
		if !f.SignerBoundToFrom {
			return act(p.Post.BadSignature, replySignerNotFrom())
		}
		if f.Binding == BoundElsewhere {
			return p.replySignedForOthers().Refusal()
		}
		if f.SigTime.After(now.Add(p.Post.ClockSkew.D)) {
			return act(p.Post.BadSignature, replySignatureInFuture())
		}
		if f.SigTime.Before(now.Add(-p.Post.ReplayWindow.D)) {
			return act(p.Post.Replay, p.replySignatureTooOld())
		}
		if f.Binding == Unbound && p.Post.UnboundSignature != "accept" {
			return act(p.Post.UnboundSignature, p.replyUnboundSignature())
		}
	case Unsigned:
		switch p.Post.Signed {
		case "require":
			return p.replyNotSigned().Refusal()
		case "hold":
			return Decision{Action: Hold, Reason: "not-signed"}
		}
	}
	return p.replay(f)
}

func (p *Policy) replay(f Findings) Decision {
	if f.Replay {
		return act(p.Post.Replay, replyReplay())
	}
	return Decision{Action: Accept, Reason: "ok"}
}

// act turns a policy word into a decision; the reply r is used for
// reject, its Reason always.
func act(word string, r Problem) Decision {
	d := Decision{Reason: r.Reason}
	switch word {
	case "accept":
		d.Action = Accept
	case "hold":
		d.Action = Hold
	case "discard":
		d.Action = Discard
	default: // "reject"; validation allows nothing else
		d = r.Refusal()
	}
	return d
}

// Refusal is the decision that refuses a post with reply r.
func (r Problem) Refusal() Decision {
	return Decision{Action: Reject, Code: r.Code, Enhanced: r.Enhanced, Text: r.Text, Reason: r.Reason}
}

// TempFailure is the decision that tempfails a post with reply r.
func (r Problem) TempFailure() Decision {
	return Decision{Action: TempFail, Code: r.Code, Enhanced: r.Enhanced, Text: r.Text, Reason: r.Reason}
}
