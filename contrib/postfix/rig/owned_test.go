package rig

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// OwnedDir sweeps, once, the folders of its prefix whose owner process
// died (calling stale for each), keeps those of live owners, and removes
// its own folder at the end of the test.
func TestOwnedDir(t *testing.T) {
	base := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, owner int) string {
		d := filepath.Join(base, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(owner)), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	staleDir := mk("x-stale", dead.Process.Pid)
	liveDir := mk("x-live", os.Getppid())
	other := mk("y-other", dead.Process.Pid)
	var staled []string
	var dir string
	t.Run("make", func(t *testing.T) {
		dir = OwnedDir(t, base, "x-", "test", func(d string, owner int) {
			if owner != dead.Process.Pid {
				t.Errorf("stale owner %d, want %d", owner, dead.Process.Pid)
			}
			staled = append(staled, d)
		})
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("owned folder: %v %v", fi, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, ownerFile)); string(b) != strconv.Itoa(os.Getpid()) {
			t.Fatalf("owner file %q", b)
		}
		// A second call does not sweep again.
		OwnedDir(t, base, "x-", "test", func(string, int) { t.Error("swept twice") })
	})
	if len(staled) != 1 || staled[0] != staleDir {
		t.Fatalf("stale callbacks %v, want %s", staled, staleDir)
	}
	for d, want := range map[string]bool{staleDir: false, liveDir: true, other: true, dir: false} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s exists %v, want %v", d, err == nil, want)
		}
	}
	if Alive(dead.Process.Pid) || !Alive(os.Getpid()) {
		t.Error("Alive")
	}
}
