package bounce_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/listcrypt/listcrypt/milter/bounce"
)

var update = flag.Bool("update", false, "rewrite testdata/*.want.json from what Parse returns (review the diff)")

// golden is the expected outcome of one corpus sample: an error class
// or a report.
type golden struct {
	Error  string         `json:"error,omitempty"`
	Report *bounce.Report `json:"report,omitempty"`
}

func errorClass(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{{bounce.ErrTooLarge, "too-large"}, {bounce.ErrTooComplex, "too-complex"}, {bounce.ErrMalformed, "malformed"}} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "unexpected: " + err.Error()
}

func corpus(t testing.TB) []string {
	files, err := filepath.Glob("testdata/*.eml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	return files
}

// TestCorpus parses every testdata/NAME.eml and compares with
// testdata/NAME.want.json.
func TestCorpus(t *testing.T) {
	for _, file := range corpus(t) {
		name := strings.TrimSuffix(filepath.Base(file), ".eml")
		t.Run(name, func(t *testing.T) {
			msg, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var got golden
			r, err := bounce.Parse(msg, bounce.Limits{})
			if err != nil {
				got.Error = errorClass(err)
			} else {
				got.Report = &r
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false) // "<alice@example.org>" as written
			enc.SetIndent("", "  ")
			if err := enc.Encode(got); err != nil {
				t.Fatal(err)
			}
			gotJSON := buf.Bytes()
			wantFile := strings.TrimSuffix(file, ".eml") + ".want.json"
			if *update {
				if err := os.WriteFile(wantFile, gotJSON, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantFile)
			if err != nil {
				t.Fatalf("%v (run with -update to create it, then review it)", err)
			}
			if !bytes.Equal(want, gotJSON) {
				t.Errorf("%s:\ngot  %s\nwant %s", name, gotJSON, want)
			}
		})
	}
}

// Every corpus sample has its golden file, and no golden file is left
// without its sample.
func TestCorpusComplete(t *testing.T) {
	wants, _ := filepath.Glob("testdata/*.want.json")
	if len(wants) != len(corpus(t)) {
		t.Errorf("%d samples, %d golden files", len(corpus(t)), len(wants))
	}
}

func TestLimits(t *testing.T) {
	msg, err := os.ReadFile("testdata/postfix-dsn.eml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bounce.Parse(msg, bounce.Limits{MaxSize: 100}); !errors.Is(err, bounce.ErrTooLarge) {
		t.Errorf("size: %v", err)
	}
	if _, err := bounce.Parse(msg, bounce.Limits{MaxDepth: 0, MaxParts: 2}); !errors.Is(err, bounce.ErrTooComplex) {
		t.Errorf("parts: %v", err)
	}
	r, err := bounce.Parse(msg, bounce.Limits{MaxDiagnostic: 20})
	if err != nil || len(r.Recipients) != 1 || r.Recipients[0].Diagnostic != "550 5.1.1 <alice@..." {
		t.Errorf("diagnostic: %+v, %v", r, err)
	}
	many, err := os.ReadFile("testdata/postfix-text.eml")
	if err != nil {
		t.Fatal(err)
	}
	r, err = bounce.Parse(many, bounce.Limits{MaxRecipients: 2})
	if err != nil || len(r.Recipients) != 2 {
		t.Errorf("recipients: %+v, %v", r, err)
	}
	if _, err := bounce.Parse(nil, bounce.Limits{}); err != nil {
		t.Errorf("empty message: %v", err)
	}
}

func ExampleParse() {
	msg := []byte("From: MAILER-DAEMON@mx.example.org\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n" +
		"\r\n" +
		"--B\r\n" +
		"Content-Type: message/delivery-status\r\n" +
		"\r\n" +
		"Reporting-MTA: dns; mx.example.org\r\n" +
		"\r\n" +
		"Final-Recipient: rfc822; alice@example.org\r\n" +
		"Action: failed\r\n" +
		"Status: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n" +
		"--B--\r\n")
	r, err := bounce.Parse(msg, bounce.Limits{})
	if err != nil {
		panic(err)
	}
	for _, rc := range r.Recipients {
		fmt.Println(r.Kind, r.Shape, rc.Address, rc.Permanent, rc.Status, rc.Diagnostic)
	}
	// Output: bounce dsn alice@example.org true 5.1.1 550 5.1.1 User unknown
}
