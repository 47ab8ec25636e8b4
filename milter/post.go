package milter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/policy"
)

// postTimeout bounds the work on one post (store queries, crypto,
// reinjection); it stays below Postfix's milter_content_timeout (300 s).
const postTimeout = 2 * time.Minute

// claimLease is how long a claim on a post keeps other attempts (on any
// host) from delivering it. An attempt claims after its postTimeout
// context started and does all its work, every store write included,
// under that context, so a live holder is done (or can write nothing)
// before its lease ends: no renewal is needed. The minute over
// postTimeout is the margin for the clocks of hosts sharing one
// database. A holder that died is replaced after at most this long.
const claimLease = postTimeout + time.Minute

// claimedElsewhere answers an attempt at a post that another attempt (on
// another host, or another session of this one) is delivering right
// now: the sender's MTA retries later and then finds the post complete.
var claimedElsewhere = policy.ReplyClaimedElsewhere().TempFailure()

// maxSignatures bounds the signatures one post may carry (each becomes a
// replay table row).
const maxSignatures = 16

// outcome is the result of one list's decision on a post.
type outcome struct {
	list     *policy.Policy
	decision policy.Decision
	res      *inbound.Result
	postID   []byte // set when the post's digests went into the replay table (under our claim)
	err      error  // internal failure: tempfail
}

