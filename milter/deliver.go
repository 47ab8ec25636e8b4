package milter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/milter/outbound"
	"github.com/listcrypt/listcrypt/milter/reinject"
	"github.com/listcrypt/listcrypt/policy"
)

// delivery is the outbound work for one accepted post on one list.
type delivery struct {
	list    *policy.Policy
	postID  []byte
	count   int      // recipients served by this attempt
	skipped []string // "address: reason" of members left out
	// refused are the members the MTA refused permanently at
	// reinjection, in this attempt or an earlier one of the same post.
	refused []store.RefusedRecipient
	mu      sync.Mutex // guards count and refused while batches go out in parallel
}

// deliver expands the list and distributes the post: one signature and
// one symmetric encryption, key packets per batch (milter/outbound).
// Batches go to the reinjection listener, each recorded in the store
// right after the MTA took it, so that a retried transaction delivers to
// nobody twice. A member the listener refuses permanently
// (5xx at RCPT TO) is left out of this post, recorded and named to the
// owners; the others are served. Any error means: tempfail, retry later.
func (srv *Server) deliver(ctx context.Context, p *policy.Policy, msg []byte, res *inbound.Result, postID []byte) (*delivery, error) {
	now := srv.opts.Now()
	dl := &delivery{list: p, postID: postID}
	members, err := srv.opts.Keys.Members(ctx, p.Address)
	if err != nil {
		return nil, err
	}
	done, lastBatch, err := srv.opts.Store.DeliveredRecipients(ctx, p.Address, postID)
	if err != nil {
		return nil, err
	}
	// Members refused permanently by an earlier attempt are not tried
	// again: they stay out of this post.
	if dl.refused, err = srv.opts.Store.RefusedRecipients(ctx, p.Address, postID); err != nil {
		return nil, err
	}
	delivered := make(map[string]bool, len(done)+len(dl.refused))
	for _, a := range done {
		delivered[a] = true
	}
	for _, r := range dl.refused {
		delivered[r.Address] = true
	}
	cfg := keyring.PacketConfig(keyring.ConfigLimits(srv.opts.Config), srv.opts.Now)
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
		e := members.Entities[members.Active[a]]
		keyErr := srv.keyCache.CanEncrypt(e, now, cfg)
		switch {
		case keyErr == nil && p.Distribute.Encrypt != "never":
			encrypted = append(encrypted, outbound.Recipient{Address: a, Key: e})
		case p.Distribute.Encrypt == "require" || res.Encrypted:
			// A post that came in encrypted never goes out in clear,
			// whatever distribute.encrypt says: its plaintext would sit in
			// the MTA queue.
			dl.skipped = append(dl.skipped, a+": "+keyProblem(keyErr))
		default:
			clear = append(clear, a)
		}
	}

	post, err := srv.outboundPost(ctx, p, msg, res)
	if err != nil {
		return nil, err
	}
	listKey, err := srv.opts.Keys.ListKey(ctx, p.Address)
	if err != nil {
		return nil, err
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
		Now:                 srv.opts.Now,
		Limits:              keyring.ConfigLimits(srv.opts.Config),
		KeyCache:            srv.keyCache,
	}
	var batches []outbound.Batch
	if len(encrypted) > 0 {
		prep, err := outbound.Prepare(post, params)
		if err != nil {
			return nil, fmt.Errorf("prepare post: %w", err)
		}
		if batches, err = prep.Batches(encrypted); err != nil {
			return nil, fmt.Errorf("encrypt post: %w", err)
		}
	}
	// Batch numbers continue after those a failed attempt delivered, so
	// every delivery record stays unique.
	for i := range batches {
		batches[i].Number += lastBatch
	}
	if err := srv.submitBatches(ctx, dl, batches); err != nil {
		return nil, err
	}
	if len(clear) > 0 {
		// distribute.encrypt = when-possible / never: the owner chose to
		// send these members the post in clear.
		number := lastBatch + len(batches) + 1
		if err := srv.submit(ctx, dl, number, p.BounceAddress(), clear, bytes.NewReader(clearCopy(post, p))); err != nil {
			return nil, err
		}
	}
	if len(dl.skipped) > 0 || len(dl.refused) > 0 {
		srv.notifyOwners(ctx, p, dl.skipped, dl.refused)
	}
	return dl, nil
}

// reinjectPool is the process's pool of SMTP connections to the
// listener ([reinject] address, connections, idle_timeout).
func (srv *Server) reinjectPool() *reinject.Pool {
	r := srv.opts.Config.Reinject
	return reinject.Shared(r.Address, r.Connections, r.IdleTimeout.D)
}

