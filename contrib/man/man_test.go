package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the man pages in contrib/man")

// The committed pages are what the generator writes today; -update
// rewrites them (as go run ./contrib/man does).
func TestPagesUpToDate(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pages(root)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := run("."); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	for _, p := range ps {
		want[p.File] = true
		got, err := os.ReadFile(p.File)
		if err != nil {
			t.Fatalf("%v: run go run ./contrib/man (or go test ./contrib/man -update)", err)
		}
		if string(got) != p.Text {
			t.Errorf("contrib/man/%s is out of date: run go run ./contrib/man (or go test ./contrib/man -update)", p.File)
		}
	}
	for _, f := range committedPages(t) {
		if !want[f] {
			t.Errorf("contrib/man/%s is no longer generated: remove it", f)
		}
	}
}

func committedPages(t *testing.T) []string {
	t.Helper()
	fs, err := filepath.Glob("*.[1-8]")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(fs)
	return fs
}

// Each page renders with man(1) (MANWIDTH=80, --warnings) and with groff
// -ww, whichever are installed, without a single warning, and has the
// sections a man page needs.
func TestPagesRender(t *testing.T) {
	renderers := findRenderers(t)
	for _, f := range committedPages(t) {
		for _, r := range renderers {
			cmd := exec.Command(r[0], append(r[1:], f)...)
			cmd.Env = append(os.Environ(), "MANWIDTH=80", "LANG=C.UTF-8", "MANPAGER=cat", "PAGER=cat")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Errorf("%s %s: %v\n%s", strings.Join(r, " "), f, err, stderr.String())
				continue
			}
			if stderr.Len() > 0 {
				t.Errorf("%s %s warns:\n%s", strings.Join(r, " "), f, stderr.String())
			}
			if r[0] != "man" {
				continue
			}
			text := stdout.String()
			for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO"} {
				if !regexp.MustCompile(`(?m)^` + s + `$`).MatchString(text) {
					t.Errorf("man -l %s: no %s section", f, s)
				}
			}
			if strings.HasSuffix(f, ".8") {
				for _, s := range []string{"OPTIONS", "EXIT STATUS"} {
					if !regexp.MustCompile(`(?m)^` + s + `$`).MatchString(text) {
						t.Errorf("man -l %s: no %s section", f, s)
					}
				}
			}
			for i, l := range strings.Split(text, "\n") {
				if n := len([]rune(l)); n > 80 {
					t.Errorf("man -l %s: line %d is %d columns wide: %q", f, i+1, n, l)
				}
			}
		}
	}
}

// findRenderers returns the render commands available: man-db's man and
// groff. When neither is there, CI run as root installs them (apt-get),
// other CI fails and a developer machine skips.
func findRenderers(t *testing.T) [][]string {
	t.Helper()
	find := func() [][]string {
		var rs [][]string
		if _, err := exec.LookPath("man"); err == nil {
			rs = append(rs, []string{"man", "--warnings", "-l"})
		}
		if _, err := exec.LookPath("groff"); err == nil {
			rs = append(rs, []string{"groff", "-man", "-ww", "-z"})
		}
		return rs
	}
	rs := find()
	if len(rs) > 0 {
		return rs
	}
	ci := os.Getenv("CI") != ""
	if ci && os.Geteuid() == 0 {
		for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "man-db", "groff-base"}} {
			cmd := exec.Command("apt-get", args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		if rs = find(); len(rs) > 0 {
			return rs
		}
	}
	if ci {
		t.Fatal("neither man (man-db) nor groff (groff-base) is installed: the man pages cannot be checked")
	}
	t.Skip("neither man (man-db) nor groff (groff-base) is installed, and installing them needs root and CI set: apt-get install man-db groff-base to run this test")
	return nil
}

// The OPTIONS of the daemons' pages are the flags the programs define:
// listcrypt-milter -h lists its flags; listcrypt-responder prints its
// usage line (its flag errors stay off standard error, which the MTA may
// put in a bounce) and accepts every flag listed.
func TestFlagsMatchPrograms(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	build := exec.Command(gobin, "build", "-o", bin+string(filepath.Separator), "./cmd/listcrypt-milter", "./cmd/listcrypt-responder")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stderrOf := func(prog string, args ...string) string {
		cmd := exec.Command(filepath.Join(bin, prog), args...)
		cmd.Stdin = strings.NewReader("")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		_ = cmd.Run() // the exit status is the pages' EXIT STATUS, tested elsewhere
		return stderr.String()
	}

	// listcrypt-milter: flag.PrintDefaults lines "  -c string" and "  -n\t...".
	help := stderrOf("listcrypt-milter", "-h")
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^  -([A-Za-z0-9-]+)( \S+)?`).FindAllStringSubmatch(help, -1) {
		got = append(got, m[1]+map[bool]string{true: " ARG", false: ""}[m[2] != ""])
	}
	if want := describe(milterFlags, false); strings.Join(got, ", ") != want {
		t.Errorf("listcrypt-milter -h lists flags %q; contrib/man/pages.go milterFlags has %q\n%s", strings.Join(got, ", "), want, help)
	}

	// listcrypt-responder: "usage: listcrypt-responder [-c CONFIG] [--recipient ADDRESS] < message".
	usage := stderrOf("listcrypt-responder", "-h")
	got = nil
	for _, m := range regexp.MustCompile(`\[(--?)([A-Za-z0-9-]+)( [^\]]+)?\]`).FindAllStringSubmatch(usage, -1) {
		got = append(got, m[1]+m[2]+map[bool]string{true: " ARG", false: ""}[m[3] != ""])
	}
	// A mode of its own on a usage line: "listcrypt-responder --refuse < message".
	for _, m := range regexp.MustCompile(`(?m)^\s+listcrypt-responder (--[A-Za-z0-9-]+) <`).FindAllStringSubmatch(usage, -1) {
		got = append(got, m[1])
	}
	if want := describe(responderFlags, true); strings.Join(got, ", ") != want {
		t.Errorf("listcrypt-responder's usage line has flags %q; contrib/man/pages.go responderFlags has %q\n%s", strings.Join(got, ", "), want, usage)
	}
	var args []string
	for _, f := range responderFlags {
		args = append(args, "--"+f.Name)
		if f.Arg != "" {
			args = append(args, filepath.Join(bin, "none.toml"))
		}
	}
	if out := stderrOf("listcrypt-responder", args...); strings.Contains(out, "usage:") {
		t.Errorf("listcrypt-responder %s: refused as a usage error: %s", strings.Join(args, " "), out)
	}
}

// describe lists flags as the test reads them from a program: "c ARG, n",
// or with their dashes when dashes is set ("-c ARG, --recipient ARG").
func describe(fs []flagDoc, dashes bool) string {
	var out []string
	for _, f := range fs {
		s := f.Name
		if dashes {
			s = map[bool]string{true: "--", false: "-"}[f.Long] + s
		}
		if f.Arg != "" {
			s += " ARG"
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}
