package workflow

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Verb is a responder command.
type Verb string

// The commands of the responder (docs/responder.md).
const (
	VerbHelp        Verb = "help"
	VerbSubscribe   Verb = "subscribe"
	VerbUnsubscribe Verb = "unsubscribe"
	VerbKeySet      Verb = "key set"
	VerbKeyConfirm  Verb = "key confirm"
	VerbKeyChange   Verb = "key change"
	VerbKeyRevoke   Verb = "key revoke"
	VerbKeyGet      Verb = "key get"
	VerbKeyShow     Verb = "key show"
)

// Command is one parsed command.
type Command struct {
	Verb Verb
	// Token is the token argument, upper case ("key set", "key confirm",
	// and "unsubscribe TOKEN"); "" for verbs without one.
	Token string
	// InSubject: the command came from the Subject, which no signature
	// covers.
	InSubject bool
}

// String renders the command as a line the parser reads back.
func (c Command) String() string {
	if c.Token != "" {
		return string(c.Verb) + " " + c.Token
	}
	return string(c.Verb)
}

// Parsing limits: only the start of a body is read for a command.
const (
	maxCommandLines = 500  // lines looked at, quoted or not
	maxLineLength   = 1000 // longer lines are never commands
)

// ErrNoCommand: neither the body nor the Subject holds a command.
var ErrNoCommand = errors.New("no command found")

// SyntaxError is a line that names a command but does not fit it.
type SyntaxError struct {
	Verb Verb   // the command the line names
	Line string // the offending line, shortened: the sender's own bytes
	// Reason says what is wrong, in fixed text (none of the line's
	// bytes): it may go to anyone.
	Reason string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("%q: %s", e.Line, e.Reason) }

// ParseCommand finds the command of a command mail: the first command
// line of the body (blank lines, other text, and quote markers ">" before
// a line are skipped; the scan stops at a signature separator "-- " or an
// armored signature), else the Subject with its "Re:"/"Fwd:"-style
// prefixes removed. Commands are case-insensitive. A line that starts
// like a command but does not fit it is a *SyntaxError; a mail without
// any command gives ErrNoCommand.
func ParseCommand(subject string, body []byte) (Command, error) {
	text := string(body)
	n := 0
	for len(text) > 0 && n < maxCommandLines {
		var line string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, ""
		}
		n++
		line = unquote(line)
		if line == "--" || strings.HasPrefix(line, "-----BEGIN PGP SIGNATURE") {
			break
		}
		cmd, ok, err := parseLine(line)
		if err != nil {
			return Command{}, err
		}
		if ok {
			return cmd, nil
		}
	}
	if s := stripSubjectPrefixes(subject); s != "" {
		cmd, ok, err := parseLine(s)
		if err != nil {
			return Command{}, err
		}
		if ok {
			cmd.InSubject = true
			return cmd, nil
		}
	}
	return Command{}, ErrNoCommand
}

// unquote removes white space and the quote markers mail clients put in
// front of a quoted line ("> ", ">>", "> > ").
func unquote(line string) string {
	line = strings.TrimSpace(line)
	for strings.HasPrefix(line, ">") {
		line = strings.TrimSpace(line[1:])
	}
	return line
}

// subjectPrefixes are what mail clients put in front of a Subject on a
// reply or forward, lower case, in several languages.
var subjectPrefixes = []string{"re:", "aw:", "sv:", "vs:", "antw:", "fwd:", "fw:", "wg:", "tr:", "rv:"}

func stripSubjectPrefixes(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxLineLength {
		return ""
	}
	for changed := true; changed; {
		changed = false
		l := strings.ToLower(s)
		for _, p := range subjectPrefixes {
			if strings.HasPrefix(l, p) {
				s, changed = strings.TrimSpace(s[len(p):]), true
				break
			}
		}
		// "[devs] key get": a list tag from some other list software.
		if !changed && strings.HasPrefix(s, "[") {
			if i := strings.IndexByte(s, ']'); i > 0 {
				s, changed = strings.TrimSpace(s[i+1:]), true
			}
		}
	}
	return s
}

