// Package workflow carries out the key workflows of the command
// responder (listcrypt-responder, the MTA's pipe transport for
// LIST-request@DOMAIN) and of list moderation: subscribe and unsubscribe,
// key set / confirm / change / revoke by mail, key get / show, help, and
// the moderator's pending / approve / reject. docs/responder.md describes
// the commands, the statement, the tokens and every reply.
//
// Every state change is one store transaction (store.ApplyKeyStep) that
// also uses up the command's token, so a token counts at most once even
// when two copies of a command race. The reply is written into the outbox
// inside that transaction and submitted after the commit, with no
// transaction open (store.SendOutbox): a reply exists exactly when its
// change was committed, and goes out exactly once, resumed by the next
// run when a responder dies between the commit and the send.
package workflow

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/site"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
)

// Errors that decide the responder's exit status (see ExitCode).
var (
	// ErrUnparseable: the input is not a mail the responder can answer
	// (no header, no usable From). Exit 65, EX_DATAERR: the MTA bounces it.
	ErrUnparseable = errors.New("unparseable command mail")
	// ErrUnknownList: the recipient is no list's request address.
	// Exit 67, EX_NOUSER.
	ErrUnknownList = errors.New("no list has this request address")
)

// Exit codes (sysexits.h).
const (
	ExitOK       = 0
	ExitDataErr  = 65
	ExitNoUser   = 67
	ExitTempFail = 75
)

// ExitCode maps Handle's error to the process exit status: 0 for nil,
// 65 and 67 for the permanent errors above, 75 (the MTA retries) for
// everything else: database, keys, submission of the reply.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrUnparseable):
		return ExitDataErr
	case errors.Is(err, ErrUnknownList):
		return ExitNoUser
	}
	return ExitTempFail
}

// Responder answers command mails and carries out moderation.
type Responder struct {
	Config   *config.Config
	Store    *store.Store
	Policies *policy.Set
	Keys     *keyring.Cache
	Mail     Mailer
	Log      *slog.Logger
	Now      func() time.Time
	Rand     io.Reader
}

// New returns a Responder for cfg over the open store st (ForSite on
// site.New(cfg, st)).
func New(cfg *config.Config, st *store.Store, log *slog.Logger) (*Responder, error) {
	return ForSite(site.New(cfg, st), log)
}

// ForSite returns a Responder for the opened site s: its list keys (the
// passphrase is read here if it was not yet), the policies of
// policy_dir, replies submitted to the [reinject] address. A nil log
// discards.
func ForSite(s *site.Site, log *slog.Logger) (*Responder, error) {
	keys, err := s.Keys()
	if err != nil {
		return nil, err
	}
	set, err := s.Policies()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Responder{
		Config:   s.Config,
		Store:    s.Store,
		Policies: set,
		Keys:     keys,
		Mail:     ReinjectMailer{Address: s.Config.Reinject.Address},
		Log:      log,
		Now:      time.Now,
		Rand:     rand.Reader,
	}, nil
}

// Outcome says what Handle did, for the log line.
type Outcome struct {
	List    string
	From    string
	Command string // the verb, "" when none was found
	Result  string // "done", "refused", "ignored"; bounces: "counted", "forwarded"
	Reason  string // why it was refused or ignored; never a token
}

// request is one command mail being handled.
type request struct {
	p       *policy.Policy
	listKey *openpgp.Entity
	from    string
	msgID   string
	now     time.Time
	member  *store.Member // nil: not a member
	memberE *openpgp.Entity
	pending []store.PendingKey
	pendE   map[string]*openpgp.Entity // fingerprint -> parsed pending key
	cmd     Command
	content *content
	// signer is the fingerprint of the key whose valid signature covers
	// the whole content (no unsigned or mixed parts); "" otherwise.
	signer string
	// encrypted: the mail carries encrypted data (decrypted or not).
	encrypted bool
	// verified: signer is the registered key of a member (active or
	// waiting for a moderator), or the pending key a "key confirm" token
	// of this address was issued for. Only a verified sender is quoted
	// and only an unverified one is rate limited (docs/responder.md).
	verified bool
	// unreadable says why the content could not be read (non-empty: it
	// could not). These errors may carry the mail's bytes: never put
	// them in a reply or a log line (see textUnreadable).
	unreadable []error
	out        *Outcome
}

