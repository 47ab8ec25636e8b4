package keyring

import (
	"bytes"
	"fmt"
	"io"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// EncryptTo encrypts data to the given keys (binary OpenPGP message, no
// signature). listcrypt uses it to keep held posts and the archive
// encrypted at rest, to the list key.
func EncryptTo(data []byte, to []*openpgp.Entity, l Limits, now func() time.Time) ([]byte, error) {
	var out bytes.Buffer
	w, err := openpgp.EncryptWithParams(&out, to, nil, &openpgp.EncryptParams{Config: PacketConfig(l, now)})
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return out.Bytes(), nil
}

// DecryptWith decrypts a message made by EncryptTo with one of keys
// (the list key, and the keys it replaced: a hold sealed before a
// rotation), reading at most max bytes of plaintext.
func DecryptWith(msg []byte, keys openpgp.EntityList, max int64, l Limits) ([]byte, error) {
	md, err := openpgp.ReadMessage(bytes.NewReader(msg), keys, nil, PacketConfig(l, nil))
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(md.UnverifiedBody, max+1))
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("decrypt: plaintext larger than %d bytes", max)
	}
	return data, nil
}