// parseLine parses one line: ok is false for a line that is not a
// command at all.
func parseLine(line string) (Command, bool, error) {
	if len(line) > maxLineLength || line == "" {
		return Command{}, false, nil
	}
	f := strings.Fields(strings.ToLower(line))
	if len(f) == 0 {
		return Command{}, false, nil
	}
	short := line
	if len(short) > 80 {
		short = short[:80] + "..."
	}
	noArgs := func(v Verb, args []string) (Command, bool, error) {
		if len(args) != 0 {
			// "subscribe me please" is prose, not a command.
			return Command{}, false, nil
		}
		return Command{Verb: v}, true, nil
	}
	withToken := func(v Verb, args []string, optional bool) (Command, bool, error) {
		switch {
		case len(args) == 0 && optional:
			return Command{Verb: v}, true, nil
		case len(args) == 0:
			return Command{}, false, &SyntaxError{Verb: v, Line: short, Reason: fmt.Sprintf("The command %q needs the token from the list's mail: %s TOKEN", v, v)}
		case len(args) > 1:
			return Command{}, false, &SyntaxError{Verb: v, Line: short, Reason: fmt.Sprintf("The command %q takes one token: %s TOKEN", v, v)}
		}
		tok, err := NormalizeToken(args[0])
		if err != nil {
			return Command{}, false, &SyntaxError{Verb: v, Line: short, Reason: fmt.Sprintf("The token of the command %q %v", v, err)}
		}
		return Command{Verb: v, Token: tok}, true, nil
	}
	switch f[0] {
	case "help":
		return noArgs(VerbHelp, f[1:])
	case "subscribe":
		return noArgs(VerbSubscribe, f[1:])
	case "unsubscribe":
		if len(f) > 2 {
			return Command{}, false, nil
		}
		return withToken(VerbUnsubscribe, f[1:], true)
	case "key":
		if len(f) < 2 {
			return Command{}, false, nil
		}
		switch f[1] {
		case "set":
			return withToken(VerbKeySet, f[2:], false)
		case "confirm":
			return withToken(VerbKeyConfirm, f[2:], false)
		case "change":
			return noArgs(VerbKeyChange, f[2:])
		case "revoke":
			return noArgs(VerbKeyRevoke, f[2:])
		case "get":
			return noArgs(VerbKeyGet, f[2:])
		case "show":
			return noArgs(VerbKeyShow, f[2:])
		}
	}
	return Command{}, false, nil
}

// Statement is the fields of a "key confirm" statement: "name: value"
// lines (list, address, fingerprint), first occurrence of each.
type Statement struct {
	List        string
	Address     string
	Fingerprint string // upper-case hex, spaces removed; "" if absent or not hex
}

// ParseStatement reads the statement fields from a body (quote markers
// are skipped, as for commands).
func ParseStatement(body []byte) Statement {
	var st Statement
	seen := map[string]bool{}
	text := string(body)
	for n := 0; len(text) > 0 && n < maxCommandLines; n++ {
		var line string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, ""
		}
		line = unquote(line)
		if line == "--" || strings.HasPrefix(line, "-----BEGIN PGP SIGNATURE") {
			break
		}
		if len(line) > maxLineLength {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if seen[name] {
			continue
		}
		switch name {
		case "list":
			st.List = strings.ToLower(value)
		case "address":
			st.Address = strings.ToLower(value)
		case "fingerprint":
			st.Fingerprint = normalizeFingerprint(value)
		default:
			continue
		}
		seen[name] = true
	}
	return st
}

func normalizeFingerprint(s string) string {
	s = strings.ToUpper(strings.Join(strings.Fields(s), ""))
	if len(s) != 40 && len(s) != 64 {
		return ""
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return ""
		}
	}
	return s
}

// Tokens are 160 random bits, written as 32 base32 characters (RFC 4648
// §6, no padding): easy to copy, case-insensitive.
const (
	tokenBytes = 20
	tokenChars = 32
)

var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewToken returns a fresh token from rand.
func NewToken(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	b := make([]byte, tokenBytes)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return tokenEncoding.EncodeToString(b), nil
}

// NormalizeToken checks the form of a token and returns it upper case.
// The error is fixed text: it never repeats s.
func NormalizeToken(s string) (string, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if len(t) != tokenChars {
		return "", fmt.Errorf("is not a token from this list (a token has %d letters and digits)", tokenChars)
	}
	if _, err := tokenEncoding.DecodeString(t); err != nil {
		return "", errors.New("is not a token from this list (letters A-Z and digits 2-7 only)")
	}
	return t, nil
}

// HashToken is what the store keeps of a token: SHA-256 over a domain
// label and the normalised token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte("listcrypt-token-v1\x00" + strings.ToUpper(token)))
	return h[:]
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