// endOfMessage decides the post for every list it addresses and carries
// out the decisions. It never answers accept on an internal failure: any
// error is a tempfail, so the sender's MTA retries and nothing is lost.
func (srv *Server) endOfMessage(s *session, m *gomilter.Modifier) gomilter.Response {
	ctx, cancel := context.WithTimeout(context.Background(), postTimeout)
	defer cancel()
	msg := make([]byte, 0, s.header.Len()+2+s.body.Len())
	msg = append(msg, s.header.Bytes()...)
	msg = append(msg, "\r\n"...)
	msg = append(msg, s.body.Bytes()...)
	tempfail := s.refuse(policy.ReplyTempFail())
	unlock, err := srv.lockLists(ctx, s.lists)
	if err != nil {
		srv.opts.Log.Error("post", "queue_id", s.queueID, "action", "tempfail", "err", err.Error())
		return tempfail
	}
	defer unlock()

	outs := make([]outcome, 0, len(s.lists))
	infos := make([]postInfo, 0, len(s.lists))
	// This attempt's claims end with it, whatever the answer: after the
	// post was marked complete, or after a refusal forgot what it
	// recorded. The next attempt (a retry, on any host) claims again and
	// resumes from the delivery records. A fresh context: a claim is
	// released even when the attempt ran out of time.
	owner := srv.claimer.Owner()
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for i, info := range infos {
			if info.claimed == nil {
				continue
			}
			if _, err := srv.opts.Store.ReleaseClaim(rctx, s.lists[i].Address, info.claimed, owner); err != nil {
				srv.opts.Log.Warn("release post claim", "list", s.lists[i].Address, "queue_id", s.queueID, "err", err)
			}
		}
	}()
	start := time.Now()
	ex, exErr := deliver.Examine(ctx, srv.opts.Keys, srv.opts.Config, srv.opts.Now(), s.lists, msg)
	for i, p := range s.lists {
		var d policy.Decision
		var res *inbound.Result
		var info postInfo
		err := exErr
		if err == nil {
			d, res, info, err = srv.decide(ctx, p, msg, ex, i, owner, s.from)
		}
		info.took = time.Since(start)
		info.decided = info.took
		start = time.Now()
		outs = append(outs, outcome{list: p, decision: d, res: res, postID: info.postID, err: err})
		infos = append(infos, info)
	}
	logAll := func() {
		for i, o := range outs {
			srv.logDecision(s, infos[i], o)
		}
	}
	// Any internal failure tempfails, any reject refuses the transaction:
	// nothing is held or delivered then.
	var resp gomilter.Response
	for _, o := range outs {
		if o.err != nil || o.decision.Action == policy.TempFail {
			resp = tempfail
		}
	}
	for _, o := range outs {
		if o.err == nil && o.decision.Reason == claimedElsewhere.Reason {
			resp = s.refuse(policy.ReplyClaimedElsewhere())
		}
	}
	if resp == nil {
		for _, o := range outs {
			if o.decision.Action == policy.Reject {
				resp = s.refuse(policy.Problem{Code: o.decision.Code, Enhanced: o.decision.Enhanced, Text: o.decision.Text})
				break
			}
		}
	}
	if resp != nil {
		// Lists that took the post recorded its digests; the transaction
		// is refused after all, so nobody got it: forget them, or the
		// author's corrected re-send would be a replay on those lists.
		// Only under our own claim (postID is set only then): a post
		// another attempt is delivering keeps its digests.
		for _, o := range outs {
			if o.postID != nil {
				if _, err := srv.opts.Store.ReleasePost(ctx, o.list.Address, o.postID); err != nil {
					srv.opts.Log.Warn("release refused post", "list", o.list.Address, "queue_id", s.queueID, "err", err)
				}
			}
		}
		logAll()
		return resp
	}

	// Hold, then deliver every accepted post. Every batch is reinjected
	// and committed by the MTA before we answer; the list recipients
	// leave the transaction, and the transaction is discarded when they
	// were its only recipients (others get the original untouched). The
	// transaction itself never carries a copy: whether the MTA committed
	// it after our answer is something we could not know
	// (docs/outbound.md, "Batch 1 in place, or every batch reinjected").
	for i := range outs {
		o := &outs[i]
		start := time.Now()
		switch o.decision.Action {
		case policy.Hold:
			infos[i].holdID, o.err = srv.hold(ctx, s, o.list, msg, o.decision, holdKey(o.postID, infos[i].claimed, s.from))
		case policy.Accept:
			var dr deliver.Result
			if dr, o.err = srv.deliver(ctx, o.list, msg, ex, i, o.postID); o.err == nil {
				infos[i].recipients, infos[i].skipped = dr.Served, len(dr.Skipped)
			}
		}
		infos[i].took += time.Since(start)
		if o.err != nil {
			logAll()
			return tempfail
		}
	}
	for _, o := range outs {
		for _, rcpt := range s.rcptOf[o.list.Address] {
			if err := m.DeleteRecipient(rcpt); err != nil {
				srv.opts.Log.Error("delete recipient", "queue_id", s.queueID, "list", o.list.Address, "err", err)
				return tempfail
			}
		}
	}
	// The post is done for every list that took it: from now on the same
	// signature or ciphertext is a replay, not a retry, unless it comes
	// again in this same envelope (retryOfCompleted).
	for i := range outs {
		o := &outs[i]
		if o.postID == nil || (o.decision.Action != policy.Accept && o.decision.Action != policy.Hold) {
			continue
		}
		if err := srv.opts.Store.CompletePost(ctx, o.list.Address, o.postID, envelopeDigest(o.postID, s.from), srv.opts.Now()); err != nil {
			o.err = fmt.Errorf("mark post complete: %w", err)
			logAll()
			return tempfail
		}
	}
	logAll()
	// Tell the moderators about the posts now held. The answer to the
	// MTA does not depend on it (holdID is stored): a notice that could
	// not go out now is sent again by the hourly ExpireHolds run.
	for i, o := range outs {
		if o.decision.Action == policy.Hold && infos[i].holdID != 0 {
			if err := srv.holds.NotifyModerators(ctx, o.list, infos[i].holdID, o.decision.Reason); err != nil {
				srv.opts.Log.Warn("notify moderators", "list", o.list.Address, "queue_id", s.queueID, "hold_id", infos[i].holdID, "err", err)
			}
		}
	}
	if len(s.others) == 0 {
		return gomilter.RespDiscard
	}
	return gomilter.RespAccept
}

// postInfo is what the log line says about a post.
type postInfo struct {
	messageID  string
	from       string
	signer     string
	kind       string
	problems   []error
	postID     []byte
	claimed    []byte // the post id this attempt holds a claim on
	holder     string // who holds the claim when another attempt does
	holdID     int64
	took       time.Duration // deciding, then holding or delivering too
	decided    time.Duration // deciding only
	recipients int           // members served by this attempt
	skipped    int           // members left out (no usable key)
}

// retryOfCompleted answers the sender's MTA retrying a transaction whose
// post was completed (the same post id in the same envelope, see
// envelopeDigest): its MTA lost our answer (a timeout, a crash) and
// tries again. The post went out; the list recipients are accepted and
// dropped, so the MTA stops retrying, nothing is delivered twice and the
// author gets no bounce for a post the list distributed.
var retryOfCompleted = policy.Decision{Action: policy.Discard, Reason: "retry-of-completed"}

