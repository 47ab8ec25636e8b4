package keyring

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// maxPassphraseFile bounds what LoadPassphrase reads.
const maxPassphraseFile = 4096

// LoadPassphrase reads the site passphrase from path. Like OpenDKIM with
// its key files, it refuses a file that group or others may read or write
// (mode & 0077 != 0), and a file that is not a regular file. One trailing
// newline ("\n" or "\r\n") is removed; an empty passphrase is refused.
func LoadPassphrase(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	defer f.Close()
	// Check the file we opened, not the path (no race with a swap).
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("passphrase file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("passphrase file %s has mode %04o: group and others must have no access (chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPassphraseFile+1))
	if err != nil {
		return nil, fmt.Errorf("passphrase file %s: %w", path, err)
	}
	if len(data) > maxPassphraseFile {
		return nil, fmt.Errorf("passphrase file %s is larger than %d bytes", path, maxPassphraseFile)
	}
	if bytes.HasSuffix(data, []byte("\r\n")) {
		data = data[:len(data)-2]
	} else if bytes.HasSuffix(data, []byte("\n")) {
		data = data[:len(data)-1]
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("passphrase file %s is empty", path)
	}
	return data, nil
}

// CreatePassphraseFile creates the site passphrase file at path if it does
// not exist: 32 bytes from rand, base64-encoded, one line, mode 0600,
// written atomically (see WriteFileAtomic) and never over an existing
// file, even one created concurrently. An existing file is left untouched
// and created is false.
func CreatePassphraseFile(path string, rand io.Reader) (created bool, err error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("passphrase file: %w", err)
	}
	var secret [32]byte
	if _, err := io.ReadFull(rand, secret[:]); err != nil {
		return false, fmt.Errorf("passphrase file %s: random: %w", path, err)
	}
	data := []byte(base64.StdEncoding.EncodeToString(secret[:]) + "\n")
	err = writeFileAtomic(path, data, 0o600, false)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("passphrase file: %w", err)
	}
	return true, nil
}

// WriteFileAtomic writes data to path so that path holds either its old
// content or all of data, even across a crash: it writes a temporary file
// in the same directory (created with O_EXCL, mode 0600), fsyncs it, sets
// perm, renames it over path, and fsyncs the directory. Use it for every
// secret file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(path, data, perm, true)
}

// writeFileAtomic is WriteFileAtomic; with replace false it links the
// temporary file to path instead of renaming it, which fails with an
// error matching fs.ErrExist when path exists.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// os.CreateTemp opens with O_RDWR|O_CREATE|O_EXCL and mode 0600.
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmp, path)
	} else if err = os.Link(tmp, path); err == nil {
		err = os.Remove(tmp)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return d.Close()
}
