package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/listcrypt/listcrypt/keyring/pgptest"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// tree returns every file and folder under dir with its mode and bytes.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		v := fi.Mode().String()
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		out[filepath.ToSlash(rel)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wkd export: both layouts, hashes as gpg-wks-client computes them, files
// gpg imports as the list key with the list's user ID, modes, other files
// untouched, the same bytes on a second run, and the direct layout's one
// domain named when the site has lists in several.
func TestWKDExport(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	cfg := site.Config.File
	mustCLI(t, cfg, "list", "create", "announce@lists.example.org")
	mustCLI(t, cfg, "list", "create", "Dev.Team-X@Other.example")
	fprs := map[string]string{} // address -> fingerprint, from list ls
	for _, l := range strings.Split(strings.TrimSpace(mustCLI(t, cfg, "list", "ls")), "\n") {
		f := strings.Split(l, "\t")
		fprs[f[0]] = f[1]
	}
	if len(fprs) != 3 {
		t.Fatalf("lists %v", fprs)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Lists in two domains: the direct layout's domain must be named, and
	// nothing is written until it is.
	if _, err := cli(t, cfg, "wkd", "export", dir); err == nil || !strings.Contains(err.Error(), "--domain") ||
		!strings.Contains(err.Error(), "lists.example.org, other.example") {
		t.Fatalf("two domains without --domain: %v", err)
	}
	if _, err := cli(t, cfg, "wkd", "export", dir, "--domain", "nowhere.example"); err == nil || !strings.Contains(err.Error(), "no list there") {
		t.Fatalf("--domain without lists: %v", err)
	}
	if got := tree(t, dir); len(got) != 2 {
		t.Fatalf("a refused export wrote %v", got)
	}
	stale := filepath.Join(dir, ".well-known", "openpgpkey", "other.example", "hu")
	if err := os.MkdirAll(stale, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, "stale"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}

	out := mustCLI(t, cfg, "wkd", "export", dir, "--domain", "Lists.Example.org")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wantOrder := []string{"announce@lists.example.org", milterfix.List, "dev.team-x@other.example"}
	if len(lines) != 4 {
		t.Fatalf("output %q", out)
	}
	root := filepath.Join(dir, ".well-known", "openpgpkey")
	if want := "8 files written under " + root + ": advanced lists.example.org other.example, direct lists.example.org"; lines[3] != want {
		t.Errorf("summary %q, want %q", lines[3], want)
	}
	for i, addr := range wantOrder {
		f := strings.Split(lines[i], "\t")
		if len(f) != 3 || f[0] != addr || f[2] != fprs[addr] {
			t.Fatalf("line %d %q, want %s, its hash and %s", i, lines[i], addr, fprs[addr])
		}
		hash := f[1]
		if want := pgptest.WKDHash(t, addr); hash != want {
			t.Errorf("%s: hash %s, gpg-wks-client says %s", addr, hash, want)
		}
		local, domain, _ := strings.Cut(addr, "@")
		paths := []string{filepath.Join(root, domain, "hu", hash)}
		if domain == "lists.example.org" {
			paths = append(paths, filepath.Join(root, "hu", hash))
		} else if _, err := os.Stat(filepath.Join(root, "hu", hash)); err == nil {
			t.Errorf("%s is in the direct layout of another domain", addr)
		}
		for _, p := range paths {
			key, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.HasPrefix(key, []byte("-----")) {
				t.Fatalf("%s is armored, want binary", p)
			}
			// A real consumer: gpg in a throw-away home.
			g := pgptest.NewGPG(t)
			g.Import(key)
			o, _ := g.Run(nil, "--with-colons", "--fixed-list-mode", "--list-keys")
			var gotFpr, uids []string
			subs := 0
			for _, l := range strings.Split(string(o), "\n") {
				c := strings.Split(l, ":")
				switch {
				case c[0] == "fpr" && len(c) > 9 && subs == 0:
					gotFpr = append(gotFpr, c[9])
				case c[0] == "uid" && len(c) > 9:
					uids = append(uids, c[9])
				case c[0] == "sub" && len(c) > 11 && strings.Contains(c[11], "e"):
					subs++
				}
			}
			if len(gotFpr) != 1 || gotFpr[0] != fprs[addr] {
				t.Errorf("%s: gpg imports %v, want %s", p, gotFpr, fprs[addr])
			}
			if want := local + " <" + addr + ">"; len(uids) != 1 || uids[0] != want {
				t.Errorf("%s: user IDs %q, want only %q", p, uids, want)
			}
			if subs != 1 {
				t.Errorf("%s: %d encryption subkeys, want 1", p, subs)
			}
		}
	}
	got := tree(t, dir)
	for p, v := range got {
		switch {
		case p == "index.html" || p == ".well-known/openpgpkey/other.example/hu/stale":
			if !strings.HasSuffix(v, " mine") && !strings.HasSuffix(v, " old") || !strings.HasPrefix(v, "-rw-------") {
				t.Errorf("%s changed: %s", p, v)
			}
		case p == ".well-known" || p == ".well-known/openpgpkey" || strings.HasPrefix(p, ".well-known/openpgpkey/other.example") && !strings.HasPrefix(v, "-"):
			// Made by the admin before: left as they are.
			if v != "drwxr-x---" {
				t.Errorf("existing folder %s changed: %s", p, v)
			}
		case p == ".":
		case strings.HasPrefix(v, "d"):
			if v != "drwxr-xr-x" {
				t.Errorf("folder %s: %s, want 0755", p, v)
			}
		default:
			if !strings.HasPrefix(v, "-rw-r--r-- ") {
				t.Errorf("file %s: %s, want 0644", p, v[:10])
			}
		}
	}
	for _, p := range []string{".well-known/openpgpkey/policy", ".well-known/openpgpkey/lists.example.org/policy", ".well-known/openpgpkey/other.example/policy"} {
		if got[p] != "-rw-r--r-- " {
			t.Errorf("%s: %q, want an empty 0644 file", p, got[p])
		}
	}
	if _, ok := got[".well-known/openpgpkey/other.example/hu/"+pgptest.WKDHash(t, "dev.team-x@other.example")]; !ok {
		t.Error("the advanced layout of other.example is missing")
	}
	// Again: the same tree, byte for byte.
	if again := mustCLI(t, cfg, "wkd", "export", dir, "--domain", "lists.example.org"); again != out {
		t.Errorf("second run printed %q, first %q", again, out)
	}
	again := tree(t, dir)
	if len(again) != len(got) {
		t.Fatalf("second run: %d entries, first %d", len(again), len(got))
	}
	for p, v := range got {
		if again[p] != v {
			t.Errorf("second run changed %s", p)
		}
	}
}
