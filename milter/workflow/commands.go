package workflow

import (
	"bytes"
	"context"
	"errors"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
)

func (r *Responder) help(ctx context.Context, rq *request) error {
	return r.done(ctx, rq, "Commands for "+rq.p.Address, textHelp(rq.p), nil, "")
}

func (r *Responder) keyGet(ctx context.Context, rq *request) error {
	armored, err := keyring.ArmorPublicKey(rq.listKey)
	if err != nil {
		return err
	}
	return r.done(ctx, rq, "The key of "+rq.p.Address, textKeyGet(rq), nil, armored)
}

func (r *Responder) keyShow(ctx context.Context, rq *request) error {
	return r.done(ctx, rq, "Your subscription to "+rq.p.Address, textKeyShow(rq), nil, "")
}

// tokenSubject puts a token in the Subject only of a mail that is not
// encrypted (its body shows the token anyway), so a plain reply works.
func (r *Responder) tokenSubject(rq *request, line, otherwise string) string {
	if r.usableKey(rq) == nil {
		return line
	}
	return otherwise
}

func (r *Responder) subscribe(ctx context.Context, rq *request) error {
	if m := rq.member; m != nil {
		switch m.State {
		case store.MemberActive:
			return r.refuse(ctx, rq, "already subscribed", "You are subscribed to "+rq.p.Address, textAlreadyMember(rq))
		case store.MemberPending:
			return r.refuse(ctx, rq, "waiting for a moderator", "Your subscription to "+rq.p.Address, textWaitingModerator(rq))
		}
	}
	tok, ch, err := r.token(rq, VerbKeySet, "")
	if err != nil {
		return err
	}
	subject := r.tokenSubject(rq, "key set "+tok, "Send your key to "+rq.p.Address)
	return r.change(ctx, rq, store.KeyStep{AddChallenges: []store.Challenge{ch}}, subject, textSubscribe(rq, tok), nil)
}

func (r *Responder) unsubscribe(ctx context.Context, rq *request) error {
	if rq.member == nil {
		return r.refuse(ctx, rq, "not subscribed", "You are not subscribed to "+rq.p.Address, textNotMember(rq))
	}
	if rq.cmd.Token == "" {
		tok, ch, err := r.token(rq, VerbUnsubscribe, "")
		if err != nil {
			return err
		}
		subject := r.tokenSubject(rq, "unsubscribe "+tok, "Confirm leaving "+rq.p.Address)
		return r.change(ctx, rq, store.KeyStep{AddChallenges: []store.Challenge{ch}}, subject, textUnsubscribeToken(rq, tok), nil)
	}
	c, why, err := r.checkToken(ctx, rq, VerbUnsubscribe)
	if err != nil {
		return err
	}
	if why != "" {
		return r.refuse(ctx, rq, why, "Your command for "+rq.p.Address+" was refused", textToken(rq, why, c))
	}
	return r.change(ctx, rq, store.KeyStep{UseToken: c.TokenHash, RemoveMember: true, DropPending: true},
		"You left "+rq.p.Address, textUnsubscribed(rq), nil)
}

// parseKey reads the one key block of the mail and applies the key
// hygiene rules; refusal is the sentence for the subscriber.
func (r *Responder) parseKey(rq *request) (mk *keyring.MemberKey, refusal string) {
	var blocks [][]byte
	for _, b := range rq.content.keys {
		if bytes.Contains(b, []byte("-----BEGIN PGP SIGNATURE-----")) {
			continue
		}
		dup := false
		for _, o := range blocks {
			dup = dup || bytes.Equal(bytes.TrimSpace(o), bytes.TrimSpace(b))
		}
		if !dup {
			blocks = append(blocks, b)
		}
	}
	switch {
	case len(blocks) == 0:
		return nil, "No OpenPGP public key was found in your message. Attach it (as application/pgp-keys, which most mail programs do with \"attach my public key\") or paste its ASCII armor into the message, for example the output of: gpg --armor --export " + rq.from
	case len(blocks) > 1:
		return nil, "Your message holds several keys. Please send exactly one public key."
	}
	mk, err := keyring.ParseMemberKey(blocks[0], keyring.ConfigLimits(r.Config), rq.now)
	if err == nil {
		err = mk.OnlyAddress(rq.from)
	}
	if err == nil {
		return mk, ""
	}
	// The keyring's sentence may quote the key (user IDs, a parser's
	// error): a verified sender's own key only.
	var kre *keyring.KeyRefusedError
	if r.mayQuote(rq) && errors.As(err, &kre) {
		return nil, kre.Text
	}
	return nil, keyRefusalText(rq, err, keyring.ConfigLimits(r.Config))
}

