// Package admin carries out the admin CLI's verbs (listcrypt init, list,
// member, hold, policy) on the site's state: the store, the list keys and
// the policy files. cmd/listcrypt only parses flags and prints.
package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/site"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/holds"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
)

// Site carries out the verbs on an opened site (config, store, keys).
type Site struct {
	*site.Site
	Now func() time.Time
}

// New returns the verbs over the opened site s; closing the Site closes s.
func New(s *site.Site) *Site { return &Site{Site: s, Now: time.Now} }

// Open opens the site of cfg (its store must have been initialised).
func Open(ctx context.Context, cfg *config.Config) (*Site, error) {
	s, err := site.OpenConfig(ctx, cfg, site.Options{})
	if err != nil {
		return nil, err
	}
	return New(s), nil
}

// Init creates the state folder, the schema (or migrates it) and, if
// missing, the passphrase file (0600): site.StoreInit. It reports what it
// created.
func Init(ctx context.Context, cfg *config.Config) (created []string, err error) {
	s, err := site.OpenConfig(ctx, cfg, site.Options{Store: site.StoreInit})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Created, nil
}

// CreateList writes the list's policy file if missing and generates the
// list key; the secret key is stored sealed by the site passphrase.
func (s *Site) CreateList(ctx context.Context, address, owner string, kt keyring.KeyType) (fingerprint string, err error) {
	addr := policy.NormalizeAddress(address)
	if !policy.ValidAddress(addr) {
		return "", fmt.Errorf("list address %q is not an email address", address)
	}
	if owner != "" {
		owner = policy.NormalizeAddress(owner)
		if !policy.ValidAddress(owner) {
			return "", fmt.Errorf("owner %q is not an email address", owner)
		}
	}
	if _, err := s.Store.GetList(ctx, addr); err == nil {
		return "", fmt.Errorf("list %s exists already", addr)
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	pass, err := s.Passphrase()
	if err != nil {
		return "", err
	}
	// The policy file first: an existing one (written by the owner) is kept.
	pfile := filepath.Join(s.Config.PolicyDir, addr+".toml")
	if _, err := os.Stat(pfile); errors.Is(err, os.ErrNotExist) {
		if err := keyring.WriteFileAtomic(pfile, []byte(policy.Template(addr, owner)), 0o644); err != nil {
			return "", fmt.Errorf("write policy %s: %w", pfile, err)
		}
	} else if err != nil {
		return "", err
	}
	if set, err := s.Policies(); err != nil {
		return "", err
	} else if set.Lookup(addr) == nil {
		return "", fmt.Errorf("%s does not define list %s", pfile, addr)
	}
	e, err := keyring.GenerateListKey(addr, kt, s.Now(), rand.Reader)
	if err != nil {
		return "", err
	}
	sealed, err := keyring.SealSecretKey(e, pass)
	if err != nil {
		return "", err
	}
	fpr := keyring.Fingerprint(e)
	err = s.Store.CreateList(ctx, store.List{Address: addr, KeyFingerprint: fpr,
		PublicKey: keyring.PublicKeyBytes(e), SecretKey: sealed, CreatedAt: s.Now().UTC()})
	if err != nil {
		return "", err
	}
	return fpr, nil
}

// ExportListKey returns the list's armored public key.
func (s *Site) ExportListKey(ctx context.Context, address string) (string, error) {
	l, err := s.list(ctx, address)
	if err != nil {
		return "", err
	}
	e, err := keyring.ParseStoredKey(l.PublicKey, keyring.ConfigLimits(s.Config))
	if err != nil {
		return "", fmt.Errorf("list key of %s: %w", l.Address, err)
	}
	return keyring.ArmorPublicKey(e)
}

func (s *Site) list(ctx context.Context, address string) (store.List, error) {
	addr := policy.NormalizeAddress(address)
	l, err := s.Store.GetList(ctx, addr)
	if errors.Is(err, store.ErrNotFound) {
		return l, fmt.Errorf("no list %s (create it with: listcrypt list create %s)", addr, addr)
	}
	return l, err
}

// AddMember registers address on the list with the key in keyData (admin
// path: no challenge). The key is checked (limits, strength, encryption
// subkey, user ID for the address) and stored stripped of everything but
// the member's own user ID and self-signatures.
func (s *Site) AddMember(ctx context.Context, list, address string, keyData []byte) (fingerprint string, err error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return "", err
	}
	addr := policy.NormalizeAddress(address)
	if !policy.ValidAddress(addr) {
		return "", fmt.Errorf("member address %q is not an email address", address)
	}
	mk, err := keyring.ParseMemberKey(keyData, keyring.ConfigLimits(s.Config), s.Now())
	if err != nil {
		return "", fmt.Errorf("key for %s: %w", addr, err)
	}
	if err := mk.OnlyAddress(addr); err != nil {
		return "", fmt.Errorf("key for %s: %w", addr, err)
	}
	now := s.Now().UTC()
	err = s.Store.PutMember(ctx, store.Member{List: l.Address, Address: addr, State: "active",
		Fingerprint: mk.Fingerprint, PublicKey: mk.Binary, KeyIDs: mk.KeyIDs, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		return "", err
	}
	return mk.Fingerprint, nil
}

// Members returns the list's members.
func (s *Site) Members(ctx context.Context, list string) ([]store.Member, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return nil, err
	}
	return s.Store.Members(ctx, l.Address)
}

