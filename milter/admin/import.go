package admin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/policy"
)

// Limits of a member import file.
const (
	MaxImportFile  = 16 << 20 // bytes
	MaxImportLine  = 4096     // bytes per line
	MaxKeyFileSize = 16 << 20 // bytes read of one key file; keyring's limits apply after
)

// Refusal is one line of a member import that was refused.
type Refusal struct {
	Line    int
	Address string // "" when the line could not be read as one
	Reason  string
}

func (r Refusal) String() string {
	if r.Address == "" {
		return fmt.Sprintf("%d: %s", r.Line, r.Reason)
	}
	return fmt.Sprintf("%d: %s: %s", r.Line, r.Address, r.Reason)
}

// Imported is one member a member import added or found unchanged.
type Imported struct {
	Line        int
	Address     string
	Fingerprint string
	Unchanged   bool // already a member with this key, active
}

// ImportResult is what ImportMembers did: every member added (none when
// anything was refused), or every refusal.
type ImportResult struct {
	Members   []Imported
	Refused   []Refusal
	Lines     int // member lines read
	Added     int
	Unchanged int
}

// ErrRefused: a member import refused at least one line, and imported
// nothing; ImportResult.Refused says which and why.
var ErrRefused = errors.New("nothing imported")

// importLine is one "ADDRESS KEYFILE" line.
type importLine struct {
	line          int
	addr, keyFile string
}

// ParseImport reads a member import file: one "ADDRESS KEYFILE" per
// line (separated by spaces or tabs; KEYFILE is the rest of the line,
// so it may contain spaces), blank lines and lines starting with "#"
// ignored. A relative KEYFILE is resolved against dir.
func parseImport(data []byte, dir string) ([]importLine, []Refusal, error) {
	if len(data) > MaxImportFile {
		return nil, nil, fmt.Errorf("import file larger than %d bytes", MaxImportFile)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1024), MaxImportLine)
	var (
		lines   []importLine
		refused []Refusal
		n       int
	)
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		addr, rest, ok := strings.Cut(strings.ReplaceAll(text, "\t", " "), " ")
		rest = strings.TrimSpace(rest)
		if !ok || rest == "" {
			refused = append(refused, Refusal{Line: n, Reason: "want ADDRESS KEYFILE"})
			continue
		}
		if !filepath.IsAbs(rest) {
			rest = filepath.Join(dir, rest)
		}
		lines = append(lines, importLine{line: n, addr: addr, keyFile: rest})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, nil, fmt.Errorf("line %d is longer than %d bytes", n+1, MaxImportLine)
		}
		return nil, nil, err
	}
	return lines, refused, nil
}

// ImportMembers registers the members listed in data (the import file's
// content; dir resolves relative key file names) on the list, each as
// AddMember would (the same key checks, the key stripped to the member's
// user ID), all or nothing in one store transaction. A member already on
// the list with the same key and active is left unchanged; one with
// another key or state is refused. When any line is refused nothing is
// imported and the error wraps ErrRefused; the result lists every
// refusal with its line.
func (s *Site) ImportMembers(ctx context.Context, list string, data []byte, dir string) (ImportResult, error) {
	var res ImportResult
	l, err := s.list(ctx, list)
	if err != nil {
		return res, err
	}
	lines, refused, err := parseImport(data, dir)
	if err != nil {
		return res, err
	}
	res.Refused = refused
	res.Lines = len(lines) + len(refused)
	if res.Lines == 0 {
		return res, errors.New("the import file lists no members (one ADDRESS KEYFILE per line)")
	}
	existing, err := s.Store.Members(ctx, l.Address)
	if err != nil {
		return res, err
	}
	have := map[string]store.Member{}
	for _, m := range existing {
		have[m.Address] = m
	}
	first := map[string]int{}
	lineOf := map[string]int{}
	var ms []store.Member
	now := s.Now().UTC()
	for _, il := range lines {
		refuse := func(format string, args ...any) {
			res.Refused = append(res.Refused, Refusal{Line: il.line, Address: il.addr, Reason: fmt.Sprintf(format, args...)})
		}
		addr := policy.NormalizeAddress(il.addr)
		if !policy.ValidAddress(addr) {
			refuse("not an email address")
			continue
		}
		if prev, dup := first[addr]; dup {
			refuse("listed already on line %d", prev)
			continue
		}
		first[addr] = il.line
		keyData, err := readBounded(il.keyFile)
		if err != nil {
			refuse("key file: %v", err)
			continue
		}
		mk, err := keyring.ParseMemberKey(keyData, keyring.ConfigLimits(s.Config), s.Now())
		if err == nil {
			err = mk.OnlyAddress(addr)
		}
		if err != nil {
			refuse("key %s: %v", il.keyFile, err)
			continue
		}
		if m, ok := have[addr]; ok && (m.State != store.MemberActive || m.Fingerprint != mk.Fingerprint) {
			refuse("already a member of %s (%s, key %s): remove it first, or replace its key with member add", l.Address, m.State, orNone(m.Fingerprint))
			continue
		}
		lineOf[addr] = il.line
		res.Members = append(res.Members, Imported{Line: il.line, Address: addr, Fingerprint: mk.Fingerprint, Unchanged: have[addr].Address != ""})
		ms = append(ms, store.Member{List: l.Address, Address: addr, State: store.MemberActive,
			Fingerprint: mk.Fingerprint, PublicKey: mk.Binary, KeyIDs: mk.KeyIDs, CreatedAt: now, UpdatedAt: now})
	}
	if len(res.Refused) > 0 {
		sortRefusals(res.Refused)
		res.Members = nil
		return res, fmt.Errorf("%d of %d lines refused, %w", len(res.Refused), res.Lines, ErrRefused)
	}
	added, unchanged, err := s.Store.ImportMembers(ctx, l.Address, ms)
	var ce *store.ImportConflictError
	if errors.As(err, &ce) {
		// Changed since we looked.
		for _, a := range ce.Addresses {
			res.Refused = append(res.Refused, Refusal{Line: lineOf[a], Address: a, Reason: "became a member of " + l.Address + " with another key or state meanwhile"})
		}
		sortRefusals(res.Refused)
		res.Members = nil
		return res, fmt.Errorf("%d of %d lines refused, %w", len(res.Refused), res.Lines, ErrRefused)
	}
	if err != nil {
		res.Members = nil
		return res, fmt.Errorf("nothing imported: %w", err)
	}
	res.Added, res.Unchanged = added, unchanged
	return res, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func sortRefusals(rs []Refusal) {
	slices.SortStableFunc(rs, func(a, b Refusal) int { return a.Line - b.Line })
}

// readBounded reads at most MaxKeyFileSize+1 bytes of path, so keyring's
// size limit reports a larger key without an unbounded read.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxKeyFileSize+1))
}
