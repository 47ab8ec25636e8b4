// Command man writes listcrypt's man pages, listcrypt(1),
// listcrypt-milter(8), listcrypt-responder(8), listcrypt.toml(5) and
// listcrypt-policy(5), from the same code that writes docs/config.md and
// docs/policy.md (tomlx.Walk over the typed config and policy), the
// programs' flags and docs/cli.md:
//
//	go run ./contrib/man            # rewrites the committed pages in contrib/man
//	go run ./contrib/man -out DIR   # writes them to DIR instead (packaging)
//
// Run it from anywhere inside the repository. `go test ./contrib/man`
// fails when the committed pages are out of date and renders each with
// man(1) or groff(1), failing on any warning.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	out := flag.String("out", "", "folder to write the pages to (default: contrib/man of the repository)")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "man:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(root, "contrib", "man")
	}
	ps, err := pages(root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, p := range ps {
		if err := os.WriteFile(filepath.Join(out, p.File), []byte(p.Text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

const module = "module github.com/listcrypt/listcrypt\n"

// repoRoot is the folder holding listcrypt's go.mod, the working
// directory or one above it.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte(module)) {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("not inside the listcrypt repository (no go.mod of " + module[7:len(module)-1] + " here or above)")
		}
		dir = up
	}
}
