package outbound

import (
	"encoding/base64"
)

// The armored body of every batch is
//
//	-----BEGIN PGP MESSAGE-----
//	<blank line>
//	base64(markers || PKESKs of the batch)   per batch, a few hundred bytes
//	base64(encrypted data packet)            shared by every batch
//	=CRC24                                   per batch, combined in O(1)
//	-----END PGP MESSAGE-----
//
// so that a batch costs its PKESK packets and not a re-encoding of the
// post. Base64 can only be split between two encoded runs when the first
// run is a multiple of 3 bytes long (no "=" padding in the middle), so the
// key packets are preceded by 0, 1 or 2 Marker packets (RFC 9580 §5.8:
// "Such a packet MUST be ignored when received"; 5 bytes each) to make
// their length a multiple of 3. The shared run starts on a fresh line, so
// the last line of the per-batch run may be shorter than 64 characters;
// RFC 9580 §6.2 only bounds line length from above (76).

// markerPacket is a Marker packet (tag 10, old format, one-octet length)
// containing "PGP" (RFC 9580 §5.8).
var markerPacket = []byte{0xa8, 0x03, 'P', 'G', 'P'}

// markersFor returns the Marker packets to put before n bytes of key
// packets so that the total length is a multiple of 3.
func markersFor(n int) []byte {
	switch n % 3 {
	case 1: // +5 -> 6
		return markerPacket
	case 2: // +10 -> 12
		return append(append([]byte{}, markerPacket...), markerPacket...)
	}
	return nil
}

const (
	armorHeader = "-----BEGIN PGP MESSAGE-----\r\n\r\n"
	armorFooter = "-----END PGP MESSAGE-----\r\n"
	lineBytes   = 48 // 64 base64 characters per line
)

// appendBase64Lines appends the base64 encoding of data in lines of 64
// characters, each ended by CRLF.
func appendBase64Lines(dst, data []byte) []byte {
	var line [64]byte
	for len(data) > 0 {
		n := min(len(data), lineBytes)
		m := base64.StdEncoding.EncodedLen(n)
		base64.StdEncoding.Encode(line[:m], data[:n])
		dst = append(dst, line[:m]...)
		dst = append(dst, '\r', '\n')
		data = data[n:]
	}
	return dst
}

// CRC-24 of RFC 9580 §6.1. RFC 9580 lets a writer omit the armor
// checksum (and recommends it), but GnuPG 2.2.40 (Debian 12) needs it:
// when the base64 run ends without "=" padding (the packets' length a
// multiple of 3, one post in three here) and no checksum line follows,
// gpg reads "-----END PGP MESSAGE-----" as base64 ("invalid radix64
// character 2D skipped", "no valid OpenPGP data found") and the
// decryption fails (BADMDC). sq 0.27 reads such armor, RNP 0.16.3 with a
// warning. Measured with the interop tests (TestInterop,
// TestOutboundInteropThroughMTAs) and `gpg --decrypt` on armor with
// the checksum line cut: keep the checksum while GnuPG 2.2 reads our
// mail.
const (
	crc24Init = 0xb704ce
	crc24Poly = 0x1864cfb
)

var crc24Table = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 16
		for range 8 {
			c <<= 1
			if c&0x1000000 != 0 {
				c ^= crc24Poly
			}
		}
		t[i] = c & 0xffffff
	}
	return t
}()

// crc24Slice are slicing-by-4 tables for the CRC-24 register held in the
// top 24 bits of a 32-bit word: crc24Slice[0][i] runs the register over
// byte i, crc24Slice[k] over byte i followed by k zero bytes.
var crc24Slice = func() (t [4][256]uint32) {
	for i := range t[0] {
		t[0][i] = crc24Table[i] << 8
	}
	for k := 1; k < 4; k++ {
		for i := range t[k] {
			prev := t[k-1][i]
			t[k][i] = prev<<8 ^ t[0][prev>>24]
		}
	}
	return t
}()

// crc24Update continues the CRC register crc over data, four bytes a
// step (the armor checksum runs over the whole encrypted post).
func crc24Update(crc uint32, data []byte) uint32 {
	c := crc << 8
	for len(data) >= 4 {
		c ^= uint32(data[0])<<24 | uint32(data[1])<<16 | uint32(data[2])<<8 | uint32(data[3])
		c = crc24Slice[3][c>>24] ^ crc24Slice[2][byte(c>>16)] ^ crc24Slice[1][byte(c>>8)] ^ crc24Slice[0][byte(c)]
		data = data[4:]
	}
	for _, b := range data {
		c = c<<8 ^ crc24Slice[0][byte(c>>24)^b]
	}
	return c >> 8
}

// crcShift is the linear map "run the CRC register over n zero bytes",
// as the images of the 24 basis vectors. The CRC register update is
// affine: running over B from state s gives shift_|B|(s) XOR run(0, B),
// so the CRC of (prefix || shared tail) is computed per batch from the
// prefix's CRC without reading the tail again.
type crcShift [24]uint32

func (m *crcShift) apply(s uint32) uint32 {
	var r uint32
	for i := 0; s != 0; i, s = i+1, s>>1 {
		if s&1 != 0 {
			r ^= m[i]
		}
	}
	return r
}

// compose returns the map "a then b".
func compose(a, b *crcShift) *crcShift {
	var r crcShift
	for i := range r {
		r[i] = b.apply(a[i])
	}
	return &r
}

// newCRCShift builds the map for n zero bytes by repeated squaring.
func newCRCShift(n int) *crcShift {
	var one, id crcShift
	for i := range one {
		id[i] = 1 << i
		one[i] = crc24Update(1<<i, []byte{0})
	}
	result, pow := &id, &one
	for n > 0 {
		if n&1 != 0 {
			result = compose(result, pow)
		}
		pow = compose(pow, pow)
		n >>= 1
	}
	return result
}

// appendCRCLine appends the armor checksum line "=XXXX" for crc.
func appendCRCLine(dst []byte, crc uint32) []byte {
	var b [3]byte
	b[0], b[1], b[2] = byte(crc>>16), byte(crc>>8), byte(crc)
	var enc [4]byte
	base64.StdEncoding.Encode(enc[:], b[:])
	dst = append(dst, '=')
	dst = append(dst, enc[:]...)
	return append(dst, '\r', '\n')
}
