package milter

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Post claims (store.ClaimPost) name their owner
// "HOST/MACHINE/PID/RANDOM/SEQ": the host name, this machine's boot and
// pid namespace (Linux; empty elsewhere), the process id, a random part
// (a restarted process that reuses a pid is another owner) and the
// attempt's number in the process.
//
// A claim outlives a holder killed mid-delivery until its lease ends. On
// the holder's own machine that wait is not needed: a claim whose
// process is gone (same host, boot and pid namespace; no such pid, or a
// zombie) is taken over at once (store.TakeOverClaim), so the restarted
// milter resumes the post on the sender's next retry. A pid reused by
// another process looks alive: then the lease decides, as for a claim
// of another host.

// processOwner names this process for post claims.
func processOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	host = strings.ReplaceAll(host, "/", "_")
	var r [6]byte
	rand.Read(r[:])
	return fmt.Sprintf("%s/%s/%d/%s", host, machineID(), os.Getpid(), hex.EncodeToString(r[:]))
}

// newClaimOwner returns a fresh owner name for one attempt at a post.
func (s *Server) newClaimOwner() string {
	return fmt.Sprintf("%s/%d", s.claimOwner, s.claimSeq.Add(1))
}

// deadLocalOwner reports whether holder is an attempt of another process
// of this machine that no longer runs.
func (s *Server) deadLocalOwner(holder string) bool {
	mine := strings.Split(s.claimOwner, "/")
	theirs := strings.Split(holder, "/")
	if len(mine) != 4 || len(theirs) != 5 || mine[1] == "" || theirs[0] != mine[0] || theirs[1] != mine[1] || theirs[2] == mine[2] {
		return false
	}
	pid, err := strconv.Atoi(theirs[2])
	if err != nil || pid <= 0 {
		return false
	}
	return processGone(pid)
}
