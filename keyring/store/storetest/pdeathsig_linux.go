package storetest

import "syscall"

// setParentDeathSignal makes the kernel send the server SIGINT (fast
// shutdown) if the test binary dies without running Main's cleanup, e.g.
// when killed by go test's timeout.
func setParentDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGINT }
