// Package holds tells moderators about held posts and expires the holds
// nobody decided: the milter calls it right after holding a post, its
// daemon runs ExpireHolds hourly, and "listcrypt hold expire" runs it
// from the CLI. One implementation for all three; none builds a milter
// server for it.
package holds

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-smtp"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/reinject"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
)

// Held posts: the moderators are told that a post waits (NotifyModerators),
// and holds that nobody decided within post.hold_expiry expire, the
// owners told which (ExpireHolds, run hourly by the daemon and by
// "listcrypt hold expire"). Notices carry ids, addresses, reasons and
// times, never anything of the post: the post is only stored encrypted to
// the list key, and "listcrypt hold show" opens it on the list host.

// Options wire a Notifier.
type Options struct {
	// Options are the site's store, keys and config, the log and the
	// clock, as for a Deliverer.
	deliver.Options
	// Lock serialises work on lists' keys with other users of the same
	// key objects (the milter's sessions); nil when nobody else uses
	// them in this process.
	Lock func(ctx context.Context, lists []*policy.Policy) (unlock func(), err error)
}

// Notifier sends the hold notices of one site.
type Notifier struct{ opts Options }

// New returns a Notifier.
func New(opts Options) *Notifier {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Lock == nil {
		opts.Lock = func(context.Context, []*policy.Policy) (func(), error) { return func() {}, nil }
	}
	return &Notifier{opts: opts}
}

// NotifyModerators tells the moderators of list p (its owners when it
// has no moderators) that held post holdID waits for them: the list, the
// hold id, the reason word, the envelope sender, the arrival time, when
// it expires, and the "listcrypt hold show|approve|reject ID" commands.
//
// Contract for the caller (endOfMessage, right after store.AddHold):
//
//   - Hold the list's lock (Options.Lock), as endOfMessage does for the
//     whole transaction: the notice is signed with the list key and
//     encrypted to member keys, objects shared by the list's sessions.
//     ctx bounds the work (each submission is also bounded by
//     reinject.Timeout).
//   - The error is for the log only. The hold is stored whatever happens
//     here, so the transaction's answer must not change: a retried
//     transaction would hold the post twice. When nobody could be told,
//     the hold is left un-notified and the daemon's hourly run
//     (ExpireHolds) sends the notice again.
//
// Each recipient gets a copy of their own: encrypted to their key and
// signed by the list key when they are an active member with a usable
// key, plain otherwise (it carries nothing of the post). Across
// processes and hosts at most one notice goes out per hold: the hold's
// notified_at is claimed first; a hold already notified or no longer
// waiting is skipped (nil). A list with neither moderators nor owners
// sends nothing and logs a warning.
func (nf *Notifier) NotifyModerators(ctx context.Context, p *policy.Policy, holdID int64, reason string) error {
	now := nf.opts.Now()
	ok, err := nf.opts.Store.ClaimHoldNotice(ctx, holdID, now)
	if err != nil {
		return fmt.Errorf("notify moderators of hold %d: %w", holdID, err)
	}
	if !ok {
		return nil
	}
	h, err := nf.opts.Store.HoldMeta(ctx, holdID)
	if err == nil && h.List != p.Address {
		err = fmt.Errorf("hold %d belongs to %s, not %s", holdID, h.List, p.Address)
	}
	if err != nil {
		nf.releaseNotice(ctx, holdID)
		return fmt.Errorf("notify moderators of hold %d: %w", holdID, err)
	}
	if reason == "" {
		reason = h.Reason
	}
	to, who := p.Moderators, "moderators"
	if len(to) == 0 {
		to, who = p.Owners, "owners"
	}
	if len(to) == 0 {
		nf.opts.Log.Warn("held post: the list has no moderators or owners to tell", "list", p.Address, "hold_id", holdID)
		return nil
	}
	expires := h.CreatedAt.Add(p.Post.HoldExpiry.D)
	cli := cliCommand(nf.opts.Config)
	var text strings.Builder
	fmt.Fprintf(&text, "A post to %s waits for a moderator.\n\n", p.Address)
	fmt.Fprintf(&text, "  hold:     %d\n  reason:   %s\n  sender:   %s\n  arrived:  %s\n  expires:  %s (post.hold_expiry %s)\n\n",
		holdID, printable(reason), printable(h.Sender), h.CreatedAt.UTC().Format(noticeTime), expires.UTC().Format(noticeTime), p.Post.HoldExpiry.Raw)
	text.WriteString("The post is stored encrypted to the list key; this notice carries nothing of it.\n")
	text.WriteString("Decide on the list host:\n\n")
	fmt.Fprintf(&text, "  %s hold show %d      read it\n", cli, holdID)
	fmt.Fprintf(&text, "  %s hold approve %d   send it to the members\n", cli, holdID)
	fmt.Fprintf(&text, "  %s hold reject %d    drop it\n\n", cli, holdID)
	text.WriteString("If nobody decides, it expires and the owners are told.\n")
	subject := fmt.Sprintf("[%s] post held for moderation (hold %d)", p.Address, holdID)
	sent, err := nf.sendNotices(ctx, p, to, subject, text.String())
	if sent.delivered() == 0 {
		nf.releaseNotice(ctx, holdID)
	}
	if err != nil {
		nf.opts.Log.Error("held post: telling the "+who+" failed", "list", p.Address, "hold_id", holdID,
			"encrypted", sent.encrypted, "plain", sent.plain, "failed", sent.failed, "err", err)
		return fmt.Errorf("notify %s of hold %d: %w", who, holdID, err)
	}
	nf.opts.Log.Info("held post: "+who+" told", "list", p.Address, "hold_id", holdID, "reason", reason,
		"encrypted", sent.encrypted, "plain", sent.plain)
	return nil
}

