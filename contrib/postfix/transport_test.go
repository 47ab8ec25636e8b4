package postfix

import (
	"strings"
	"testing"
)

// The shipped table is what TransportTable writes for the example list.
func TestTransportTableMatchesShippedFile(t *testing.T) {
	var lines []string
	for _, l := range strings.Split(Transport, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	got := strings.Join(lines, "\n") + "\n"
	if want := TransportTable("devs@lists.example.org"); got != want {
		t.Errorf("responder.transport:\n%s\nTransportTable:\n%s", got, want)
	}
	if want := TransportTable(" DEVS@Lists.Example.ORG "); got != want {
		t.Errorf("TransportTable does not normalise: %q", want)
	}
}
