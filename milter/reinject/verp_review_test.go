package reinject

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Found in review (it failed before the fix): a bounce address whose local part holds a "+" (a legal
// distribute.bounce_address; bounce.VERP leaves such an address alone
// because ParseVERP could not split it) still gets XVERP=+=, so Postfix
// makes ops+errors+MEMBER=DOMAIN@ senders that findBounce does not read
// and that policy.Set.Recipient takes for the list ops@ itself.
func TestReviewNoVERPForPlusBounceAddress(t *testing.T) {
	addr, mails := scripted(t, "XVERP")
	p := NewPool(addr, 1, time.Minute)
	defer p.CloseIdle()
	if _, err := p.SendEachVERP(context.Background(), "ops+errors@lists.example.org", []string{"a@example.org"}, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := <-mails; strings.Contains(got, "XVERP") {
		t.Errorf("MAIL line %q: XVERP asked for a bounce address with a '+'", got)
	}
}