// submitBatches reinjects batches over the pool's connections, as many
// at once as the pool has connections. Each batch is recorded right
// after the MTA's reply to its own DATA, whatever the others do. After
// the first failure no new batch starts; those in flight finish and are
// recorded, so a retry skips them.
func (srv *Server) submitBatches(ctx context.Context, dl *delivery, batches []outbound.Batch) error {
	if len(batches) == 0 {
		return nil
	}
	g, failed := errgroup.WithContext(ctx)
	g.SetLimit(srv.reinjectPool().Size())
	for i := range batches {
		b := &batches[i]
		if failed.Err() != nil {
			break
		}
		g.Go(func() error {
			if failed.Err() != nil {
				return nil // another batch failed: the post is tempfailed
			}
			// ctx, not failed: a batch in flight runs to its record.
			return srv.submit(ctx, dl, b.Number, b.EnvelopeFrom, b.Recipients, b)
		})
	}
	return g.Wait()
}

// submit hands one batch to the MTA and records it. The records follow
// the MTA's answer: a crash in between can at worst repeat this one
// batch on retry, never lose it. Members refused permanently at RCPT TO
// are recorded as refused and left out; the batch goes to the others
// (to nobody when all were refused). A temporary refusal or any other
// failure is an error, and nothing of the batch is recorded.
// Safe for concurrent use on one delivery (submitBatches). The message
// is streamed to the MTA from msg (Batch.WriteTo), never copied whole.
func (srv *Server) submit(ctx context.Context, dl *delivery, number int, from string, to []string, msg io.WriterTo) error {
	list := dl.list.Address
	res, err := srv.reinjectPool().SendEach(ctx, from, to, msg)
	if err != nil {
		return fmt.Errorf("batch %d: %w", number, err)
	}
	if len(res.Refused) > 0 {
		refused := make([]store.RefusedRecipient, len(res.Refused))
		for i, r := range res.Refused {
			refused[i] = store.RefusedRecipient{Address: r.Address, Reply: r.Reply, RefusedAt: srv.opts.Now()}
			srv.opts.Log.Warn("recipient refused", "list", list, "batch", number, "rcpt", r.Address, "code", r.Code,
				"action", "left out of this post")
		}
		if err := srv.opts.Store.MarkRefused(ctx, list, dl.postID, refused, srv.opts.Now()); err != nil {
			return fmt.Errorf("batch %d: %w", number, err)
		}
		dl.mu.Lock()
		dl.refused = append(dl.refused, refused...)
		dl.mu.Unlock()
	}
	if len(res.Accepted) == 0 {
		return nil
	}
	if _, err := srv.opts.Store.MarkDelivered(ctx, list, dl.postID, number, res.Accepted, srv.opts.Now()); err != nil {
		return fmt.Errorf("batch %d: %w", number, err)
	}
	dl.mu.Lock()
	dl.count += len(res.Accepted)
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
func (srv *Server) notifyOwners(ctx context.Context, p *policy.Policy, skipped []string, refused []store.RefusedRecipient) {
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
		p.BounceAddress(), strings.Join(p.Owners, ", "), p.Address, subject, srv.opts.Now().Format(time.RFC1123Z))
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
			fmt.Fprintf(&b, "  %s: %s\r\n", r.Address, sanitizeReply(r.Reply))
		}
		b.WriteString("\r\nLater posts are tried again. If an address no longer works, remove the member.\r\n")
	}
	if err := reinject.Send(ctx, srv.opts.Config.Reinject.Address, p.BounceAddress(), p.Owners, b.Bytes()); err != nil {
		srv.opts.Log.Error("notify owners", "list", p.Address, "skipped", len(skipped), "refused", len(refused), "err", err)
	}
}

// Distribute delivers a post that was decided earlier (an approved hold)
// to the members of list p, every batch through the reinjection listener.
// It returns the number of members served. Delivery records keep it
// exactly-once: approving again after a failure resumes.
func (srv *Server) Distribute(ctx context.Context, p *policy.Policy, msg []byte) (int, error) {
	unlock, err := srv.lockLists(ctx, []*policy.Policy{p})
	if err != nil {
		return 0, err
	}
	defer unlock()
	ex, err := srv.examine(ctx, []*policy.Policy{p}, msg)
	if err != nil {
		return 0, err
	}
	res := ex.res
	if res.Encrypted && !res.Integrity {
		return 0, fmt.Errorf("the held post cannot be decrypted: %v", res.Problems)
	}
	id, err := PostID(msg)
	if err != nil {
		return 0, err
	}
	dl, err := srv.deliver(ctx, p, msg, res, id)
	if err != nil {
		return 0, err
	}
	return dl.count, nil
}
