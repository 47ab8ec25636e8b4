package workflow_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

const (
	aliceAddr   = "alice@example.org"
	carolAddr   = "carol@example.org"
	malloryAddr = "mallory@evil.example"
	victimAddr  = "victim@example.org"
)

// limits rewrites the [responder] table of the policy.
func limits(perAddress, perList int, window string) func(string) string {
	return func(p string) string {
		p = strings.Replace(p, "max_replies_per_address = 5", fmt.Sprintf("max_replies_per_address = %d", perAddress), 1)
		p = strings.Replace(p, "max_replies_per_list = 200", fmt.Sprintf("max_replies_per_list = %d", perList), 1)
		return strings.Replace(p, `reply_window = "24h"`, fmt.Sprintf("reply_window = %q", window), 1)
	}
}

// syncBuf is a log destination shared by goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// captureLog sends the responder's log (debug and up) to a buffer.
func (e *env) captureLog() *syncBuf {
	b := &syncBuf{}
	e.r.Log = slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return b
}

// encryptArmored encrypts data to the list key, signed inside by signer
// (nil: unsigned), as a mail client does for a post.
func encryptArmored(t *testing.T, data []byte, signer, to *openpgp.Entity) string {
	t.Helper()
	var ct bytes.Buffer
	aw, err := armor.Encode(&ct, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	var signers []*openpgp.Entity
	if signer != nil {
		signers = []*openpgp.Entity{signer}
	}
	w, err := openpgp.EncryptWithParams(aw, []*openpgp.Entity{to}, nil,
		&openpgp.EncryptParams{Signers: signers, Config: keyring.PacketConfig(keyring.DefaultLimits, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return ct.String()
}

// pgpMIMEMail wraps an encrypted inner MIME entity as RFC 3156 §4
// multipart/encrypted from from to the request address.
func pgpMIMEMail(t *testing.T, from, subject, inner string, signer, to *openpgp.Entity) []byte {
	t.Helper()
	ct := encryptArmored(t, []byte(strings.ReplaceAll(strings.ReplaceAll(inner, "\r\n", "\n"), "\n", "\r\n")), signer, to)
	const b = "oracle-enc"
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d.oracle@example.org>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"%s\"\r\n\r\n"+
		"--%s\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"+
		"--%s\r\nContent-Type: application/octet-stream\r\n\r\n%s\r\n--%s--\r\n",
		from, request, subject, time.Now().UnixNano(), b, b, b, strings.ReplaceAll(ct, "\n", "\r\n"), b))
}

// inlineMail is a text/plain mail whose body is the armored encrypted text.
func inlineMail(t *testing.T, from, subject, text string, signer, to *openpgp.Entity) []byte {
	t.Helper()
	return wftest.Mail(from, request, subject, encryptArmored(t, []byte(text), signer, to))
}

// opened returns the newest mail to addr: raw bytes, Subject and text
// (decrypted with key when it is encrypted to it).
func (e *env) opened(addr string, key *openpgp.Entity) (raw []byte, subject, text string) {
	e.t.Helper()
	msgs := e.mail.To(addr)
	if len(msgs) == 0 {
		e.t.Fatalf("no mail to %s", addr)
	}
	raw = msgs[len(msgs)-1].Data
	if m := regexp.MustCompile(`(?m)^Subject: (.*)\r$`).FindSubmatch(raw); m != nil {
		subject = string(m[1])
	}
	return raw, subject, wftest.Open(e.t, raw, key, e.site.ListKey)
}

// A captured encrypted post re-sent to LIST-request by someone who did
// not write it: whatever its content, the reply is one and the same
// fixed text, no line of the plaintext reaches the reply, the log or the
// outcome, and nothing changes. The author, verified, is still answered.
func TestNoDecryptionOracle(t *testing.T) {
	e := newEnv(t, limits(1000, 1000, "24h"))
	logs := e.captureLog()
	alice := e.site.AddMember(t, aliceAddr)
	carol := e.site.AddMember(t, carolAddr)
	mallory := milterfix.NewKey(t, malloryAddr)
	lk := e.site.ListKey

	const secret = "TOPSECRET-4711"
	// Captured plaintexts, each starting with a different command-like line.
	bodies := map[string]string{
		"syntax error":   "key set " + secret + "\nThe merger closes on Friday.",
		"help":           "help\nThe merger " + secret,
		"subscribe":      "subscribe\n" + secret,
		"key get":        "key get\n" + secret,
		"key confirm":    "key confirm " + secret,
		"prose":          "Hello all,\n" + secret + "\n",
		"token-like":     "unsubscribe " + secret + secret,
		"statement-like": "key confirm ABCDEFGHIJKLMNOPQRSTUVWXYZ234567\nlist: " + list + "\naddress: " + malloryAddr + "\nfingerprint: " + strings.Repeat("AB", 20) + "\n" + secret,
	}
	entity := func(body string) string { return "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n" }
	variants := []struct {
		name string
		from string
		key  *openpgp.Entity // opens the reply (the From address's member key)
		mail func(body string) []byte
	}{
		{"pgp-mime, member's signature, outsider's From", malloryAddr, nil, func(b string) []byte {
			return pgpMIMEMail(t, malloryAddr, "Re: plans", entity(b), alice, lk)
		}},
		{"pgp-mime, command in the Subject", malloryAddr, nil, func(b string) []byte {
			return pgpMIMEMail(t, malloryAddr, "key get", entity(b), alice, lk)
		}},
		{"pgp-mime, key set in the Subject", malloryAddr, nil, func(b string) []byte {
			return pgpMIMEMail(t, malloryAddr, "key set ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", entity(b), alice, lk)
		}},
		{"inline, member's signature", malloryAddr, nil, func(b string) []byte {
			return inlineMail(t, malloryAddr, "plans", b, alice, lk)
		}},
		{"inline, command in the Subject", malloryAddr, nil, func(b string) []byte {
			return inlineMail(t, malloryAddr, "help", b, alice, lk)
		}},
		{"pgp-mime, non-member's signature", malloryAddr, nil, func(b string) []byte {
			return pgpMIMEMail(t, malloryAddr, "x", entity(b), mallory, lk)
		}},
		{"pgp-mime, unsigned", malloryAddr, nil, func(b string) []byte {
			return pgpMIMEMail(t, malloryAddr, "x", entity(b), nil, lk)
		}},
		{"pgp-mime, member's key, another member's From", carolAddr, carol, func(b string) []byte {
			return pgpMIMEMail(t, carolAddr, "x", entity(b), alice, lk)
		}},
		{"pgp-mime, broken inner MIME", malloryAddr, nil, func(b string) []byte {
			return pgpMIMEMail(t, malloryAddr, "x", "Content-Type: text/plain\r\nContent-Transfer-Encoding: x-"+secret+"\r\n\r\n"+b+"\r\n", alice, lk)
		}},
		{"pgp-mime, inner header damaged", malloryAddr, nil, func(b string) []byte {
			return pgpMIMEMail(t, malloryAddr, "x", secret+" no header\r\n"+b+"\r\n", alice, lk)
		}},
		{"pgp-mime, not for the list key", malloryAddr, nil, func(b string) []byte {
			return pgpMIMEMail(t, malloryAddr, "x", entity(b), alice, mallory)
		}},
	}
	before := e.state()
	var fixedSubject, fixedText string
	for _, v := range variants {
		for name, body := range bodies {
			n := len(e.mail.To(v.from))
			logStart := len(logs.String())
			out, err := e.r.Handle(context.Background(), v.mail(body), request)
			if err != nil {
				t.Fatalf("%s / %s: %v", v.name, name, err)
			}
			if got := len(e.mail.To(v.from)); got != n+1 {
				t.Fatalf("%s / %s: %d replies, want 1", v.name, name, got-n)
			}
			raw, subject, text := e.opened(v.from, v.key)
			text = strings.ReplaceAll(text, v.from, "SENDER")
			for where, s := range map[string]string{
				"reply": string(raw) + text, "log": logs.String()[logStart:], "outcome": fmt.Sprintf("%+v", *out),
			} {
				for _, line := range strings.Split(body, "\n") {
					if len(line) >= 12 && strings.Contains(s, line) || strings.Contains(s, secret) {
						t.Errorf("%s / %s: the %s carries plaintext %q:\n%s", v.name, name, where, line, s)
					}
				}
			}
			if out.Command != "" || out.Result != "refused" {
				t.Errorf("%s / %s: outcome %+v, want refused without a command", v.name, name, *out)
			}
			if fixedText == "" {
				fixedSubject, fixedText = subject, text
			} else if subject != fixedSubject || text != fixedText {
				t.Errorf("%s / %s: the reply depends on the content:\n%s\n%s\nwant\n%s\n%s", v.name, name, subject, text, fixedSubject, fixedText)
			}
		}
	}
	if after := e.state(); after != before {
		t.Errorf("state changed:\n%s\n%s", before, after)
	}

	// The author, verified by her registered key, is answered, and her
	// own line is quoted to her, encrypted to her key.
	e.send(pgpMIMEMail(t, aliceAddr, "x", entity(bodies["syntax error"]), alice, lk))
	raw, _, text := e.opened(aliceAddr, alice)
	if !strings.Contains(text, "key set "+secret) || bytes.Contains(raw, []byte(secret)) {
		t.Errorf("the verified author's reply:\n%s\n%s", text, raw)
	}
	e.send(inlineMail(t, aliceAddr, "x", "key get", alice, lk))
	if _, _, text := e.opened(aliceAddr, alice); !strings.Contains(text, "public key of "+list) {
		t.Errorf("key get of a verified member:\n%s", text)
	}
}

// Replies to senders whose signature did not verify carry only fixed
// text: none of the sender's bytes (a line, a token, a MIME header value,
// a key's user ID, the Message-ID) comes back in a mail the list signs.
// A verified member still sees the line quoted.
func TestUnverifiedRepliesFixedText(t *testing.T) {
	e := newEnv(t, limits(1000, 1000, "24h"))
	logs := e.captureLog()
	const payload = "evil-payload-0815"
	payloadKey := milterfix.NewKey(t, payload+"@example.org")
	e.send(wftest.Mail(victimAddr, request, "subscribe", "subscribe"))
	tok := wftest.Token(t, e.reply(victimAddr, nil))
	withMsgID := func(m []byte) []byte {
		return regexp.MustCompile(`Message-ID: <[^>]*>`).ReplaceAll(m, []byte("Message-ID: <"+payload+"@example.org>"))
	}
	mixed := func(part string) []byte {
		return []byte("From: <" + victimAddr + ">\r\nTo: <" + request + ">\r\nSubject: x\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" + part + "\r\n--b1--\r\n")
	}
	for _, c := range []struct {
		name string
		mail []byte
		want string // in the reply
	}{
		{"bad token line", wftest.Mail(victimAddr, request, "x", "key set "+payload), `"key set"`},
		{"two tokens", wftest.Mail(victimAddr, request, "x", "key confirm "+payload+" "+payload), `"key confirm"`},
		{"bad token in the Subject", wftest.Mail(victimAddr, request, "key set "+payload, ""), `"key set"`},
		{"bad token, signed by a non-member", milterfix.Build(t, milterfix.Post{From: victimAddr, Body: "key set " + payload, SignWith: payloadKey}), `"key set"`},
		{"unknown transfer encoding", mixed("Content-Type: text/plain\r\nContent-Transfer-Encoding: " + payload + "\r\n\r\nhelp"), "could not be read"},
		{"bad Content-Type", mixed("Content-Type: text/" + payload + "; ===\r\n\r\nhelp"), "could not be read"},
		{"key with another user ID", wftest.Mail(victimAddr, request, "x", "key set "+tok, armored(t, payloadKey)), "no user ID for"},
		{"message id", withMsgID(wftest.Mail(victimAddr, request, "x", "help")), "command address"},
	} {
		n := len(e.mail.To(victimAddr))
		logStart := len(logs.String())
		out := e.send(c.mail)
		if len(e.mail.To(victimAddr)) != n+1 {
			t.Fatalf("%s: no reply (%+v)", c.name, *out)
		}
		raw, _, text := e.opened(victimAddr, nil)
		if !strings.Contains(text, c.want) {
			t.Errorf("%s: reply lacks %q:\n%s", c.name, c.want, text)
		}
		for where, s := range map[string]string{"reply": string(raw) + text, "log": logs.String()[logStart:], "outcome": fmt.Sprintf("%+v", *out)} {
			if strings.Contains(strings.ToLower(s), payload) {
				t.Errorf("%s: the %s carries the sender's bytes:\n%s", c.name, where, s)
			}
		}
	}
	// A verified member sees the line quoted (encrypted to the member).
	e.send(milterfix.Build(t, milterfix.Post{From: modAddr, Body: "key set " + payload, SignWith: e.mod}))
	if raw, _, text := e.opened(modAddr, e.mod); !strings.Contains(text, "key set "+payload) || bytes.Contains(raw, []byte(payload)) {
		t.Errorf("verified member's reply:\n%s", text)
	}
}

// engines runs fn on a site with the SQLite store and on one with a
// PostgreSQL store.
func engines(t *testing.T, edit func(string) string, fn func(t *testing.T, e *env)) {
	t.Run(store.EngineSQLite, func(t *testing.T) { fn(t, newEnv(t, edit)) })
	t.Run(store.EnginePostgres, func(t *testing.T) {
		fn(t, newEnvWith(t, milterfix.Options{Database: storetest.PostgresDSN(t)}, edit))
	})
}

// Spoofed commands from one address: replies stop at
// max_replies_per_address, whatever the command (encrypted or not),
// without an error (the MTA must not bounce); other addresses are still
// answered; after reply_window (injected clock) the address is answered
// again and the old rows are gone.
func TestReplyLimitPerAddress(t *testing.T) {
	engines(t, limits(3, 100, "1h"), func(t *testing.T, e *env) {
		logs := e.captureLog()
		alice := e.site.AddMember(t, aliceAddr)
		captured := pgpMIMEMail(t, victimAddr, "x", "Content-Type: text/plain\r\n\r\nsubscribe\r\n", alice, e.site.ListKey)
		spoofed := [][]byte{
			wftest.Mail(victimAddr, request, "subscribe", "subscribe"),
			wftest.Mail(victimAddr, request, "x", "key get"),
			captured,
			wftest.Mail(victimAddr, request, "help", ""),
			wftest.Mail(victimAddr, request, "x", "key set 123"),
			milterfix.Build(t, milterfix.Post{From: victimAddr, Body: "subscribe", SignWith: alice}),
			captured,
		}
		for i, m := range spoofed {
			out := e.send(m)
			limited := i >= 3
			if got := out.Result == "ignored" && strings.Contains(out.Reason, "limit"); got != limited {
				t.Fatalf("mail %d: %+v, limited %v", i, *out, limited)
			}
		}
		if n := len(e.mail.To(victimAddr)); n != 3 {
			t.Fatalf("%d replies to the victim, want 3", n)
		}
		if n := strings.Count(logs.String(), "reply limit"); n != 4 {
			t.Errorf("%d log lines about the limit, want 4:\n%s", n, logs)
		}
		if out := e.send(wftest.Mail("other@example.org", request, "x", "help")); out.Result != "done" {
			t.Fatalf("another address: %+v", *out)
		}
		// A verified member is not limited by the address's count.
		for range 5 {
			if out := e.send(milterfix.Build(t, milterfix.Post{From: aliceAddr, Body: "key show", SignWith: alice})); out.Result != "done" {
				t.Fatalf("verified member: %+v", *out)
			}
		}

		e.skew = time.Hour + time.Minute
		if out := e.send(spoofed[0]); out.Result != "done" || len(e.mail.To(victimAddr)) != 4 {
			t.Fatalf("after the window: %+v", *out)
		}
		ctx := context.Background()
		if n, err := e.r.Store.CountReplies(ctx, list, "", time.Time{}); err != nil || n != 1 {
			t.Fatalf("reply rows after the window: %d %v, want 1 (old ones pruned)", n, err)
		}
	})
}

// Spoofed commands from many addresses: replies stop at
// max_replies_per_list; verified members and a subscriber confirming
// with the key the token was issued for are still answered.
func TestReplyLimitPerList(t *testing.T) {
	engines(t, limits(2, 4, "1h"), func(t *testing.T, e *env) {
		bob := milterfix.NewKey(t, bobAddr)
		statement := e.subscribeAndSet(bobAddr, bob) // 2 replies to bob
		sent := 2
		for i := range 6 {
			addr := fmt.Sprintf("v%d@example.org", i)
			out := e.send(wftest.Mail(addr, request, "subscribe", "subscribe"))
			if (out.Result == "done") != (sent < 4) {
				t.Fatalf("%s: %+v after %d replies", addr, *out, sent)
			}
			if out.Result == "done" {
				sent++
			}
		}
		if out := e.send(wftest.Mail(bobAddr, request, "x", "key show")); out.Result != "ignored" {
			t.Fatalf("unsigned key show over the list limit: %+v", *out)
		}
		// Verified: the pending key in its key confirm step; a member.
		if out := e.send(wftest.Clearsigned(t, bobAddr, request, statement, bob)); out.Result != "done" {
			t.Fatalf("key confirm over the limit: %+v", *out)
		}
		if out := e.send(milterfix.Build(t, milterfix.Post{From: modAddr, Body: "key show", SignWith: e.mod})); out.Result != "done" {
			t.Fatalf("member over the limit: %+v", *out)
		}
		// The member's key, From another address: not verified.
		if out := e.send(milterfix.Build(t, milterfix.Post{From: "v9@example.org", Body: "help", SignWith: e.mod})); out.Result != "ignored" {
			t.Fatalf("member's key under another From: %+v", *out)
		}
		e.skew = time.Hour + time.Minute
		if out := e.send(wftest.Mail("v9@example.org", request, "x", "help")); out.Result != "done" {
			t.Fatalf("after the window: %+v", *out)
		}
	})
}

// A pending key counts only in its own step: bob's pending key signing
// anything but the key confirm of its token is not verified.
func TestPendingKeyVerifiesOnlyItsStep(t *testing.T) {
	e := newEnv(t, limits(2, 100, "1h"))
	bob := milterfix.NewKey(t, bobAddr)
	statement := e.subscribeAndSet(bobAddr, bob) // both replies used up
	if out := e.send(milterfix.Build(t, milterfix.Post{From: bobAddr, Body: "key show", SignWith: bob})); out.Result != "ignored" {
		t.Fatalf("pending key signing key show: %+v", *out)
	}
	wrong, _ := workflow.NewToken(nil)
	other := strings.Replace(statement, wftest.Token(t, statement), wrong, 1)
	if out := e.send(wftest.Clearsigned(t, bobAddr, request, other, bob)); out.Result != "ignored" {
		t.Fatalf("pending key signing a key confirm with another token: %+v", *out)
	}
	if out := e.send(wftest.Clearsigned(t, bobAddr, request, statement, bob)); out.Result != "done" {
		t.Fatalf("key confirm: %+v", *out)
	}
}

// max_replies_per_address = 0: unverified senders get no reply at all.
func TestReplyLimitZero(t *testing.T) {
	e := newEnv(t, limits(0, 100, "1h"))
	for _, m := range [][]byte{
		wftest.Mail(victimAddr, request, "subscribe", "subscribe"),
		wftest.Mail(modAddr, request, "x", "key show"),
	} {
		if out := e.send(m); out.Result != "ignored" {
			t.Fatalf("%+v", *out)
		}
	}
	if n := len(e.mail.Messages()); n != 0 {
		t.Fatalf("%d replies", n)
	}
	if out := e.send(milterfix.Build(t, milterfix.Post{From: modAddr, Body: "key show", SignWith: e.mod})); out.Result != "done" {
		t.Fatalf("verified member: %+v", *out)
	}
}

// Responders running at once (one per mail, as the MTA runs them) never
// exceed a limit, per address or per list.
func TestReplyLimitConcurrent(t *testing.T) {
	engines(t, limits(3, 5, "1h"), func(t *testing.T, e *env) {
		const workers = 12
		run := func(addr func(i int) string) int {
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for i := range workers {
				// A responder of its own (own key cache and connections).
				st, err := store.Open(context.Background(), e.site.Config.Database)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				r, err := workflow.New(e.site.Config, st, nil)
				if err != nil {
					t.Fatal(err)
				}
				r.Mail, r.Now = e.mail, e.r.Now
				m := wftest.Mail(addr(i), request, "subscribe", "subscribe")
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := r.Handle(context.Background(), m, request); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			return len(e.mail.Messages())
		}
		if n := run(func(int) string { return victimAddr }); n != 3 {
			t.Fatalf("one address: %d replies, want 3", n)
		}
		e.skew = 2 * time.Hour
		if n := run(func(i int) string { return fmt.Sprintf("v%d@example.org", i) }); n != 3+5 {
			t.Fatalf("many addresses: %d replies, want 5 more", n-3)
		}
	})
}
