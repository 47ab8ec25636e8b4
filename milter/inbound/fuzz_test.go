package inbound

import (
	"bytes"
	"testing"
	"time"
)

// FuzzExamine feeds arbitrary messages to Examine with the fixture list
// key and member ring. It must never panic, and small limits keep every
// input cheap. Seeds: testdata/fuzz/FuzzExamine (written from the
// fixtures by TestWriteFuzzSeeds with -update-seeds).
func FuzzExamine(f *testing.F) {
	fx := getFixtures(f)
	f.Add(textMessage("hello\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		in := fx.input(msg)
		in.Limits = Limits{MaxMIMEDepth: 8, MaxMIMEParts: 64, MaxHeaderBytes: 8 << 10}
		in.Limits.MaxDecompressed = 1 << 20
		in.Limits.MaxPKESK = 8
		start := time.Now()
		res, err := Examine(in)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Examine took %v on %d bytes", d, len(msg))
		}
		if int64(len(res.Plaintext)) > in.Limits.MaxDecompressed {
			t.Fatalf("plaintext %d bytes over the limit", len(res.Plaintext))
		}
		if res.Sig == SigValid && res.Signer == nil {
			t.Fatal("valid signature without signer")
		}
		if res.Plaintext != nil && res.Encrypted && !res.Integrity {
			t.Fatal("plaintext without integrity")
		}
		if res.Sig == SigValid && (!res.ContentSigned || len(res.Content) == 0) {
			t.Fatal("valid signature without the signed content")
		}
		if res.Content != nil && res.Encrypted && !res.Integrity {
			t.Fatal("content without integrity")
		}
		if res.ContentSigned && res.Signed != nil && len(res.Content) > 0 && !bytes.Contains(res.Content, []byte(":")) {
			t.Fatal("signed header read from content without header")
		}
		_ = res.Binding(fx.list, "list@example.org")
	})
}