func (r *Responder) keySet(ctx context.Context, rq *request) error {
	c, why, err := r.checkToken(ctx, rq, VerbKeySet)
	if err != nil {
		return err
	}
	if why != "" {
		return r.refuse(ctx, rq, why, "Your key for "+rq.p.Address+" was refused", textToken(rq, why, c))
	}
	if m := rq.member; m != nil {
		switch m.State {
		case store.MemberActive:
			return r.refuse(ctx, rq, "already subscribed", "You are subscribed to "+rq.p.Address, textAlreadyMember(rq))
		case store.MemberPending:
			return r.refuse(ctx, rq, "waiting for a moderator", "Your subscription to "+rq.p.Address, textWaitingModerator(rq))
		}
	}
	mk, refusal := r.parseKey(rq)
	if refusal != "" {
		return r.refuse(ctx, rq, "key refused", "Your key for "+rq.p.Address+" was refused", textKeyRefused(rq, refusal))
	}
	tok, ch, err := r.token(rq, VerbKeyConfirm, mk.Fingerprint)
	if err != nil {
		return err
	}
	return r.change(ctx, rq, store.KeyStep{
		UseToken:      c.TokenHash,
		PutPending:    &store.PendingKey{Fingerprint: mk.Fingerprint, PublicKey: mk.Binary, Purpose: store.PendingSet, State: store.PendingUnconfirmed},
		AddChallenges: []store.Challenge{ch},
	}, "Confirm your key for "+rq.p.Address, textStatement(rq, tok, mk.Fingerprint, ""), mk.Entity)
}

func (r *Responder) keyChange(ctx context.Context, rq *request) error {
	m := rq.member
	switch {
	case m == nil:
		return r.refuse(ctx, rq, "not subscribed", "You are not subscribed to "+rq.p.Address, textNotMember(rq))
	case m.State == store.MemberPending:
		return r.refuse(ctx, rq, "waiting for a moderator", "Your subscription to "+rq.p.Address, textWaitingModerator(rq))
	case m.State != store.MemberActive || rq.memberE == nil:
		return r.refuse(ctx, rq, "no key to change", "You have no key on "+rq.p.Address, textNeedsKey(rq))
	}
	mk, refusal := r.parseKey(rq)
	if refusal != "" {
		return r.refuse(ctx, rq, "key refused", "Your new key for "+rq.p.Address+" was refused", textKeyRefused(rq, refusal))
	}
	if mk.Fingerprint == m.Fingerprint {
		return r.refuse(ctx, rq, "same key", "Your key for "+rq.p.Address, textSameKey(rq))
	}
	tok, ch, err := r.token(rq, VerbKeyConfirm, mk.Fingerprint)
	if err != nil {
		return err
	}
	// The statement goes to the NEW key; it must come back signed by the
	// OLD one (DESIGN.md, key change).
	return r.change(ctx, rq, store.KeyStep{
		PutPending:    &store.PendingKey{Fingerprint: mk.Fingerprint, PublicKey: mk.Binary, Purpose: store.PendingChange, State: store.PendingUnconfirmed},
		AddChallenges: []store.Challenge{ch},
	}, "Confirm your new key for "+rq.p.Address, textStatement(rq, tok, mk.Fingerprint, m.Fingerprint), mk.Entity)
}