// RemoveMember removes address from the list.
func (s *Site) RemoveMember(ctx context.Context, list, address string) error {
	l, err := s.list(ctx, list)
	if err != nil {
		return err
	}
	addr := policy.NormalizeAddress(address)
	if err := s.Store.RemoveMember(ctx, l.Address, addr); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s is not a member of %s", addr, l.Address)
	} else if err != nil {
		return err
	}
	return nil
}

// Holds returns the list's held posts waiting for a moderator.
func (s *Site) Holds(ctx context.Context, list string) ([]store.Hold, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return nil, err
	}
	return s.Store.Holds(ctx, l.Address)
}

// AllHolds returns every hold of the list whatever its state
// (store.Hold.Status), without the messages.
func (s *Site) AllHolds(ctx context.Context, list string) ([]store.Hold, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return nil, err
	}
	return s.Store.AllHolds(ctx, l.Address)
}

// HeldPost is a held post opened for a moderator's eyes (in memory only).
type HeldPost struct {
	store.Hold
	// Raw is the message as the sender sent it.
	Raw []byte
	// Plaintext is the decrypted content when the post was encrypted.
	Plaintext []byte
}

// ShowHold opens held post id with the list key.
func (s *Site) ShowHold(ctx context.Context, id int64) (*HeldPost, error) {
	h, err := s.Store.GetHold(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no held post %d", id)
	} else if err != nil {
		return nil, err
	}
	keys, err := s.Keys()
	if err != nil {
		return nil, err
	}
	key, err := keys.ListKey(ctx, h.List)
	if err != nil {
		return nil, err
	}
	// Sealed to the list key of the day it was held: the current key, or
	// one a rotation retired since.
	retired, err := keys.RetiredSecretKeys(ctx, h.List)
	if err != nil {
		return nil, err
	}
	sealKeys := append(openpgp.EntityList{key}, retired...)
	raw, err := keyring.DecryptWith(h.Message, sealKeys, s.Config.Limits.MaxMessageSize.Bytes, keyring.ConfigLimits(s.Config))
	if err != nil {
		return nil, fmt.Errorf("open held post %d: %w", id, err)
	}
	hp := &HeldPost{Hold: h, Raw: raw}
	var old []inbound.OldKey
	for _, e := range retired {
		old = append(old, inbound.OldKey{List: 0, Key: e, InGrace: true})
	}
	if res, err := inbound.Examine(inbound.Input{Message: raw, ListKey: key, OldKeys: old, Now: s.Now(), Limits: deliver.InboundLimits(s.Config)}); err == nil && res.Encrypted {
		hp.Plaintext = res.Plaintext
	}
	return hp, nil
}

// Approval is what ApproveHold did.
type Approval struct {
	// Delivered is the number of members served by this call.
	Delivered int
	// Resumed: the hold was approved before and its delivery had
	// stopped half-way; this call completed it.
	Resumed bool
}

// holdLease is how long a "hold approve" claims the delivery of a hold
// (store.ClaimPost on the post's id) before it renews the claim; a claim
// of a process that died lapses after it, and another "hold approve"
// resumes.
const holdLease = 2 * time.Minute

