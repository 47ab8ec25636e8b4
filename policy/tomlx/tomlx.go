// Package tomlx holds what listcrypt's two TOML file kinds (the site config
// and the list policies) share: sizes and durations as strings, the line
// of a key for file:line errors, and an error list that reports every
// problem at once.
package tomlx

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Errors collects every problem found in one file.
type Errors struct {
	File string
	src  []byte
	List []error
	// Unreadable: the file could not be decoded (a syntax or type
	// error): the values are incomplete and validating them would report
	// follow-on errors. Unknown keys alone leave the rest readable.
	Unreadable bool
}

// NewErrors starts an error list for the file whose text is src.
func NewErrors(file string, src []byte) *Errors { return &Errors{File: file, src: src} }

// At records a problem with the key at path (table names, then key).
func (e *Errors) At(path []string, format string, args ...any) {
	line := KeyLine(e.src, path...)
	e.List = append(e.List, fmt.Errorf("%s:%d: %s", e.File, line, fmt.Sprintf(format, args...)))
}

// Add records a problem that has a line of its own (0: the whole file).
func (e *Errors) Add(line int, format string, args ...any) {
	if line <= 0 {
		line = 1
	}
	e.List = append(e.List, fmt.Errorf("%s:%d: %s", e.File, line, fmt.Sprintf(format, args...)))
}

// Err returns nil when nothing was recorded, else all problems joined.
func (e *Errors) Err() error {
	if len(e.List) == 0 {
		return nil
	}
	return errors.Join(e.List...)
}

var lineRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\):`)

// Decode decodes src into v, reporting a syntax or type error with its
// line (and marking the file Unreadable), and every key that v does not
// know (a typo must not be ignored; the rest of the file is decoded, so
// the caller validates it too and reports every mistake at once).
func Decode(file string, src []byte, v any) *Errors {
	errs := NewErrors(file, src)
	md, err := toml.NewDecoder(bytes.NewReader(src)).Decode(v)
	if err != nil {
		var pe toml.ParseError
		var ppe *toml.ParseError
		switch {
		case errors.As(err, &pe):
			errs.Add(pe.Position.Line, "%s", pe.Message)
		case errors.As(err, &ppe):
			errs.Add(ppe.Position.Line, "%s", ppe.Message)
		default:
			// Type mismatches come as plain errors carrying "line N".
			line := 1
			msg := err.Error()
			if m := lineRE.FindStringSubmatch(msg); m != nil {
				line, _ = strconv.Atoi(m[1])
				msg = m[2] + ": " + strings.TrimSpace(msg[len(m[0]):])
			}
			errs.Add(line, "%s", msg)
		}
		errs.Unreadable = true
		return errs
	}
	for _, k := range md.Undecoded() {
		errs.At(k, "unknown key %q", k.String())
	}
	return errs
}

// KeyLine finds the 1-based line where the key at path is set in src: the
// table header for a table, the "key =" line for a key. It knows TOML's
// [table] headers and dotted keys of one level, which is all our files
// use; it returns 1 when the key is absent (an error about a missing key
// belongs to the file).
func KeyLine(src []byte, path ...string) int {
	if len(path) == 0 {
		return 1
	}
	table := path[:len(path)-1]
	cur := []string(nil)
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	tableLine := 0
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "[") && !strings.HasPrefix(l, "[[") {
			end := strings.Index(l, "]")
			if end < 0 {
				continue
			}
			cur = splitDotted(l[1:end])
			if equal(cur, path) {
				return n
			}
			if equal(cur, table) {
				tableLine = n
			}
			continue
		}
		eq := strings.Index(l, "=")
		if eq <= 0 {
			continue
		}
		k := splitDotted(strings.TrimSpace(l[:eq]))
		full := append(append([]string{}, cur...), k...)
		if equal(full, path) {
			return n
		}
	}
	if tableLine > 0 {
		return tableLine
	}
	return 1
}

func splitDotted(s string) []string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return parts
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ParseSize reads a byte count: a plain number, or a number with a unit
// B, KB, MB, GB (powers of 1024, as Postfix and most admins read them;
// KiB, MiB, GiB are accepted too).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 10MB, 512KB, 1048576)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// ParseDuration reads a Go duration ("90s", "15m", "72h") or a number of
// days ("30d").
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if d, ok := strings.CutSuffix(t, "d"); ok {
		n, err := strconv.Atoi(d)
		if err == nil && n >= 0 && n < 100000 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(t)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (examples: 30d, 72h, 15m, 90s)", s)
	}
	return d, nil
}

// Size is a byte count written as a string in TOML ("10MB"). A value that
// does not parse is kept with its error so that validation can report it
// together with every other problem.
type Size struct {
	Bytes int64
	Raw   string
	Err   error
}

// NewSize returns the Size written s; it panics on a bad literal (for
// defaults in code).
func NewSize(s string) Size {
	n, err := ParseSize(s)
	if err != nil {
		panic(err)
	}
	return Size{Bytes: n, Raw: s}
}

// UnmarshalText implements encoding.TextUnmarshaler; it never fails.
func (s *Size) UnmarshalText(b []byte) error {
	s.Raw = string(b)
	s.Bytes, s.Err = ParseSize(s.Raw)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.Raw), nil }

func (s Size) String() string { return s.Raw }

// Duration is a duration written as a string in TOML ("30d", "15m"),
// kept with its parse error like Size.
type Duration struct {
	D   time.Duration
	Raw string
	Err error
}

// NewDuration returns the Duration written s; it panics on a bad literal.
func NewDuration(s string) Duration {
	d, err := ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return Duration{D: d, Raw: s}
}

// UnmarshalText implements encoding.TextUnmarshaler; it never fails.
func (d *Duration) UnmarshalText(b []byte) error {
	d.Raw = string(b)
	d.D, d.Err = ParseDuration(d.Raw)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Raw), nil }

func (d Duration) String() string { return d.Raw }
