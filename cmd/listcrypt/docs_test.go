package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated part of docs/cli.md")

// docs/cli.md's listcrypt table is generated from the verb table; this
// test fails when it drifts (regenerate with -update).
func TestCLIReferenceUpToDate(t *testing.T) {
	const path = "../../docs/cli.md"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(src)
	// The table follows the "## listcrypt" heading and ends at the
	// first blank line.
	sec := strings.Index(doc, "\n## listcrypt\n")
	i := strings.Index(doc[max(sec, 0):], "\n"+refHead)
	if sec < 0 || i < 0 {
		t.Fatalf("%s: no verb table under \"## listcrypt\"", path)
	}
	i += sec + 1
	j := strings.Index(doc[i:], "\n\n")
	if j < 0 {
		t.Fatalf("%s: the verb table does not end", path)
	}
	j += i + 1
	want := doc[:i] + reference() + doc[j:]
	if *update && want != doc {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		doc = want
	}
	if doc != want {
		t.Fatalf("%s is out of date: run go test ./cmd/listcrypt -update", path)
	}
}

// Every verb in the table is documented, and every verb but help runs.
func TestVerbTable(t *testing.T) {
	names := map[string]bool{}
	for _, v := range verbs {
		if names[v.name] {
			t.Errorf("verb %q twice", v.name)
		}
		names[v.name] = true
		if len(v.doc) == 0 {
			t.Errorf("verb %q has no doc row", v.name)
		}
		if v.run == nil && v.name != "help" {
			t.Errorf("verb %q does nothing", v.name)
		}
		if got, _ := lookup(strings.Fields(v.name)); got != v {
			t.Errorf("lookup(%q) = %v", v.name, got)
		}
	}
}
