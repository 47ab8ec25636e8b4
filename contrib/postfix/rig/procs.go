package rig

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Proc is one running process of a rig Postfix: the master or one of
// the daemons it started.
type Proc struct {
	PID int
	// Program is the daemon's name: "master", "smtpd", "cleanup",
	// "qmgr", "smtp", ...
	Program string
	// Service is the master.cf service the daemon runs for (its -n
	// argument): "cleanup", "smtp", or for an inet listener its address,
	// which for the two smtpd listeners is SMTPAddr or ReinjectAddr.
	// "" for the master.
	Service string
}

// MasterPID is the pid of the instance's master process (0 when it does
// not run).
func (p *Postfix) MasterPID() int {
	pid := p.masterPID()
	if pid > 0 && !Alive(pid) {
		return 0
	}
	return pid
}

// Procs lists the live processes of the instance, the master first:
// the master runs in a process group of its own, which its daemons
// share. Chaos tests kill daemons from it (the master restarts them on
// demand); see also ServiceProcs.
func (p *Postfix) Procs() []Proc {
	master := p.MasterPID()
	if master == 0 {
		return nil
	}
	var out []Proc
	for _, pid := range groupMembers(master) {
		argv := cmdline(pid)
		if len(argv) == 0 {
			continue // gone meanwhile
		}
		pr := Proc{PID: pid, Program: filepath.Base(argv[0])}
		for i := 1; i+1 < len(argv); i++ {
			if argv[i] == "-n" {
				pr.Service = argv[i+1]
				break
			}
		}
		if pid == master {
			pr.Program, pr.Service = "master", ""
		}
		out = append(out, pr)
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].PID == master) != (out[j].PID == master) {
			return out[i].PID == master
		}
		return out[i].PID < out[j].PID
	})
	return out
}

// ServiceProcs lists the live daemons running program for service
// ("" matches any service): ServiceProcs("smtpd", p.SMTPAddr()) are
// the smtpd processes of the public listener, ServiceProcs("cleanup",
// "") every cleanup process.
func (p *Postfix) ServiceProcs(program, service string) []Proc {
	var out []Proc
	for _, pr := range p.Procs() {
		if pr.Program == program && (service == "" || pr.Service == service) {
			out = append(out, pr)
		}
	}
	return out
}

// cmdline is the argument vector of pid from /proc (nil if it is gone).
func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	b = bytes.TrimRight(b, "\x00")
	return strings.Split(string(b), "\x00")
}
