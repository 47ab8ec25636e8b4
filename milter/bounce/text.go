package bounce

import (
	"regexp"
	"strings"
)

// The non-standard shapes: plain-text bounces without a
// message/delivery-status part. Each shape is recognised by the fixed
// sentences its software writes, then read section by section: a line
// naming an address opens a recipient block, the lines after it (to a
// blank line) explain it.

// textShape is one known text bounce: match says whether the text is in
// this shape, parse reads its recipients.
type textShape struct {
	shape Shape
	match func(subject, text string) bool
	parse func(lines []string) []block
}

// block is one recipient of a text bounce: its address, the explanation,
// and whether the report calls it a delay (a warning) rather than a
// failure.
type block struct {
	addr    string
	text    []string
	delayed bool
}

var textShapes = []textShape{
	{ShapeQmail, contains("This is the qmail-send program"), parseQmail},
	{ShapeExim, contains("created automatically by mail delivery software"), parseExim},
	{ShapeSendmail, contains("----- The following addresses had"), parseSendmail},
	{ShapePostfix, contains("This is the mail system at host", "\nThe mail system\n"), parsePostfix},
	{ShapeMicrosoft, func(subject, text string) bool {
		return strings.HasPrefix(strings.ToLower(subject), "undeliverable:") ||
			contains("Remote Server returned", "Delivery has failed to these recipients", "couldn't be delivered.")(subject, text)
	}, parseMicrosoft},
	{ShapeGmail, func(subject, text string) bool {
		return strings.Contains(subject, "Delivery Status Notification") ||
			contains("** Address not found **", "Delivery to the following recipient", "wasn't delivered to", "** Message not delivered")(subject, text)
	}, parseGmail},
}

func contains(markers ...string) func(subject, text string) bool {
	return func(_, text string) bool {
		for _, m := range markers {
			if strings.Contains(text, m) {
				return true
			}
		}
		return false
	}
}

// parseText tries the shapes in order; the first that yields recipients
// wins.
func parseText(subject string, lines []string, lim Limits) (Shape, []Recipient) {
	text := "\n" + strings.Join(lines, "\n") + "\n"
	for _, s := range textShapes {
		if !s.match(subject, text) {
			continue
		}
		var out []Recipient
		for _, b := range s.parse(lines) {
			out = append(out, b.recipient(lim))
		}
		if len(out) > 0 {
			return s.shape, out
		}
	}
	return "", nil
}

// recipient turns a block into a Recipient: the explanation is the
// diagnostic, the status is the first enhanced status code in it.
func (b block) recipient(lim Limits) Recipient {
	var parts []string
	for _, l := range b.text {
		l = strings.TrimSpace(l)
		// Sendmail's "(reason: ...)", Exchange's "#550 ... ##" and
		// "Remote Server returned '...'".
		if rest, ok := strings.CutPrefix(l, "(reason: "); ok {
			l = strings.TrimSuffix(rest, ")")
		}
		if strings.HasPrefix(l, "#") {
			l = strings.Trim(l, "# ")
		}
		if rest, ok := strings.CutPrefix(l, "Remote Server returned '"); ok {
			l = strings.TrimSuffix(rest, "'")
		}
		if l != "" {
			parts = append(parts, l)
		}
	}
	diag := oneLine(strings.Join(parts, " "), lim.MaxDiagnostic)
	r := Recipient{Address: b.addr, Action: "failed", Status: findStatus(diag), Diagnostic: diag}
	if b.delayed {
		r.Action = "delayed"
	}
	r.Permanent = permanent(r.Action, r.Status, diag)
	return r
}

// section is a part of a text bounce: from a line that begin accepts
// (exclusive) to one that end accepts.
type section struct {
	begin, end func(string) bool
	delayed    bool
}

