package outbound

import (
	"math/rand/v2"
	"testing"
)

// The sliced CRC-24 equals the bytewise one for every length and start.
func TestCRC24Sliced(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		for _, start := range []uint32{0, crc24Init, 0xffffff, r.Uint32() & 0xffffff} {
			if got, want := crc24Update(start, data), crc24Bytewise(start, data); got != want {
				t.Fatalf("n=%d start=%06x: sliced %06x, bytewise %06x", n, start, got, want)
			}
		}
	}
	// RFC 4880 §6.1 test: the CRC of "123456789" from the init value.
	if got := crc24Update(crc24Init, []byte("123456789")); got != 0x21cf02 {
		t.Fatalf("check value %06x", got)
	}
}

// crc24Bytewise is the plain table-driven CRC-24, to check crc24Update
// against.
func crc24Bytewise(crc uint32, data []byte) uint32 {
	for _, b := range data {
		crc = (crc<<8)&0xffffff ^ crc24Table[byte(crc>>16)^b]
	}
	return crc
}
