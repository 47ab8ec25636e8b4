package policy

import "strings"

// Recipient matching: which RCPT TO addresses reach a list.
//
// The MTA does not deliver a recipient under the spelling the client
// wrote. Postfix (trivial-rewrite(8), resolve) removes quotes and
// backslash escapes from the local part, drops a source route
// (<@a,@b:user@domain>) and a trailing dot of the domain, and when the
// domain is one of its own it strips it and goes on with the local part:
// user%domain (allow_percent_hack), site!user (swap_bangpath) and
// "user@domain" become user@domain. Its table lookups fold case and try
// the address without its extension (recipient_delimiter) after the full
// one. A list post that escapes the milter under such a spelling would be
// delivered as the list address without ever being encrypted, so the
// milter treats every spelling that may end at a list address as that
// list. It cannot know which domains the MTA counts as its own, so it
// assumes they all are: an address like devs%lists.example.org@other.example
// is taken as the list too (fail closed). What it cannot see at all
// (virtual aliases, .forward files) is refused by the MTA's routing of
// the list address itself (contrib/postfix: the error transport).

// maxRecipientLen bounds the RCPT TO address examined (SMTP's path limit
// is 256 octets; Postfix accepts longer ones).
const maxRecipientLen = 2048

// maxRewrites bounds the % / ! / "@" rewrites followed in one address.
const maxRewrites = 16

// Recipient returns the policy of the list that rcpt, a RCPT TO address
// as the MTA passes it (with or without angle brackets), may be delivered
// to, or nil. delimiters is the MTA's recipient_delimiter: each character
// separates an address extension (devs+anything@ is devs@). The request
// and bounce addresses of a list are never taken for the list itself,
// whatever the delimiter, and neither are owner-LIST@ and LIST-request@
// when '-' is a delimiter, nor postmaster@, mailer-daemon@ and
// double-bounce@ (as Postfix).
func (s *Set) Recipient(rcpt, delimiters string) *Policy {
	if s == nil || len(s.Lists) == 0 {
		return nil
	}
	for _, a := range RecipientForms(rcpt) {
		if p := s.Lists[a]; p != nil {
			return p
		}
		base := StripExtension(a, delimiters)
		if base == a {
			continue
		}
		p := s.Lists[base]
		if p == nil || s.ownRoute(a, delimiters) {
			continue
		}
		return p
	}
	return nil
}

// ownRoute reports whether addr is a list's request or bounce address,
// or one of those with an address extension (a VERP bounce address,
// LIST-bounces+MEMBER@, whatever the delimiters): those have routes of
// their own and are never the list.
func (s *Set) ownRoute(addr, delimiters string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return false
	}
	local, domain := addr[:at], addr[at:]
	for _, p := range s.Lists {
		for _, own := range []string{p.RequestAddress(), p.BounceAddress()} {
			if addr == own {
				return true
			}
			oat := strings.LastIndexByte(own, '@')
			if oat <= 0 || own[oat:] != domain {
				continue
			}
			ol := own[:oat]
			if len(local) > len(ol) && local[:len(ol)] == ol && strings.ContainsRune("+"+delimiters, rune(local[len(ol)])) {
				return true
			}
		}
	}
	return false
}

// RecipientForms returns the addresses, normalised (unquoted,
// lower-case), that the MTA may deliver rcpt to: the address itself and
// each step of the rewrites of its local part (user%domain,
// site!user, "user@domain") in the order Postfix applies them. The
// extension is not stripped (see StripExtension). An address it cannot
// read gives what it could read, possibly nothing.
func RecipientForms(rcpt string) []string {
	if len(rcpt) > maxRecipientLen {
		return nil
	}
	s := strings.TrimSpace(rcpt)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	s = stripSourceRoute(s)
	local, domain, hasDomain := splitQuoted(s)
	var out []string
	for range maxRewrites {
		if hasDomain {
			domain = normalDomain(domain)
			if local != "" && domain != "" {
				out = append(out, strings.ToLower(local)+"@"+domain)
			}
		}
		// With the domain taken as the MTA's own, the local part is the
		// next address to resolve (trivial-rewrite's order: '@', then
		// site!user, then the rightmost '%').
		if at := strings.LastIndexByte(local, '@'); at >= 0 {
			local, domain, hasDomain = local[:at], local[at+1:], true
		} else if bang := strings.IndexByte(local, '!'); bang >= 0 {
			local, domain, hasDomain = local[bang+1:], local[:bang], true
		} else if pct := strings.LastIndexByte(local, '%'); pct >= 0 {
			local, domain, hasDomain = local[:pct], local[pct+1:], true
		} else {
			break
		}
	}
	return out
}

// StripExtension returns addr (normalised) without its address extension
// as Postfix's split_addr does: the local part is cut at the first
// delimiter character, unless nothing would be left of it, or it is
// postmaster, mailer-daemon or double-bounce, or (when '-' is a
// delimiter) it is owner-* or *-request. Without an extension it returns
// addr.
func StripExtension(addr, delimiters string) string {
	at := strings.LastIndexByte(addr, '@')
	if delimiters == "" || at <= 0 {
		return addr
	}
	local, domain := addr[:at], addr[at:]
	switch local {
	case "postmaster", "mailer-daemon", "double-bounce":
		return addr
	}
	if strings.ContainsRune(delimiters, '-') &&
		(strings.HasPrefix(local, "owner-") || (len(local) > len("-request") && strings.HasSuffix(local, "-request"))) {
		return addr
	}
	i := strings.IndexAny(local, delimiters)
	if i <= 0 {
		return addr
	}
	return local[:i] + domain
}

// stripSourceRoute drops an RFC 5321 source route: @a,@b:user@domain.
func stripSourceRoute(s string) string {
	if !strings.HasPrefix(s, "@") {
		return s
	}
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			if depth > 0 {
				depth--
			}
		case ':':
			if depth == 0 {
				return s[i+1:]
			}
		case '"', '<', '>':
			return s // not a route
		}
	}
	return s
}

// splitQuoted splits an address at its last '@' outside quotes and
// returns the local part without quotes and backslash escapes (the
// MTA's internal form) and the domain as written.
func splitQuoted(s string) (local, domain string, hasDomain bool) {
	var b strings.Builder
	at := -1 // position of the last '@' outside quotes, in b
	atSrc := -1
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '"':
			inQuote = !inQuote
		case c == '@' && !inQuote:
			at, atSrc = b.Len(), i
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	if at < 0 {
		return b.String(), "", false
	}
	// The domain is taken as written: no quotes belong in it.
	return b.String()[:at], s[atSrc+1:], true
}

// normalDomain lower-cases a domain and drops one trailing dot (Postfix
// drops it, but not from ".." or a lone ".").
func normalDomain(d string) string {
	d = strings.ToLower(strings.TrimSpace(d))
	if len(d) > 1 && strings.HasSuffix(d, ".") && !strings.HasSuffix(d, "..") {
		d = d[:len(d)-1]
	}
	return d
}
