package milter_test

import (
	"fmt"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// BenchmarkInboundPost measures what the milter spends on one list post
// of 50 KB with an Ed25519/X25519 list key: the whole milter transaction
// in process over its unix socket (protocol, MIME parsing, decryption,
// signature verification, replay table on SQLite, decision), plus the
// delivery to the members (one signature, one encryption, one key packet
// per member, the batch reinjected to a recording listener in process). members=1 is the inbound cost
// with the smallest delivery; members=20 adds the outbound work of a
// small list. Every iteration posts a distinct message; building them is
// not timed.
func BenchmarkInboundPost(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			site := milterfix.New(b, milterfix.Options{})
			alice := site.AddMember(b, "alice@example.org")
			for i := range n - 1 {
				site.AddMember(b, fmt.Sprintf("member%d@example.org", i))
			}
			d, _ := startDaemon(b, site)
			m := newMTA(b, d)
			body := strings.Repeat("All work and no play makes Jack a dull boy. 0123456789\n", 50<<10/55)
			posts := make([][]byte, b.N+1)
			for i := range posts {
				posts[i] = milterfix.Build(b, milterfix.Post{From: "alice@example.org", SignWith: alice,
					EncryptTo: []*openpgp.Entity{site.ListKey}, Body: fmt.Sprintf("%d\n%s", i, body)})
			}
			// One MTA connection, as Postfix keeps per SMTP session.
			s, err := m.client.Session()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			// Warm up: the list key's passphrase protection is opened once.
			if r := m.sendOn(s, "alice@example.org", []string{milterfix.List}, posts[b.N]); !r.delivered() {
				b.Fatalf("warm-up post: %+v", r.action)
			}
			b.SetBytes(int64(len(posts[0])))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.Abort()
				if r := m.sendOn(s, "alice@example.org", []string{milterfix.List}, posts[i]); !r.delivered() {
					b.Fatalf("post %d: %+v", i, r.action)
				}
			}
		})
	}
}

// BenchmarkNonListTransaction measures an ordinary mail's cost: accepted
// at end of headers.
func BenchmarkNonListTransaction(b *testing.B) {
	site := milterfix.New(b, milterfix.Options{})
	d, _ := startDaemon(b, site)
	m := newMTA(b, d)
	msg := []byte("From: x@example.net\r\nTo: bob@example.org\r\nSubject: hello\r\nMessage-ID: <1@x>\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\nhi\r\n")
	// One MTA connection carries many transactions, as with Postfix.
	s, err := m.client.Session()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := m.sendOn(s, "x@example.net", []string{"bob@example.org"}, msg); r.action.Code != gomilter.ActAccept {
			b.Fatalf("%+v", r.action)
		}
		if err := s.Abort(); err != nil {
			b.Fatal(err)
		}
	}
}
