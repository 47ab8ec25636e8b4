package milter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// Through a real MTA (Postfix with contrib/postfix's lines, Sendmail
// 8.17 with contrib/sendmail/listcrypt.mc) with listcrypt-milter on a
// unix socket, every decision a sender meets, with the reply the sending
// client reads during the SMTP dialogue (policy/replies.go) and what
// reaches the sink: a member's post (and one made by gpg) is accepted
// and reaches each member once, encrypted; ordinary mail passes
// untouched; a plain post, a non-member's, an unsigned one, one signed by
// another member's key, a replay, tampered ciphertext and a post mixing
// plain and encrypted parts are refused with the policy's code and text
// and deliver nothing; with post.signed = "hold" an unsigned post is
// accepted, stored, its moderator told (encrypted, nothing of the post),
// and reaches the members once approved; every decision line carries
// the MTA's queue id.
func TestEndToEndThroughMTAs(t *testing.T) {
	for _, mta := range mtas {
		t.Run(mta, func(t *testing.T) { endToEnd(t, mta) })
	}
}

// endToEnd is TestEndToEndThroughMTAs through one MTA.
func endToEnd(t *testing.T, mta string) {
	requireMTA(t, mta)
	pgptest.RequireTool(t, "gpg")
	ctx := context.Background()
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	bob := site.AddMember(t, "bob@example.org")
	// bob moderates: the notice of a held post is encrypted to him.
	site.EditPolicy(t, "moderators = []", `moderators = ["bob@example.org"]`)

	// A member whose key and post come from real GnuPG.
	g := pgptest.NewGPG(t)
	carolFpr := g.GenKey("Carol <carol@example.org>")
	if _, err := site.Admin.AddMember(ctx, milterfix.List, "carol@example.org", g.Export(carolFpr)); err != nil {
		t.Fatal(err)
	}
	listArmored, err := site.Admin.ExportListKey(ctx, milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	g.Import([]byte(listArmored))
	mallory := milterfix.NewKey(t, "mallory@example.net")

	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	m := startMTA(t, mta, sock)
	site.Config.Reinject.Address = m.ReinjectAddr()
	d, logs := startDaemon(t, site)
	list := []*openpgp.Entity{site.ListKey}
	const bounce = "devs-bounces@lists.example.org"
	members := "alice@example.org,bob@example.org,carol@example.org"

	send := func(from string, to []string, msg []byte) error {
		t.Helper()
		return rig.Send(m.SMTPAddr(), from, to, msg)
	}
	decisions := 0
	accepted := func(what string, err error) {
		t.Helper()
		decisions++
		if err != nil {
			t.Fatalf("%s: refused: %v", what, err)
		}
	}
	refused := func(what string, err error, code int, text string) {
		t.Helper()
		decisions++
		var se *rig.SMTPError
		if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Error(), text) {
			t.Fatalf("%s: got %v, want %d ...%s", what, err, code, text)
		}
	}

	// Accepted: a member's signed, encrypted post.
	good := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: "hello list"})
	accepted("member's post", send("alice@example.org", []string{milterfix.List}, good))
	// Accepted: a post made by gpg --sign --encrypt, wrapped in PGP/MIME.
	inner := "Content-Type: text/plain; charset=utf-8\r\n\r\nfrom gpg\r\n"
	ct, _ := g.Run([]byte(inner), "--armor", "--sign", "--encrypt", "--local-user", carolFpr, "--recipient", milterfix.List, "--trust-model", "always")
	accepted("gpg post", send("carol@example.org", []string{milterfix.List}, pgpMIME("carol@example.org", "<gpg-1@example.org>", ct)))
	// Ordinary mail passes untouched.
	plainMail := []byte("From: x@example.net\r\nTo: bob@example.org\r\nSubject: not for a list\r\nMessage-ID: <p@x>\r\n\r\nhi bob\r\n")
	accepted("ordinary mail", send("x@example.net", []string{"bob@example.org"}, plainMail))

	// Refused, each with the policy's reply.
	const canary = "REFUSED-E2E-CANARY"
	refused("plain post", send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", Body: canary})),
		550, `5.7.1 devs@lists.example.org accepts only posts encrypted to the list key; send "key get" to devs-request@lists.example.org`)
	refused("non-member", send("mallory@example.net", []string{milterfix.List},
		milterfix.Build(t, milterfix.Post{From: "mallory@example.net", SignWith: mallory, EncryptTo: list, Body: canary})),
		550, `5.7.1 the From address is not a member of devs@lists.example.org; to subscribe, send "subscribe" to devs-request@lists.example.org`)
	refused("unsigned", send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", EncryptTo: list, Body: canary})),
		550, "5.7.1 devs@lists.example.org accepts only posts signed with your registered key")
	refused("signed by another member", send("alice@example.org", []string{milterfix.List},
		milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: bob, EncryptTo: list, Body: canary})),
		550, "5.7.7 the post is signed by a member key that is not registered for the From address")
	// The same post from another envelope sender: a replay. (From the
	// same one it is a retry of a completed post: retry_test.go.)
	refused("replay", send("x@example.net", []string{milterfix.List}, good),
		550, "5.7.1 this post (its signature or ciphertext) was already sent to the list")
	// Tampered ciphertext: one base64 character changed in the middle.
	tampered := append([]byte(nil), good...)
	j := bytes.Index(tampered, []byte("-----BEGIN PGP MESSAGE-----")) + 300
	if tampered[j] == 'Q' {
		tampered[j] = 'R'
	} else {
		tampered[j] = 'Q'
	}
	var se *rig.SMTPError
	decisions++
	if err := send("alice@example.org", []string{milterfix.List}, tampered); !errors.As(err, &se) || se.Code/100 != 5 {
		t.Fatalf("tampered post: %v, want a 5xx refusal", err)
	}
	// An outsider wraps a captured list ciphertext between plain parts.
	ctStart := bytes.Index(good, []byte("-----BEGIN PGP MESSAGE-----"))
	ctEnd := bytes.Index(good, []byte("-----END PGP MESSAGE-----")) + len("-----END PGP MESSAGE-----")
	mixed := []byte("From: alice@example.org\r\nTo: devs@lists.example.org\r\nSubject: look\r\nMessage-ID: <mixed@x>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=mx\r\n\r\n--mx\r\nContent-Type: text/html\r\n\r\n<img src=\"https://evil.example/x\">\r\n" +
		"--mx\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=in\r\n\r\n" +
		"--in\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--in\r\nContent-Type: application/octet-stream\r\n\r\n" +
		string(good[ctStart:ctEnd]) + "\r\n--in--\r\n--mx\r\nContent-Type: text/html\r\n\r\n</div>\r\n--mx--\r\n")
	refused("mixed parts", send("alice@example.org", []string{milterfix.List}, mixed), 554, "5.6.0 the post mixes encrypted and plain parts")

	// Each accepted post reaches every member once, encrypted: one batch
	// (batch_size 50) rewritten in place, from the list's bounce address;
	// nothing of a refused post reaches anyone.
	copies, toBob := e2eDeliveries(t, m, members, 2, nil)
	if toBob != 1 {
		t.Fatalf("ordinary mail to bob delivered %d times, want 1", toBob)
	}
	for _, c := range copies {
		if bytes.Contains(c, []byte("hello list")) || bytes.Contains(c, []byte("from gpg")) {
			t.Fatal("a list copy carries the post in clear")
		}
		// The list's Autocrypt header arrives intact through the MTA:
		// folded lines, the list key (docs/outbound.md).
		checkListAutocrypt(t, c, site.ListKey)
		for _, k := range []*openpgp.Entity{alice, bob} {
			pt := milterfix.DecryptCopy(t, c, k, site.ListKey)
			if !bytes.Contains(pt, []byte("hello list")) && !bytes.Contains(pt, []byte("from gpg")) {
				t.Fatalf("member copy decrypts to %q", pt)
			}
		}
		// carol reads hers with GnuPG, checking the list's signature.
		// With hidden recipients gpg 2.2 tries its key on every key packet
		// and reports the failed tries, exiting 2 although it decrypted and
		// verified: judge by its output, not its exit code.
		out, stderr, _ := g.RunErr(milterfix.ArmoredPart(t, c), "--decrypt")
		if (!bytes.Contains(out, []byte("hello list")) && !bytes.Contains(out, []byte("from gpg"))) || !bytes.Contains(stderr, []byte("Good signature")) {
			t.Fatalf("gpg: %s\n%s", out, stderr)
		}
	}

	// Held: with post.signed = "hold" a member's unsigned post is taken
	// (250), stored, and only its moderator hears of it until approved.
	site.EditPolicy(t, `signed = "require"`, `signed = "hold"`)
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	const heldText = "HELD-E2E-CANARY"
	before := len(m.Sink().Messages())
	accepted("held post", send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", EncryptTo: list, Body: heldText})))
	holds, err := site.Admin.Holds(ctx, milterfix.List)
	if err != nil || len(holds) != 1 {
		t.Fatalf("holds: %+v, %v; want one", holds, err)
	}
	notice := waitSink(t, m.Sink(), "the moderator's notice", func(ms []rig.Delivered) bool { return len(ms) > before })[before]
	if strings.Join(notice.To, ",") != "bob@example.org" {
		t.Fatalf("after the hold: a delivery from <%s> to %v, want the moderator's notice to bob", notice.From, notice.To)
	}
	if pt := milterfix.DecryptCopy(t, notice.Data, bob, site.ListKey); !bytes.Contains(pt, []byte("A post to devs@lists.example.org waits for a moderator.")) || !bytes.Contains(pt, []byte("reason:   not-signed")) || bytes.Contains(pt, []byte(heldText)) {
		t.Fatalf("moderator notice reads %q", pt)
	}
	if _, err := site.Admin.ApproveHold(ctx, holds[0].ID); err != nil {
		t.Fatalf("approve: %v", err)
	}
	copies, _ = e2eDeliveries(t, m, members, 3, notice.Data)
	if pt := milterfix.DecryptCopy(t, copies[2], alice, site.ListKey); !bytes.Contains(pt, []byte(heldText)) {
		t.Fatalf("approved post decrypts to %q", pt)
	}
	for _, d := range m.Sink().Messages() {
		if bytes.Contains(d.Data, []byte(canary)) || bytes.Contains(d.Data, []byte(heldText)) {
			t.Fatalf("a post in clear from <%s> to %v", d.From, d.To)
		}
	}

	// Every decision line carries the queue id the MTA logged for the
	// transaction.
	maillog := m.Maillog()
	for _, want := range []string{"action=accept reason=ok", "action=reject reason=not-encrypted", "action=reject reason=non-member", "action=hold reason=not-signed"} {
		id := decisionQueueID(t, logs.String(), want)
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(id) + `: .*from=<(alice|mallory)@example\.(org|net)>`).MatchString(maillog) {
			t.Errorf("decision %q has queue_id=%s, which %s's log does not give to the sender's transaction:\n%s", want, id, mta, maillog)
		}
	}
	t.Logf("through %s: %d sender-facing decisions, each with its reply and deliveries checked", mta, decisions)
}

