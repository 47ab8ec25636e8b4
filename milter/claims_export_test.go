package milter

import (
	"strconv"
	"strings"
)

// LocalClaimOwner is the claim owner name an attempt of process pid on
// this machine would carry.
func LocalClaimOwner(pid int) string {
	f := strings.Split(processOwner(), "/")
	f[2] = strconv.Itoa(pid)
	return strings.Join(f, "/") + "/1"
}