// Handle answers one command mail. recipient is the request address the
// MTA delivered it to ("" to take it from the headers). A nil error means
// the mail was answered (or deliberately ignored); see ExitCode.
func (r *Responder) Handle(ctx context.Context, msg []byte, recipient string) (*Outcome, error) {
	out := &Outcome{}
	err := r.handle(ctx, msg, recipient, out)
	level := slog.LevelInfo
	switch {
	case err != nil:
		level = slog.LevelError
	case out.Reason == reasonListLimit:
		// Someone may be using the list to flood addresses.
		level = slog.LevelWarn
	}
	r.Log.Log(ctx, level, "command", "list", out.List, "from", out.From, "command", out.Command,
		"result", out.Result, "reason", out.Reason, "err", err)
	return out, err
}

// withoutEnvelopeLine drops an mbox envelope line ("From sender date"),
// which Sendmail's prog mailer and procmail-style deliveries put before
// the header: it is no header field.
func withoutEnvelopeLine(msg []byte) []byte {
	if !bytes.HasPrefix(msg, []byte("From ")) {
		return msg
	}
	if i := bytes.IndexByte(msg, '\n'); i >= 0 {
		return msg[i+1:]
	}
	return msg
}

// maxHeader bounds the top-level header of a command mail.
const maxHeader = 256 << 10

func (r *Responder) handle(ctx context.Context, msg []byte, recipient string, out *Outcome) error {
	msg = withoutEnvelopeLine(msg)
	h, err := textproto.ReadHeader(bufio.NewReader(io.LimitReader(bytes.NewReader(msg), maxHeader)))
	if p, verp := r.findBounce(recipient, h); p != nil {
		// Whatever arrives at a bounce address, garbage included, is
		// handled there (docs/bounces.md).
		return r.handleBounce(ctx, p, msg, verp, out)
	}
	if err != nil {
		// The parser's error quotes the line: not for the log or the bounce.
		out.Result, out.Reason = "ignored", "unparseable header"
		return fmt.Errorf("%w: the header cannot be parsed", ErrUnparseable)
	}
	p := r.findList(recipient, h)
	if p == nil {
		out.Result, out.Reason = "ignored", "unknown request address"
		if recipient == "" {
			return fmt.Errorf("%w: no recipient given and no list request address in the headers", ErrUnknownList)
		}
		return fmt.Errorf("%w: %s", ErrUnknownList, recipient)
	}
	out.List = p.Address
	from := policy.NormalizeAddress(h.Get("From"))
	if !policy.ValidAddress(from) {
		out.Result, out.Reason = "ignored", "no usable From address"
		return fmt.Errorf("%w: the From header holds no usable address", ErrUnparseable)
	}
	out.From = from
	if why := r.mustNotAnswer(p, h, from); why != "" {
		out.Result, out.Reason = "ignored", why
		return nil
	}
	now := r.Now()
	listKey, err := r.Keys.ListKey(ctx, p.Address)
	if err != nil {
		return err
	}
	rq := &request{p: p, listKey: listKey, from: from, msgID: strings.TrimSpace(h.Get("Message-Id")), now: now, out: out}
	if err := r.loadMember(ctx, rq); err != nil {
		return err
	}
	if err := r.open(rq, msg); err != nil {
		return err
	}
	cmd, perr := Command{}, error(ErrNoCommand)
	if len(rq.unreadable) == 0 {
		cmd, perr = ParseCommand(h.Get("Subject"), rq.content.text)
	}
	verified, err := r.verify(ctx, rq, cmd, perr)
	if err != nil {
		return err
	}
	rq.verified = verified
	if !rq.verified && rq.encrypted {
		// No oracle: whatever the encrypted mail holds and whatever
		// happened to it, an unverified sender gets this one reply, and
		// the log names no command.
		return r.refuse(ctx, rq, "encrypted, not verified", "Your encrypted message to "+p.RequestAddress(), textEncryptedUnverified(rq))
	}
	if len(rq.unreadable) > 0 {
		return r.refuse(ctx, rq, "unreadable", "Your message could not be read", textUnreadable(rq))
	}
	var se *SyntaxError
	switch {
	case errors.As(perr, &se):
		return r.refuse(ctx, rq, "syntax", "Your command could not be understood", textSyntax(rq, se, r.mayQuote(rq)))
	case errors.Is(perr, ErrNoCommand):
		return r.refuse(ctx, rq, "no command", "Commands for "+p.Address, textNoCommand(rq))
	case perr != nil:
		return perr
	}
	rq.cmd = cmd
	out.Command = string(cmd.Verb)
	switch cmd.Verb {
	case VerbHelp:
		return r.help(ctx, rq)
	case VerbSubscribe:
		return r.subscribe(ctx, rq)
	case VerbUnsubscribe:
		return r.unsubscribe(ctx, rq)
	case VerbKeySet:
		return r.keySet(ctx, rq)
	case VerbKeyConfirm:
		return r.keyConfirm(ctx, rq)
	case VerbKeyChange:
		return r.keyChange(ctx, rq)
	case VerbKeyRevoke:
		return r.keyRevoke(ctx, rq)
	case VerbKeyGet:
		return r.keyGet(ctx, rq)
	case VerbKeyShow:
		return r.keyShow(ctx, rq)
	}
	return fmt.Errorf("command %q not handled", cmd.Verb)
}

