package workflow

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/bounce"
	"github.com/listcrypt/listcrypt/milter/inbound"
	"github.com/listcrypt/listcrypt/policy"
)

// The texts of the replies. No line of an instruction may read as a
// command on its own (subscribers reply with the text quoted): commands
// are always quoted inside a sentence, except the one line the reader is
// asked to send back.

func sig(p *policy.Policy) string {
	return fmt.Sprintf("\n-- \nlistcrypt responder for %s\nCommands: send \"help\" to %s\n", p.Address, p.RequestAddress())
}

// fpr groups a fingerprint in blocks of four for reading aloud.
func fpr(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

func textHelp(p *policy.Policy) string {
	return fmt.Sprintf(`This is the command address of the encrypted mailing list %[1]s.

Write one command as the first line of a mail to %[2]s (or as its
Subject). Commands are case-insensitive. The mail may be encrypted to the
list's key and signed with yours.

  "subscribe"            start a subscription; the list answers with a token
  "key set TOKEN"        with your public key attached: register it
  "key confirm TOKEN"    the signed statement that proves you hold the key
  "key change"           with your new public key attached: replace your key
  "key revoke"           with a revocation certificate attached
  "key get"              the list's public key
  "key show"             your registered key and state
  "unsubscribe"          leave the list (the list answers with a token)
  "help"                 this text

How joining works: after "subscribe" the list sends you a token. Send it
back as "key set TOKEN" with your public key. The list then sends a
statement encrypted to that key; sign it with the same key and send it
back. %[3]s
`, p.Address, p.RequestAddress(), moderationNote(p)) + sig(p)
}

func moderationNote(p *policy.Policy) string {
	if p.Keys.ModerateNew {
		return "A moderator then compares your key's fingerprint with you\nand approves the subscription."
	}
	return "You are then a member."
}

func textNoCommand(rq *request) string {
	return "No command was found in your message (neither on a line of its own in the\nbody nor in the Subject). Nothing has changed.\n\n" + textHelp(rq.p)
}

// textSyntax quotes the line only when quote is set (a verified sender,
// see Responder.mayQuote); otherwise it names the command only.
func textSyntax(rq *request, se *SyntaxError, quote bool) string {
	if quote {
		return fmt.Sprintf("This line of your message could not be understood:\n\n    %s\n\n%s.\nNothing has changed.\n\n", se.Line, se.Reason) + textHelp(rq.p)
	}
	return fmt.Sprintf("A line of your message names the command %q but does not fit it\n(the line is not repeated here). %s.\nNothing has changed.\n\n", se.Verb, se.Reason) + textHelp(rq.p)
}

// textUnreadable says in fixed sentences why the mail could not be read:
// the details of the examination may quote the mail's bytes.
func textUnreadable(rq *request) string {
	var reasons []string
	for _, err := range rq.unreadable {
		if r := unreadableReason(err); !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	return fmt.Sprintf(`Your message to %s could not be read: %s.

Nothing has changed. Send your command in plain text, or encrypted to the
list's key (ask for it with the command "key get"), as one OpenPGP/MIME
message (RFC 3156).
`, rq.p.RequestAddress(), strings.Join(reasons, "; ")) + sig(rq.p)
}

// unreadableReason is the fixed sentence for one reason a mail could not
// be read: a problem's own text only where it is fixed (a sentinel, a
// limit of the site), never the detail that may follow it.
func unreadableReason(err error) string {
	var le *inbound.LimitError
	switch {
	case errors.As(err, &le):
		return le.Error()
	}
	for _, fixed := range []error{inbound.ErrMixed, inbound.ErrNoIntegrity, inbound.ErrNotForList, inbound.ErrTampered,
		inbound.ErrBadSignature, errTooComplex, errNoContent} {
		if errors.Is(err, fixed) {
			return fixed.Error()
		}
	}
	return "it is not a well-formed MIME (RFC 2045) and OpenPGP (RFC 3156) message"
}

// textEncryptedUnverified is the one reply to an encrypted mail whose
// signature does not verify (docs/responder.md): the same text whatever
// the mail holds and whatever happened to it.
func textEncryptedUnverified(rq *request) string {
	return fmt.Sprintf(`Your message to %s was encrypted, and the list did not act on it: it
carries no valid signature by the key registered for %s on %s, or it
could not be decrypted or read. The list acts on an encrypted command only
when it is signed by the sender's registered key (or, for "key confirm",
by the key being confirmed), and it says nothing about what any other
encrypted message holds or why it could not be read.

Nothing has changed. Send commands such as "subscribe", "key set" or
"key get" unencrypted, or encrypted to the list's key and signed with your
registered key.
`, rq.p.RequestAddress(), rq.from, rq.p.Address) + sig(rq.p)
}

func textKeyGet(rq *request) string {
	return fmt.Sprintf(`The public key of %s is attached.

Fingerprint: %s

Import it (for example: gpg --import %s.asc) and check the fingerprint
against the one the list owner publishes. Posts to the list must be
encrypted to this key.
`, rq.p.Address, fpr(keyring.Fingerprint(rq.listKey)), rq.p.Address) + sig(rq.p)
}

func textKeyShow(rq *request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Address: %s\nList: %s\n", rq.from, rq.p.Address)
	m := rq.member
	switch {
	case m == nil:
		b.WriteString("State: not subscribed\n")
	default:
		fmt.Fprintf(&b, "State: %s\n", stateText(m.State))
		if m.Fingerprint != "" {
			fmt.Fprintf(&b, "Registered key: %s\n", fpr(m.Fingerprint))
		}
	}
	for _, pk := range rq.pending {
		what := "sent, not yet confirmed"
		if pk.State == store.PendingConfirmed {
			what = "confirmed, waiting for a moderator"
		}
		fmt.Fprintf(&b, "New key (%s): %s\n", what, fpr(pk.Fingerprint))
	}
	return b.String() + sig(rq.p)
}

func stateText(s string) string {
	switch s {
	case store.MemberActive:
		return "active (you receive the list's mail)"
	case store.MemberPending:
		return "waiting for a moderator"
	case store.MemberNeedsKey:
		return "needs a key (your key was revoked; send a new one)"
	}
	return s
}

func textSubscribe(rq *request, tok string) string {
	return fmt.Sprintf(`Someone, probably you, asked to subscribe %s to the encrypted
mailing list %s.

To go on, reply to this mail with your OpenPGP public key attached (most
mail programs can "attach my public key"; or paste the output of
"gpg --armor --export %s") and this line as the first line of the body:

key set %s

The token is valid until %s and can be used once. If you did not ask for
this, ignore this mail.
`, rq.from, rq.p.Address, rq.from, tok, rq.now.Add(rq.p.Keys.TokenExpiry.D).UTC().Format("2006-01-02 15:04 MST")) + sig(rq.p)
}

func textAlreadyMember(rq *request) string {
	return fmt.Sprintf(`%s is already subscribed to %s with the key

    %s

Nothing has changed. To replace that key, send the command "key change"
with the new key attached.
`, rq.from, rq.p.Address, fpr(rq.member.Fingerprint)) + sig(rq.p)
}

func textWaitingModerator(rq *request) string {
	return fmt.Sprintf(`Your subscription to %s with the key

    %s

waits for a moderator. Nothing has changed; you will get a mail when a
moderator has decided.
`, rq.p.Address, fpr(rq.member.Fingerprint)) + sig(rq.p)
}

func textNotMember(rq *request) string {
	return fmt.Sprintf("%s is not subscribed to %s. Nothing has changed.\nTo subscribe, send the command \"subscribe\".\n", rq.from, rq.p.Address) + sig(rq.p)
}

func textNeedsKey(rq *request) string {
	return fmt.Sprintf(`%s has no usable key on %s, so there is no key to change.
Nothing has changed. To register a key, send the command "subscribe" and
follow the instructions.
`, rq.from, rq.p.Address) + sig(rq.p)
}

func textSameKey(rq *request) string {
	return fmt.Sprintf("The key you sent, %s, is already your registered key on %s.\nNothing has changed.\n", fpr(rq.member.Fingerprint), rq.p.Address) + sig(rq.p)
}

func textUnsubscribeToken(rq *request, tok string) string {
	return fmt.Sprintf(`Someone, probably you, asked to unsubscribe %s from %s.

To confirm, reply to this mail with this line as the first line of the body:

unsubscribe %s

The token is valid until %s and can be used once. If you did not ask for
this, ignore this mail: you stay subscribed.
`, rq.from, rq.p.Address, tok, rq.now.Add(rq.p.Keys.TokenExpiry.D).UTC().Format("2006-01-02 15:04 MST")) + sig(rq.p)
}

func textUnsubscribed(rq *request) string {
	return fmt.Sprintf("%s has been unsubscribed from %s, and its key removed from the list.\n", rq.from, rq.p.Address) + sig(rq.p)
}

func textToken(rq *request, why string, c store.Challenge) string {
	var reason string
	switch {
	case why == "unknown token":
		reason = "The token in your command was not issued by this list (or it was mistyped)."
	case why == "token of another address":
		reason = fmt.Sprintf("The token in your command was not issued to %s for %s.", rq.from, rq.p.Address)
	case strings.HasPrefix(why, "token for "):
		reason = fmt.Sprintf("The token in your command belongs to the command %q, not %q.", c.Command, rq.cmd.Verb)
	case why == "token used":
		reason = "The token in your command has already been used; every token counts once."
	case why == "token expired":
		reason = fmt.Sprintf("The token in your command expired on %s.", c.ExpiresAt.UTC().Format("2006-01-02 15:04 MST"))
	default:
		reason = "The token in your command cannot be used."
	}
	return reason + "\n\nNothing has changed. To start again, send the command \"subscribe\" (or \"key change\"\nwith your new key, or \"unsubscribe\")." + "\n" + sig(rq.p)
}

func textKeyRefused(rq *request, refusal string) string {
	return fmt.Sprintf("The key you sent for %s cannot be used:\n\n%s\n\nNothing has changed; your token is still valid.\n", rq.p.Address, wrap(refusal, 72)) + sig(rq.p)
}

// textStatement is the key confirm mail: the statement to sign and send
// back. oldFpr is set for a key change.
func textStatement(rq *request, tok, newFpr, oldFpr string) string {
	signer := "this same key"
	what := "registers the key"
	if oldFpr != "" {
		signer = "your CURRENT key " + fpr(oldFpr) + " (not the new one)"
		what = "replaces your key on the list by the key"
	}
	return fmt.Sprintf(`This mail is encrypted to the key

    %s

and %s for %s on %s once you confirm it.

To confirm, sign the statement between the lines below with %s
and send it back to %s, for example as a reply signed with
OpenPGP/MIME, or with "gpg --clearsign" pasted into a mail. Keep the lines as
they are.

-----
key confirm %s
list: %s
address: %s
fingerprint: %s
-----

The token is valid until %s and can be used once. If you did not ask for
this, ignore this mail: nothing changes.
`, fpr(newFpr), what, rq.from, rq.p.Address, signer, rq.p.RequestAddress(),
		tok, rq.p.Address, rq.from, newFpr, rq.now.Add(rq.p.Keys.TokenExpiry.D).UTC().Format("2006-01-02 15:04 MST")) + sig(rq.p)
}

func textStatementInBody(rq *request) string {
	return "A key confirmation must be the signed statement in the body of your mail,\nnot the Subject. Nothing has changed.\n" + sig(rq.p)
}

func textNoPendingKey(rq *request, f string) string {
	return fmt.Sprintf("There is no key %s waiting for confirmation for %s on %s\n(it was settled, or replaced by a newer one). Nothing has changed.\n", fpr(f), rq.from, rq.p.Address) + sig(rq.p)
}

func textStatementField(rq *request, field, want string) string {
	return fmt.Sprintf("Your statement lacks the line \"%s: %s\", or names something else.\nSend back the statement exactly as the list sent it. Nothing has changed.\n", field, want) + sig(rq.p)
}

// textOtherFingerprint names the statement's fingerprint only when quote
// is set (see Responder.mayQuote).
func textOtherFingerprint(rq *request, got, want string, quote bool) string {
	if !quote {
		return fmt.Sprintf(`Your statement names another key than the key

    %s

the token was issued for. Nothing has changed. Send back the statement
exactly as the list sent it.
`, fpr(want)) + sig(rq.p)
	}
	return fmt.Sprintf(`Your statement names the key

    %s

but the token was issued for the key

    %s

Nothing has changed. Send back the statement exactly as the list sent it.
`, fpr(got), fpr(want)) + sig(rq.p)
}

func textWrongSigner(rq *request, pk *store.PendingKey, required string) string {
	var got string
	switch {
	case rq.signer == "":
		got = "Your statement carries no valid signature that covers all of it (or parts of\nyour mail are outside the signature)."
	case rq.signer == pk.Fingerprint:
		got = "Your statement is signed by the NEW key " + fpr(rq.signer) + " only."
	default:
		got = "Your statement is signed by the key " + fpr(rq.signer) + "."
	}
	return fmt.Sprintf("%s\nIt must be signed by the key\n\n    %s\n\nNothing has changed.\n", got, fpr(required)) + sig(rq.p)
}

func textConfirmedSet(rq *request, f string, moderated bool) string {
	if moderated {
		return fmt.Sprintf(`Your key

    %s

is confirmed for %s on %s. A moderator will now compare this
fingerprint with you (by a channel other than this mail) and approve the
subscription; you will get a mail then.
`, fpr(f), rq.from, rq.p.Address) + sig(rq.p)
	}
	return fmt.Sprintf("Your key %s is confirmed: %s is now a member of %s.\n", fpr(f), rq.from, rq.p.Address) + sig(rq.p)
}

func textConfirmedChange(rq *request, old, nw string, moderated bool) string {
	if moderated {
		return fmt.Sprintf(`Your new key

    %s

is confirmed. Until a moderator approves it, the list keeps using your
current key %s.
`, fpr(nw), fpr(old)) + sig(rq.p)
	}
	return fmt.Sprintf("Your key on %s is now\n\n    %s\n\n(it replaces %s).\n", rq.p.Address, fpr(nw), fpr(old)) + sig(rq.p)
}

func textNoKeyToRevoke(rq *request) string {
	return fmt.Sprintf("%s has no registered key on %s to revoke. Nothing has changed.\n", rq.from, rq.p.Address) + sig(rq.p)
}

func textNoRevocation(rq *request) string {
	return fmt.Sprintf(`No revocation certificate for your registered key

    %s

was found in your message (attach it, or paste its ASCII armor; for
example the output of "gpg --gen-revoke %s"). Nothing has changed.
`, fpr(rq.member.Fingerprint), rq.member.Fingerprint) + sig(rq.p)
}

func textRevokedPartly(rq *request) string {
	return fmt.Sprintf(`The revocation is applied. Your key %s remains usable
(the revoked parts are no longer used) and stays registered on %s.
`, fpr(rq.member.Fingerprint), rq.p.Address) + sig(rq.p)
}

func textRevoked(rq *request, old, tok string) string {
	return fmt.Sprintf(`Your key

    %s

is revoked. The list no longer uses it: you receive nothing from %s
until you register a new key.

To register a new key, reply to this mail with the new public key attached
and this line as the first line of the body:

key set %s

The token is valid until %s and can be used once.
`, fpr(old), rq.p.Address, tok, rq.now.Add(rq.p.Keys.TokenExpiry.D).UTC().Format("2006-01-02 15:04 MST")) + sig(rq.p)
}

func textApproved(p *policy.Policy, e PendingEntry) string {
	if e.Kind == KindKeyChange {
		return fmt.Sprintf("A moderator approved your new key on %s:\n\n    %s\n\nThe list now uses it.\n", p.Address, fpr(e.Fingerprint)) + sig(p)
	}
	return fmt.Sprintf(`A moderator approved your subscription: %s is now a member of %s,
with the key

    %s

Posts go to %s, encrypted to the list's key and signed with yours.
`, e.Address, p.Address, fpr(e.Fingerprint), p.Address) + sig(p)
}

func textRejected(p *policy.Policy, e PendingEntry) string {
	if e.Kind == KindKeyChange {
		return fmt.Sprintf("A moderator did not approve your new key %s on %s.\nThe list keeps using your key %s.\n", fpr(e.Fingerprint), p.Address, fpr(e.OldFingerprint)) + sig(p)
	}
	return fmt.Sprintf("A moderator did not approve the subscription of %s to %s.\n", e.Address, p.Address) + sig(p)
}

func textModerator(p *policy.Policy, e PendingEntry) string {
	var what string
	if e.Kind == KindKeyChange {
		what = fmt.Sprintf("%s confirmed a new key for %s, to replace\n\n    %s\n\nby\n\n    %s", e.Address, p.Address, fpr(e.OldFingerprint), fpr(e.Fingerprint))
	} else {
		what = fmt.Sprintf("%s confirmed the key\n\n    %s\n\nto subscribe to %s", e.Address, fpr(e.Fingerprint), p.Address)
	}
	return fmt.Sprintf(`%s.

Compare the fingerprint with the person by another channel (in person, by
phone), then decide on the list host:

    listcrypt member approve %s %s
    listcrypt member reject %s %s
`, what, p.Address, e.Address, p.Address, e.Address) + sig(p)
}

// wrap breaks text into lines of at most width characters at spaces.
func wrap(text string, width int) string {
	var out []string
	for _, para := range strings.Split(text, "\n") {
		line := ""
		for _, w := range strings.Fields(para) {
			if line != "" && len(line)+1+len(w) > width {
				out = append(out, line)
				line = w
				continue
			}
			if line != "" {
				line += " "
			}
			line += w
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func textConflict(rq *request) string {
	return fmt.Sprintf("Your subscription to %s changed while your command was handled (another\ncommand or a moderator). Nothing has changed; send \"key show\" to see where\nyou stand.\n", rq.p.Address) + sig(rq.p)
}

// keyRefusalText is the fixed sentence for a refused key, by reason: the
// keyring's own sentence may quote the key (user IDs, armor headers, a
// parser's error) and goes to verified senders only (see parseKey).
func keyRefusalText(rq *request, err error, l keyring.Limits) string {
	if l.MaxKeySize <= 0 {
		l.MaxKeySize = keyring.DefaultLimits.MaxKeySize
	}
	if l.MaxKeySignatures <= 0 {
		l.MaxKeySignatures = keyring.DefaultLimits.MaxKeySignatures
	}
	export := "Please export it again, for example with: gpg --armor --export " + rq.from
	minimal := "Please send a minimal export of your key: gpg --armor --export-options export-minimal --export " + rq.from
	newKey := "Please create a new key (Ed25519/Curve25519, or RSA 3072) and send that."
	switch {
	case errors.Is(err, keyring.ErrKeyTooLarge):
		return fmt.Sprintf("Your key is more than the %d KiB this list accepts. %s", l.MaxKeySize/1024, minimal)
	case errors.Is(err, keyring.ErrTooManySignatures):
		return fmt.Sprintf("Your key carries more than %d signatures (certifications by other keys, possibly a flooding attack). %s", l.MaxKeySignatures, minimal)
	case errors.Is(err, keyring.ErrNoKey):
		return "No OpenPGP public key was found in what you sent. " + export
	case errors.Is(err, keyring.ErrSeveralKeys):
		return "You sent several keys; please send exactly one public key."
	case errors.Is(err, keyring.ErrSecretKey):
		return "You sent a SECRET key. listcrypt did not keep it, but anyone who saw this mail may have it: consider the key compromised, revoke it, and send only your public key (gpg --armor --export " + rq.from + ")."
	case errors.Is(err, keyring.ErrMalformedKey):
		return "Your key could not be read. " + export
	case errors.Is(err, keyring.ErrUnsupportedKey):
		return "Your key uses an algorithm, size or format listcrypt does not support. Please send an Ed25519/Curve25519 or RSA (3072 or 4096 bits) key."
	case errors.Is(err, keyring.ErrWeakRSA):
		return "RSA keys need at least 2048 bits, and your key (or one of its subkeys) has fewer. " + newKey
	case errors.Is(err, keyring.ErrObsoleteAlgorithm):
		return "Your key (or one of its subkeys) uses an obsolete public-key algorithm or curve that is no longer accepted. " + newKey
	case errors.Is(err, keyring.ErrWeakSelfSignatures):
		return "Your key is bound to its user IDs or its encryption subkey only by SHA-1 signatures, which can be forged. Renew the self-signatures with SHA-256 or better (for example: gpg --cert-digest-algo SHA256 --quick-set-expire YOUR-FINGERPRINT never) and send the key again."
	case errors.Is(err, keyring.ErrKeyRevoked):
		return "Your key has been revoked. Please send a new key."
	case errors.Is(err, keyring.ErrKeyExpired):
		return "Your key (or its encryption subkey) has expired. Extend its expiry date (gpg --quick-set-expire YOUR-FINGERPRINT 1y and gpg --quick-set-expire YOUR-FINGERPRINT 1y '*') and send it again."
	case errors.Is(err, keyring.ErrNoValidUserID):
		return "Your key has no user ID with a mail address and a valid self-signature at this time. Add one (gpg --quick-add-uid YOUR-FINGERPRINT 'Your Name <" + rq.from + ">'), check your computer's clock, and send the key again."
	case errors.Is(err, keyring.ErrNoEncryptionKey):
		return "Your key has no valid encryption subkey, so the list cannot encrypt to you. Add one (gpg --quick-add-key YOUR-FINGERPRINT cv25519 encr) and send the key again."
	case errors.Is(err, keyring.ErrAddressNotInKey):
		return "Your key has no user ID for " + rq.from + ". Add one (gpg --quick-add-uid YOUR-FINGERPRINT 'Your Name <" + rq.from + ">') and send the key again."
	}
	return "Your key could not be used. " + export
}

// oneLine makes a header value of someone else's mail fit one printable
// line of at most n bytes for a notice.
func oneLine(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == utf8.RuneError, r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func textBounceOwner(p *policy.Policy, failures map[string]bounce.Recipient, sts []store.BounceState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Copies of posts to %s keep bouncing for these members: their bounce\nscores reached bounces.score_threshold %g.\n", p.Address, p.Bounces.ScoreThreshold)
	who := "ADDRESS"
	if len(sts) == 1 {
		who = sts[0].Address
	}
	disabled := false
	for _, st := range sts {
		f := failures[st.Address]
		how := "temporary"
		if f.Permanent {
			how = "permanent"
		}
		fmt.Fprintf(&b, "\n    %s\n      score %g after %d counted bounces; the last: %s failure", st.Address, st.Score, st.Bounces, how)
		if f.Status != "" {
			fmt.Fprintf(&b, ", status %s", f.Status)
		}
		b.WriteString("\n")
		if f.Diagnostic != "" {
			fmt.Fprintf(&b, "      the remote server said: %s\n", oneLine(f.Diagnostic, 300))
		}
		if st.Disabled() {
			disabled = true
			b.WriteString("      delivery disabled\n")
		}
	}
	if disabled {
		fmt.Fprintf(&b, `
Delivery to a disabled member stopped (bounces.action = "disable"): it
gets no posts until you enable it again on the list host:

    listcrypt member enable %s %s

Each was told, encrypted to its key where it has a usable one.
`, p.Address, who)
	} else {
		fmt.Fprintf(&b, `
Nothing was changed (bounces.action = "notify"). To stop sending to one:

    listcrypt member disable %s %s
`, p.Address, who)
	}
	return b.String() + sig(p)
}

func textBounceMember(p *policy.Policy, st store.BounceState) string {
	return fmt.Sprintf(`Copies of posts to %s for your address %s were returned
by the mail system %d times (the last on %s), so the list stopped sending
you posts. You are still a member and your key is kept.

If your mailbox works again, ask the list owners to enable your delivery.
`, p.Address, st.Address, st.Bounces, st.LastBounceAt.UTC().Format("2006-01-02")) + sig(p)
}

// textForward summarises mail at the bounce address for the owners.
// The Subject only with withSubject (the forward is encrypted): an
// auto-reply's subject may quote a decrypted post's.
func textForward(p *policy.Policy, h textproto.Header, size int, kind string, withSubject bool) string {
	what := map[string]string{
		BounceAutoReply:    "an automatic reply (vacation, out of office)",
		BounceUnattributed: "a bounce that names no member of the list",
		BounceOther:        "mail that is no bounce listcrypt can read",
	}[kind]
	var b strings.Builder
	fmt.Fprintf(&b, "This arrived at %s, the list's bounce address: %s.\nlistcrypt changed nothing for it.\n\n", p.BounceAddress(), what)
	for _, name := range []string{"From", "To", "Subject", "Date", "Message-Id"} {
		if name == "Subject" && !withSubject {
			continue
		}
		if v := h.Get(name); v != "" {
			fmt.Fprintf(&b, "    %-11s %s\n", name+":", oneLine(v, 200))
		}
	}
	fmt.Fprintf(&b, "    %-11s %d bytes\n", "Size:", size)
	return b.String()
}

// textKeyChanged is the notice of a list key change (KeyChangeNotices).
func textKeyChanged(p *policy.Policy, oldFpr, newFpr string, graceEnd time.Time) string {
	return fmt.Sprintf(`The key of the list %s has changed.

New list key: %s
Old list key: %s

The new key is attached to this message (%s.asc). Import it into your
mail program or OpenPGP tool (for example: gpg --import %s.asc), and
encrypt your posts to it from now on. This message is signed by the old
key and by the new one, so you can check that the change comes from the
list.

Posts encrypted to the old key are accepted until %s; after that they
are refused. Send "key get" to %s for the current list key at any time.
`, p.Address, fpr(newFpr), fpr(oldFpr), p.Address, p.Address,
		graceEnd.UTC().Format("2006-01-02 15:04 MST"), p.RequestAddress()) + sig(p)
}
