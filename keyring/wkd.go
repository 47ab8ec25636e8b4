package keyring

import (
	"crypto/sha1"
	"encoding/base32"
	"strings"
)

// zbase32 is the z-base-32 alphabet (Zooko's human-oriented base-32),
// bits taken most significant first like RFC 4648 base32, no padding.
var zbase32 = base32.NewEncoding("ybndrfg8ejkmcpqxot1uwisza345h769").WithPadding(base32.NoPadding)

// WKDHash returns the Web Key Directory name of the key of an address
// with the local part local (draft-koch-openpgp-webkey-service §3.1):
// the local part with ASCII upper case mapped to lower case, hashed
// with SHA-1, encoded in z-base-32: 32 characters. SHA-1 here only
// names a file; nothing is signed with it.
func WKDHash(local string) string {
	sum := sha1.Sum([]byte(asciiLower(local)))
	return zbase32.EncodeToString(sum[:])
}

// asciiLower maps A-Z to a-z and leaves every other byte as it is (the
// draft maps ASCII only, as GnuPG does).
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}