// findList maps the request address to its list: recipient, else the
// first header naming one.
func (r *Responder) findList(recipient string, h textproto.Header) *policy.Policy {
	byRequest := map[string]*policy.Policy{}
	for _, a := range r.Policies.Addresses() {
		p := r.Policies.Lookup(a)
		byRequest[p.RequestAddress()] = p
	}
	if recipient != "" {
		return byRequest[policy.NormalizeAddress(recipient)]
	}
	for _, name := range []string{"Delivered-To", "X-Original-To", "To", "Cc"} {
		for _, v := range h.Values(name) {
			for _, a := range strings.Split(v, ",") {
				if p := byRequest[policy.NormalizeAddress(a)]; p != nil {
					return p
				}
			}
		}
	}
	return nil
}

// mustNotAnswer says why a mail must get no reply (RFC 3834 §2: no
// answers to automatic mail, bounces or the list's own mail), or "".
func (r *Responder) mustNotAnswer(p *policy.Policy, h textproto.Header, from string) string {
	if v := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted"))); v != "" && v != "no" {
		return "Auto-Submitted" // the value is the sender's: not logged
	}
	switch prec := strings.ToLower(strings.TrimSpace(h.Get("Precedence"))); prec {
	case "bulk", "junk", "list":
		return "Precedence: " + prec
	}
	if rp := strings.TrimSpace(h.Get("Return-Path")); rp == "<>" {
		return "null envelope sender (a bounce)"
	}
	local, _, _ := strings.Cut(from, "@")
	switch local {
	case "mailer-daemon", "postmaster", "noreply", "no-reply":
		return "From " + local
	}
	switch from {
	case p.Address, p.RequestAddress(), p.BounceAddress():
		return "From the list itself"
	}
	return ""
}

// loadMember reads the sender's membership, registered key and pending
// keys.
func (r *Responder) loadMember(ctx context.Context, rq *request) error {
	m, err := r.Store.GetMember(ctx, rq.p.Address, rq.from)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		rq.member = &m
		if len(m.PublicKey) > 0 {
			e, err := keyring.ParseStoredKey(m.PublicKey, keyring.ConfigLimits(r.Config))
			if err != nil {
				return fmt.Errorf("registered key of %s: %w", rq.from, err)
			}
			rq.memberE = e
		}
	}
	rq.pending, err = r.Store.PendingKeys(ctx, rq.p.Address, rq.from)
	if err != nil {
		return err
	}
	rq.pendE = map[string]*openpgp.Entity{}
	for _, pk := range rq.pending {
		e, err := keyring.ParseStoredKey(pk.PublicKey, keyring.ConfigLimits(r.Config))
		if err != nil {
			return fmt.Errorf("pending key %s of %s: %w", pk.Fingerprint, rq.from, err)
		}
		rq.pendE[pk.Fingerprint] = e
	}
	return nil
}