// envelopeDigest identifies the envelope a post came in for one list:
// the post id and the envelope sender (normalised; "" for the null
// sender). The list recipients are the list the record is kept for: a
// retry addressing the list under any spelling, with or without other
// recipients and lists, is the same envelope for that list. The sender's
// MTA retries a queue file with the sender it was queued with.
func envelopeDigest(postID []byte, envelopeFrom string) []byte {
	h := sha256.New()
	h.Write([]byte("listcrypt envelope\x00"))
	h.Write(postID)
	h.Write([]byte{0})
	h.Write([]byte(policy.NormalizeAddress(envelopeFrom)))
	return h.Sum(nil)
}

// holdKey is the key a hold is stored under, once per list (AddHold),
// so that the sender's MTA retrying a transaction whose answer was lost
// finds its hold: the post id; for a replay held for a moderator (whose
// post id is the earlier post's), the post id with the envelope sender,
// so that the retry of this transaction finds this hold and another
// envelope's replay is its own hold. Nil (no key) without a claim.
func holdKey(postID, claimed []byte, envelopeFrom string) []byte {
	switch {
	case postID != nil:
		return postID
	case claimed != nil:
		return envelopeDigest(claimed, envelopeFrom)
	}
	return nil
}

// decide maps the examination of msg through the policy of list p (the
// i-th list of the examination), for a transaction from envelope sender
// envFrom. This is where a post is decided.
func (srv *Server) decide(ctx context.Context, p *policy.Policy, msg []byte, ex *deliver.Examination, i int, owner, envFrom string) (policy.Decision, *inbound.Result, postInfo, error) {
	now := srv.opts.Now()
	var info postInfo
	hdr, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return policy.ReplyBadHeader().Refusal(), nil, info, nil
	}
	info.messageID = hdr.Header.Get("Message-Id")
	from, err := mail.ParseAddressList(hdr.Header.Get("From"))
	if err != nil || len(from) != 1 {
		return policy.ReplyNotOneFrom().Refusal(), nil, info, nil
	}
	info.from = policy.NormalizeAddress(from[0].Address)
	res, members := ex.Result, ex.Members[i]
	info.kind = res.Kind.String()
	info.problems = res.Problems

	f := policy.Findings{Encrypted: res.Encrypted && res.Integrity, SigTime: res.SigTime}
	_, f.FromMember = members.Active[info.from]
	for _, pr := range res.Problems {
		// A bad signature on intact data is a finding the policy maps
		// (post.bad_signature), not a structural fault.
		if res.Sig == inbound.SigBad && res.Integrity == res.Encrypted &&
			(errors.Is(pr, inbound.ErrBadSignature) || errors.Is(pr, inbound.ErrTampered)) {
			continue
		}
		f.Problem = problemFor(pr, p)
		break
	}
	forList := res.ForList
	if i > 0 && i-1 < len(res.AlsoFor) {
		forList = res.AlsoFor[i-1]
	}
	if f.Problem == nil && res.Encrypted && res.Integrity && !forList {
		f.Problem = problemFor(inbound.ErrNotForList, p)
		info.problems = append(info.problems, inbound.ErrNotForList)
	}
	switch res.Sig {
	case inbound.SigValid:
		info.signer = res.SignerFingerprint
		if !memberKey(members, res.SignerFingerprint) {
			// Valid, but by a member of another list of this transaction.
			f.Signature = policy.SignedUnknown
			break
		}
		f.Signature = policy.SignedValid
		f.SignerBoundToFrom = members.Active[info.from] == res.SignerFingerprint
		if f.Problem == nil && f.SignerBoundToFrom {
			f.Problem = signedFromProblem(res, info.from)
		}
		switch res.Binding(ex.ListKeys[i], p.Address) {
		case inbound.BindingList:
			f.Binding = policy.BoundToList
		case inbound.BindingOther:
			f.Binding = policy.BoundElsewhere
		}
	case inbound.SigBad:
		f.Signature = policy.SignedBad
		if res.Has(inbound.ErrKeyNotValid) {
			f.Signature = policy.SignedKeyInvalid
		}
	case inbound.SigUnknownKey:
		f.Signature = policy.SignedUnknown
	}
	d := p.Decide(f, now)
	if d.Action != policy.Accept && d.Action != policy.Hold {
		return d, res, info, nil
	}
	// The post passes (or waits for a moderator): claim it, then its
	// digests go into the replay table, each settled by the database
	// across hosts. A retry of the same transaction carries the same post
	// id and is not a replay.
	if len(res.SigDigests) > maxSignatures {
		return policy.ReplyTooManySignatures(maxSignatures).Refusal(), res, info, nil
	}
	digests := append([][]byte{}, res.SigDigests...)
	if res.CiphertextDigest != nil {
		digests = append(digests, res.CiphertextDigest)
	}
	id := deliver.PostIDOf(hdr, msg)
	// One attempt at a time delivers (or holds) a post, whichever host
	// it runs on: while another holds a live claim, this one answers 451
	// and touches nothing of the post. The claim comes before every
	// record, so that whatever this attempt reads (complete or not,
	// delivered to whom) no other attempt changes until it ends.
	// A process of this machine killed while it held the post has its
	// claim taken over now rather than when its lease ends.
	claimed, holder, tookOver, err := srv.claimer.Claim(ctx, srv.opts.Store, p.Address, id, owner, claimLease, now)
	if err != nil {
		return policy.Decision{}, nil, info, fmt.Errorf("claim post: %w", err)
	}
	if tookOver {
		srv.opts.Log.Info("post claim taken over", "list", p.Address, "from", holder, "reason", "holder process gone")
	}
	if !claimed {
		info.holder = holder
		return claimedElsewhere, res, info, nil
	}
	info.claimed = id
	// A digest recorded for another post id: a replay. (No digests: an
	// unsigned plain post the policy allows; the id still guards the
	// delivery records.)
	if len(digests) > 0 {
		replayOf, err := srv.opts.Store.RecordPost(ctx, p.Address, id, digests, now)
		if err != nil {
			return policy.Decision{}, nil, info, fmt.Errorf("replay table: %w", err)
		}
		if replayOf != nil {
			f.Replay = true
			return p.Decide(f, now), res, info, nil
		}
	}
	// The same post id: a retry of a transaction that did not finish
	// resumes. A post that was completed once is, in the envelope that
	// completed it, the sender's MTA retrying (accepted and dropped);
	// from any other envelope sender, a replay.
	done, sameEnvelope, err := srv.opts.Store.CompletedFor(ctx, p.Address, id, envelopeDigest(id, envFrom))
	if err != nil {
		return policy.Decision{}, nil, info, fmt.Errorf("replay table: %w", err)
	}
	if done && sameEnvelope {
		return retryOfCompleted, res, info, nil
	}
	if done {
		f.Replay = true
		return p.Decide(f, now), res, info, nil
	}
	info.postID = id
	return d, res, info, nil
}

