package milter

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/milter/outbound"
	"github.com/listcrypt/listcrypt/milter/reinject"
	"github.com/listcrypt/listcrypt/policy"
)

// delivery is the outbound work for one accepted post on one list.
type delivery struct {
	list    *policy.Policy
	postID  []byte
	inPlace *outbound.Batch // batch 1, to rewrite the transaction with
	count   int             // recipients served by this attempt
	skipped []string        // "address: reason" of members left out
}

// deliver expands the list and distributes the post: one signature and
// one symmetric encryption, key packets per batch (milter/outbound).
// Batches go to the reinjection listener, each recorded in the store
// right after the MTA took it, so that a retried transaction delivers to
// nobody twice; when inPlace is set, batch 1 is returned to rewrite the
// current transaction instead. Any error means: tempfail, retry later.
func (srv *Server) deliver(ctx context.Context, p *policy.Policy, msg []byte, res *inbound.Result, postID []byte, inPlace bool) (*delivery, error) {
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
	delivered := make(map[string]bool, len(done))
	for _, a := range done {
		delivered[a] = true
	}
	cfg := keyring.PacketConfig(srv.opts.Config.KeyLimits(), srv.opts.Now)
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
		Limits:              srv.opts.Config.KeyLimits(),
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
	start := 0
	if inPlace && len(batches) > 0 {
		dl.inPlace = &batches[0]
		dl.count += len(batches[0].Recipients)
		start = 1
	}
	for i := start; i < len(batches); i++ {
		b := &batches[i]
		if err := srv.submit(ctx, p.Address, postID, b.Number, b.EnvelopeFrom, b.Recipients, b.Message()); err != nil {
			return nil, err
		}
		dl.count += len(b.Recipients)
	}
	if len(clear) > 0 {
		// distribute.encrypt = when-possible / never: the owner chose to
		// send these members the post in clear.
		number := lastBatch + len(batches) + 1
		if err := srv.submit(ctx, p.Address, postID, number, p.BounceAddress(), clear, clearCopy(post, p)); err != nil {
			return nil, err
		}
		dl.count += len(clear)
	}
	if len(dl.skipped) > 0 {
		srv.notifyOwners(ctx, p, res, dl.skipped)
	}
	return dl, nil
}

// submit hands one batch to the MTA and records it. The record follows
// the MTA's acceptance: a crash in between can at worst repeat this one
// batch on retry, never lose it.
func (srv *Server) submit(ctx context.Context, list string, postID []byte, number int, from string, to []string, data []byte) error {
	if err := reinject.Send(ctx, srv.opts.Config.Reinject.Address, from, to, data); err != nil {
		return fmt.Errorf("batch %d: %w", number, err)
	}
	if _, err := srv.opts.Store.MarkDelivered(ctx, list, postID, number, to, srv.opts.Now()); err != nil {
		return fmt.Errorf("batch %d: %w", number, err)
	}
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

// notifyOwners tells the list owners which members were skipped and why.
// The notice carries addresses and reasons only, nothing of the post.
// A failure is logged: the post itself is delivered.
func (srv *Server) notifyOwners(ctx context.Context, p *policy.Policy, res *inbound.Result, skipped []string) {
	if len(p.Owners) == 0 {
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: [%s] members skipped: no usable key\r\nDate: %s\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		p.BounceAddress(), strings.Join(p.Owners, ", "), p.Address, srv.opts.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "A post to %s was not sent to these members (distribute.encrypt = \"require\"):\r\n\r\n", p.Address)
	for _, s := range skipped {
		fmt.Fprintf(&b, "  %s\r\n", s)
	}
	b.WriteString("\r\nThey receive posts again once they register a usable key.\r\n")
	if err := reinject.Send(ctx, srv.opts.Config.Reinject.Address, p.BounceAddress(), p.Owners, b.Bytes()); err != nil {
		srv.opts.Log.Error("notify owners of skipped members", "list", p.Address, "err", err)
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
	dl, err := srv.deliver(ctx, p, msg, res, id, false)
	if err != nil {
		return 0, err
	}
	return dl.count, nil
}
