package site_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/listcrypt/listcrypt/keyring/site"
)

func writeConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "listcrypt.toml")
	src := "state_dir = \"state\"\ndatabase = \"sqlite:state/state.db\"\npolicy_dir = \"lists.d\"\npassphrase_file = \"secret/passphrase\"\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	if _, err := site.Open(ctx, filepath.Join(t.TempDir(), "missing.toml"), site.Options{}); err == nil {
		t.Fatal("a missing config opened")
	}
	path := writeConfig(t)

	// Not initialised: the config alone opens, the store does not.
	s, err := site.Open(ctx, path, site.Options{Store: site.StoreNone})
	if err != nil || s.Store != nil {
		t.Fatalf("StoreNone: %v %v", s, err)
	}
	s.Close()
	if _, err := site.Open(ctx, path, site.Options{}); err == nil || !strings.Contains(err.Error(), "sqlite") {
		t.Fatalf("no database folder: %v", err)
	}
	if err := os.Mkdir(s.Config.StateDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := site.Open(ctx, path, site.Options{}); err == nil || !strings.Contains(err.Error(), "listcrypt init") {
		t.Fatalf("uninitialised store: %v", err)
	}
	if _, err := site.Open(ctx, path, site.Options{Store: site.StoreNone, Passphrase: true}); err == nil || !strings.Contains(err.Error(), "passphrase file") {
		t.Fatalf("missing passphrase: %v", err)
	}

	// init creates, then reports nothing new but the schema.
	s, err = site.Open(ctx, path, site.Options{Store: site.StoreInit})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Created) != 2 || s.Created[0] != "schema sqlite" || !strings.HasPrefix(s.Created[1], "passphrase ") {
		t.Fatalf("created %q", s.Created)
	}
	s.Close()
	s, err = site.Open(ctx, path, site.Options{Store: site.StoreInit})
	if err != nil || len(s.Created) != 1 {
		t.Fatalf("second init: %q %v", s.Created, err)
	}
	s.Close()

	s, err = site.Open(ctx, path, site.Options{Passphrase: true})
	if err != nil {
		t.Fatal(err)
	}
	k1, err := s.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if k2, _ := s.Keys(); k1 != k2 {
		t.Error("Keys made a second cache")
	}
	if set, err := s.Policies(); err != nil || len(set.Lists) != 0 {
		t.Errorf("policies: %v %v", set, err)
	}
	// New over an open store never closes it.
	if err := site.New(s.Config, s.Store).Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.CheckSchema(ctx); err != nil {
		t.Fatalf("store closed by a site that did not open it: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// A passphrase file others can read is refused with its reason.
	if err := os.Chmod(s.Config.PassphraseFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := site.Open(ctx, path, site.Options{Passphrase: true}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("readable passphrase: %v", err)
	}
	s, err = site.Open(ctx, path, site.Options{})
	if err != nil {
		t.Fatalf("lazy passphrase: %v", err)
	}
	defer s.Close()
	if _, err := s.Keys(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Keys with a readable passphrase: %v", err)
	}
}