// open examines the mail with the list key (decryption) and the sender's
// registered and pending keys (signature), and reads its content. The
// error is for internal failures only (exit 75); what is wrong with the
// mail is in rq.unreadable.
func (r *Responder) open(rq *request, msg []byte) error {
	var reg []keyring.RegisteredKey
	if rq.memberE != nil {
		reg = append(reg, keyring.RegisteredKey{Address: rq.from, Fingerprint: rq.member.Fingerprint, Entity: rq.memberE})
	}
	for fpr, e := range rq.pendE {
		reg = append(reg, keyring.RegisteredKey{Address: rq.from, Fingerprint: fpr, Entity: e})
	}
	l := r.Config.Limits
	res, err := inbound.Examine(inbound.Input{
		Message: msg, ListKey: rq.listKey, Signers: keyring.NewMemberKeyRing(reg), Now: rq.now,
		Limits: inbound.Limits{MaxMIMEDepth: l.MaxMIMEDepth, MaxMIMEParts: l.MaxMIMEParts,
			MaxHeaderBytes: int(l.MaxHeaderSize.Bytes), Limits: keyring.ConfigLimits(r.Config)},
	})
	if err != nil {
		return fmt.Errorf("examine the command mail: %w", err)
	}
	rq.encrypted = res.Encrypted || res.CiphertextDigest != nil
	if res.Kind == inbound.Unknown {
		rq.unreadable = problems(res)
		return nil
	}
	entity := msg
	switch {
	case rq.encrypted && res.Plaintext == nil:
		rq.unreadable = problems(res)
		return nil
	case res.Kind == inbound.PGPMIMEEncrypted:
		entity = res.Plaintext
	case res.Kind == inbound.InlineEncrypted, res.Kind == inbound.InlineSigned && res.Plaintext != nil:
		// Inline PGP: the decrypted (or signed-only) literal text. A
		// cleartext signature (Plaintext nil) is unwrapped by readEntity.
		entity = append([]byte("Content-Type: text/plain\r\n\r\n"), res.Plaintext...)
	}
	c, err := readEntity(entity)
	if err != nil {
		rq.unreadable = []error{err}
		return nil
	}
	rq.content = c
	if res.Sig == inbound.SigValid && len(res.Problems) == 0 {
		rq.signer = res.SignerFingerprint
	}
	return nil
}

// errNoContent: the examination found nothing wrong and nothing to read.
var errNoContent = errors.New("it has no readable content")

func problems(res *inbound.Result) []error {
	if len(res.Problems) == 0 {
		return []error{errNoContent}
	}
	return res.Problems
}

// verify says whether the sender is verified (request.verified): a
// valid signature over the whole content by the registered key of a
// member who has one (active, or waiting for a moderator), or by an
// unconfirmed pending key of this address in its own step, the
// "key confirm" (in the body) whose token was issued for that key. The
// key of a "key change" is not: the step that confirms it must be signed
// by the member's current key.
func (r *Responder) verify(ctx context.Context, rq *request, cmd Command, perr error) (bool, error) {
	if rq.signer == "" {
		return false, nil
	}
	if m := rq.member; m != nil && rq.memberE != nil && rq.signer == m.Fingerprint &&
		(m.State == store.MemberActive || m.State == store.MemberPending) {
		return true, nil
	}
	if perr != nil || cmd.Verb != VerbKeyConfirm || cmd.InSubject {
		return false, nil
	}
	pending := false
	for _, pk := range rq.pending {
		pending = pending || pk.Fingerprint == rq.signer && pk.Purpose == store.PendingSet && pk.State == store.PendingUnconfirmed
	}
	if !pending {
		return false, nil
	}
	c, err := r.Store.PeekChallenge(ctx, HashToken(cmd.Token))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return c.List == rq.p.Address && c.Address == rq.from && c.Command == string(VerbKeyConfirm) && c.Fingerprint == rq.signer, nil
}

// mayQuote says whether a reply may repeat the sender's own words (a
// command line, a key's user IDs, a statement's fingerprint): only to a
// verified sender, and only in an encrypted reply when the command mail
// was encrypted.
func (r *Responder) mayQuote(rq *request) bool {
	return rq.verified && (!rq.encrypted || r.usableKey(rq) != nil)
}

// Outcome reasons of a reply not sent because of a [responder] limit.
const (
	reasonAddressLimit = "reply limit per address"
	reasonListLimit    = "reply limit per list"
)

// replyLimit is the [responder] limit for a reply to rq's sender.
func replyLimit(rq *request) store.ReplyLimit {
	l := rq.p.Responder
	return store.ReplyLimit{List: rq.p.Address, Address: rq.from, Now: rq.now, Window: l.ReplyWindow.D,
		PerAddress: l.MaxRepliesPerAddress, PerList: l.MaxRepliesPerList}
}

// limited turns a reached reply limit into the outcome "ignored" (exit
// 0: the MTA must not bounce the mail to the address being flooded).
func limited(rq *request, err error) error {
	var rl *store.RateLimitError
	if !errors.As(err, &rl) {
		return err
	}
	rq.out.Result, rq.out.Reason = "ignored", reasonAddressLimit
	if rl.Scope == store.LimitList {
		rq.out.Reason = reasonListLimit
	}
	return nil
}

