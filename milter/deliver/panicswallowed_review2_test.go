package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// Found in review (it failed before the fix): a panic in a batch's goroutine is turned into that goroutine's
// error, but the errgroup keeps only the first error: when another batch
// failed first (a fence, a 4xx), the panic and its stack are dropped,
// logged nowhere. docs/outbound.md says a worker's panic fails the
// delivery "with its stack, logged at Error": a bug can go unseen.
func TestReview2PanicAfterAnotherFailureIsLogged(t *testing.T) {
	site, alice := threeBatches(t)
	site.Config.Reinject.Connections = 2
	ctx := context.Background()
	p, keys := listOf(t, site)
	secondIn := make(chan struct{})
	fenced := make(chan struct{})
	var fences atomic.Int32
	fence := func(context.Context) error {
		if fences.Add(1) == 1 {
			close(fenced)
			return errors.New("the claim passed to another host")
		}
		return nil
	}
	deliver.SetBatchHook(func(n int) {
		switch n {
		case 1:
			select { // both batches are under way before either fails
			case <-secondIn:
			case <-time.After(10 * time.Second):
			}
		case 2:
			close(secondIn)
			<-fenced
			time.Sleep(100 * time.Millisecond) // batch 1's error is in first
			panic("batch bug")
		}
	})
	defer deliver.SetBatchHook(nil)
	var logs bytes.Buffer
	d := deliver.New(deliver.Options{Store: site.Admin.Store, Keys: keys, Config: site.Config, Fence: fence, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "two failures"})
	_, err := d.Distribute(ctx, p, msg)
	if err == nil {
		t.Fatal("no error")
	}
	if !strings.Contains(err.Error(), "batch bug") && !strings.Contains(logs.String(), "batch bug") {
		t.Fatalf("the panic of batch 2 is nowhere: error %q, log %q", err, logs.String())
	}
}
