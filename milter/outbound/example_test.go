package outbound_test

import (
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/outbound"
)

// A post to a list of 120 members in batches of 50: one signature, one
// encryption, 120 key packets, three messages.
func Example() {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	listKey, err := keyring.GenerateListKey("devs@lists.example.org", keyring.KeyEd25519, now, fixedRand{})
	if err != nil {
		panic(err)
	}
	cfg := keyring.PacketConfig(keyring.DefaultLimits, clock)
	cfg.Algorithm, cfg.Curve, cfg.AEADConfig, cfg.Rand = packet.PubKeyAlgoEdDSA, packet.Curve25519, nil, fixedRand{}
	member, err := openpgp.NewEntity("m", "", "m@example.net", cfg)
	if err != nil {
		panic(err)
	}
	var rcpts []outbound.Recipient
	for i := range 120 {
		// (Every member shares one key here to keep the example fast.)
		rcpts = append(rcpts, outbound.Recipient{Address: fmt.Sprintf("m%d@example.net", i), Key: keyring.EntityKey(member)})
	}

	pr, err := outbound.Prepare(outbound.Post{
		Inner:  []byte("Content-Type: text/plain\r\n\r\nHello\r\n"),
		Header: outbound.Header{From: "Alice <alice@example.com>", Subject: "Plans", MessageID: "<1@example.com>"},
	}, outbound.Params{
		ListAddress:    "devs@lists.example.org",
		ListKey:        listKey,
		HideRecipients: true,
		Now:            clock,
	})
	if err != nil {
		panic(err)
	}
	batches, err := pr.Batches(rcpts)
	if err != nil {
		panic(err)
	}
	fmt.Println("envelope sender:", pr.EnvelopeFrom())
	for _, f := range pr.Header()[:4] {
		fmt.Printf("%s: %s\n", f.Name, f.Value)
	}
	for _, b := range batches {
		fmt.Printf("batch %d: %d recipients, first %s\n", b.Number, len(b.Recipients), b.Recipients[0])
	}
	// Output:
	// envelope sender: devs-bounces@lists.example.org
	// From: "Alice via devs" <devs@lists.example.org>
	// Reply-To: Alice <alice@example.com>
	// To: devs@lists.example.org
	// Subject: [devs] Encrypted message
	// batch 1: 50 recipients, first m0@example.net
	// batch 2: 50 recipients, first m50@example.net
	// batch 3: 20 recipients, first m100@example.net
}

// fixedRand is a deterministic byte source for key generation in the
// example only; production code uses crypto/rand.
type fixedRand struct{}

func (fixedRand) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return len(b), nil
}
