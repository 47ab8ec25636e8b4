package contrib_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runTestrun runs contrib/testrun.sh on a throwaway module holding the
// test file src; goWrapper, when set, is the script used as $GO.
func runTestrun(t *testing.T, src, goWrapper string) (string, error) {
	t.Helper()
	script, err := filepath.Abs("testrun.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module trv\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a_test.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	goBin := "go"
	if goWrapper != "" {
		goBin = filepath.Join(dir, "gowrap")
		if err := os.WriteFile(goBin, []byte(goWrapper), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GO="+goBin, "LOG="+filepath.Join(dir, "bin", "test.log"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// make test prints the failures in full: with -v a test's t.Errorf lines
// come before its "--- FAIL" line, and they must reach the terminal, not
// only bin/test.log (found in review).
func TestTestrunShowsWhyATestFailed(t *testing.T) {
	out, err := runTestrun(t, `package trv
import "testing"
func TestA(t *testing.T) { t.Errorf("THE REASON it failed") }
`, "")
	if err == nil {
		t.Fatalf("testrun.sh succeeded on a failing test:\n%s", out)
	}
	if !strings.Contains(out, "THE REASON it failed") {
		t.Errorf("the failure's message is not in make test's output:\n%s", out)
	}
}

// A test that hangs until go test's -timeout panics leaves no "--- FAIL"
// line: the terminal must still name it (the panic's "running tests:").
func TestTestrunNamesTheTestThatTimedOut(t *testing.T) {
	out, err := runTestrun(t, `package trv
import ("testing"; "time")
func TestHangs(t *testing.T) { time.Sleep(time.Hour) }
`, "#!/bin/sh\nexec go \"$@\" -timeout 3s\n")
	if err == nil {
		t.Fatalf("testrun.sh succeeded on a hung test:\n%s", out)
	}
	if !strings.Contains(out, "TestHangs") {
		t.Errorf("make test's output does not name the test that timed out:\n%s", out)
	}
}
