//go:build !linux

package storetest

import "syscall"

func setParentDeathSignal(*syscall.SysProcAttr) {}
