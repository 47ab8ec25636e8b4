// Package keyring owns listcrypt's OpenPGP keys: the list keys (generated
// here, their secret parts protected at rest by the site passphrase), the
// member keys (imported with limits), and the one packet.Config every
// OpenPGP call in the project uses.
package keyring

import (
	"crypto"
	"time"

	"github.com/listcrypt/listcrypt/policy/config"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Limits bounds the OpenPGP work one input can cause.
type Limits struct {
	// MaxDecompressed is the most bytes a compressed packet may expand to.
	MaxDecompressed int64
	// MaxPKESK is the most public-key encrypted session key packets one
	// message may carry (each costs a private-key operation to try).
	MaxPKESK int
	// MaxKeySize is the most bytes one imported key (transferable public
	// key) may have.
	MaxKeySize int64
	// MaxKeySignatures is the most signature packets one imported key may
	// carry (certificate flooding).
	MaxKeySignatures int
}

// DefaultLimits are the limits used when the site config does not set them.
var DefaultLimits = Limits{
	MaxDecompressed:  64 << 20,
	MaxPKESK:         64,
	MaxKeySize:       256 << 10,
	MaxKeySignatures: 256,
}

// PacketConfig returns the packet.Config for every OpenPGP operation:
// never nil (a nil config panics with v6 recipients), AES-256, a
// decompression limit, and now as the clock (nil now means time.Now).
func PacketConfig(l Limits, now func() time.Time) *packet.Config {
	max := l.MaxDecompressed
	if max <= 0 {
		max = DefaultLimits.MaxDecompressed
	}
	return &packet.Config{
		DefaultCipher:              packet.CipherAES256,
		DefaultHash:                0, // SHA-256, the library default
		DefaultCompressionAlgo:     packet.CompressionNone,
		MaxDecompressedMessageSize: &max,
		Time:                       now,
		AEADConfig:                 &packet.AEADConfig{DefaultMode: packet.AEADModeGCM},
		// go-crypto's default still accepts SHA-1 in key signatures
		// (self-signatures, subkey bindings); refuse them like message
		// signatures, so a key bound only by SHA-1 is not valid.
		RejectHashAlgorithms: map[crypto.Hash]bool{
			crypto.MD5: true, crypto.RIPEMD160: true, crypto.SHA1: true,
		},
		// RSA below 2047 bits is weak (2047, not 2048: GnuPG once made
		// 2047-bit "2048-bit" keys); this is also go-crypto's default.
		MinRSABits: 2047,
	}
}

// ConfigLimits returns the OpenPGP limits of the site config.
func ConfigLimits(c *config.Config) Limits {
	return Limits{
		MaxDecompressed:  c.Limits.MaxDecompressedSize.Bytes,
		MaxPKESK:         c.Limits.MaxPKESK,
		MaxKeySize:       c.Limits.MaxKeySize.Bytes,
		MaxKeySignatures: c.Limits.MaxKeySignatures,
	}
}
