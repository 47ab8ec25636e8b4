package reinject

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/textproto"
	"strings"
	"testing"
)

// TestDotWriterMatchesTextproto: the same bytes on the wire as
// net/textproto's DotWriter, for messages cut into writes anywhere.
func TestDotWriterMatchesTextproto(t *testing.T) {
	cases := []string{
		"", "a", ".", "..", "\n", "\r\n", ".\r\n", "a\n.b\n", "a\r\n.\r\n..x\r\n", "no end", "ends with cr\r",
		"x\n\n.\n", "\r\n.\r\n", "line\r\nline\nline\r\n.", "a\rb\r\n",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab.\r\n")
	for range 2000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		// textproto doubles the first CR of "\r\r\n"; both are invalid
		// in mail and this writer keeps them: leave that case out.
		if !bytes.Contains(b, []byte("\r\r")) {
			cases = append(cases, string(b))
		}
	}
	for _, c := range cases {
		var want bytes.Buffer
		tw := textproto.NewWriter(bufio.NewWriter(&want))
		dw := tw.DotWriter()
		dw.Write([]byte(c))
		dw.Close()
		for range 3 {
			var got bytes.Buffer
			bw := bufio.NewWriter(&got)
			d := newDotWriter(bw)
			rest := []byte(c)
			for len(rest) > 0 {
				k := 1 + rng.IntN(len(rest))
				n, err := d.Write(rest[:k])
				if err != nil || n != k {
					t.Fatalf("%q: Write = %d, %v", c, n, err)
				}
				rest = rest[k:]
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("%q:\n got %q\nwant %q", c, got.String(), want.String())
			}
		}
	}
}

func BenchmarkDotWriter(b *testing.B) {
	var msg strings.Builder
	for msg.Len() < 70<<10 {
		msg.WriteString("VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZy4gMDEyMzQ1Njc4OQ==\r\n")
	}
	data := []byte(msg.String())
	for _, impl := range []string{"textproto", "reinject"} {
		b.Run(impl, func(b *testing.B) {
			bw := bufio.NewWriter(nopWriter{})
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if impl == "textproto" {
					w := textproto.NewWriter(bw).DotWriter()
					w.Write(data)
					w.Close()
				} else {
					w := newDotWriter(bw)
					w.Write(data)
					w.Close()
				}
			}
		})
	}
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
