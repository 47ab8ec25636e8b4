package outbound

import (
	"encoding/base64"
	"strings"
	"sync"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
)

// Autocrypt Level 1 (https://autocrypt.org/level1.html), §2.1 "The
// Autocrypt Header": every copy whose outer From is the list address
// carries
//
//	Autocrypt: addr=LIST; prefer-encrypt=mutual; keydata=BASE64
//
// so that members' Autocrypt-capable clients learn the list key from
// the mail they already get. keydata is the minimal key
// (keyring.MinimalPublicKey: primary key, the list's user ID and its
// self-signature, the encryption subkey and its binding signature) and
// the last attribute, as §2.1 requires. A consumer ignores the header
// when addr is not the From address (same section), so a copy whose outer From
// is the author (distribute.from = "keep") carries none: a lax client
// would otherwise file the list key under the author.

// autocryptLine is the width of one base64 chunk of keydata: a
// continuation line is a space and one chunk, 77 characters, within the
// 78 of RFC 5322 §2.1.1.
const autocryptLine = 76

// AutocryptValue returns the unfolded value of the Autocrypt header field
// for the list address and its key. The keydata is split into chunks of
// 76 base64 characters separated by single spaces: the header writer
// folds there (RFC 5322 §2.2.3), so every line of the field stays within
// 78 characters, and Autocrypt consumers drop the whitespace before
// decoding (§2.1, keydata), as they do for every folded keydata.
//
// It is computed once per list address and key (the list key changes
// only on rotation) and then served from memory; concurrent callers
// share the result. A key that cannot give one (no valid user ID for
// the address, no usable encryption key) gives an error, remembered
// too: Prepare then leaves the header out rather than hold up the post.
func AutocryptValue(listAddress string, key *openpgp.Entity, now time.Time, limits keyring.Limits) (string, error) {
	addr := strings.ToLower(strings.TrimSpace(listAddress))
	autocryptMu.Lock()
	c := autocryptCache[addr]
	autocryptMu.Unlock()
	if c != nil && c.key == key {
		return c.value, c.err
	}
	cfg := keyring.PacketConfig(limits, func() time.Time { return now })
	mu := entityLock(key)
	mu.Lock()
	minimal, err := keyring.MinimalPublicKey(key, addr, now, cfg)
	mu.Unlock()
	c = &autocryptEntry{key: key, err: err}
	if err == nil {
		c.value = autocryptFormat(addr, minimal)
	}
	autocryptMu.Lock()
	autocryptCache[addr] = c
	autocryptMu.Unlock()
	return c.value, c.err
}

// autocryptEntry is the header value of one list, for one key object:
// a rotated key is a new object (keyring.Cache opens it afresh), so the
// entry is replaced, and the cache holds one entry per list.
type autocryptEntry struct {
	key   *openpgp.Entity
	value string
	err   error
}

var (
	autocryptMu    sync.Mutex
	autocryptCache = map[string]*autocryptEntry{}
)

// autocryptFormat writes the attributes in the order of §2.1, keydata
// last, with the base64 cut into autocryptLine chunks.
func autocryptFormat(addr string, key []byte) string {
	enc := base64.StdEncoding.EncodeToString(key)
	var b strings.Builder
	b.Grow(len(addr) + len(enc) + len(enc)/autocryptLine + 48)
	b.WriteString("addr=")
	b.WriteString(addr)
	b.WriteString("; prefer-encrypt=mutual; keydata=")
	for len(enc) > 0 {
		n := min(autocryptLine, len(enc))
		b.WriteByte(' ')
		b.WriteString(enc[:n])
		enc = enc[n:]
	}
	return b.String()
}