func (nf *Notifier) releaseNotice(ctx context.Context, holdID int64) {
	if err := nf.opts.Store.ReleaseHoldNotice(context.WithoutCancel(ctx), holdID); err != nil {
		nf.opts.Log.Error("held post: notice could not be marked as due again", "hold_id", holdID, "err", err)
	}
}

// ExpireHolds expires the holds of lists, for every list with a policy file, the holds
// still waiting after the list's post.hold_expiry at now; they can no
// longer be approved. The owners (the moderators when the list has no
// owners) are told which, with each hold's id, sender, reason and age.
// When nobody could be told for a temporary reason, the list's holds are
// put back and the next run tries again. It also sends the moderator
// notices that failed before, and the responder's replies waiting in the
// outbox. It returns how many holds expired.
func (nf *Notifier) ExpireHolds(ctx context.Context, set *policy.Set, now time.Time) (int, error) {
	var errs []error
	total := 0
	for _, addr := range set.Addresses() {
		p := set.Lookup(addr)
		expired, err := nf.expireList(ctx, p, now)
		total += expired
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s: %w", p.Address, err))
		}
		if err := nf.retryNotices(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("list %s: %w", p.Address, err))
		}
	}
	if err := nf.resumeOutbox(ctx); err != nil {
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// resumeOutbox sends the responder's replies still waiting in the outbox
// (a responder died between its commit and its send, or the MTA was
// unreachable), each exactly once; see docs/responder.md.
func (nf *Notifier) resumeOutbox(ctx context.Context) error {
	res, err := nf.opts.Store.SendOutbox(ctx, "", 0, nf.opts.Now, func(ctx context.Context, m store.OutboxMail) error {
		return reinject.Send(ctx, nf.opts.Config.Reinject.Address, m.Sender, m.Recipients, m.Message)
	}, func(err error) bool { return !temporary(err) })
	if len(res.Sent)+len(res.Dropped) > 0 || err != nil {
		nf.opts.Log.Info("responder outbox resumed", "sent", len(res.Sent), "dropped", len(res.Dropped), "waiting", len(res.Waiting), "err", err)
	}
	if err != nil {
		return fmt.Errorf("responder outbox: %w", err)
	}
	return nil
}

func (nf *Notifier) expireList(ctx context.Context, p *policy.Policy, now time.Time) (int, error) {
	expired, err := nf.opts.Store.ExpireHolds(ctx, p.Address, now.Add(-p.Post.HoldExpiry.D), now)
	if err != nil || len(expired) == 0 {
		return 0, err
	}
	ids := make([]int64, len(expired))
	for i, h := range expired {
		ids[i] = h.ID
	}
	to, who := p.Owners, "owners"
	if len(to) == 0 {
		to, who = p.Moderators, "moderators"
	}
	if len(to) == 0 {
		nf.opts.Log.Warn("held posts expired; the list has no owners or moderators to tell", "list", p.Address, "hold_ids", ids)
		return len(expired), nil
	}
	var text strings.Builder
	fmt.Fprintf(&text, "These posts to %s waited longer than post.hold_expiry (%s) without a moderator's\n", p.Address, p.Post.HoldExpiry.Raw)
	text.WriteString("decision. They expired: they were dropped and can no longer be approved.\n\n")
	for _, h := range expired {
		fmt.Fprintf(&text, "  hold %d  sender %s  reason %s  held %s ago (since %s)\n",
			h.ID, printable(h.Sender), printable(h.Reason), age(now.Sub(h.CreatedAt)), h.CreatedAt.UTC().Format(noticeTime))
	}
	fmt.Fprintf(&text, "\nNothing of the posts is in this notice. To keep holds longer, raise post.hold_expiry in\nthe list's policy file.\n")
	subject := fmt.Sprintf("[%s] %d held post(s) expired", p.Address, len(expired))
	unlock, err := nf.opts.Lock(ctx, []*policy.Policy{p})
	if err != nil {
		nf.restoreExpired(ctx, p, ids)
		return 0, err
	}
	sent, err := nf.sendNotices(ctx, p, to, subject, text.String())
	unlock()
	if sent.delivered() == 0 && temporary(err) {
		nf.restoreExpired(ctx, p, ids)
		nf.opts.Log.Error("held posts not expired: the "+who+" could not be told; next run tries again", "list", p.Address, "hold_ids", ids, "err", err)
		return 0, fmt.Errorf("tell the %s which holds expired: %w", who, err)
	}
	nf.opts.Log.Info("held posts expired", "list", p.Address, "hold_ids", ids, "told", who,
		"encrypted", sent.encrypted, "plain", sent.plain, "failed", sent.failed)
	if err != nil {
		return len(expired), fmt.Errorf("tell the %s which holds expired: %w", who, err)
	}
	return len(expired), nil
}

func (nf *Notifier) restoreExpired(ctx context.Context, p *policy.Policy, ids []int64) {
	if err := nf.opts.Store.RestoreExpiredHolds(context.WithoutCancel(ctx), ids); err != nil {
		nf.opts.Log.Error("expired holds could not be put back", "list", p.Address, "hold_ids", ids, "err", err)
	}
}

// retryNotices sends the moderator notices that failed before.
func (nf *Notifier) retryNotices(ctx context.Context, p *policy.Policy) error {
	hs, err := nf.opts.Store.UnnotifiedHolds(ctx, p.Address)
	if err != nil || len(hs) == 0 {
		return err
	}
	unlock, err := nf.opts.Lock(ctx, []*policy.Policy{p})
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, h := range hs {
		if err := nf.NotifyModerators(ctx, p, h.ID, h.Reason); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// temporary reports whether err may go away by itself: anything but the
// MTA's permanent (5xx) refusal.
func temporary(err error) bool {
	var se *smtp.SMTPError
	return err != nil && !(errors.As(err, &se) && se.Code >= 500)
}

// noticeCounts says how the copies of a notice went.
type noticeCounts struct{ encrypted, plain, failed int }

func (n noticeCounts) delivered() int { return n.encrypted + n.plain }

// sendNotices mails text to each address in to, one copy each, from the
// list's bounce address through the reinjection listener: encrypted to
// the address's key and signed by the list key when it is an active
// member with a usable key, plain otherwise. The caller holds the list's
// lock. The error joins every failed copy's.
func (nf *Notifier) sendNotices(ctx context.Context, p *policy.Policy, to []string, subject, text string) (noticeCounts, error) {
	var n noticeCounts
	now := nf.opts.Now()
	members, err := nf.opts.Keys.Members(ctx, p.Address)
	if err != nil {
		return n, err
	}
	cfg := keyring.PacketConfig(keyring.ConfigLimits(nf.opts.Config), nf.opts.Now)
	var listKey *openpgp.Entity
	var errs []error
	for _, addr := range to {
		addr = policy.NormalizeAddress(addr)
		var key *openpgp.Entity
		if fpr, ok := members.Active[addr]; ok {
			if k := members.Keys[fpr]; k != nil && k.CanEncrypt(now, cfg) == nil {
				// Parsed for this notice only (go-crypto's writer
				// encrypts to it): a few per hold.
				if key, err = k.Entity(); err != nil {
					return n, err
				}
			}
		}
		if key != nil && listKey == nil {
			if listKey, err = nf.opts.Keys.ListKey(ctx, p.Address); err != nil {
				return n, err
			}
		}
		msg, err := composeNotice(p, addr, subject, text, key, listKey, now, nf.opts.Config)
		if err == nil {
			err = reinject.Send(ctx, nf.opts.Config.Reinject.Address, p.BounceAddress(), []string{addr}, msg)
		}
		switch {
		case err != nil:
			n.failed++
			errs = append(errs, fmt.Errorf("notice to %s: %w", addr, err))
		case key != nil:
			n.encrypted++
		default:
			n.plain++
		}
	}
	return n, errors.Join(errs...)
}

// composeNotice writes a notice to one address: a text/plain entity,
// inside RFC 3156 PGP/MIME encryption (signed inside, §6.2) when key is
// set.
func composeNotice(p *policy.Policy, to, subject, text string, key, listKey *openpgp.Entity, now time.Time, c *config.Config) ([]byte, error) {
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	_, domain, _ := strings.Cut(p.Address, "@")
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\n",
		p.BounceAddress(), to, mime.QEncoding.Encode("utf-8", subject), now.UTC().Format(time.RFC1123Z), hex.EncodeToString(id), domain)
	// RFC 3834: mail software must not answer it.
	b.WriteString("Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n")
	inner := textEntity(text)
	if key == nil {
		b.Write(inner)
		return b.Bytes(), nil
	}
	var ct bytes.Buffer
	aw, err := armor.Encode(&ct, "PGP MESSAGE", nil)
	if err != nil {
		return nil, err
	}
	w, err := openpgp.EncryptWithParams(aw, []*openpgp.Entity{key}, nil, &openpgp.EncryptParams{
		Signers: []*openpgp.Entity{listKey},
		Config:  keyring.PacketConfig(keyring.ConfigLimits(c), func() time.Time { return now }),
	})
	if err != nil {
		return nil, fmt.Errorf("encrypt notice to %s: %w", keyring.Fingerprint(key), err)
	}
	if _, err := w.Write(inner); err != nil {
		return nil, fmt.Errorf("encrypt notice: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypt notice: %w", err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("encrypt notice: %w", err)
	}
	bound := "enc-" + hex.EncodeToString(id)
	fmt.Fprintf(&b, "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"%s\"\r\n\r\n", bound)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n", bound)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n", bound)
	b.Write(bytes.ReplaceAll(ct.Bytes(), []byte("\n"), []byte("\r\n")))
	fmt.Fprintf(&b, "\r\n--%s--\r\n", bound)
	return b.Bytes(), nil
}

// textEntity is text as a text/plain MIME entity with CRLF line ends.
func textEntity(text string) []byte {
	var b bytes.Buffer
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	qw := quotedprintable.NewWriter(&b)
	qw.Write([]byte(text)) // it writes every line break as CRLF
	qw.Close()
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// noticeTime is how notices write times.
const noticeTime = "2006-01-02 15:04 MST"

// cliCommand is how the admin CLI is called for this site's config.
func cliCommand(c *config.Config) string {
	if c.File == "" || c.File == config.DefaultPath {
		return "listcrypt"
	}
	return "listcrypt -c " + c.File
}

// printable keeps a value the sender chose (its envelope address) on one
// line of printable characters.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// age writes a duration in days and hours.
func age(d time.Duration) string {
	days := int(d / (24 * time.Hour))
	hours := int(d % (24 * time.Hour) / time.Hour)
	if days == 0 {
		return fmt.Sprintf("%dh", hours)
	}
	return fmt.Sprintf("%dd %dh", days, hours)
}