// collect reads the blocks of the sections: inside one, a line for which
// start gives an address opens a block; the following lines up to a
// blank line are its text.
func collect(lines []string, sections []section, start func(string) (addr, rest string, ok bool)) []block {
	var out []block
	for _, sec := range sections {
		in := false
		var cur *block
		for _, l := range lines {
			if !in {
				in = sec.begin(l)
				continue
			}
			if sec.end(l) {
				break
			}
			if addr, rest, ok := start(l); ok {
				out = append(out, block{addr: addr, delayed: sec.delayed})
				cur = &out[len(out)-1]
				if rest != "" {
					cur.text = append(cur.text, rest)
				}
				continue
			}
			if strings.TrimSpace(l) == "" {
				cur = nil
				continue
			}
			if cur != nil && len(cur.text) < 20 {
				cur.text = append(cur.text, l)
			}
		}
	}
	return out
}

func hasPrefix(prefixes ...string) func(string) bool {
	return func(l string) bool {
		l = strings.TrimSpace(l)
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				return true
			}
		}
		return false
	}
}

func has(subs ...string) func(string) bool {
	return func(l string) bool {
		for _, s := range subs {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	}
}

// angleRE: "<alice@example.org>: text", "<alice@example.org> (expanded
// from <devs@...>): text", "<alice@example.org>" alone.
var angleRE = regexp.MustCompile(`^<([^<>\s]+)>(?:\s*\([^)]*\))?:?\s*(.*)$`)

// angleStart opens a block at an unindented "<address>" line.
func angleStart(l string) (string, string, bool) {
	m := angleRE.FindStringSubmatch(l)
	if m == nil {
		return "", "", false
	}
	a, ok := cleanAddress(m[1])
	return a, m[2], ok
}

// aloneStart opens a block at a line holding an address and nothing
// else ("  carol@example.com", "carol@example.com:").
func aloneStart(l string) (string, string, bool) {
	f := strings.Fields(l)
	if len(f) != 1 || !strings.Contains(f[0], "@") {
		return "", "", false
	}
	a, ok := cleanAddress(f[0])
	return a, "", ok
}

// Postfix (bounce(8) without the DSN parts): "The mail system" then
// "<addr>: host ... said: 550 5.1.1 ..." with indented continuations.
// A delay warning says "THIS IS A WARNING ONLY".
func parsePostfix(lines []string) []block {
	delayed := strings.Contains(strings.Join(lines, "\n"), "THIS IS A WARNING ONLY")
	sec := section{begin: hasPrefix("The mail system"), end: hasPrefix("--- ", "Reporting-MTA:", "Content-"), delayed: delayed}
	return collect(lines, []section{sec}, func(l string) (string, string, bool) {
		if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			return "", "", false
		}
		return angleStart(l)
	})
}

// Sendmail (without DSN): "----- The following addresses had permanent
// fatal errors -----" then "<addr>" and "(reason: ...)"; transient
// errors are a warning.
func parseSendmail(lines []string) []block {
	end := hasPrefix("----- ")
	return collect(lines, []section{
		{begin: has("addresses had permanent fatal errors"), end: end},
		{begin: has("addresses had transient non-fatal errors"), end: end, delayed: true},
	}, func(l string) (string, string, bool) {
		if a, rest, ok := angleStart(strings.TrimSpace(l)); ok && rest == "" {
			return a, "", true
		}
		return aloneStart(l)
	})
}

// Exim: "The following address(es) failed:" then indented address lines
// with the explanation indented deeper; a delay warning lists "the
// address(es) to which the message has not yet been delivered".
func parseExim(lines []string) []block {
	end := hasPrefix("------ This is a copy", "No action is required", "Reporting-MTA:", "--")
	return collect(lines, []section{
		{begin: has("address(es) failed:", "addresses failed:", "address failed:"), end: end},
		{begin: has("has not yet been delivered is:", "have not yet been delivered are:", "has not yet been delivered are:"), end: end, delayed: true},
	}, func(l string) (string, string, bool) {
		if !strings.HasPrefix(l, "  ") || strings.HasPrefix(l, "    ") {
			return "", "", false
		}
		return aloneStart(l)
	})
}

// qmail: "Hi. This is the qmail-send program at HOST." then "<addr>:"
// and the remote's words, up to "--- Below this line is a copy".
func parseQmail(lines []string) []block {
	sec := section{begin: has("This is the qmail-send program"), end: hasPrefix("--- Below this line", "--- Enclosed are")}
	return collect(lines, []section{sec}, angleStart)
}

