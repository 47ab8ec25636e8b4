package outbound

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"runtime"
	"strings"
	"testing"
)

// WriteTo streams a batch (header, key packets, the armored data shared
// by every batch, tail) to the writer without copying the body: the
// reinjection client writes it straight into the SMTP dot-writer.
func TestWriteToCopiesNothing(t *testing.T) {
	post := testPost()
	noise := make([]byte, 768<<10) // incompressible: the copy stays large
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	enc := base64.StdEncoding.EncodeToString(noise)
	var body strings.Builder
	body.WriteString("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for len(enc) > 76 {
		body.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	body.WriteString(enc + "\r\n")
	post.Inner = []byte(body.String())
	pr, err := Prepare(post, testParams(t))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := pr.Batches(recipients(t, 2, legacyX25519))
	if err != nil {
		t.Fatal(err)
	}
	b := &bs[0]
	if b.BodyLen() < 1<<20 {
		t.Fatalf("body of %d bytes: too small to tell", b.BodyLen())
	}
	const runs = 10
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := b.WriteTo(io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 16<<10 {
		t.Fatalf("WriteTo allocates %d bytes per call for a %d-byte body", per, b.BodyLen())
	}
}
