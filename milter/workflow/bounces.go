package workflow

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/bounce"
	"github.com/listcrypt/listcrypt/policy"
)

// The bounce mode: mail that reaches a list's bounce address
// (distribute.bounce_address, LIST-bounces@DOMAIN, or with a VERP
// extension LIST-bounces+MEMBER@DOMAIN) is read by milter/bounce. A
// failure named for a member counts against the member's bounce score
// ([bounces] policy, store.RecordBounce); at the threshold the owners
// (and, when delivery is disabled, the member) are told. Everything else
// (auto-replies, bounces naming no member, human mail, garbage) goes to
// the owners. docs/bounces.md.

// Kinds of mail at a bounce address, for the log and the counters
// (store.CountBounceMail, listcrypt_bounce_mail_total).
const (
	BounceMember       = "member"       // a failure of a member, counted or not
	BounceUnattributed = "unattributed" // a bounce naming no member of the list
	BounceAutoReply    = "auto-reply"   // to the owners
	BounceOther        = "other"        // to the owners
)

// findBounce maps a bounce address (with or without a VERP extension) to
// its list, and the member the extension names ("" without one).
func (r *Responder) findBounce(recipient string, h textproto.Header) (*policy.Policy, string) {
	match := func(addr string) (*policy.Policy, string) {
		addr = policy.NormalizeAddress(addr)
		local, domain, ok := strings.Cut(addr, "@")
		if !ok {
			return nil, ""
		}
		for _, a := range r.Policies.Addresses() {
			p := r.Policies.Lookup(a)
			b := p.BounceAddress()
			if addr == b {
				return p, ""
			}
			bl, bd, _ := strings.Cut(b, "@")
			if domain == bd && !strings.Contains(bl, "+") && strings.HasPrefix(local, bl+"+") {
				m, _ := bounce.ParseVERP(addr)
				return p, m
			}
		}
		return nil, ""
	}
	if recipient != "" {
		return match(recipient)
	}
	for _, name := range []string{"Delivered-To", "X-Original-To"} {
		for _, v := range h.Values(name) {
			if p, m := match(v); p != nil {
				return p, m
			}
		}
	}
	return nil, ""
}

// maxBounceMembers bounds the members one bounce mail without VERP can
// count against: a real report names the failed recipients of one
// message, and anyone can write a report naming a hundred members.
const maxBounceMembers = 10

// handleBounce handles one mail at p's bounce address; verp is the member
// its VERP extension names, or "". Errors are transient (the MTA keeps
// the mail and retries): a retry within a day counts nothing twice.
func (r *Responder) handleBounce(ctx context.Context, p *policy.Policy, msg []byte, verp string, out *Outcome) error {
	out.List, out.Command = p.Address, "bounce"
	now := r.Now()
	rep, perr := bounce.Parse(msg, bounce.Limits{MaxSize: int(r.Config.Limits.MaxMessageSize.Bytes)})
	kind := BounceOther
	var failures []bounce.Recipient
	switch {
	case perr != nil:
		// The parser's error may quote the mail: only its class is logged.
		out.Reason = "unreadable: " + parseErrorClass(perr)
	case rep.Kind == bounce.KindAutoReply:
		kind = BounceAutoReply
	case rep.Kind == bounce.KindBounce && verp != "":
		// The envelope names the member: the report's words only say how
		// it failed (a forwarded address may have failed under another
		// name).
		f := rep.Recipients[0]
		for _, x := range rep.Recipients {
			if x.Address == verp {
				f = x
			}
		}
		f.Address = verp
		failures = []bounce.Recipient{f}
	case rep.Kind == bounce.KindBounce && p.Bounces.VERP:
		// The list's copies carry VERP senders: a real bounce comes to
		// one of them. A report at the plain address is not trusted to
		// name members (anyone can write one); the owners see it.
		kind, out.Reason = BounceUnattributed, "not at a VERP address (bounces.verp = true)"
	case rep.Kind == bounce.KindBounce:
		failures = rep.Recipients
	}
	var members []string
	if len(failures) > 0 {
		outs, err := r.countBounces(ctx, p, failures, now)
		if err != nil {
			return err
		}
		for i, f := range failures {
			res := outs[i]
			if !res.Member {
				continue // names no member of the list
			}
			if !res.Counted && res.State.Address == "" {
				r.Log.Warn("bounce names more members than one mail may count; left alone", "list", p.Address,
					"member", f.Address, "counted_at_most", maxBounceMembers)
				continue
			}
			members = append(members, f.Address)
			r.Log.Info("bounce", "list", p.Address, "member", f.Address, "permanent", f.Permanent, "status", f.Status,
				"counted", res.Counted, "score", res.State.Score, "threshold_reached", res.Reached,
				"delivery", map[bool]string{true: "disabled", false: "enabled"}[res.State.Disabled()])
		}
	}
	switch {
	case len(members) > 0:
		kind = BounceMember
		out.Result, out.Reason = "counted", strings.Join(members, ",")
	case rep.Kind == bounce.KindBounce:
		kind = BounceUnattributed
	}
	if err := r.Store.CountBounceMail(ctx, p.Address, kind); err != nil {
		// Only a counter: the bounce itself was handled.
		r.Log.Warn("bounce counter", "list", p.Address, "kind", kind, "err", err)
	}
	if kind == BounceMember {
		return nil
	}
	out.Result = "forwarded"
	if out.Reason == "" {
		out.Reason = kind
	}
	return r.forwardToOwners(ctx, p, msg, kind, now)
}