// usableKey returns the sender's registered key if the list can encrypt
// to it now, else nil.
func (r *Responder) usableKey(rq *request) *openpgp.Entity {
	if rq.memberE == nil {
		return nil
	}
	cfg := keyring.PacketConfig(keyring.ConfigLimits(r.Config), func() time.Time { return rq.now })
	if _, err := rq.memberE.EncryptionKeyWithError(rq.now, cfg); err != nil {
		return nil
	}
	return rq.memberE
}

// reply sends text to the sender, signed by the list key and encrypted to
// encryptTo (nil: the sender's registered key when usable). The reply is
// written into the outbox (for an unverified sender in the transaction
// that takes its reply slot) and submitted after the commit.
func (r *Responder) reply(ctx context.Context, rq *request, subject, text string, encryptTo *openpgp.Entity, key string) error {
	data, err := r.composeReply(rq, subject, text, encryptTo, key)
	if err != nil {
		return err
	}
	m := outboxMail(rq.p, rq.from, data, rq.now)
	var id int64
	if rq.verified {
		id, err = r.Store.Queue(ctx, m)
	} else {
		id, err = r.Store.QueueLimited(ctx, replyLimit(rq), m)
	}
	if err != nil {
		return limited(rq, err)
	}
	r.flush(ctx, rq.p, id)
	return nil
}

// outboxMail is a reply to to as the outbox keeps it.
func outboxMail(p *policy.Policy, to string, data []byte, now time.Time) store.OutboxMail {
	return store.OutboxMail{List: p.Address, Sender: p.BounceAddress(), Recipients: []string{to}, Message: data, CreatedAt: now}
}

// flush submits outbox row id (the reply just committed) and then the
// list's older rows still waiting (a responder died between its commit
// and its send, or the MTA was unreachable), each exactly once, with no
// transaction open. A reply that cannot be submitted now stays in the
// outbox: the command is done (its change is committed), so the exit
// status stays 0 and the MTA does not run it again; the next responder
// run for the list, "listcrypt hold expire" and listcrypt-milter's hourly
// run send it. A reply the MTA refuses permanently is dropped (logged).
func (r *Responder) flush(ctx context.Context, p *policy.Policy, id int64) {
	res, err := r.Store.SendOutbox(ctx, p.Address, id, r.Now, func(ctx context.Context, m store.OutboxMail) error {
		return r.Mail.Send(ctx, m.Sender, m.Recipients, m.Message)
	}, PermanentSMTP)
	if res.FirstErr != nil {
		r.Log.Warn("reply not sent yet; it waits in the outbox", "list", p.Address, "outbox_id", id,
			"dropped", len(res.Dropped) > 0 && res.Dropped[0] == id, "err", res.FirstErr)
	}
	if len(res.Sent) > 1 || (len(res.Sent) == 1 && res.Sent[0] != id) {
		r.Log.Info("older replies sent from the outbox", "list", p.Address, "rows", len(res.Sent))
	}
	if err != nil {
		r.Log.Error("outbox", "list", p.Address, "waiting", len(res.Waiting), "dropped", len(res.Dropped), "err", err)
	}
}

// PermanentSMTP reports whether the MTA refused a submission for good
// (a 5xx reply): such a mail is dropped from the outbox, not retried.
func PermanentSMTP(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code >= 500
}

func (r *Responder) composeReply(rq *request, subject, text string, encryptTo *openpgp.Entity, key string) ([]byte, error) {
	if encryptTo == nil {
		encryptTo = r.usableKey(rq)
	}
	m := mail{
		From: rq.p.RequestAddress(), FromName: rq.p.Address + " (listcrypt)", To: rq.from,
		Subject: subject, Text: text, EncryptTo: encryptTo,
	}
	if rq.verified {
		// The Message-ID is the sender's bytes: echoed to verified senders only.
		m.InReplyTo = rq.msgID
	}
	if key != "" {
		m.Key, m.KeyName = key, rq.p.Address+".asc"
	}
	data, err := compose(m, rq.listKey, rq.now, r.Rand, keyring.ConfigLimits(r.Config))
	if err != nil {
		return nil, fmt.Errorf("compose reply to %s: %w", rq.from, err)
	}
	return data, nil
}

func (r *Responder) send(ctx context.Context, p *policy.Policy, listKey *openpgp.Entity, m mail, now time.Time) error {
	data, err := compose(m, listKey, now, r.Rand, keyring.ConfigLimits(r.Config))
	if err != nil {
		return fmt.Errorf("compose mail to %s: %w", m.To, err)
	}
	return r.submit(ctx, p, m.To, data)
}

