package deliver

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// machineID names the kernel boot and the pid namespace this process
// runs in: pids compare only within both.
func machineID() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid") // "pid:[4026531836]"
	if err != nil {
		return ""
	}
	ns = strings.TrimSuffix(strings.TrimPrefix(ns, "pid:["), "]")
	if _, err := strconv.ParseUint(ns, 10, 64); err != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + "-" + ns
}

// processGone reports whether no process pid runs (a zombie counts as
// gone: it runs no code).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
