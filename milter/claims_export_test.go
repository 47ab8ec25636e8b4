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