// parseErrorClass names a bounce.Parse error without its details.
func parseErrorClass(err error) string {
	switch {
	case errors.Is(err, bounce.ErrTooLarge):
		return "too large"
	case errors.Is(err, bounce.ErrTooComplex):
		return "too complex"
	}
	return "malformed"
}

// countBounces records the failures of one bounce mail against the
// members' scores in one transaction; the notices of the members that
// reached the threshold are queued in it and sent after.
func (r *Responder) countBounces(ctx context.Context, p *policy.Policy, failures []bounce.Recipient, now time.Time) ([]store.BounceOutcome, error) {
	evs := make([]store.BounceEvent, len(failures))
	byAddr := make(map[string]bounce.Recipient, len(failures))
	for i, f := range failures {
		evs[i] = store.BounceEvent{Address: f.Address, Permanent: f.Permanent, Status: f.Status, At: now}
		byAddr[f.Address] = f
	}
	rules := store.BounceRules{
		Threshold:  p.Bounces.ScoreThreshold,
		ResetAfter: p.Bounces.ResetAfter.D,
		Disable:    p.Bounces.Action == "disable",
		MaxMembers: maxBounceMembers,
		OnReached: func(sts []store.BounceState) ([]store.OutboxMail, error) {
			return r.thresholdNotices(ctx, p, byAddr, sts, now)
		},
	}
	outs, ids, err := r.Store.RecordBounces(ctx, p.Address, evs, rules)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		r.flush(ctx, p, id)
	}
	return outs, nil
}

// thresholdNotices are the mail sent when members' scores reach the
// threshold: one to each owner naming all of them, and with action
// "disable" one to each member. The envelope sender is null (RFC 5321
// §4.5.5), so a notice that bounces in turn comes back to nobody: no
// loop through the bounce address.
func (r *Responder) thresholdNotices(ctx context.Context, p *policy.Policy, failures map[string]bounce.Recipient, sts []store.BounceState, now time.Time) ([]store.OutboxMail, error) {
	listKey, err := r.Keys.ListKey(ctx, p.Address)
	if err != nil {
		return nil, err
	}
	var out []store.OutboxMail
	add := func(to, subject, text string) error {
		key, err := r.memberKey(ctx, p, to, now)
		if err != nil {
			return err
		}
		data, err := compose(mail{From: p.RequestAddress(), FromName: p.Address + " (listcrypt)", To: to,
			Subject: subject, Text: text, EncryptTo: key}, listKey, now, r.Rand, keyring.ConfigLimits(r.Config))
		if err != nil {
			return fmt.Errorf("compose bounce notice to %s: %w", to, err)
		}
		out = append(out, store.OutboxMail{List: p.Address, Sender: "", Recipients: []string{to}, Message: data, CreatedAt: now})
		return nil
	}
	subject := p.Address + ": " + sts[0].Address + " bounces"
	if sts[0].Disabled() {
		subject = p.Address + ": delivery to " + sts[0].Address + " disabled"
	}
	if len(sts) > 1 {
		subject = fmt.Sprintf("%s: %d members bounce", p.Address, len(sts))
	}
	for _, o := range p.Owners {
		if err := add(o, subject, textBounceOwner(p, failures, sts)); err != nil {
			return nil, err
		}
	}
	for _, st := range sts {
		if st.Disabled() {
			if err := add(st.Address, p.Address+": your delivery is disabled", textBounceMember(p, st)); err != nil {
				return nil, err
			}
		}
	}
	if len(p.Owners) == 0 {
		r.Log.Warn("bounce threshold reached; the list has no owners to tell", "list", p.Address, "members", len(sts))
	}
	return out, nil
}