// Microsoft Exchange / Outlook: "Undeliverable:" in the subject; the
// administrators' section lists each address with "Remote Server
// returned '550 5.1.1 ...'" (or "#550 5.1.1 ... ##"); the human part
// says "Your message to ADDR couldn't be delivered." or lists the
// addresses under "Delivery has failed to these recipients or groups:".
func parseMicrosoft(lines []string) []block {
	start := func(l string) (string, string, bool) {
		f := strings.Fields(l)
		if len(f) == 0 || len(f) > 2 || !strings.Contains(f[0], "@") {
			return "", "", false
		}
		if len(f) == 2 && !strings.HasPrefix(f[1], "(") {
			return "", "", false
		}
		a, ok := cleanAddress(f[0])
		return a, "", ok
	}
	if bs := collect(lines, []section{{begin: has("Diagnostic information for administrators"), end: hasPrefix("Original message headers:", "Received:")}}, start); len(bs) > 0 {
		return bs
	}
	var out []block
	var remote []string
	for _, l := range lines {
		if i := strings.Index(l, "Remote Server returned '"); i >= 0 && remote == nil {
			remote = []string{l[i:]}
		}
	}
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "Your message to "); ok {
			if addr, _, ok := strings.Cut(rest, " couldn't be delivered"); ok {
				if a, ok := cleanAddress(addr); ok {
					out = append(out, block{addr: a, text: remote})
				}
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	bs := collect(lines, []section{{begin: has("Delivery has failed to these recipients or groups"), end: has("Diagnostic information")}}, start)
	for i := range bs {
		bs[i].text = remote
	}
	return bs
}

// Gmail: "** Address not found **" and "Your message wasn't delivered to
// ADDR because ...", the remote's words after "The response from the
// remote server was:"; a delay "There was a temporary problem delivering
// your message to ADDR."; the older "Delivery to the following recipient
// failed permanently:" / "has been delayed:" with the address on the
// next line and "Technical details of ... failure:".
func parseGmail(lines []string) []block {
	diag := gmailDiag(lines, "The response from the remote server was:", "The response was:", "The error that the other server returned was:")
	if diag == nil {
		diag = gmailDiag(lines, "Technical details of permanent failure:", "Technical details of temporary failure:")
	}
	var out []block
	add := func(s string, delayed bool) {
		if a, ok := cleanAddress(s); ok {
			out = append(out, block{addr: a, text: diag, delayed: delayed})
		}
	}
	for i, l := range lines {
		switch {
		case strings.Contains(l, "wasn't delivered to "):
			_, rest, _ := strings.Cut(l, "wasn't delivered to ")
			add(firstWord(rest), false)
		case strings.Contains(l, "temporary problem delivering your message to "):
			_, rest, _ := strings.Cut(l, "delivering your message to ")
			add(firstWord(rest), true)
		case has("Delivery to the following recipient failed permanently", "Delivery to the following recipients failed permanently",
			"Delivery to the following recipient has been delayed")(l):
			delayed := strings.Contains(l, "delayed")
			n := 0
			for _, next := range lines[i+1:] {
				f := strings.Fields(next)
				if len(f) == 0 && n == 0 {
					continue // blank lines before the list
				}
				if len(f) != 1 || n == 20 {
					break
				}
				add(f[0], delayed)
				n++
			}
		}
	}
	return out
}

// gmailDiag: the lines after the first line holding one of markers,
// blank lines before them skipped, up to the next blank line.
func gmailDiag(lines []string, markers ...string) []string {
	at := -1
	for i, l := range lines {
		if has(markers...)(l) {
			at = i
			break
		}
	}
	if at < 0 {
		return nil
	}
	var diag []string
	for _, d := range lines[at+1:] {
		if strings.TrimSpace(d) == "" {
			if len(diag) > 0 {
				break
			}
			continue
		}
		if diag = append(diag, d); len(diag) == 20 {
			break
		}
	}
	return diag
}
