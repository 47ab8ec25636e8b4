package bounce_test

import (
	"errors"
	"os"
	"regexp"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/listcrypt/listcrypt/milter/bounce"
)

var (
	statusRE  = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)
	addressRE = regexp.MustCompile(`^[^\s<>@]+@[^\s<>@]+\.[^\s<>@]+$`)
)

// FuzzParse: Parse never panics, fails only with its own errors, and
// what it reports stays within the limits: plausible addresses, one
// printable bounded line of diagnostic, well-formed status codes.
// Seeds: the corpus testdata/*.eml and testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, file := range corpus(f) {
		msg, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg)
	}
	lim := bounce.Limits{MaxSize: 1 << 20, MaxDiagnostic: 120, MaxRecipients: 10}
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := bounce.Parse(msg, lim)
		if err != nil {
			if !errors.Is(err, bounce.ErrTooLarge) && !errors.Is(err, bounce.ErrTooComplex) && !errors.Is(err, bounce.ErrMalformed) {
				t.Fatalf("unexpected error %T: %v", err, err)
			}
			return
		}
		switch r.Kind {
		case bounce.KindBounce:
			if len(r.Recipients) == 0 || len(r.Recipients) > 10 || r.Shape == "" {
				t.Fatalf("bounce with %d recipients, shape %q", len(r.Recipients), r.Shape)
			}
		case bounce.KindAutoReply, bounce.KindOther:
			if len(r.Recipients) > 0 {
				t.Fatalf("%s with recipients", r.Kind)
			}
		default:
			t.Fatalf("kind %q", r.Kind)
		}
		for _, rc := range r.Recipients {
			for i, a := range []string{rc.Address, rc.Original} {
				if i == 1 && a == "" {
					continue // no Original-Recipient
				}
				if len(a) > 254 || !utf8.ValidString(a) || !addressRE.MatchString(a) {
					t.Fatalf("address %q", a)
				}
			}
			if rc.Action != "failed" && rc.Action != "delayed" {
				t.Fatalf("action %q", rc.Action)
			}
			if rc.Action == "delayed" && rc.Permanent {
				t.Fatal("a permanent delay")
			}
			if rc.Status != "" && !statusRE.MatchString(rc.Status) {
				t.Fatalf("status %q", rc.Status)
			}
			d := rc.Diagnostic
			if len(d) > 120 || !utf8.ValidString(d) {
				t.Fatalf("diagnostic %d bytes: %q", len(d), d)
			}
			for _, c := range d {
				if !unicode.IsPrint(c) {
					t.Fatalf("unprintable %U in diagnostic %q", c, d)
				}
			}
		}
	})
}