// memberKey is addr's registered key on the list when it is usable for
// encryption now, or nil (the notice then goes signed, in clear).
func (r *Responder) memberKey(ctx context.Context, p *policy.Policy, addr string, now time.Time) (*openpgp.Entity, error) {
	m, err := r.Store.GetMember(ctx, p.Address, addr)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if m.State != store.MemberActive || len(m.PublicKey) == 0 {
		return nil, nil
	}
	lim := keyring.ConfigLimits(r.Config)
	key, err := keyring.ParseStoredKey(m.PublicKey, lim)
	if err != nil {
		return nil, nil
	}
	if _, err := key.EncryptionKeyWithError(now, keyring.PacketConfig(lim, func() time.Time { return now })); err != nil {
		return nil, nil
	}
	return key, nil
}

// forwardToOwners sends mail at the bounce address that is no member's
// bounce to the owners: to an owner with a usable key on the list,
// encrypted, with the mail attached (an auto-reply may quote a post);
// to others, signed, with its header summary only, never its text in
// clear. Anyone can write to the bounce address, so forwards share the
// [responder] reply limits, counted against the mail's From address and
// the list: the list cannot be made to flood its owners.
func (r *Responder) forwardToOwners(ctx context.Context, p *policy.Policy, msg []byte, kind string, now time.Time) error {
	if len(p.Owners) == 0 {
		r.Log.Info("mail at the bounce address; the list has no owners", "list", p.Address, "kind", kind)
		return nil
	}
	listKey, err := r.Keys.ListKey(ctx, p.Address)
	if err != nil {
		return err
	}
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	from := policy.NormalizeAddress(h.Get("From"))
	if from == "" {
		from = "<>"
	}
	var ms []store.OutboxMail
	for _, o := range p.Owners {
		key, err := r.memberKey(ctx, p, o, now)
		if err != nil {
			return err
		}
		m := mail{From: p.RequestAddress(), FromName: p.Address + " (listcrypt)", To: o,
			Subject: p.Address + ": mail at the bounce address (" + kind + ")", EncryptTo: key}
		if key != nil {
			m.Text, m.Attach = textForward(p, h, len(msg), kind, true), msg
		} else {
			m.Text = textForward(p, h, len(msg), kind, false) + "\nIt is not forwarded in clear, nor is its subject: register a key as a member\nof the list to receive such mail encrypted, with the message attached.\n" + sig(p)
		}
		data, err := compose(m, listKey, now, r.Rand, keyring.ConfigLimits(r.Config))
		if err != nil {
			return fmt.Errorf("compose forward to %s: %w", o, err)
		}
		ms = append(ms, store.OutboxMail{List: p.Address, Sender: "", Recipients: []string{o}, Message: data, CreatedAt: now})
	}
	l := p.Responder
	ids, err := r.Store.QueueLimitedAll(ctx, store.ReplyLimit{List: p.Address, Address: "bounce-forward:" + from, Now: now,
		Window: l.ReplyWindow.D, PerAddress: l.MaxRepliesPerAddress, PerList: l.MaxRepliesPerList}, ms)
	if errors.Is(err, store.ErrRateLimited) {
		r.Log.Warn("mail at the bounce address not forwarded: reply limit reached", "list", p.Address, "kind", kind)
		return nil
	}
	if err != nil {
		return err
	}
	for _, id := range ids {
		r.flush(ctx, p, id)
	}
	return nil
}