// memberKey reports whether fpr is an active member's key.
func memberKey(m *keyring.MemberSet, fpr string) bool {
	_, ok := m.Keys[fpr]
	return ok
}

// signedFromProblem refuses a post whose signed bytes carry a From that
// is not the sender whose key made the signature: the From members see
// comes from the checked sender, and a signed From claiming someone else
// is a forgery attempt by the signer.
func signedFromProblem(res *inbound.Result, from string) *policy.Problem {
	if res.Signed == nil || len(res.Signed.Froms) == 0 {
		return nil
	}
	bad := len(res.Signed.Froms) > 1
	for _, v := range res.Signed.Froms {
		list, err := mail.ParseAddressList(v)
		if err != nil || len(list) != 1 || policy.NormalizeAddress(list[0].Address) != from {
			bad = true
		}
	}
	if !bad {
		return nil
	}
	r := policy.ReplySignedFromMismatch(from)
	return &r
}

// deliver distributes the post msg, examined as ex, to list i of ex
// (milter/deliver), under this attempt's claim on postID.
func (srv *Server) deliver(ctx context.Context, p *policy.Policy, msg []byte, ex *deliver.Examination, i int, postID []byte) (deliver.Result, error) {
	content, err := deliver.Content(msg, ex.Result, ex.ListKeys[i], p.Address)
	if err != nil {
		return deliver.Result{}, err
	}
	return srv.deliverer.Deliver(ctx, p, deliver.Post{ID: postID, Content: content, Encrypted: ex.Result.Encrypted})
}

