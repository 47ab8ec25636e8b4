package bounce

import "strings"

// VERP (variable envelope return path) puts the member's address into
// the envelope sender of the member's copy, so that a bounce names the
// member in the address it is sent to, whatever its body says. The form
// is Postfix's XVERP with its default delimiters "+=" (postconf
// default_verp_delimiters): the member's "@" becomes "=" and the result
// is appended to the bounce address's local part after a "+":
//
//	VERP("devs-bounces@lists.example.org", "alice@example.org")
//	  = "devs-bounces+alice=example.org@lists.example.org"
//
// Postfix hands such a bounce to the local part "devs-bounces" when its
// recipient_delimiter is "+"; the full address is the envelope
// recipient (Postfix's ORIGINAL_RECIPIENT, X-Original-To).
//
// VERP returns bounceAddr unchanged when either address has no "@" or
// the bounce address's local part already holds a "+" (ParseVERP could
// not split it).
func VERP(bounceAddr, member string) string {
	bl, bd, ok := cutLast(bounceAddr)
	ml, md, mok := cutLast(member)
	if !ok || !mok || strings.ContainsRune(bl, '+') {
		return bounceAddr
	}
	return bl + "+" + ml + "=" + md + "@" + bd
}

// ParseVERP reads the member out of a VERP bounce recipient: the local
// part is cut at its first "+" (the bounce address's own local part has
// none), and what follows at its last "=" (a domain has none), so member
// local parts with "+" and "=" come back whole. Case is kept as written;
// compare the result as member addresses are compared (lower case).
func ParseVERP(rcpt string) (member string, ok bool) {
	rcpt = strings.Trim(strings.TrimSpace(rcpt), "<>")
	local, _, ok := cutLast(rcpt)
	if !ok {
		return "", false
	}
	_, ext, ok := strings.Cut(local, "+")
	if !ok {
		return "", false
	}
	eq := strings.LastIndexByte(ext, '=')
	if eq <= 0 || eq == len(ext)-1 {
		return "", false
	}
	member = ext[:eq] + "@" + ext[eq+1:]
	if _, ok := cleanAddress(member); !ok {
		return "", false
	}
	return member, true
}

// cutLast splits an address at its last "@"; both sides non-empty.
func cutLast(addr string) (local, domain string, ok bool) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", false
	}
	return addr[:at], addr[at+1:], true
}
