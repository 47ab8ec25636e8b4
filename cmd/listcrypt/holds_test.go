package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// "hold expire" expires the holds older than post.hold_expiry and tells
// the owners; an expired hold shows as expired and cannot be approved.
func TestHoldExpire(t *testing.T) {
	sink := rig.NewSink(t)
	site := milterfix.New(t, milterfix.Options{Reinject: sink.Addr()})
	cfg := site.Config.File
	ctx := context.Background()
	sealed, err := keyring.EncryptTo(milterfix.Build(t, milterfix.Post{From: "x@example.net", Body: "CANARY-cli-expire"}),
		[]*openpgp.Entity{site.ListKey}, keyring.DefaultLimits, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, age := range []time.Duration{15 * 24 * time.Hour, time.Hour} {
		id, err := site.Admin.Store.AddHold(ctx, store.Hold{List: milterfix.List, Sender: "x@example.net",
			Recipients: []string{milterfix.List}, Reason: "non-member", Message: sealed, CreatedAt: time.Now().Add(-age)})
		if err != nil {
			t.Fatal(err)
		}
		// The moderators were told when it was held.
		if _, err := site.Admin.Store.ClaimHoldNotice(ctx, id, time.Now()); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if out := mustCLI(t, cfg, "hold", "expire"); out != "1 held posts expired\n" {
		t.Fatalf("hold expire: %q", out)
	}
	got := sink.Messages()
	if len(got) != 1 || got[0].To[0] != "owner@example.org" || !bytes.Contains(got[0].Data, []byte("expired")) ||
		bytes.Contains(got[0].Data, []byte("CANARY-cli-expire")) {
		t.Fatalf("owner notice: %+v", got)
	}
	if out := mustCLI(t, cfg, "hold", "show", "1"); !strings.Contains(out, "state: expired ") {
		t.Fatalf("hold show: %q", out)
	}
	if _, err := cli(t, cfg, "hold", "approve", "1"); err == nil || !strings.Contains(err.Error(), "held post 1 expired on") {
		t.Fatalf("approve an expired hold: %v", err)
	}
	if out := mustCLI(t, cfg, "hold", "list", milterfix.List); !strings.HasPrefix(out, "2\t") || strings.Count(out, "\n") != 1 {
		t.Fatalf("hold list: %q", out)
	}
	if out := mustCLI(t, cfg, "hold", "expire"); out != "0 held posts expired\n" {
		t.Fatalf("second hold expire: %q", out)
	}
	if _, err := cli(t, cfg, "hold", "expire", "now"); err == nil || !strings.Contains(err.Error(), "hold expire") {
		t.Fatalf("bad usage: %v", err)
	}
}
