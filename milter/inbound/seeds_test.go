package inbound

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzExamine from the fixtures")

// TestWriteFuzzSeeds writes every table fixture (small enough) as a seed
// in Go's corpus format. Run: go test -run TestWriteFuzzSeeds -update-seeds
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("use -update-seeds")
	}
	f := getFixtures(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzExamine")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range examineCases(t) {
		msg := tc.msg(t, f)
		if len(msg) > 64<<10 {
			continue
		}
		sum := sha256.Sum256(msg)
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(msg)) + ")\n"
		name := filepath.Join(dir, fmt.Sprintf("%x", sum[:8]))
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
