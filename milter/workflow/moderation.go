package workflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/policy"
)

// Kinds of PendingEntry.
const (
	KindSubscription = "subscription" // a new (or re-keyed) member in state pending
	KindKeyChange    = "key change"   // an active member's confirmed new key
)

// PendingEntry is something waiting for a moderator.
type PendingEntry struct {
	List           string
	Address        string
	Kind           string // KindSubscription or KindKeyChange
	Fingerprint    string // the key to approve
	OldFingerprint string // KindKeyChange: the key it replaces
	Since          time.Time
	// NoticeErr is set by Approve and Reject when the subscriber could
	// not be told (the decision stands).
	NoticeErr error
}

// ErrNothingPending: the address has nothing waiting for a moderator.
var ErrNothingPending = errors.New("nothing waiting for a moderator")

func (r *Responder) policyOf(list string) (*policy.Policy, error) {
	p := r.Policies.Lookup(list)
	if p == nil {
		return nil, fmt.Errorf("no policy file defines list %s", policy.NormalizeAddress(list))
	}
	return p, nil
}

// Pending returns what waits for a moderator on the list, by address.
func (r *Responder) Pending(ctx context.Context, list string) ([]PendingEntry, error) {
	p, err := r.policyOf(list)
	if err != nil {
		return nil, err
	}
	members, err := r.Store.Members(ctx, p.Address)
	if err != nil {
		return nil, err
	}
	byAddr := map[string]store.Member{}
	var out []PendingEntry
	for _, m := range members {
		byAddr[m.Address] = m
		if m.State == store.MemberPending {
			out = append(out, PendingEntry{List: p.Address, Address: m.Address, Kind: KindSubscription, Fingerprint: m.Fingerprint, Since: m.UpdatedAt})
		}
	}
	pks, err := r.Store.PendingKeys(ctx, p.Address, "")
	if err != nil {
		return nil, err
	}
	for _, pk := range pks {
		if pk.State != store.PendingConfirmed || pk.Purpose != store.PendingChange {
			continue
		}
		out = append(out, PendingEntry{List: p.Address, Address: pk.Address, Kind: KindKeyChange, Fingerprint: pk.Fingerprint,
			OldFingerprint: byAddr[pk.Address].Fingerprint, Since: pk.UpdatedAt})
	}
	return out, nil
}

func (r *Responder) pendingOf(ctx context.Context, list, addr string) (*policy.Policy, PendingEntry, error) {
	p, err := r.policyOf(list)
	if err != nil {
		return nil, PendingEntry{}, err
	}
	addr = policy.NormalizeAddress(addr)
	all, err := r.Pending(ctx, p.Address)
	if err != nil {
		return nil, PendingEntry{}, err
	}
	for _, e := range all {
		if e.Address == addr {
			return p, e, nil
		}
	}
	return nil, PendingEntry{}, fmt.Errorf("%s on %s: %w", addr, p.Address, ErrNothingPending)
}

// Approve makes the waiting subscription or key change of addr effective
// and tells the subscriber (encrypted to the approved key).
func (r *Responder) Approve(ctx context.Context, list, addr string) (PendingEntry, error) {
	p, e, err := r.pendingOf(ctx, list, addr)
	if err != nil {
		return e, err
	}
	now := r.Now()
	var bin []byte
	step := store.KeyStep{List: p.Address, Address: e.Address, Now: now}
	if e.Kind == KindSubscription {
		m, err := r.Store.GetMember(ctx, p.Address, e.Address)
		if err != nil {
			return e, err
		}
		bin = m.PublicKey
		step.ExpectMember = &store.MemberExpect{State: store.MemberPending, Fingerprint: e.Fingerprint}
	} else {
		pks, err := r.Store.PendingKeys(ctx, p.Address, e.Address)
		if err != nil {
			return e, err
		}
		for _, pk := range pks {
			if pk.Fingerprint == e.Fingerprint {
				bin = pk.PublicKey
			}
		}
		step.ExpectMember = &store.MemberExpect{State: store.MemberActive, Fingerprint: e.OldFingerprint}
		step.ExpectPending = &store.PendingKey{Fingerprint: e.Fingerprint, State: store.PendingConfirmed}
		step.DropPending = true
	}
	ent, err := keyring.ParseStoredKey(bin, keyring.ConfigLimits(r.Config))
	if err != nil {
		return e, fmt.Errorf("key %s of %s: %w", e.Fingerprint, e.Address, err)
	}
	step.PutMember = &store.Member{State: store.MemberActive, Fingerprint: e.Fingerprint, PublicKey: bin, KeyIDs: keyIDs(ent)}
	if err := r.Store.ApplyKeyStep(ctx, step); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return e, fmt.Errorf("%s on %s changed meanwhile; look again with: listcrypt member pending %s", e.Address, p.Address, p.Address)
		}
		return e, err
	}
	r.Log.Info("moderation", "list", p.Address, "address", e.Address, "kind", e.Kind, "fingerprint", e.Fingerprint, "result", "approved")
	e.NoticeErr = r.notice(ctx, p, e.Address, ent, "Welcome to "+p.Address, textApproved(p, e), now)
	return e, nil
}

