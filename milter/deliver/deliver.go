// Package deliver distributes a decided post to a list's members: it
// expands the list, has milter/outbound sign and encrypt the post once
// with key packets per batch, submits every batch to the MTA's
// reinjection listener and records each batch right after the MTA took
// it, so that a retried or resumed delivery serves nobody twice and
// nobody is lost (docs/outbound.md). Clear copies (where the policy lets
// members have them) and the owners' notice of members left out go the
// same way. The milter uses it at end of message, and `listcrypt hold
// approve` for an approved hold: one implementation for both, and
// neither needs a milter server to deliver.
package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/metrics"
	"github.com/listcrypt/listcrypt/milter/outbound"
	"github.com/listcrypt/listcrypt/milter/reinject"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
)

// Options wire a Deliverer.
type Options struct {
	Store  *store.Store
	Keys   *keyring.Cache
	Config *config.Config
	Log    *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Metrics counts batches, recipients and reinjection errors (nil:
	// none).
	Metrics *metrics.Metrics
	// Fence, when set, is called right before each batch goes to the
	// MTA; an error stops the delivery there, that batch unsent. "hold
	// approve" checks (and renews) its claim on the post with it: a
	// process stopped longer than its lease (Ctrl-Z, a frozen VM) whose
	// claim passed to another must not send one more batch when it
	// wakes up (docs/outbound.md, "Delivery, exactly once").
	Fence func(ctx context.Context) error
}

// Deliverer delivers posts for one site. Safe for concurrent use; the
// caller serialises work on one list's keys (go-crypto writes into
// shared key objects).
type Deliverer struct {
	opts Options
}

// New returns a Deliverer.
func New(opts Options) *Deliverer {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &Deliverer{opts: opts}
}

// Post is a decided post, as members will read it.
type Post struct {
	ID      []byte        // the post id (PostID): the delivery records' key
	Content outbound.Post // header, entity and notice (Content)
	// Encrypted says the post came in encrypted: then it never goes out
	// in clear, whatever distribute.encrypt says (its plaintext would sit
	// in the MTA queue).
	Encrypted bool
}

// Result is what one delivery attempt did.
type Result struct {
	Served  int      // members served by this attempt
	Skipped []string // "address: reason" of members left out (no usable key)
	// Refused are the members the MTA refused permanently at
	// reinjection, in this attempt or an earlier one of the same post.
	Refused []store.RefusedRecipient
	// Disabled counts the members left out because delivery to them is
	// disabled (bounces, or an admin: store.SetDelivery).
	Disabled int
}

// delivery is the outbound work for one post on one list.
type delivery struct {
	list   *policy.Policy
	postID []byte
	res    Result
	mu     sync.Mutex // guards res while batches go out in parallel
	// verpWarned: the warning that the listener offers no XVERP was
	// logged for this delivery (once, not per batch).
	verpWarned atomic.Bool
}

// Deliver expands list p and distributes post to its members: one
// signature and one symmetric encryption, key packets per batch
// (milter/outbound).
// Batches go to the reinjection listener, each recorded in the store
// right after the MTA took it, so that a retried transaction delivers to
// nobody twice. A member the listener refuses permanently
// (5xx at RCPT TO) is left out of this post, recorded and named to the
// owners; the others are served. Any error means: tempfail, retry later.
// The caller holds the post's claim (store.ClaimPost).
func (d *Deliverer) Deliver(ctx context.Context, p *policy.Policy, post Post) (Result, error) {
	now := d.opts.Now()
	dl := &delivery{list: p, postID: post.ID}
	members, err := d.opts.Keys.Members(ctx, p.Address)
	if err != nil {
		return Result{}, err
	}
	done, lastBatch, err := d.opts.Store.DeliveredRecipients(ctx, p.Address, post.ID)
	if err != nil {
		return Result{}, err
	}
	// Members refused permanently by an earlier attempt are not tried
	// again: they stay out of this post.
	if dl.res.Refused, err = d.opts.Store.RefusedRecipients(ctx, p.Address, post.ID); err != nil {
		return Result{}, err
	}
	if err := d.distribute(ctx, dl, members, done, lastBatch, post, now); err != nil {
		return Result{}, err
	}
	return dl.res, nil
}

// distribute serves the members not yet served (done, dl.res.Refused).
func (d *Deliverer) distribute(ctx context.Context, dl *delivery, members *keyring.MemberSet, done []string, lastBatch int, post Post, now time.Time) error {
	p := dl.list
	delivered := make(map[string]bool, len(done)+len(dl.res.Refused))
	for _, a := range done {
		delivered[a] = true
	}
	for _, r := range dl.res.Refused {
		delivered[r.Address] = true
	}
	// Members whose delivery is disabled get nothing (docs/bounces.md).
	disabled, err := d.opts.Store.DeliveryDisabled(ctx, p.Address)
	if err != nil {
		return err
	}
	cfg := keyring.PacketConfig(keyring.ConfigLimits(d.opts.Config), d.opts.Now)
	var encrypted []outbound.Recipient
	var clear []string
	addrs := make([]string, 0, len(members.Active))
	for a := range members.Active {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		if delivered[a] {
			continue
		}
		if disabled[a] {
			dl.res.Disabled++
			continue
		}
		e := members.Keys[members.Active[a]]
		keyErr := errNoKey
		if e != nil {
			keyErr = e.CanEncrypt(now, cfg)
		}
		switch {
		case keyErr == nil && p.Distribute.Encrypt != "never":
			encrypted = append(encrypted, outbound.Recipient{Address: a, Key: e})
		case p.Distribute.Encrypt == "require" || post.Encrypted:
			// A post that came in encrypted never goes out in clear,
			// whatever distribute.encrypt says: its plaintext would sit in
			// the MTA queue.
			dl.res.Skipped = append(dl.res.Skipped, a+": "+keyProblem(keyErr))
		default:
			clear = append(clear, a)
		}
	}

	listKey, err := d.opts.Keys.ListKey(ctx, p.Address)
	if err != nil {
		return err
	}
	params := outbound.Params{
		ListAddress:         p.Address,
		ListKey:             listKey,
		BounceAddress:       p.BounceAddress(),
		BatchSize:           p.Distribute.BatchSize,
		HideRecipients:      p.Distribute.HideRecipients,
		Subject:             p.Distribute.Subject,
		FromMode:            p.Distribute.From,
		KeepSenderSignature: p.Distribute.KeepSenderSignature,
		ListHeaders:         outbound.ListHeaders{RequestAddress: p.RequestAddress(), UnsubscribeURL: p.Distribute.UnsubscribeURL},
		Now:                 d.opts.Now,
		Limits:              keyring.ConfigLimits(d.opts.Config),
	}
	// The batches are made while the earlier ones go to the MTA: the
	// first goes out after its own key packets, not after all of them.
	var stream *outbound.BatchStream
	if len(encrypted) > 0 {
		prep, err := outbound.Prepare(post.Content, params)
		if err != nil {
			return fmt.Errorf("prepare post: %w", err)
		}
		if stream, err = prep.Stream(encrypted); err != nil {
			return fmt.Errorf("encrypt post: %w", err)
		}
		defer stream.Close()
	}
	// Batch numbers continue after those a failed attempt delivered, so
	// every delivery record stays unique.
	if err := d.submitBatches(ctx, dl, stream, lastBatch); err != nil {
		return err
	}
	if len(clear) > 0 {
		// distribute.encrypt = when-possible / never: the owner chose to
		// send these members the post in clear.
		number := lastBatch + stream.Len() + 1
		if err := d.submit(ctx, dl, number, p.BounceAddress(), clear, bytes.NewReader(clearCopy(post.Content, p))); err != nil {
			return err
		}
	}
	if len(dl.res.Skipped) > 0 || len(dl.res.Refused) > 0 {
		d.notifyOwners(ctx, p, dl.res.Skipped, dl.res.Refused)
	}
	return nil
}

// Pool is the process's pool of SMTP connections to the listener
// ([reinject] address, connections, idle_timeout).
func (d *Deliverer) Pool() *reinject.Pool {
	r := d.opts.Config.Reinject
	return reinject.Shared(r.Address, r.Connections, r.IdleTimeout.D)
}

// submitBatches reinjects the batches of stream, numbered after
// lastBatch, over the pool's connections, as many at once as the pool
// has connections, each as soon as it is made. Each batch is recorded
// right after the MTA's reply to its own DATA, whatever the others do.
// After the first failure (of a batch, or of making one) no new batch
// starts; those in flight finish and are recorded, so a retry skips
// them.
func (d *Deliverer) submitBatches(ctx context.Context, dl *delivery, stream *outbound.BatchStream, lastBatch int) error {
	if stream.Len() == 0 {
		return nil
	}
	g, failed := errgroup.WithContext(ctx)
	g.SetLimit(d.Pool().Size())
	complete := false // every batch of the stream was started
	for failed.Err() == nil {
		b, err := stream.Next()
		if err == io.EOF {
			complete = true
			break
		}
		if err != nil {
			g.Go(func() error { return fmt.Errorf("encrypt post: %w", err) })
			break
		}
		b.Number += lastBatch
		g.Go(func() (err error) {
			// A panic here (a bug) would kill the daemon: nothing above
			// this goroutine can recover it. It fails the delivery
			// instead, logged below with its stack, and the sender's
			// retry resumes from the records.
			defer func() {
				if v := recover(); v != nil {
					// Logged here, with the stack: the group keeps only
					// the first error, which may be another batch's.
					d.opts.Log.Error("panic", "list", dl.list.Address, "batch", b.Number, "action", "delivery stopped",
						"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
					err = fmt.Errorf("panic while delivering batch %d: %v", b.Number, v)
				}
			}()
			if failed.Err() != nil {
				// Another batch failed, or the caller's context ended:
				// this batch is not sent, and the delivery is no success.
				return context.Cause(failed)
			}
			if h := batchHook.Load(); h != nil {
				(*h)(b.Number)
			}
			// ctx, not failed: a batch in flight runs to its record.
			return d.submit(ctx, dl, b.Number, b.EnvelopeFrom, b.Recipients, &b)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if !complete {
		// The caller's context ended between batches (its deadline, or
		// a claim that passed to another attempt): batches are missing,
		// so this is no success.
		return fmt.Errorf("delivery stopped before every batch went out: %w", context.Cause(ctx))
	}
	return nil
}

// errNoKey: a member without a key (none stored, or unreadable).
var errNoKey = errors.New("no key")

// batchHook, set by tests only, runs in each batch's goroutine before
// the batch is sent (to make it panic on purpose).
var batchHook atomic.Pointer[func(number int)]

// submit hands one batch to the MTA and records it. The records follow
// the MTA's answer: a crash in between can at worst repeat this one
// batch on retry, never lose it. Members refused permanently at RCPT TO
// are recorded as refused and left out; the batch goes to the others
// (to nobody when all were refused). A temporary refusal or any other
// failure is an error, and nothing of the batch is recorded.
// Safe for concurrent use on one delivery (submitBatches). The message
// is streamed to the MTA from msg (Batch.WriteTo), never copied whole.
func (d *Deliverer) submit(ctx context.Context, dl *delivery, number int, from string, to []string, msg io.WriterTo) error {
	list := dl.list.Address
	if d.opts.Fence != nil {
		if err := d.opts.Fence(ctx); err != nil {
			return fmt.Errorf("batch %d not sent: %w", number, err)
		}
	}
	send := d.Pool().SendEach
	if dl.list.Bounces.VERP {
		// Each member's copy gets its own envelope sender when the
		// listener offers XVERP (Postfix), so a bounce names its member.
		send = d.Pool().SendEachVERP
	}
	res, err := send(ctx, from, to, msg)
	if err != nil {
		d.opts.Metrics.ReinjectError()
		return fmt.Errorf("batch %d: %w", number, err)
	}
	// The MTA has the batch: record it at once, in one short commit
	// (store.RecordBatch), before anything else; the log comes after.
	now := d.opts.Now()
	refused := make([]store.RefusedRecipient, len(res.Refused))
	for i, r := range res.Refused {
		refused[i] = store.RefusedRecipient{Address: r.Address, Reply: r.Reply, RefusedAt: now}
	}
	if _, err := d.opts.Store.RecordBatch(ctx, list, dl.postID, number, res.Accepted, refused, now); err != nil {
		return fmt.Errorf("batch %d: %w", number, err)
	}
	if len(res.Accepted) > 0 {
		d.opts.Metrics.Batch(list, len(res.Accepted))
	}
	if dl.list.Bounces.VERP && !res.VERP && len(res.Accepted) > 0 && from != "" && dl.verpWarned.CompareAndSwap(false, true) {
		// bounces.verp counts only bounces at VERP addresses: without
		// them no bounce of this list counts (docs/bounces.md).
		d.opts.Log.Warn("bounces.verp = true but the reinjection listener does not offer XVERP (Sendmail, or Postfix without smtpd_authorized_verp_clients): bounces of this list are not counted",
			"list", list, "batch", number, "post_id", fmt.Sprintf("%x", dl.postID))
	}
	for _, r := range res.Refused {
		d.opts.Log.Warn("recipient refused", "list", list, "batch", number, "rcpt", r.Address, "code", r.Code,
			"action", "left out of this post")
	}
	dl.mu.Lock()
	dl.res.Refused = append(dl.res.Refused, refused...)
	dl.res.Served += len(res.Accepted)
	dl.mu.Unlock()
	return nil
}

// keyProblem says why a member's key cannot encrypt.
func keyProblem(err error) string {
	if err == nil {
		return "the list sends nothing encrypted (distribute.encrypt = \"never\")"
	}
	return err.Error()
}

// clearCopy is the post in clear, for members the policy lets have it so.
func clearCopy(post outbound.Post, p *policy.Policy) []byte {
	var b bytes.Buffer
	h := post.Header
	for _, f := range [][2]string{{"From", h.From}, {"Reply-To", h.ReplyTo}, {"To", h.To}, {"Cc", h.Cc}, {"Subject", h.Subject},
		{"Date", h.Date}, {"Message-ID", h.MessageID}, {"In-Reply-To", h.InReplyTo}, {"References", h.References}} {
		if f[1] != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", f[0], f[1])
		}
	}
	local, domain, _ := strings.Cut(p.Address, "@")
	fmt.Fprintf(&b, "List-Id: <%s.%s>\r\nList-Post: <mailto:%s>\r\nList-Help: <mailto:%s?subject=help>\r\nPrecedence: list\r\nMIME-Version: 1.0\r\n",
		local, domain, p.Address, p.RequestAddress())
	b.Write(post.Inner)
	return b.Bytes()
}

// notifyOwners tells the list owners, in one notice, which members did
// not get the post and why: skipped (no usable key) and refused by the
// MTA (its reply). The notice carries addresses and reasons only,
// nothing of the post. A failure is logged: the post itself is
// delivered.
func (d *Deliverer) notifyOwners(ctx context.Context, p *policy.Policy, skipped []string, refused []store.RefusedRecipient) {
	if len(p.Owners) == 0 {
		return
	}
	subject := "members skipped: no usable key"
	switch {
	case len(skipped) == 0:
		subject = "members refused by the mail server"
	case len(refused) > 0:
		subject = "members skipped or refused"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: [%s] %s\r\nDate: %s\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		p.BounceAddress(), strings.Join(p.Owners, ", "), p.Address, subject, d.opts.Now().Format(time.RFC1123Z))
	if len(skipped) > 0 {
		fmt.Fprintf(&b, "A post to %s was not sent to these members (distribute.encrypt = \"require\"):\r\n\r\n", p.Address)
		for _, s := range skipped {
			fmt.Fprintf(&b, "  %s\r\n", s)
		}
		b.WriteString("\r\nThey receive posts again once they register a usable key.\r\n")
	}
	if len(refused) > 0 {
		if len(skipped) > 0 {
			b.WriteString("\r\n")
		}
		fmt.Fprintf(&b, "The mail server refused a post to %s for these members; they did not get it, the other members did:\r\n\r\n", p.Address)
		for _, r := range refused {
			fmt.Fprintf(&b, "  %s: %s\r\n", r.Address, OneLine(r.Reply))
		}
		b.WriteString("\r\nLater posts are tried again. If an address no longer works, remove the member.\r\n")
	}
	if err := reinject.Send(ctx, d.opts.Config.Reinject.Address, p.BounceAddress(), p.Owners, b.Bytes()); err != nil {
		d.opts.Log.Error("notify owners", "list", p.Address, "skipped", len(skipped), "refused", len(refused), "err", err)
	}
}

// Distribute delivers a post that was decided earlier (an approved hold)
// to the members of list p: it examines the held message again (the list
// key decrypts it, the signature is checked against today's members)
// and delivers what Content makes of it. Delivery records keep it
// exactly-once: distributing again after a failure resumes. The caller
// holds the post's claim.
func (d *Deliverer) Distribute(ctx context.Context, p *policy.Policy, msg []byte) (Result, error) {
	return d.DistributeHeld(ctx, p, msg, d.opts.Now())
}

// DistributeHeld is Distribute for a post held at heldAt: a list key
// retired since is judged as of then, so a post encrypted to a key that
// was in its grace period when it was held still opens when a moderator
// approves it later.
func (d *Deliverer) DistributeHeld(ctx context.Context, p *policy.Policy, msg []byte, heldAt time.Time) (Result, error) {
	ex, err := examine(ctx, d.opts.Keys, d.opts.Config, d.opts.Now(), heldAt, []*policy.Policy{p}, msg)
	if err != nil {
		return Result{}, err
	}
	res := ex.Result
	if res.Encrypted && !res.Integrity {
		return Result{}, fmt.Errorf("the held post cannot be decrypted: %v", res.Problems)
	}
	id, err := PostID(msg)
	if err != nil {
		return Result{}, err
	}
	content, err := Content(msg, res, ex.ListKeys[0], p.Address)
	if err != nil {
		return Result{}, err
	}
	return d.Deliver(ctx, p, Post{ID: id, Content: content, Encrypted: res.Encrypted})
}

// OneLine keeps a text (an MTA's reply, an SMTP reply of ours) on one
// line of printable ASCII.
func OneLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r > 0x7e || r == '%' {
			r = ' ' // '%' is a format character to libmilter-based MTAs
		}
		b.WriteRune(r)
	}
	return b.String()
}
