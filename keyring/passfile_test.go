package keyring

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

func TestLoadPassphrase(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
		errText string // substring of the error; "" means success
	}{
		{"0600", "s3cret\n", 0o600, "s3cret", ""},
		{"0400", "s3cret", 0o400, "s3cret", ""},
		{"crlf", "s3cret\r\n", 0o600, "s3cret", ""},
		{"one newline only", "s3cret\n\n", 0o600, "s3cret\n", ""},
		{"inner spaces kept", " a b \n", 0o600, " a b ", ""},
		{"0644", "s3cret\n", 0o644, "", "mode 0644"},
		{"0640", "s3cret\n", 0o640, "", "mode 0640"},
		{"0604", "s3cret\n", 0o604, "", "mode 0604"},
		{"0620", "s3cret\n", 0o620, "", "mode 0620"},
		{"empty", "", 0o600, "", "empty"},
		{"newline only", "\n", 0o600, "", "empty"},
		{"too big", strings.Repeat("x", 5000), 0o600, "", "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "passphrase")
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			got, err := LoadPassphrase(p)
			if tc.errText == "" {
				if err != nil || string(got) != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.errText)
			}
			if got != nil {
				t.Error("passphrase returned with an error")
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if _, err := LoadPassphrase(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadPassphrase(d); err == nil {
			t.Fatal("directory accepted")
		}
	})
}

func TestCreatePassphraseFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "passphrase")
	created, err := CreatePassphraseFile(p, &seeded{})
	if err != nil || !created {
		t.Fatalf("created=%v err=%v", created, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o", fi.Mode().Perm())
	}
	pass, err := LoadPassphrase(p)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(string(pass))
	if err != nil || len(raw) != 32 {
		t.Errorf("passphrase %q: %d bytes, %v", pass, len(raw), err)
	}
	// Present: untouched, even if its mode is wrong.
	if err := os.WriteFile(p, []byte("mine\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	created, err = CreatePassphraseFile(p, &seeded{})
	if err != nil || created {
		t.Fatalf("second call: created=%v err=%v", created, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "mine\n" {
		t.Errorf("existing file changed to %q", b)
	}
	assertNoTempFiles(t, dir, "passphrase")

	// A failing random source creates nothing.
	p2 := filepath.Join(dir, "other")
	if _, err := CreatePassphraseFile(p2, iotest.ErrReader(errors.New("no entropy"))); err == nil {
		t.Fatal("no error from a failing random source")
	}
	if _, err := os.Stat(p2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file created despite error: %v", err)
	}
}

func TestCreatePassphraseFileRace(t *testing.T) {
	// Concurrent creators: exactly one wins and everyone then reads the
	// winner's passphrase (no rename over a file another process made).
	dir := t.TempDir()
	p := filepath.Join(dir, "passphrase")
	var wg sync.WaitGroup
	results := make([]bool, 16)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			created, err := CreatePassphraseFile(p, &seeded{n: byte(i)})
			if err != nil {
				t.Error(err)
			}
			results[i] = created
		}()
	}
	wg.Wait()
	n := 0
	for _, c := range results {
		if c {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d creators reported creating the file", n)
	}
	assertNoTempFiles(t, dir, "passphrase")
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret.key")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(b, []byte("two")) {
		t.Fatalf("content %q, %v", b, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %04o, want 0640", fi.Mode().Perm())
	}
	assertNoTempFiles(t, dir, "secret.key")

	// A failure (directory missing) leaves nothing behind.
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	// Rename onto a directory fails: the temporary file is removed.
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "adir", "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "adir"), []byte("x"), 0o600); err == nil {
		t.Error("rename over a non-empty directory succeeded")
	}
	assertNoTempFiles(t, dir, "secret.key", "adir")

	// A relative path in the working directory.
	t.Chdir(dir)
	if err := WriteFileAtomic("rel", []byte("r"), 0o600); err != nil {
		t.Fatal(err)
	}
	assertNoTempFiles(t, dir, "secret.key", "adir", "rel")
}

func assertNoTempFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(slices.Sorted(slices.Values(want)), ",") {
		t.Errorf("directory holds %v, want %v", got, want)
	}
}
