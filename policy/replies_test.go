package policy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every SMTP reply a sender can read is written in replies.go: no other
// source file of the module spells an enhanced status code for a reply.
func TestRepliesInOneFile(t *testing.T) {
	status := regexp.MustCompile(`Enhanced:\s*"|\brefuse\([0-9]`)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") ||
			strings.Contains(path, string(filepath.Separator)+"contrib"+string(filepath.Separator)) {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if rel == filepath.Join("policy", "replies.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		for i, line := range strings.Split(string(src), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "//") {
				continue
			}
			if status.MatchString(line) {
				t.Errorf("%s:%d: an SMTP reply outside policy/replies.go: %s", rel, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 30 {
		t.Fatalf("only %d files checked", checked)
	}
}
