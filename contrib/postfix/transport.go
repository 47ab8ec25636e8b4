package postfix

import (
	"fmt"
	"strings"
)

// ResponderService is the master.cf service of the command responder
// (responder.master.cf.snippet).
const ResponderService = "listcrypt-responder"

// RefuseService is the master.cf service (master.cf.snippet) that
// bounces mail reaching a list address itself. listcrypt deletes the list
// address from every transaction it handles, so mail that still carries
// it at delivery time has not passed the milter (an alias or forward
// expanded by Postfix after the milter saw the transaction, local
// submission, the reinjection port): it is bounced, never delivered in
// clear. It cannot be Postfix's "error:" transport: smtpd refuses an
// address routed there already at RCPT TO, before the milter sees the
// post.
const RefuseService = "listcrypt-refuse"

// RefusalText is what mail reaching a list address itself bounces with:
// the command output of RefuseService (master.cf.snippet echoes exactly
// this line) and of "listcrypt-responder --refuse", the Sendmail route of
// a list address (contrib/sendmail/devs.include). It starts with the
// enhanced status code, which Postfix's pipe(8) takes for the DSN.
const RefusalText = "5.7.1 this list takes mail only at its own address, through listcrypt; aliases and forwards to it are refused"

// ListRefusal is the transport_maps value of a list address.
const ListRefusal = RefuseService + ":"

// TransportTable returns the transport_maps lines (the format of
// responder.transport) that route lists: each list address to
// ListRefusal, and each LIST-request@DOMAIN and LIST-bounces@DOMAIN (the
// default distribute.bounce_address) to the responder service, which
// answers commands at the one and reads bounces at the other
// (docs/bounces.md).
// Postfix tries the full recipient, then the recipient without its
// address extension (recipient_delimiter), so LIST+anything@DOMAIN is
// refused too, and LIST-request+anything@DOMAIN and the VERP addresses
// LIST-bounces+MEMBER@DOMAIN reach the responder.
// Hash tables fold case: DEVS@ is devs@.
func TransportTable(lists ...string) string {
	var b strings.Builder
	for _, l := range lists {
		l = strings.ToLower(strings.TrimSpace(l))
		local, domain, ok := strings.Cut(l, "@")
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "%s\t%s\n", l, ListRefusal)
		fmt.Fprintf(&b, "%s-request@%s\t%s:\n", local, domain, ResponderService)
		fmt.Fprintf(&b, "%s-bounces@%s\t%s:\n", local, domain, ResponderService)
	}
	return b.String()
}
