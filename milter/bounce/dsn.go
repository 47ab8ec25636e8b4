package bounce

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/listcrypt/listcrypt/policy"
)

// parseDeliveryStatus reads a message/delivery-status body (RFC 3464
// §2.1): a group of per-message fields, then one group per recipient,
// groups separated by blank lines, fields in header syntax (folded lines
// allowed). Only failed and delayed recipients are returned.
func parseDeliveryStatus(body []byte, lim Limits) []Recipient {
	var out []Recipient
	for i, g := range fieldGroups(splitLines(body, lim)) {
		if i == 0 && g["final-recipient"] == "" {
			continue // the per-message group (Reporting-MTA, ...)
		}
		// RFC 3464 §2.3.2: Final-Recipient is required; some MTAs give
		// only Original-Recipient.
		addr, ok := dsnAddress(g["final-recipient"])
		orig, origOK := dsnAddress(g["original-recipient"])
		if !ok {
			if !origOK {
				continue
			}
			addr, ok = orig, true
		}
		action := strings.ToLower(firstWord(g["action"]))
		status := findStatus(g["status"])
		switch action {
		case "failed", "delayed":
		case "":
			// No Action (RFC 3464 §2.3.3 requires one): go by the status.
			switch {
			case strings.HasPrefix(status, "5."):
				action = "failed"
			case strings.HasPrefix(status, "4."):
				action = "delayed"
			default:
				continue
			}
		default:
			continue // delivered, relayed, expanded
		}
		r := Recipient{Address: addr, Action: action, Status: status}
		if origOK && orig != addr {
			r.Original = orig
		}
		r.Diagnostic = diagnostic(g["diagnostic-code"], lim)
		if r.Status == "" {
			r.Status = findStatus(r.Diagnostic)
		}
		r.Permanent = permanent(action, r.Status, r.Diagnostic)
		out = append(out, r)
	}
	return out
}

// fieldGroups splits lines into blank-line separated groups of fields,
// names lower-cased, continuation lines unfolded; the first occurrence
// of a field in a group counts.
func fieldGroups(lines []string) []map[string]string {
	var groups []map[string]string
	var cur map[string]string
	last := ""
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			if cur != nil {
				groups = append(groups, cur)
				cur, last = nil, ""
			}
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && cur != nil && last != "" {
			if len(cur[last]) < 4096 {
				cur[last] += " " + strings.TrimSpace(l)
			}
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if cur == nil {
			cur = map[string]string{}
		}
		if _, dup := cur[name]; dup {
			last = ""
			continue
		}
		cur[name] = strings.TrimSpace(value)
		last = name
	}
	if cur != nil {
		groups = append(groups, cur)
	}
	return groups
}

// dsnAddress reads "rfc822; alice@example.org" (RFC 3464 §2.3.2): the
// address type, then the address. Other types (x400, utf-8 for
// RFC 6533) are taken if what follows looks like an address.
func dsnAddress(v string) (string, bool) {
	if _, a, ok := strings.Cut(v, ";"); ok {
		v = a
	}
	return cleanAddress(v)
}

// cleanAddress normalises an address found in a report: angle brackets
// and surrounding punctuation dropped, lower-cased as member addresses
// are; ok only if it is a plausible local@domain.
func cleanAddress(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '<'); i >= 0 {
		if j := strings.IndexByte(s[i:], '>'); j > 0 {
			s = s[i+1 : i+j]
		}
	}
	s = strings.Trim(s, " \t<>()[]{}'\",;:.")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "mailto:"), "MAILTO:")
	if len(s) < 3 || len(s) > 254 || !utf8.ValidString(s) {
		return "", false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return "", false
		}
	}
	s = strings.ToLower(s)
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at > 64 || !strings.Contains(s[at+1:], ".") || !policy.ValidAddress(s) {
		return "", false
	}
	return s, true
}

// statusRE finds an RFC 3463 enhanced status code, class.subject.detail,
// not inside a dotted number (an IP address).
var statusRE = regexp.MustCompile(`(?:^|[^0-9.])([245]\.[0-9]{1,3}\.[0-9]{1,3})(?:$|[^0-9.]|\.(?:$|\s))`)

// replyRE finds an SMTP reply code (RFC 5321 §4.2) at the start of a
// reply text: "550 ", "550-", "421 ".
var replyRE = regexp.MustCompile(`(?:^|[^0-9.])([45][0-9][0-9])(?:[ -]|$)`)

func findStatus(s string) string {
	if m := statusRE.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

// permanent: a delay never is; else the status class decides (RFC 3463
// §3.1); without one, an SMTP reply code in the diagnostic; without
// either, a failure is taken as permanent.
func permanent(action, status, diag string) bool {
	switch {
	case action == "delayed":
		return false // a delay is never final, whatever its code
	case status != "":
		return status[0] == '5'
	}
	if m := replyRE.FindStringSubmatch(diag); m != nil {
		return m[1][0] == '5'
	}
	return true
}

// diagnostic reads "smtp; 550 5.1.1 ..." (RFC 3464 §2.3.6): the type
// dropped, the text made one bounded printable line.
func diagnostic(v string, lim Limits) string {
	if t, rest, ok := strings.Cut(v, ";"); ok && !strings.ContainsAny(t, " \t") {
		v = rest
	}
	return oneLine(v, lim.MaxDiagnostic)
}

func firstWord(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return strings.Trim(f[0], ";,")
}

// oneLine makes s one printable line of at most max bytes: white space
// and control characters become single spaces, invalid UTF-8 and other
// unprintable runes (bidi overrides, ...) become "?", and a cut text
// ends in "...".
func oneLine(s string, max int) string {
	var b strings.Builder
	space := true // drops leading space
	for i, r := range s {
		if b.Len() > max+8 {
			break
		}
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			r = '?'
		case unicode.IsSpace(r) || unicode.IsControl(r):
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		case !unicode.IsPrint(r):
			r = '?'
		}
		b.WriteRune(r)
		space = false
	}
	out := strings.TrimRight(b.String(), " ")
	if len(out) <= max {
		return out
	}
	cut := max - 3
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return strings.TrimRight(out[:cut], " ") + "..."
}