// ApproveHold delivers held post id to the list's members (the outbound
// stage, every batch through the reinjection listener). A hold goes
// held → delivering (state approved: compare-and-set, so two moderators
// cannot both approve it) → delivered (delivered_at set once every batch
// is recorded). When the delivery stops half-way (the MTA, the database,
// a kill), the hold stays delivering and never expires; ApproveHold on it
// resumes through the same delivery records, so a member who got the
// post does not get it again. While one process delivers a hold it holds
// a claim on the post (store.ClaimPost with a lease it renews), so a
// second approval, from any process or host, is refused meanwhile rather
// than delivering alongside. A delivered, rejected or expired hold is an
// error.
func (s *Site) ApproveHold(ctx context.Context, id int64) (Approval, error) {
	hp, err := s.ShowHold(ctx, id)
	if err != nil {
		return Approval{}, err
	}
	if err := decided(hp.Hold); err != nil {
		return Approval{}, err
	}
	set, err := s.Policies()
	if err != nil {
		return Approval{}, err
	}
	p := set.Lookup(hp.List)
	if p == nil {
		return Approval{}, fmt.Errorf("no policy file for list %s", hp.List)
	}
	// Past post.hold_expiry a waiting hold is expired, whether or not the
	// milter's hourly run has marked it yet. A delivering one is not.
	if exp := p.Post.HoldExpiry; hp.State == store.HoldHeld && s.Now().Sub(hp.CreatedAt) >= exp.D {
		return Approval{}, fmt.Errorf("held post %d expired: held since %s, longer than post.hold_expiry (%s) allows; it can no longer be approved",
			id, hp.CreatedAt.UTC().Format(time.RFC3339), exp.Raw)
	}
	keys, err := s.Keys()
	if err != nil {
		return Approval{}, err
	}
	postID, err := deliver.PostID(hp.Raw)
	if err != nil {
		return Approval{}, err
	}
	// A "hold approve" (or milter) of this machine killed while it held
	// the post has its claim taken over at once; one elsewhere, or
	// still running, holds it until its lease ends.
	claimer := deliver.NewClaimer()
	owner := claimer.Owner()
	claimed, holder, _, err := claimer.Claim(ctx, s.Store, hp.List, postID, owner, holdLease, s.Now())
	if err != nil {
		return Approval{}, fmt.Errorf("approve held post %d: %w", id, err)
	}
	if !claimed {
		return Approval{}, fmt.Errorf("held post %d is being delivered right now (%s); if that process died, approve it again in %s to resume",
			id, holder, holdLease)
	}
	defer func() {
		if _, err := s.Store.ReleaseClaim(context.WithoutCancel(ctx), hp.List, postID, owner); err != nil {
			slog.Default().Warn("hold approve: claim not released; it lapses by itself", "hold_id", id, "err", err)
		}
	}()
	// Read the hold again under the claim: another process may have
	// approved, completed or rejected it since.
	h, err := s.Store.HoldMeta(ctx, id)
	if err != nil {
		return Approval{}, err
	}
	if err := decided(h); err != nil {
		return Approval{}, err
	}
	a := Approval{Resumed: h.State == store.HoldApproved}
	if !a.Resumed {
		if err := s.Store.SetHoldState(ctx, id, store.HoldHeld, store.HoldApproved); err != nil {
			if h, herr := s.Store.HoldMeta(ctx, id); herr == nil && h.Expired() {
				return Approval{}, expiredErr(h) // expired while we looked
			}
			return Approval{}, fmt.Errorf("approve held post %d: %w", id, err)
		}
	}
	// Renew the claim while the delivery runs; losing it stops the
	// delivery (another process took over a lapsed claim).
	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		tick := time.NewTicker(holdLease / 4)
		defer tick.Stop()
		for {
			select {
			case <-dctx.Done():
				return
			case <-tick.C:
				ok, err := s.Store.RenewClaim(dctx, hp.List, postID, owner, holdLease, s.Now())
				if err == nil && !ok {
					cancel(errors.New("the claim on the delivery passed to another process"))
					return
				}
			}
		}
	}()
	// And check it right before each batch: a process stopped longer than
	// the lease (Ctrl-Z) wakes up without sending a batch whose members
	// the new holder serves.
	fence := func(ctx context.Context) error {
		ok, err := s.Store.RenewClaim(ctx, hp.List, postID, owner, holdLease, s.Now())
		if err != nil {
			return err
		}
		if !ok {
			// Taken over, or already released by the process that took
			// it over and finished: never claimed afresh here.
			return errors.New("the claim on the delivery passed to another process")
		}
		return nil
	}
	dl := deliver.New(deliver.Options{Store: s.Store, Keys: keys, Config: s.Config, Now: s.Now, Log: slog.New(slog.DiscardHandler), Fence: fence})
	r, err := dl.DistributeHeld(dctx, p, hp.Raw, hp.CreatedAt)
	cancel(nil)
	<-renewed
	if err != nil {
		if cause := context.Cause(dctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		return Approval{}, fmt.Errorf("delivery of held post %d stopped: %w; it stays approved and is not sent twice to anyone: run \"listcrypt hold approve %d\" again to resume", id, err, id)
	}
	a.Delivered = r.Served
	if _, err := s.Store.MarkHoldDelivered(ctx, id, s.Now()); err != nil {
		return a, fmt.Errorf("held post %d was delivered, but this could not be recorded: %w (approving it again sends nothing twice)", id, err)
	}
	return a, nil
}