func (r *Responder) keyConfirm(ctx context.Context, rq *request) error {
	refuse := func(reason, text string) error {
		return r.refuse(ctx, rq, reason, "Your key confirmation for "+rq.p.Address+" was refused", text)
	}
	c, why, err := r.checkToken(ctx, rq, VerbKeyConfirm)
	if err != nil {
		return err
	}
	if why != "" {
		return refuse(why, textToken(rq, why, c))
	}
	if rq.cmd.InSubject {
		return refuse("statement not in the body", textStatementInBody(rq))
	}
	var pk *store.PendingKey
	for i := range rq.pending {
		if rq.pending[i].Fingerprint == c.Fingerprint && rq.pending[i].State == store.PendingUnconfirmed {
			pk = &rq.pending[i]
		}
	}
	if pk == nil {
		return refuse("no pending key", textNoPendingKey(rq, c.Fingerprint))
	}
	st := ParseStatement(rq.content.text)
	switch {
	case st.Fingerprint == "":
		return refuse("statement without fingerprint", textStatementField(rq, "fingerprint", c.Fingerprint))
	case st.Fingerprint != c.Fingerprint:
		return refuse("statement names another fingerprint", textOtherFingerprint(rq, st.Fingerprint, c.Fingerprint, r.mayQuote(rq)))
	case st.List != rq.p.Address:
		return refuse("statement for another list", textStatementField(rq, "list", rq.p.Address))
	case st.Address != rq.from:
		return refuse("statement for another address", textStatementField(rq, "address", rq.from))
	}
	m := rq.member
	required := pk.Fingerprint
	if pk.Purpose == store.PendingChange {
		if m == nil || m.State != store.MemberActive || m.Fingerprint == "" {
			return refuse("no key to change", textNeedsKey(rq))
		}
		required = m.Fingerprint
	}
	if rq.signer != required {
		return refuse("not signed by the required key", textWrongSigner(rq, pk, required))
	}
	newE := rq.pendE[pk.Fingerprint]
	step := store.KeyStep{UseToken: c.TokenHash, DropPending: true}
	var moderated bool
	var text string
	if pk.Purpose == store.PendingSet {
		if m != nil && m.State != store.MemberNeedsKey {
			return refuse("already subscribed", textAlreadyMember(rq))
		}
		moderated = rq.p.Keys.ModerateNew
		state := store.MemberActive
		if moderated {
			state = store.MemberPending
		}
		step.ExpectMember = &store.MemberExpect{Absent: true}
		if m != nil {
			step.ExpectMember = &store.MemberExpect{State: m.State, Fingerprint: m.Fingerprint}
		}
		step.PutMember = &store.Member{State: state, Fingerprint: pk.Fingerprint, PublicKey: pk.PublicKey, KeyIDs: keyIDs(newE)}
		text = textConfirmedSet(rq, pk.Fingerprint, moderated)
	} else {
		moderated = rq.p.Keys.ModerateChange
		step.ExpectMember = &store.MemberExpect{State: m.State, Fingerprint: m.Fingerprint}
		if moderated {
			confirmed := *pk
			confirmed.State = store.PendingConfirmed
			step.PutPending = &confirmed
		} else {
			step.PutMember = &store.Member{State: store.MemberActive, Fingerprint: pk.Fingerprint, PublicKey: pk.PublicKey, KeyIDs: keyIDs(newE)}
		}
		text = textConfirmedChange(rq, m.Fingerprint, pk.Fingerprint, moderated)
	}
	if err := r.change(ctx, rq, step, "Your key for "+rq.p.Address+" is confirmed", text, newE); err != nil {
		return err
	}
	if moderated && rq.out.Result == "done" {
		e := PendingEntry{List: rq.p.Address, Address: rq.from, Fingerprint: pk.Fingerprint, Kind: KindSubscription}
		if pk.Purpose == store.PendingChange {
			e.Kind, e.OldFingerprint = KindKeyChange, m.Fingerprint
		}
		r.notifyModerators(ctx, rq.p, rq.listKey, e, rq.now)
	}
	return nil
}

