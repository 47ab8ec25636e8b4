package deliver

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Only a claim of a process of this machine that no longer runs counts
// as dead; this process, a live one, another host and anything
// malformed do not.
func TestDeadLocalOwner(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("pids are compared on Linux only")
	}
	cl := NewClaimer()
	f := strings.Split(cl.process, "/")
	if len(f) != 4 || f[1] == "" || f[2] != strconv.Itoa(os.Getpid()) {
		t.Fatalf("owner %q", cl.process)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Process.Kill(); live.Wait() })
	owner := func(host, machine string, pid int) string {
		return host + "/" + machine + "/" + strconv.Itoa(pid) + "/abcdef/7"
	}
	for _, c := range []struct {
		holder string
		dead   bool
	}{
		{owner(f[0], f[1], gone.Process.Pid), true},
		{owner(f[0], f[1], live.Process.Pid), false},
		{owner(f[0], f[1], os.Getpid()), false}, // another attempt of this process
		{owner("other-host", f[1], gone.Process.Pid), false},
		{owner(f[0], "other-boot-1", gone.Process.Pid), false},
		{cl.Owner(), false},
		{"", false},
		{"garbage", false},
		{f[0] + "/" + f[1] + "/x/abcdef/1", false},
		{f[0] + "//" + strconv.Itoa(gone.Process.Pid) + "/abcdef/1", false},
	} {
		if got := cl.DeadLocal(c.holder); got != c.dead {
			t.Errorf("DeadLocal(%q) = %v, want %v", c.holder, got, c.dead)
		}
	}
	// A zombie runs no code: dead.
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	for range 200 {
		if processGone(zombie.Process.Pid) {
			return
		}
		exec.Command("sleep", "0.01").Run()
	}
	t.Error("a zombie counts as running")
}
