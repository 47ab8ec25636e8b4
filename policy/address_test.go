package policy

import (
	"strings"
	"testing"
)

// testSet has the lists devs@ and devs-x@ (a list whose name holds '-'),
// and ops@ with its own bounce address.
func testSet(t testing.TB) *Set {
	t.Helper()
	set := &Set{Lists: map[string]*Policy{}}
	for _, src := range []string{
		`address = "devs@lists.example.org"`,
		`address = "devs-x@lists.example.org"`,
		"address = \"ops@lists.example.org\"\n[distribute]\nbounce_address = \"ops+errors@lists.example.org\"",
	} {
		p, err := Parse("t.toml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		set.Lists[p.Address] = p
	}
	return set
}

func TestRecipient(t *testing.T) {
	set := testSet(t)
	const devs, devsX, ops = "devs@lists.example.org", "devs-x@lists.example.org", "ops@lists.example.org"
	for _, tc := range []struct {
		rcpt, delims, want string
	}{
		{"devs@lists.example.org", "+", devs},
		{"<devs@lists.example.org>", "+", devs},
		{" devs@lists.example.org ", "+", devs},
		{"DEVS@Lists.Example.ORG", "+", devs},
		// Extensions.
		{"devs+x@lists.example.org", "+", devs},
		{"devs+@lists.example.org", "+", devs},
		{"DEVS+Anything+more@LISTS.example.org", "+", devs},
		{"devs+x@lists.example.org", "", ""},
		{"devs+x@lists.example.org", "-", ""},
		{"devs-y@lists.example.org", "+-", devs},
		{"devs-x@lists.example.org", "+-", devsX}, // the exact list first
		{"devs-x+y@lists.example.org", "+", devsX},
		{"devs-x+y@lists.example.org", "-+", devs}, // Postfix cuts at the first delimiter too
		{"+devs@lists.example.org", "+", ""},
		// Quoted and escaped local parts.
		{`"devs"@lists.example.org`, "+", devs},
		{`<"devs"@lists.example.org>`, "+", devs},
		{`"d\evs"@lists.example.org`, "+", devs},
		{`d\evs@lists.example.org`, "+", devs},
		{`"de"vs@lists.example.org`, "+", devs},
		{`"devs+x"@lists.example.org`, "+", devs},
		{`"devs "@lists.example.org`, "+", ""},
		{`"devs@lists.example.org"@mx.example.net`, "+", devs},
		{`"devs\@lists.example.org"@mx.example.net`, "+", devs},
		// Source routes, trailing dot.
		{"@relay.example:devs@lists.example.org", "+", devs},
		{"<@a.example,@b.example:devs@lists.example.org>", "+", devs},
		{"@[IPv6:::1]:devs@lists.example.org", "+", devs},
		{"devs@lists.example.org.", "+", devs},
		{"devs@lists.example.org..", "+", ""},
		// The % hack and bang paths, through a domain of the MTA's own.
		{"devs%lists.example.org@mx.example.net", "+", devs},
		{"DEVS+x%Lists.Example.Org@mx.example.net", "+", devs},
		{"devs%lists.example.org%mx2.example@mx.example.net", "+", devs},
		{"lists.example.org!devs@mx.example.net", "+", devs},
		{"lists.example.org!devs", "+", devs},
		{"devs%lists.example.org", "+", devs},
		{"devs@lists.example.org@mx.example.net", "+", devs},
		// Not the list: its request and bounce addresses, other names.
		{"devs-request@lists.example.org", "+", ""},
		{"devs-request+x@lists.example.org", "+", ""},
		{"devs-request@lists.example.org", "-", ""},
		{"devs-request@lists.example.org", "+-", ""},
		{"devs-bounces@lists.example.org", "-", ""},
		{"devs-bounces+x@lists.example.org", "+", ""},
		{"owner-devs@lists.example.org", "-", ""},
		{"ops+errors@lists.example.org", "+", ""}, // ops's own bounce address
		{"ops+other@lists.example.org", "+", ops},
		{"devs@example.org", "+", ""},
		{"devs@lists.example.org.evil", "+", ""},
		{"devsx@lists.example.org", "+", ""},
		{"alice@example.org", "+", ""},
		{"", "+", ""},
		{"<>", "+", ""},
		{"@", "+", ""},
		{`"`, "+", ""},
		{"devs", "+", ""},
	} {
		got := ""
		if p := set.Recipient(tc.rcpt, tc.delims); p != nil {
			got = p.Address
		}
		if got != tc.want {
			t.Errorf("Recipient(%q, %q) = %q, want %q", tc.rcpt, tc.delims, got, tc.want)
		}
	}
	var none *Set
	if none.Recipient("devs@lists.example.org", "+") != nil {
		t.Error("nil set")
	}
}

func TestStripExtension(t *testing.T) {
	for _, tc := range []struct{ addr, delims, want string }{
		{"a+b@x", "+", "a@x"},
		{"a+b+c@x", "+", "a@x"},
		{"a-b+c@x", "+-", "a@x"},
		{"a+b@x", "", "a+b@x"},
		{"+a@x", "+", "+a@x"},
		{"a@x", "+", "a@x"},
		{"postmaster@x", "+", "postmaster@x"},
		{"owner-a@x", "-", "owner-a@x"},
		{"owner-a@x", "+", "owner-a@x"},
		{"owner+a@x", "+", "owner@x"},
		{"a-request@x", "-", "a-request@x"},
		{"-request@x", "-", "-request@x"},
		{"a-request+b@x", "+", "a-request@x"},
		{"a-b@x", "+", "a-b@x"},
		{"a+b", "+", "a+b"},
	} {
		if got := StripExtension(tc.addr, tc.delims); got != tc.want {
			t.Errorf("StripExtension(%q, %q) = %q, want %q", tc.addr, tc.delims, got, tc.want)
		}
	}
}

// FuzzListRecipient: no input makes the matcher fail or take long, and
// what it answers is stable under the spellings Postfix treats alike.
func FuzzListRecipient(f *testing.F) {
	for _, s := range []string{"devs@lists.example.org", "devs+x@lists.example.org", `"d\evs"@lists.example.org`,
		"<@a,@b:devs@lists.example.org>", "devs%lists.example.org@mx", "lists.example.org!devs@mx",
		`"devs@lists.example.org"@mx`, "devs-request+x@lists.example.org", "ops+errors@lists.example.org", "a%b%c!d@e"} {
		f.Add(s, "+")
	}
	f.Add("devs-y@lists.example.org", "+-")
	set := testSet(f)
	f.Fuzz(func(t *testing.T, rcpt, delims string) {
		p := set.Recipient(rcpt, delims)
		if p != nil && set.Lists[p.Address] != p {
			t.Fatalf("Recipient(%q) = a list not in the set", rcpt)
		}
		same := func(variant string) {
			t.Helper()
			if q := set.Recipient(variant, delims); q != p {
				t.Fatalf("Recipient(%q) = %v but Recipient(%q) = %v", rcpt, addrOf(p), variant, addrOf(q))
			}
		}
		if len(rcpt) >= maxRecipientLen-40 || strings.ContainsAny(rcpt, "<>") || strings.HasPrefix(rcpt, "@") {
			return
		}
		isASCII := true
		for i := 0; i < len(rcpt); i++ {
			if rcpt[i] >= 0x80 {
				isASCII = false
			}
		}
		if isASCII {
			same(strings.ToUpper(rcpt))
			same(strings.ToLower(rcpt))
		}
		same("<" + rcpt + ">")
		same(" " + rcpt + " ")
		if strings.TrimSpace(rcpt) == rcpt && strings.Contains(rcpt, "@") {
			same("@relay.example,@b.example:" + rcpt)
		}
	})
}

func addrOf(p *Policy) string {
	if p == nil {
		return "<none>"
	}
	return p.Address
}
