package deliver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
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

// Claimer names the attempts of this process at posts, for their claims
// (store.ClaimPost), and recognises claims of dead processes of this
// machine. One per process: the milter's server, "listcrypt hold
// approve".
type Claimer struct {
	process string // HOST/MACHINE/PID/RANDOM
	seq     atomic.Uint64
}

// NewClaimer returns the claimer of this process.
func NewClaimer() *Claimer { return &Claimer{process: processOwner()} }

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

// Owner returns a fresh owner name for one attempt at a post.
func (c *Claimer) Owner() string {
	return fmt.Sprintf("%s/%d", c.process, c.seq.Add(1))
}

// DeadLocal reports whether holder is an attempt of another process of
// this machine that no longer runs: its claim can be taken over at once
// (store.TakeOverClaim) instead of waiting for its lease to end.
func (c *Claimer) DeadLocal(holder string) bool {
	mine := strings.Split(c.process, "/")
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

// Claim claims the post postID of list for owner (one of c's Owner
// names) for lease: the one statement that lets exactly one attempt, on
// any host, deliver a post (store.ClaimPost). A claim held by a process
// of this machine that no longer runs is taken over at once
// (store.TakeOverClaim; tookOver is then true and holder the dead one).
// When another attempt holds a live claim, claimed is false and holder
// names it.
func (c *Claimer) Claim(ctx context.Context, st *store.Store, list string, postID []byte, owner string, lease time.Duration, now time.Time) (claimed bool, holder string, tookOver bool, err error) {
	claimed, holder, err = st.ClaimPost(ctx, list, postID, owner, lease, now)
	if err != nil || claimed || !c.DeadLocal(holder) {
		return claimed, holder, false, err
	}
	claimed, err = st.TakeOverClaim(ctx, list, postID, holder, owner, lease, now)
	return claimed, holder, claimed, err
}