func (r *Responder) submit(ctx context.Context, p *policy.Policy, to string, data []byte) error {
	if err := r.Mail.Send(ctx, p.BounceAddress(), []string{to}, data); err != nil {
		return fmt.Errorf("send mail to %s: %w", to, err)
	}
	return nil
}

// refuse answers with why the command changed nothing.
func (r *Responder) refuse(ctx context.Context, rq *request, reason, subject, text string) error {
	rq.out.Result, rq.out.Reason = "refused", reason
	return r.reply(ctx, rq, subject, text, nil, "")
}

// done records success and sends the reply (commands that change
// nothing).
func (r *Responder) done(ctx context.Context, rq *request, subject, text string, encryptTo *openpgp.Entity, key string) error {
	rq.out.Result = "done"
	return r.reply(ctx, rq, subject, text, encryptTo, key)
}

// change applies st and writes the reply into the outbox in the same
// transaction (store.KeyStep.Outbox): both happen, or neither; the reply
// is submitted after the commit. When the token was used or the state
// changed meanwhile (a racing copy of the command), the sender is told
// instead.
func (r *Responder) change(ctx context.Context, rq *request, st store.KeyStep, subject, text string, encryptTo *openpgp.Entity) error {
	data, err := r.composeReply(rq, subject, text, encryptTo, "")
	if err != nil {
		return err
	}
	st.List, st.Address, st.Now = rq.p.Address, rq.from, rq.now
	st.PrunePendingBefore = rq.now.Add(-rq.p.Keys.TokenExpiry.D)
	st.PruneChallengesBefore = rq.now.Add(-30 * 24 * time.Hour)
	m := outboxMail(rq.p, rq.from, data, rq.now)
	st.Outbox = &m
	if !rq.verified {
		lim := replyLimit(rq)
		st.LimitReply = &lim
	}
	err = r.Store.ApplyKeyStep(ctx, st)
	if err == nil {
		r.flush(ctx, rq.p, m.ID)
	}
	var rl *store.RateLimitError
	switch {
	case errors.As(err, &rl):
		return limited(rq, err)
	case err == nil:
		rq.out.Result = "done"
		return nil
	case errors.Is(err, store.ErrUsed):
		return r.refuse(ctx, rq, "token used", "Your command for "+rq.p.Address+" was refused", textToken(rq, "token used", store.Challenge{}))
	case errors.Is(err, store.ErrExpired):
		return r.refuse(ctx, rq, "token expired", "Your command for "+rq.p.Address+" was refused", textToken(rq, "token expired", store.Challenge{ExpiresAt: rq.now}))
	case errors.Is(err, store.ErrConflict):
		return r.refuse(ctx, rq, "changed meanwhile", "Your command for "+rq.p.Address+" was refused", textConflict(rq))
	}
	return err
}

// token returns a new token and the challenge that stores its hash.
func (r *Responder) token(rq *request, verb Verb, fpr string) (string, store.Challenge, error) {
	tok, err := NewToken(r.Rand)
	if err != nil {
		return "", store.Challenge{}, err
	}
	return tok, store.Challenge{
		TokenHash: HashToken(tok), Command: string(verb), Fingerprint: fpr,
		CreatedAt: rq.now, ExpiresAt: rq.now.Add(rq.p.Keys.TokenExpiry.D),
	}, nil
}

// checkToken looks the command's token up without using it, and says
// why it cannot be used ("" when it can).
func (r *Responder) checkToken(ctx context.Context, rq *request, verb Verb) (store.Challenge, string, error) {
	c, err := r.Store.PeekChallenge(ctx, HashToken(rq.cmd.Token))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return c, "unknown token", nil
	case err != nil:
		return c, "", err
	case c.List != rq.p.Address || c.Address != rq.from:
		return c, "token of another address", nil
	case c.Command != string(verb):
		return c, "token for " + c.Command, nil
	case !c.UsedAt.IsZero():
		return c, "token used", nil
	case !rq.now.Before(c.ExpiresAt):
		return c, "token expired", nil
	}
	return c, "", nil
}

// keyIDs are the primary and subkey IDs of e.
func keyIDs(e *openpgp.Entity) []uint64 {
	ids := []uint64{e.PrimaryKey.KeyId}
	for _, sk := range e.Subkeys {
		ids = append(ids, sk.PublicKey.KeyId)
	}
	return ids
}
