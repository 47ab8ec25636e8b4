package bounce_test

import (
	"testing"

	"github.com/listcrypt/listcrypt/milter/bounce"
)

func TestVERPRoundTrip(t *testing.T) {
	for _, c := range []struct{ bounce, member, want string }{
		{"devs-bounces@lists.example.org", "alice@example.org", "devs-bounces+alice=example.org@lists.example.org"},
		{"LIST-bounces@lists.example.org", "alice@example.org", "LIST-bounces+alice=example.org@lists.example.org"},
		{"devs-bounces@lists.example.org", "alice+lists@example.org", "devs-bounces+alice+lists=example.org@lists.example.org"},
		{"devs-bounces@lists.example.org", "a=b+c=d@example.org", "devs-bounces+a=b+c=d=example.org@lists.example.org"},
		{"devs-bounces@Lists.Example.ORG", "Alice.Smith@Example.ORG", "devs-bounces+Alice.Smith=Example.ORG@Lists.Example.ORG"},
		{"devs-bounces@lists.example.org", "bob@sub.mail.example.co.uk", "devs-bounces+bob=sub.mail.example.co.uk@lists.example.org"},
	} {
		got := bounce.VERP(c.bounce, c.member)
		if got != c.want {
			t.Errorf("VERP(%q, %q) = %q, want %q", c.bounce, c.member, got, c.want)
		}
		m, ok := bounce.ParseVERP(got)
		if !ok || m != c.member {
			t.Errorf("ParseVERP(%q) = %q, %v; want %q", got, m, ok, c.member)
		}
		if m, ok := bounce.ParseVERP("<" + got + ">"); !ok || m != c.member {
			t.Errorf("ParseVERP(<%q>) = %q, %v", got, m, ok)
		}
	}
}

func TestVERPRefuses(t *testing.T) {
	for _, c := range []struct{ bounce, member string }{
		{"devs-bounces", "alice@example.org"},
		{"devs-bounces@lists.example.org", "alice"},
		{"devs+x-bounces@lists.example.org", "alice@example.org"}, // ParseVERP could not split it
	} {
		if got := bounce.VERP(c.bounce, c.member); got != c.bounce {
			t.Errorf("VERP(%q, %q) = %q, want it unchanged", c.bounce, c.member, got)
		}
	}
	for _, rcpt := range []string{
		"devs-bounces@lists.example.org",        // no VERP
		"devs-bounces+alice@lists.example.org",  // extension without "="
		"devs-bounces+alice=@lists.example.org", // no domain
		"devs-bounces+=example.org@lists.example.org",
		"devs-bounces+alice=example@lists.example.org", // domain without a dot
		"devs-bounces+al ice=example.org@lists.example.org",
		"devs-bounces+alice=example.org",
		"",
	} {
		if m, ok := bounce.ParseVERP(rcpt); ok {
			t.Errorf("ParseVERP(%q) = %q, want no member", rcpt, m)
		}
	}
}
