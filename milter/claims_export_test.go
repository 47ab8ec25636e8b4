package milter

import (
	"strconv"
	"strings"

	"github.com/listcrypt/listcrypt/milter/deliver"
)

// LocalClaimOwner is the claim owner name an attempt of process pid on
// this machine would carry.
func LocalClaimOwner(pid int) string {
	f := strings.Split(deliver.NewClaimer().Owner(), "/")
	f[2] = strconv.Itoa(pid)
	return strings.Join(f, "/")
}

// PanicAtEndOfMessage makes a session panic at end of message when the
// envelope sender is from, until the test ends.
func PanicAtEndOfMessage(t interface{ Cleanup(func()) }, from string) {
	hook := func(f string) {
		if f == from || f == "<"+from+">" {
			panic("test panic for " + from)
		}
	}
	panicHook.Store(&hook)
	t.Cleanup(func() { panicHook.Store(nil) })
}
