package milter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// A real Postfix (contrib/postfix lines, milter_default_action = tempfail)
// with listcrypt-milter on a unix socket: posts go in over SMTP; refused
// posts get the policy's reply code and text during the SMTP dialogue;
// accepted posts and ordinary mail are delivered; with the milter stopped
// Postfix answers 4xx (fail closed).
func TestEndToEndThroughPostfix(t *testing.T) {
	rig.Require(t)
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	bob := site.AddMember(t, "bob@example.org")

	// A member whose key and post come from real GnuPG.
	pgptest.RequireTool(t, "gpg")
	g := pgptest.NewGPG(t)
	carolFpr := g.GenKey("Carol <carol@example.org>")
	if _, err := site.Admin.AddMember(context.Background(), milterfix.List, "carol@example.org", g.Export(carolFpr)); err != nil {
		t.Fatal(err)
	}
	listArmored, err := site.Admin.ExportListKey(context.Background(), milterfix.List)
	if err != nil {
		t.Fatal(err)
	}
	g.Import([]byte(listArmored))

	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := rig.Start(t, rig.Options{MilterAddr: "unix:" + sock})
	site.Config.Reinject.Address = pf.ReinjectAddr()
	d, logs := startDaemon(t, site)
	list := []*openpgp.Entity{site.ListKey}

	send := func(from string, to []string, msg []byte) error {
		t.Helper()
		return rig.Send(pf.SMTPAddr(), from, to, msg)
	}
	refused := func(err error, code int, text string) {
		t.Helper()
		var se *rig.SMTPError
		if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Error(), text) {
			t.Fatalf("got %v, want %d ...%s", err, code, text)
		}
	}

	// Accepted: a member's signed, encrypted post.
	good := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list, Body: "hello list"})
	if err := send("alice@example.org", []string{milterfix.List}, good); err != nil {
		t.Fatalf("good post refused: %v", err)
	}
	// Accepted: a post made by gpg --sign --encrypt, wrapped in PGP/MIME.
	inner := "Content-Type: text/plain; charset=utf-8\r\n\r\nfrom gpg\r\n"
	ct, _ := g.Run([]byte(inner), "--armor", "--sign", "--encrypt", "--local-user", carolFpr, "--recipient", milterfix.List, "--trust-model", "always")
	gpgPost := pgpMIME("carol@example.org", "<gpg-1@example.org>", ct)
	if err := send("carol@example.org", []string{milterfix.List}, gpgPost); err != nil {
		t.Fatalf("gpg post refused: %v", err)
	}
	// Ordinary mail passes untouched.
	plainMail := []byte("From: x@example.net\r\nTo: bob@example.org\r\nSubject: not for a list\r\nMessage-ID: <p@x>\r\n\r\nhi bob\r\n")
	if err := send("x@example.net", []string{"bob@example.org"}, plainMail); err != nil {
		t.Fatalf("ordinary mail refused: %v", err)
	}

	// Refused, each with the policy's reply.
	refused(send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", Body: "plain"})),
		550, `5.7.1 devs@lists.example.org accepts only posts encrypted to the list key; send "key get" to devs-request@lists.example.org`)
	refused(send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: bob, EncryptTo: list})),
		550, "5.7.7")
	// The same post from another envelope sender: a replay. (From the
	// same one it is a retry of a completed post: retry_test.go.)
	refused(send("x@example.net", []string{milterfix.List}, good), 550, "already sent")
	// Tampered ciphertext: one base64 character changed in the middle.
	tampered := append([]byte(nil), good...)
	j := bytes.Index(tampered, []byte("-----BEGIN PGP MESSAGE-----")) + 300
	if tampered[j] == 'Q' {
		tampered[j] = 'R'
	} else {
		tampered[j] = 'Q'
	}
	var se *rig.SMTPError
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
	refused(send("alice@example.org", []string{milterfix.List}, mixed), 554, "mixes")

	// Each accepted post reaches every member once, encrypted: one batch
	// (batch_size 50) rewritten in place, from the list's bounce address.
	got, err := pf.Sink().Wait(ctxT(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	var copies [][]byte
	toBob := 0
	for _, m := range got {
		switch {
		case m.From == "devs-bounces@lists.example.org":
			if strings.Join(m.To, ",") != "alice@example.org,bob@example.org,carol@example.org" {
				t.Fatalf("batch recipients %v", m.To)
			}
			copies = append(copies, m.Data)
		case len(m.To) == 1 && m.To[0] == "bob@example.org" && bytes.Contains(m.Data, []byte("hi bob")):
			toBob++
		}
	}
	if len(copies) != 2 || toBob != 1 {
		t.Fatalf("deliveries: %d list copies, %d to bob; want 2 and 1", len(copies), toBob)
	}
	for _, c := range copies {
		if bytes.Contains(c, []byte("hello list")) || bytes.Contains(c, []byte("from gpg")) {
			t.Fatal("a list copy carries the post in clear")
		}
		for _, k := range []*openpgp.Entity{alice, bob} {
			pt := milterfix.DecryptCopy(t, c, k, site.ListKey)
			if !bytes.Contains(pt, []byte("hello list")) && !bytes.Contains(pt, []byte("from gpg")) {
				t.Fatalf("member copy decrypts to %q", pt)
			}
		}
		// carol reads hers with GnuPG, checking the list's signature.
		ct := milterfix.ArmoredPart(t, c)
		// With hidden recipients gpg 2.2 tries its key on every key packet
		// and reports the failed tries, exiting 2 although it decrypted and
		// verified: judge by its output, not its exit code.
		out, stderr, _ := g.RunErr(ct, "--decrypt")
		if (!bytes.Contains(out, []byte("hello list")) && !bytes.Contains(out, []byte("from gpg"))) || !bytes.Contains(stderr, []byte("Good signature")) {
			t.Fatalf("gpg: %s\n%s", out, stderr)
		}
	}
	if !strings.Contains(logs.String(), "action=reject reason=not-encrypted") {
		t.Fatal("decision not logged")
	}

	// Fail closed: with the milter stopped, Postfix answers 4xx.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		t.Logf("shutdown: %v", err)
	}
	err = send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: list}))
	if !errors.As(err, &se) || se.Code/100 != 4 {
		t.Fatalf("milter down: got %v, want a 4xx", err)
	}
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