// e2eDeliveries waits until the MTA's queue is empty and the sink has
// wantCopies list copies, and returns them in order with the number of
// ordinary messages to bob. Each list copy goes from the bounce address
// to exactly members; anything else at the sink but the moderator's
// notice (when not nil) fails the test.
func e2eDeliveries(t *testing.T, m mtaRig, members string, wantCopies int, notice []byte) (copies [][]byte, toBob int) {
	t.Helper()
	waitSink(t, m.Sink(), fmt.Sprintf("%d list copies", wantCopies), func(ms []rig.Delivered) bool {
		n := 0
		for _, d := range ms {
			if d.From == "devs-bounces@lists.example.org" && !bytes.Equal(d.Data, notice) {
				n++
			}
		}
		return n >= wantCopies
	})
	if err := m.WaitQueueEmpty(ctxT(t)); err != nil {
		t.Fatalf("queue: %v", err)
	}
	notices := 0
	for _, d := range m.Sink().Messages() {
		switch {
		case notice != nil && bytes.Equal(d.Data, notice):
			notices++
		case d.From == "devs-bounces@lists.example.org":
			// Sendmail hands the recipients on in another order.
			if to := slices.Sorted(slices.Values(d.To)); strings.Join(to, ",") != members {
				t.Fatalf("list copy to %v, want %s", d.To, members)
			}
			copies = append(copies, d.Data)
		case strings.Join(d.To, ",") == "bob@example.org" && bytes.Contains(d.Data, []byte("hi bob")):
			toBob++
		default:
			t.Fatalf("unexpected delivery from <%s> to %v:\n%s", d.From, d.To, d.Data)
		}
	}
	if len(copies) != wantCopies || notice != nil && notices != 1 {
		t.Fatalf("%d list copies and %d moderator notices, want %d and 1", len(copies), notices, wantCopies)
	}
	return copies, toBob
}

// decisionQueueID returns the queue_id of the one decision line of the
// milter log that contains want.
func decisionQueueID(t *testing.T, log, want string) string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, want) {
			continue
		}
		m := regexp.MustCompile(`\bqueue_id=(\S+)`).FindStringSubmatch(line)
		if m == nil || m[1] == `""` {
			t.Fatalf("decision line without a queue id: %s", line)
		}
		ids = append(ids, m[1])
	}
	if len(ids) == 0 {
		t.Fatalf("no decision line with %q:\n%s", want, log)
	}
	return ids[0]
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pgpMIME wraps an armored OpenPGP message as RFC 3156 §4 multipart/encrypted.
func pgpMIME(from, msgID string, armored []byte) []byte {
	const b = "gpg-boundary"
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: gpg post\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=%q\r\n\r\n"+
		"--%s\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"+
		"--%s\r\nContent-Type: application/octet-stream\r\n\r\n%s\r\n--%s--\r\n",
		from, milterfix.List, msgID, b, b, b, strings.ReplaceAll(string(armored), "\n", "\r\n"), b))
}
