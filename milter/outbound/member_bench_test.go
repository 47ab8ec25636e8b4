package outbound

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/pgptest"
)

// BenchmarkMemberDecrypt measures what the batch size costs a member:
// with hidden recipients, the member's client tries its key on every key
// packet of its batch. A GnuPG member (gpg's default Curve25519 key) whose
// packet comes last in a batch of B decrypts its copy with real gpg; the
// difference to B=1 is the price of the batch size. It chose the default
// distribute.batch_size (docs/outbound.md).
func BenchmarkMemberDecrypt(b *testing.B) {
	pgptest.RequireTool(b, "gpg")
	g := pgptest.NewGPG(b)
	fpr := g.GenKey("Mia <mia@example.net>")
	mk, err := keyring.ParseMemberKey(g.Export(fpr), keyring.DefaultLimits, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	listPub, err := keyring.ArmorPublicKey(testListKey(b))
	if err != nil {
		b.Fatal(err)
	}
	g.Import([]byte(listPub))
	var others []Recipient
	for i := range 199 {
		others = append(others, Recipient{Address: fmt.Sprintf("o%03d@example.net", i), Key: keyring.EntityKey(memberKey(b, fmt.Sprintf("o%03d", i), legacyX25519))})
	}
	for _, size := range []int{1, 10, 50, 100, 200} {
		b.Run(fmt.Sprintf("gpg/batch=%d", size), func(b *testing.B) {
			p := benchParams(b)
			p.BatchSize = size
			prep, err := Prepare(benchPost(), p)
			if err != nil {
				b.Fatal(err)
			}
			rs := append(append([]Recipient(nil), others[:size-1]...), Recipient{Address: "mia@example.net", Key: keyring.EntityKey(mk.Entity)})
			batches, err := prep.Batches(rs)
			if err != nil {
				b.Fatal(err)
			}
			ct := armoredPart(b, batches[0].Message())
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out, stderr, _ := g.RunErr(ct, "--decrypt")
				if !strings.Contains(string(out), "Line 00001") || !strings.Contains(string(stderr), "Good signature") {
					b.Fatalf("gpg: %s", stderr)
				}
			}
		})
	}
}
