package rig

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// ownerFile holds the pid of the test process that made an owned folder.
const ownerFile = "owner.pid"

var (
	sweepMu   sync.Mutex
	sweptOnce = map[string]bool{} // base and prefix swept by this process
)

// OwnedDir returns a new folder under base named prefix*, mode 0755,
// that names this test process as its owner and is removed at the end of
// the test. The first call per base and prefix first removes the folders
// of that prefix left by test processes that died without cleaning up
// (a test timeout panic), calling stale(dir, owner) before each so that
// the servers still running there are stopped; folders of live processes
// (other packages' tests running in parallel) are left alone. Both MTA
// rigs use it; who names the rig in messages.
func OwnedDir(t testing.TB, base, prefix, who string, stale func(dir string, owner int)) string {
	t.Helper()
	sweepMu.Lock()
	if key := base + "\x00" + prefix; !sweptOnce[key] {
		sweptOnce[key] = true
		sweepStale(t, base, prefix, who, stale)
	}
	sweepMu.Unlock()
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("%s: removing %s: %v", who, dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	return dir
}

func sweepStale(t testing.TB, base, prefix, who string, stale func(dir string, owner int)) {
	dirs, _ := filepath.Glob(filepath.Join(base, prefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or still being set up
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || owner == os.Getpid() || Alive(owner) {
			continue
		}
		if stale != nil {
			stale(dir, owner)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("%s: removing stale %s: %v", who, dir, err)
		}
	}
}

// ProcStat returns the state, process group and session of pid from
// /proc.
func ProcStat(pid int) (state byte, pgrp, sid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+1:])) // state ppid pgrp session ...
	if len(f) < 4 {
		return 0, 0, 0, false
	}
	pgrp, err1 := strconv.Atoi(f[2])
	sid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	return f[0][0], pgrp, sid, true
}

// Alive reports whether pid runs (a zombie, left when our PID 1 does not
// reap, counts as gone).
func Alive(pid int) bool {
	if state, _, _, ok := ProcStat(pid); ok {
		return state != 'Z' && state != 'X'
	}
	if _, err := os.Stat("/proc/self/stat"); err == nil {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// LiveProcs lists the live processes (not zombies) whose process group
// and session match says yes to.
func LiveProcs(match func(pgrp, sid int) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, pg, s, ok := ProcStat(pid); ok && match(pg, s) && state != 'Z' && state != 'X' {
			out = append(out, pid)
		}
	}
	return out
}
