package workflow

import (
	"context"
	"fmt"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/policy"
)

// KeyChangeNotices composes the notice of a list key change for every
// active member of p with a usable key at now: the new public key
// attached (application/pgp-keys), encrypted to the member, signed by
// the old AND the new list key (secret parts open), so a member's client
// can check the new key against the one it trusts. The mails are for the
// outbox (store.ReplaceListKey writes them in the transaction that
// switches the key); noKey counts the active members left out (no
// usable key).
func (r *Responder) KeyChangeNotices(ctx context.Context, p *policy.Policy, oldKey, newKey *openpgp.Entity, now time.Time) (mails []store.OutboxMail, noKey int, err error) {
	members, err := r.Store.Members(ctx, p.Address)
	if err != nil {
		return nil, 0, err
	}
	armored, err := keyring.ArmorPublicKey(newKey)
	if err != nil {
		return nil, 0, err
	}
	l := keyring.ConfigLimits(r.Config)
	cfg := keyring.PacketConfig(l, func() time.Time { return now })
	text := textKeyChanged(p, keyring.Fingerprint(oldKey), keyring.Fingerprint(newKey), now.Add(p.Keys.OldKeyGrace.D))
	// Signed by the old key too, so that members' clients that know only
	// it can trust the change; an old key that can no longer sign
	// (expired, revoked) is what the change replaces: the new key signs
	// alone, and the log says so.
	alsoBy := oldKey
	if _, ok := oldKey.SigningKey(now, cfg); !ok {
		alsoBy = nil
		r.Log.Warn("the old list key cannot sign (expired or revoked): key change notices are signed by the new key only",
			"list", p.Address, "old_key", keyring.Fingerprint(oldKey))
	}
	for _, m := range members {
		if m.State != store.MemberActive {
			continue
		}
		var e *openpgp.Entity
		if len(m.PublicKey) > 0 {
			e, err = keyring.ParseStoredKey(m.PublicKey, l)
			if err == nil {
				if _, err = e.EncryptionKeyWithError(now, cfg); err != nil {
					e = nil
				}
			}
		}
		if e == nil {
			noKey++
			continue
		}
		data, err := compose(mail{
			From: p.RequestAddress(), FromName: p.Address + " (listcrypt)", To: m.Address,
			Subject: "The key of " + p.Address + " has changed", Text: text,
			Key: armored, KeyName: p.Address + ".asc",
			EncryptTo: e, AlsoSignedBy: alsoBy,
		}, newKey, now, r.Rand, l)
		if err != nil {
			return nil, 0, fmt.Errorf("compose key change notice to %s: %w", m.Address, err)
		}
		mails = append(mails, outboxMail(p, m.Address, data, now))
	}
	return mails, noKey, nil
}

// SendQueued submits the list's outbox rows ids (and older rows still
// waiting), each exactly once, and says how many of ids the MTA took;
// the others wait in the outbox for the next run (the responder's, the
// milter's hourly one, "listcrypt hold expire").
func (r *Responder) SendQueued(ctx context.Context, p *policy.Policy, ids []int64) (sent int) {
	want := make(map[int64]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	for len(want) > 0 {
		res, err := r.Store.SendOutbox(ctx, p.Address, 0, r.Now, func(ctx context.Context, m store.OutboxMail) error {
			return r.Mail.Send(ctx, m.Sender, m.Recipients, m.Message)
		}, PermanentSMTP)
		if err != nil {
			r.Log.Warn("outbox: not every mail sent", "list", p.Address, "waiting", len(res.Waiting), "dropped", len(res.Dropped), "err", err)
		}
		progress := false
		for _, id := range res.Sent {
			if want[id] {
				delete(want, id)
				sent++
				progress = true
			}
		}
		for _, id := range res.Dropped {
			if want[id] {
				delete(want, id)
				progress = true
			}
		}
		if !progress {
			break
		}
	}
	return sent
}