// hold stores the post for a moderator, encrypted to the list key: never
// in clear, whatever the sender sent.
func (srv *Server) hold(ctx context.Context, s *session, p *policy.Policy, msg []byte, d policy.Decision, postID []byte) (int64, error) {
	listKey, err := srv.opts.Keys.ListKey(ctx, p.Address)
	if err != nil {
		return 0, err
	}
	sealed, err := keyring.EncryptTo(msg, []*openpgp.Entity{listKey}, keyring.ConfigLimits(srv.opts.Config), srv.opts.Now)
	if err != nil {
		return 0, fmt.Errorf("seal held post: %w", err)
	}
	id, err := srv.opts.Store.AddHold(ctx, store.Hold{
		List: p.Address, Sender: s.from, Recipients: []string{p.Address},
		Reason: d.Reason, Message: sealed, State: "held", CreatedAt: srv.opts.Now().UTC(),
		PostID: postID, // a retried transaction finds its hold
	})
	if err != nil {
		return 0, fmt.Errorf("store held post: %w", err)
	}
	return id, nil
}

// problemFor maps an inbound problem to the refusal the sender reads.
func problemFor(err error, p *policy.Policy) *policy.Problem {
	var lim *inbound.LimitError
	var r policy.Problem
	switch {
	case errors.As(err, &lim) && lim.What == "decompressed-size":
		r = policy.ReplyDecompressed(lim.Limit)
	case errors.As(err, &lim):
		r = policy.ReplyLimit(lim.What, lim.Limit)
	case errors.Is(err, inbound.ErrMixed):
		r = policy.ReplyMixedParts()
	case errors.Is(err, inbound.ErrNoIntegrity):
		r = policy.ReplyNoIntegrity()
	case errors.Is(err, inbound.ErrTampered):
		r = policy.ReplyTampered()
	case errors.Is(err, inbound.ErrOldListKey):
		r = p.ReplyOldListKey()
	case errors.Is(err, inbound.ErrNotForList):
		r = p.ReplyNotForListKey()
	default:
		// Never quote the error: after decryption it may carry plaintext.
		r = policy.ReplyMalformed()
	}
	return &r
}

// problemKind names a problem for the log line without its text: errors
// found after decryption may quote the plaintext.
func problemKind(err error) string {
	var lim *inbound.LimitError
	switch {
	case errors.As(err, &lim):
		return "limit-" + lim.What
	case errors.Is(err, inbound.ErrMixed):
		return "mixed-parts"
	case errors.Is(err, inbound.ErrNoIntegrity):
		return "no-integrity"
	case errors.Is(err, inbound.ErrTampered):
		return "tampered"
	case errors.Is(err, inbound.ErrBadSignature):
		return "bad-signature"
	case errors.Is(err, inbound.ErrOldListKey):
		return "old-list-key"
	case errors.Is(err, inbound.ErrNotForList):
		return "not-for-list-key"
	}
	return "malformed"
}

// logDecision writes the one line per decision.
func (srv *Server) logDecision(s *session, info postInfo, o outcome) {
	action, level := string(o.decision.Action), slog.LevelInfo
	if o.err != nil {
		action, level = string(policy.TempFail), slog.LevelError
	}
	srv.opts.Metrics.Post(o.list.Address, action, o.decision.Reason, info.decided)
	if o.decision.Action == policy.Accept && o.err == nil {
		srv.opts.Metrics.Delivered(o.list.Address, info.took-info.decided)
	}
	attrs := []any{
		"list", o.list.Address, "queue_id", s.queueID, "message_id", info.messageID,
		"from", info.from, "kind", info.kind,
		"action", action, "reason", o.decision.Reason,
		"duration_ms", float64(info.took.Microseconds()) / 1000,
	}
	if info.signer != "" {
		attrs = append(attrs, "signer", info.signer)
	}
	if info.holdID != 0 {
		attrs = append(attrs, "hold_id", info.holdID)
	}
	if info.holder != "" {
		attrs = append(attrs, "claimed_by", info.holder)
	}
	if o.decision.Action == policy.Accept && o.err == nil {
		attrs = append(attrs, "recipients", info.recipients, "skipped", info.skipped)
	}
	for _, pr := range info.problems {
		attrs = append(attrs, "problem", problemKind(pr))
	}
	if o.err != nil {
		attrs = append(attrs, "err", o.err.Error())
	}
	srv.opts.Log.Log(context.Background(), level, "post", attrs...)
}
