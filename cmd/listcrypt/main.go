// Command listcrypt is the admin CLI: init, lists, list keys, members,
// holds and policy checks. Its verbs are a stable interface; see
// docs/cli.md. Every error exits non-zero with a one-line reason.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/listcrypt/listcrypt/keyring/site"
	"github.com/listcrypt/listcrypt/milter/admin"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/policy/config"
)

// defaultConfig is the config read without -c.
const defaultConfig = config.DefaultPath

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout)
	os.Exit(report(err, os.Stderr))
}

// report prints err the way main does and returns the exit code: 0, 2
// for a usage error (with the usage for an unknown or missing command),
// 1 for any other error.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	isUsage := errors.As(err, &ue)
	if isUsage && ue.unknown {
		fmt.Fprint(stderr, usageText())
	}
	var le *lineErrors
	if errors.As(err, &le) {
		for _, l := range le.lines {
			fmt.Fprintln(stderr, l)
		}
		fmt.Fprintln(stderr, "listcrypt:", le.summary)
		return 1
	}
	fmt.Fprintln(stderr, "listcrypt:", strings.ReplaceAll(err.Error(), "\n", "; "))
	if isUsage {
		return 2
	}
	return 1
}

// usageError is a command line listcrypt cannot run (exit 2); unknown:
// no command or one not in the table, so the whole usage is printed.
type usageError struct {
	msg     string
	unknown bool
}

func (e *usageError) Error() string { return e.msg }

func unknownErr(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), unknown: true}
}

var errHelp = errors.New("help requested")

// lineErrors is an error reported one line each (member import's
// refusals), followed by a summary.
type lineErrors struct {
	lines   []string
	summary string
}

func (e *lineErrors) Error() string { return strings.Join(append(e.lines, e.summary), "\n") }

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("listcrypt", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("c", defaultConfig, "site config file")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(out, usageText())
		return nil
	} else if err != nil {
		return unknownErr("%v", err)
	}
	args = fs.Args()
	if len(args) == 0 {
		return unknownErr("no command")
	}
	// The verb and its arguments are checked before any file is opened.
	v, rest := lookup(args)
	if v == nil {
		return unknownErr("unknown command %q", unknownName(args))
	}
	if v.name == "help" {
		if len(rest) > 0 {
			hv, extra := lookup(rest)
			if hv == nil || len(extra) > 0 {
				return unknownErr("unknown command %q", strings.Join(rest, " "))
			}
			fmt.Fprint(out, verbHelp(hv))
			return nil
		}
		fmt.Fprint(out, usageText())
		return nil
	}
	c := &call{ctx: ctx, out: out, verb: v}
	var err error
	c.pos, c.flags, c.set, err = v.parse(rest)
	if errors.Is(err, errHelp) {
		fmt.Fprint(out, verbHelp(v))
		return nil
	}
	if err != nil {
		return &usageError{msg: fmt.Sprintf("%s: %v; usage: listcrypt %s", v.name, err, v.synopsis())}
	}
	if v.check != nil {
		if err := v.check(c); err != nil {
			return err
		}
	}
	s, err := site.Open(ctx, *cfgPath, site.Options{Store: v.store})
	if err != nil {
		return err
	}
	defer s.Close()
	c.site = s
	if v.store != site.StoreNone {
		c.admin = admin.New(s)
	}
	return v.run(c)
}

func readKeyFile(path string) ([]byte, error) {
	// Read one byte more than any acceptable key so the size limit in
	// keyring reports it, without reading an unbounded file.
	data, err := readInput(path, 16<<20)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	return data, nil
}

// readInput reads at most limit bytes of the file at path, or of
// standard input when path is "-".
func readInput(path string, limit int64) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	return io.ReadAll(io.LimitReader(r, limit))
}

// pendingLine is one line of "member pending": address, kind, the
// fingerprint to compare out of band (in blocks of four), what it
// replaces, and since when it waits.
func pendingLine(e workflow.PendingEntry) string {
	line := fmt.Sprintf("%s\t%s\t%s", e.Address, e.Kind, groupFingerprint(e.Fingerprint))
	if e.OldFingerprint != "" {
		line += "\treplaces " + groupFingerprint(e.OldFingerprint)
	}
	return line + "\tsince " + e.Since.UTC().Format(time.RFC3339)
}

func groupFingerprint(f string) string {
	var parts []string
	for i := 0; i < len(f); i += 4 {
		parts = append(parts, f[i:min(i+4, len(f))])
	}
	return strings.Join(parts, " ")
}