// decided is the error for a hold that can no longer be approved: nil
// when it is waiting or delivering.
func decided(h store.Hold) error {
	switch h.Status() {
	case store.HoldExpired:
		return expiredErr(h)
	case store.HoldRejected:
		return fmt.Errorf("held post %d was rejected; it can no longer be approved", h.ID)
	case store.HoldDelivered:
		return fmt.Errorf("held post %d is already approved and was delivered on %s; nothing was sent again",
			h.ID, h.DeliveredAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// RejectHold drops held post id.
func (s *Site) RejectHold(ctx context.Context, id int64) error {
	if err := s.Store.SetHoldState(ctx, id, "held", "rejected"); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no held post %d", id)
	} else if err != nil {
		if h, herr := s.Store.HoldMeta(ctx, id); herr == nil {
			switch h.Status() {
			case store.HoldExpired:
				return expiredErr(h)
			case store.HoldDelivering:
				return fmt.Errorf("held post %d was approved and its delivery stopped half-way; it can no longer be rejected: \"listcrypt hold approve %d\" completes it", id, id)
			}
		}
		return fmt.Errorf("reject held post %d: %w", id, err)
	}
	return nil
}

// expiredErr says that hold h expired.
func expiredErr(h store.Hold) error {
	return fmt.Errorf("held post %d expired on %s (post.hold_expiry) and was dropped; it can no longer be approved or rejected",
		h.ID, h.ExpiredAt.UTC().Format(time.RFC3339))
}

// ExpireHolds expires the held posts that waited longer than their
// list's post.hold_expiry and tells the owners which (what the milter
// daemon does hourly); it also retries moderator notices that failed.
// It returns how many holds expired.
func (s *Site) ExpireHolds(ctx context.Context) (int, error) {
	set, err := s.Policies()
	if err != nil {
		return 0, err
	}
	keys, err := s.Keys()
	if err != nil {
		return 0, err
	}
	n := holds.New(holds.Options{Options: deliver.Options{Store: s.Store, Keys: keys, Config: s.Config, Now: s.Now, Log: slog.New(slog.DiscardHandler)}})
	return n.ExpireHolds(ctx, set, s.Now())
}

// CheckPolicies validates every policy file, reporting every problem.
func CheckPolicies(dir string) (*policy.Set, error) {
	return policy.LoadDir(dir)
}

// Summary is a one-line description of a held post.
func Summary(h store.Hold) string {
	return fmt.Sprintf("%d\t%s\t%s\t%s\t%s", h.ID, h.CreatedAt.UTC().Format(time.RFC3339), h.Sender, h.Reason, strings.Join(h.Recipients, ","))
}

// StatusLine is Summary followed by the hold's status (held, delivering,
// delivered, rejected, expired).
func StatusLine(h store.Hold) string {
	return Summary(h) + "\t" + h.Status()
}
