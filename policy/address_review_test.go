package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// Found in review (it failed before the fix): with [bounces] verp = true the copies leave
// with LIST-bounces+MEMBER=DOMAIN@ (XVERP=+=, milter/reinject: sent
// whatever the bounce address looks like). The bounce that comes back is
// addressed there; ownRoute only knows the bounce address itself, so the
// milter takes the VERP address for a post to the list whenever the
// extension-stripped form is the list address:
//   - a bounce_address with a "+" (the shape testSet's ops list uses):
//     ops+errors+bob=example.org@ strips to ops@;
//   - the default bounce address under a recipient_delimiter holding
//     "-" ("+-" is common): devs-bounces+bob=example.org@ strips to devs@.
//
// With the default policy the DSN (null sender, unsigned) is refused in
// SMTP and the bounce is lost; a list that accepts unsigned non-member
// mail distributes the bounce to every member (and their bounces come
// back the same way: a loop).
func TestReviewVERPBounceTakenForListPost(t *testing.T) {
	set := testSet(t)
	for _, tc := range []struct{ rcpt, delims string }{
		{"ops+errors+bob=example.org@lists.example.org", "+"},
		{"devs-bounces+bob=example.org@lists.example.org", "+-"},
	} {
		if p := set.Recipient(tc.rcpt, tc.delims); p != nil {
			t.Errorf("Recipient(%q, %q) = list %s: a VERP bounce is taken for a post to the list", tc.rcpt, tc.delims, p.Address)
		}
	}
	// For comparison, the bounce address itself is refused as the list.
	for _, tc := range []struct{ rcpt, delims string }{
		{"ops+errors@lists.example.org", "+"},
		{"devs-bounces@lists.example.org", "+-"},
	} {
		if p := set.Recipient(tc.rcpt, tc.delims); p != nil {
			t.Errorf("Recipient(%q, %q) = %s", tc.rcpt, tc.delims, p.Address)
		}
	}
}

// Two lists on one domain where one's address is the other's default
// bounce address: devs@ (bounce address devs-bounces@) and devs-bounces@.
// LoadDir accepts them; the milter then takes every bounce of devs's
// copies (to devs-bounces@ and, with VERP, devs-bounces+MEMBER=DOMAIN@)
// for a post to the list devs-bounces: the bounces never reach the
// responder, and a devs-bounces list that accepts unsigned mail would
// distribute them. The same holds for a list whose bounce_address or
// request address is another list's address, request or bounce address.
func TestReviewListAddressIsAnotherListsBounceAddress(t *testing.T) {
	dir := t.TempDir()
	for _, a := range []string{"devs@lists.example.org", "devs-bounces@lists.example.org"} {
		if err := os.WriteFile(filepath.Join(dir, a+".toml"), []byte(Template(a, "o@example.org")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set, err := LoadDir(dir)
	if err != nil {
		t.Logf("refused (sound): %v", err)
		return
	}
	t.Errorf("LoadDir accepts devs@ and devs-bounces@ (devs's bounce address) side by side")
	for _, rcpt := range []string{"devs-bounces@lists.example.org", "devs-bounces+bob=example.org@lists.example.org"} {
		if p := set.Recipient(rcpt, "+"); p != nil {
			t.Errorf("Recipient(%q) = list %s: devs's bounce is taken for a post", rcpt, p.Address)
		}
	}
}