// Reject drops the waiting subscription (the address is removed) or key
// change (the old key stays) of addr and tells the subscriber.
func (r *Responder) Reject(ctx context.Context, list, addr string) (PendingEntry, error) {
	p, e, err := r.pendingOf(ctx, list, addr)
	if err != nil {
		return e, err
	}
	now := r.Now()
	step := store.KeyStep{List: p.Address, Address: e.Address, Now: now, DropPending: true}
	var tell *openpgp.Entity
	m, err := r.Store.GetMember(ctx, p.Address, e.Address)
	if err != nil {
		return e, err
	}
	if len(m.PublicKey) > 0 {
		// The key the subscriber holds: the pending one for a
		// subscription, the registered one for a refused change.
		if ent, err := keyring.ParseStoredKey(m.PublicKey, keyring.ConfigLimits(r.Config)); err == nil {
			tell = ent
		}
	}
	if e.Kind == KindSubscription {
		step.ExpectMember = &store.MemberExpect{State: store.MemberPending, Fingerprint: e.Fingerprint}
		step.RemoveMember = true
	} else {
		step.ExpectMember = &store.MemberExpect{State: store.MemberActive, Fingerprint: e.OldFingerprint}
		step.ExpectPending = &store.PendingKey{Fingerprint: e.Fingerprint, State: store.PendingConfirmed}
	}
	if err := r.Store.ApplyKeyStep(ctx, step); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return e, fmt.Errorf("%s on %s changed meanwhile; look again with: listcrypt member pending %s", e.Address, p.Address, p.Address)
		}
		return e, err
	}
	r.Log.Info("moderation", "list", p.Address, "address", e.Address, "kind", e.Kind, "fingerprint", e.Fingerprint, "result", "rejected")
	e.NoticeErr = r.notice(ctx, p, e.Address, tell, "Your request to "+p.Address, textRejected(p, e), now)
	return e, nil
}

// notice mails a subscriber from the request address, encrypted to key
// when it is usable.
func (r *Responder) notice(ctx context.Context, p *policy.Policy, to string, key *openpgp.Entity, subject, text string, now time.Time) error {
	listKey, err := r.Keys.ListKey(ctx, p.Address)
	if err != nil {
		return err
	}
	if key != nil {
		cfg := keyring.PacketConfig(keyring.ConfigLimits(r.Config), func() time.Time { return now })
		if _, err := key.EncryptionKeyWithError(now, cfg); err != nil {
			key = nil
		}
	}
	return r.send(ctx, p, listKey, mail{From: p.RequestAddress(), FromName: p.Address + " (listcrypt)", To: to,
		Subject: subject, Text: text, EncryptTo: key}, now)
}

// notifyModerators tells every moderator who is an active member with a
// usable key, encrypted to that key. Failures are logged: the entry waits
// in "listcrypt member pending" either way.
func (r *Responder) notifyModerators(ctx context.Context, p *policy.Policy, listKey *openpgp.Entity, e PendingEntry, now time.Time) {
	told := 0
	cfg := keyring.PacketConfig(keyring.ConfigLimits(r.Config), func() time.Time { return now })
	for _, mod := range p.Moderators {
		m, err := r.Store.GetMember(ctx, p.Address, mod)
		if err != nil || m.State != store.MemberActive || len(m.PublicKey) == 0 {
			r.Log.Warn("moderator has no key on the list; not told", "list", p.Address, "moderator", mod)
			continue
		}
		key, err := keyring.ParseStoredKey(m.PublicKey, keyring.ConfigLimits(r.Config))
		if err == nil {
			_, err = key.EncryptionKeyWithError(now, cfg)
		}
		if err != nil {
			r.Log.Warn("moderator key unusable; not told", "list", p.Address, "moderator", mod, "err", err)
			continue
		}
		err = r.send(ctx, p, listKey, mail{From: p.RequestAddress(), FromName: p.Address + " (listcrypt)", To: mod,
			Subject: p.Address + ": " + e.Kind + " waits for approval", Text: textModerator(p, e), EncryptTo: key}, now)
		if err != nil {
			r.Log.Error("moderator notice failed", "list", p.Address, "moderator", mod, "err", err)
			continue
		}
		told++
	}
	if told == 0 {
		r.Log.Warn("no moderator could be told; see listcrypt member pending", "list", p.Address, "address", e.Address)
	}
}