func (r *Responder) keyRevoke(ctx context.Context, rq *request) error {
	m := rq.member
	if m == nil || rq.memberE == nil {
		return r.refuse(ctx, rq, "no key", "You have no key on "+rq.p.Address, textNoKeyToRevoke(rq))
	}
	keyRevs, subRevs := findRevocations(rq.content.keys, rq.memberE, keyring.ConfigLimits(r.Config))
	if len(keyRevs) == 0 && len(subRevs) == 0 {
		return r.refuse(ctx, rq, "no revocation", "Your revocation for "+rq.p.Address+" was refused", textNoRevocation(rq))
	}
	e, err := keyring.ParseStoredKey(m.PublicKey, keyring.ConfigLimits(r.Config))
	if err != nil {
		return err
	}
	for _, s := range keyRevs {
		e.Revocations = append(e.Revocations, packet.NewVerifiableSig(s))
	}
	for i, sigs := range subRevs {
		for _, s := range sigs {
			e.Subkeys[i].Revocations = append(e.Subkeys[i].Revocations, packet.NewVerifiableSig(s))
		}
	}
	merged := keyring.PublicKeyBytes(e)
	mk, perr := keyring.ParseMemberKey(merged, keyring.ConfigLimits(r.Config), rq.now)
	if perr == nil {
		perr = mk.OnlyAddress(rq.from)
	}
	expect := &store.MemberExpect{State: m.State, Fingerprint: m.Fingerprint}
	if perr == nil {
		// Still usable (a subkey was revoked, another remains): keep the
		// key with the revoked parts removed.
		return r.change(ctx, rq, store.KeyStep{ExpectMember: expect,
			PutMember: &store.Member{State: m.State, Fingerprint: mk.Fingerprint, PublicKey: mk.Binary, KeyIDs: mk.KeyIDs}},
			"Your key for "+rq.p.Address, textRevokedPartly(rq), mk.Entity)
	}
	// Unusable: back to "needs key"; a new key takes the set + confirm
	// (+ moderation) path, starting with this token.
	tok, ch, err := r.token(rq, VerbKeySet, "")
	if err != nil {
		return err
	}
	rq.memberE = nil // never encrypt to the revoked key
	return r.change(ctx, rq, store.KeyStep{ExpectMember: expect, DropPending: true,
		PutMember:     &store.Member{State: store.MemberNeedsKey},
		AddChallenges: []store.Challenge{ch}}, "key set "+tok, textRevoked(rq, m.Fingerprint, tok), nil)
}

// findRevocations returns the key revocation signatures and the subkey
// revocation signatures (by subkey index) in blocks that verify against
// e. Anything else in the blocks is ignored.
func findRevocations(blocks [][]byte, e *openpgp.Entity, l keyring.Limits) ([]*packet.Signature, map[int][]*packet.Signature) {
	var keyRevs []*packet.Signature
	subRevs := map[int][]*packet.Signature{}
	maxSize := l.MaxKeySize
	if maxSize <= 0 {
		maxSize = keyring.DefaultLimits.MaxKeySize
	}
	packets := 0
	for _, b := range blocks {
		var rd io.Reader = bytes.NewReader(b)
		if bytes.Contains(b, []byte("-----BEGIN PGP ")) {
			blk, err := armor.Decode(bytes.NewReader(b))
			if err != nil {
				continue
			}
			rd = blk.Body
		}
		raw, err := io.ReadAll(io.LimitReader(rd, maxSize+1))
		if err != nil || int64(len(raw)) > maxSize {
			continue
		}
		pr := packet.NewReader(bytes.NewReader(raw))
		for packets < 1000 {
			p, err := pr.Next()
			if err == io.EOF {
				break
			}
			packets++
			if err != nil {
				break // Next skips unsupported packets; this is damage
			}
			sig, ok := p.(*packet.Signature)
			if !ok {
				continue
			}
			switch sig.SigType {
			case packet.SigTypeKeyRevocation:
				if e.PrimaryKey.VerifyRevocationSignature(sig) == nil {
					keyRevs = append(keyRevs, sig)
				}
			case packet.SigTypeSubkeyRevocation:
				for i := range e.Subkeys {
					if e.PrimaryKey.VerifySubkeyRevocationSignature(sig, e.Subkeys[i].PublicKey) == nil {
						subRevs[i] = append(subRevs[i], sig)
					}
				}
			}
		}
	}
	return keyRevs, subRevs
}
