package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckFlag(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "listcrypt.toml")
	os.WriteFile(cfg, []byte("policy_dir = \"lists.d\"\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "lists.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "lists.d", "a.toml"), []byte("address = \"a@lists.example.org\"\n"), 0o644)
	var out, errb bytes.Buffer
	if rc := run([]string{"-c", cfg, "-n"}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "OK") {
		t.Fatalf("rc %d out %q err %q", rc, out.String(), errb.String())
	}
	os.WriteFile(filepath.Join(dir, "lists.d", "b.toml"), []byte("address = \"b@lists.example.org\"\n[post]\nreplay = \"shrug\"\n"), 0o644)
	out.Reset()
	errb.Reset()
	if rc := run([]string{"-c", cfg, "-n"}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "b.toml:3: post.replay") {
		t.Fatalf("rc %d err %q", rc, errb.String())
	}
	os.WriteFile(cfg, []byte("[milter]\nlisten = \"carrier-pigeon\"\n"), 0o644)
	errb.Reset()
	if rc := run([]string{"-c", cfg, "-n"}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "listcrypt.toml:2:") {
		t.Fatalf("rc %d err %q", rc, errb.String())
	}
}
