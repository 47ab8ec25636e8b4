package milter_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime/quotedprintable"
	"net/mail"
	"strconv"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/policy"
)

const holdCanary = "CANARY-held-content-91c2"

// holdEnv is a site whose reinjection listener is a sink, with servers
// on an injected clock.
type holdEnv struct {
	site  *milterfix.Site
	sink  *rig.Sink
	alice *openpgp.Entity
	now   time.Time
	logs  *logWatch
}

func newHoldEnv(t *testing.T, database, moderators string) *holdEnv {
	t.Helper()
	sink := rig.NewSink(t)
	site := milterfix.New(t, milterfix.Options{Reinject: sink.Addr(), Database: database})
	e := &holdEnv{site: site, sink: sink, now: time.Now().UTC().Truncate(time.Second), logs: newLogWatch()}
	e.alice = site.AddMember(t, "alice@example.org")
	if moderators != "" {
		site.EditPolicy(t, "moderators = []", "moderators = "+moderators)
	}
	site.Admin.Now = func() time.Time { return e.now }
	return e
}

// server is a milter server on the site, its clock e.now, submitting to
// reinjectAddr ("" for the sink).
func (e *holdEnv) server(t *testing.T, reinjectAddr string) (*milter.Server, *policy.Policy) {
	t.Helper()
	cfg := *e.site.Config
	if reinjectAddr != "" {
		cfg.Reinject.Address = reinjectAddr
	}
	pass, err := keyring.LoadPassphrase(cfg.PassphraseFile)
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.LoadDir(cfg.PolicyDir)
	if err != nil {
		t.Fatal(err)
	}
	srv := milter.NewServer(milter.Options{Store: e.site.Admin.Store, Keys: keyring.NewCache(e.site.Admin.Store, pass, keyring.ConfigLimits(&cfg)),
		Config: &cfg, Now: func() time.Time { return e.now }, Log: slog.New(slog.NewTextHandler(e.logs, nil))}, set)
	return srv, set.Lookup(milterfix.List)
}

// hold stores a held post (its content sealed to the list key) made at.
func (e *holdEnv) hold(t *testing.T, at time.Time) int64 {
	t.Helper()
	raw := milterfix.Build(t, milterfix.Post{From: "mallory@evil.example", Body: holdCanary})
	sealed, err := keyring.EncryptTo(raw, []*openpgp.Entity{e.site.ListKey}, keyring.DefaultLimits, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.site.Admin.Store.AddHold(context.Background(), store.Hold{List: milterfix.List, Sender: "mallory@evil.example",
		Recipients: []string{milterfix.List}, Reason: "non-member", Message: sealed, CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// notice is one notice as its recipient reads it.
type notice struct {
	to        string
	encrypted bool
	text      string
}

// notices returns what the sink received after the first skip messages.
func (e *holdEnv) notices(t *testing.T, skip int) []notice {
	t.Helper()
	var out []notice
	for _, d := range e.sink.Messages()[skip:] {
		if d.From != "devs-bounces@lists.example.org" || len(d.To) != 1 {
			t.Fatalf("notice envelope %s -> %v", d.From, d.To)
		}
		if bytes.Contains(d.Data, []byte(holdCanary)) {
			t.Fatal("a notice carries the held post in clear")
		}
		n := notice{to: d.To[0]}
		entity := d.Data
		if bytes.Contains(d.Data, []byte("Content-Type: multipart/encrypted")) {
			n.encrypted = true
			if bytes.Contains(d.Data, []byte("mallory")) {
				t.Fatal("an encrypted notice shows the sender outside the encryption")
			}
			entity = milterfix.DecryptCopy(t, d.Data, e.alice, e.site.ListKey)
		}
		m, err := mail.ReadMessage(bytes.NewReader(entity))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(quotedprintable.NewReader(m.Body))
		if err != nil {
			t.Fatal(err)
		}
		n.text = string(body)
		if strings.Contains(n.text, holdCanary) {
			t.Fatal("a notice carries the held post")
		}
		out = append(out, n)
	}
	return out
}

func contains(t *testing.T, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("notice lacks %q:\n%s", w, text)
		}
	}
}

// Moderators are told that a post waits: encrypted and signed by the
// list key to a moderator who is a member with a key, plain to one who
// is not, the owners when there are no moderators; once per hold.
func TestModeratorsToldOfHold(t *testing.T) {
	for _, tc := range []struct {
		name       string
		moderators string
		want       map[string]bool // recipient -> encrypted
	}{
		{"moderators", `["alice@example.org", "Mod2@Example.org"]`, map[string]bool{"alice@example.org": true, "mod2@example.org": false}},
		{"no moderators: the owners", "", map[string]bool{"owner@example.org": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newHoldEnv(t, "", tc.moderators)
			srv, p := e.server(t, "")
			ctx := context.Background()
			arrived := e.now.Add(-time.Hour)
			id := e.hold(t, arrived)
			if err := srv.NotifyModerators(ctx, p, id, "non-member"); err != nil {
				t.Fatal(err)
			}
			got := e.notices(t, 0)
			if len(got) != len(tc.want) {
				t.Fatalf("%d notices, want %d", len(got), len(tc.want))
			}
			sid := strconv.FormatInt(id, 10)
			for _, n := range got {
				enc, ok := tc.want[n.to]
				if !ok || enc != n.encrypted {
					t.Errorf("notice to %s encrypted=%v, want %v (known: %v)", n.to, n.encrypted, enc, ok)
				}
				contains(t, n.text, "A post to devs@lists.example.org waits for a moderator", "hold:     "+sid,
					"reason:   non-member", "sender:   mallory@evil.example", "arrived:  "+arrived.Format("2006-01-02 15:04 UTC"),
					"expires:  "+arrived.Add(14*24*time.Hour).Format("2006-01-02 15:04 UTC")+" (post.hold_expiry 14d)",
					"listcrypt -c "+e.site.Config.File+" hold show "+sid, "hold approve "+sid, "hold reject "+sid)
			}
			h, err := e.site.Admin.Store.HoldMeta(ctx, id)
			if err != nil || !h.NotifiedAt.Equal(e.now) {
				t.Fatalf("notified_at %v %v, want %v", h.NotifiedAt, err, e.now)
			}
			// Once per hold.
			if err := srv.NotifyModerators(ctx, p, id, "non-member"); err != nil || len(e.sink.Messages()) != len(tc.want) {
				t.Fatalf("second call: %v, %d messages", err, len(e.sink.Messages()))
			}
			e.logs.waitFor(t, "held post: ", time.Second)
			if strings.Contains(e.logs.String(), holdCanary) {
				t.Fatal("content in the log")
			}
		})
	}
}

// A notice that could not be sent is due again, and the periodic run
// sends it.
func TestModeratorNoticeRetried(t *testing.T) {
	e := newHoldEnv(t, "", `["alice@example.org"]`)
	down, p := e.server(t, "127.0.0.1:1")
	ctx := context.Background()
	id := e.hold(t, e.now.Add(-time.Hour))
	if err := down.NotifyModerators(ctx, p, id, "non-member"); err == nil {
		t.Fatal("no error with the reinjection listener down")
	}
	if hs, _ := e.site.Admin.Store.UnnotifiedHolds(ctx, milterfix.List); len(hs) != 1 || hs[0].ID != id {
		t.Fatalf("the failed notice is not due again: %+v", hs)
	}
	srv, _ := e.server(t, "")
	if n, err := srv.ExpireHolds(ctx, e.now); err != nil || n != 0 {
		t.Fatalf("ExpireHolds = %d, %v", n, err)
	}
	if got := e.notices(t, 0); len(got) != 1 || got[0].to != "alice@example.org" || !got[0].encrypted {
		t.Fatalf("retried notices %+v", got)
	}
	if hs, _ := e.site.Admin.Store.UnnotifiedHolds(ctx, milterfix.List); len(hs) != 0 {
		t.Fatalf("still due: %+v", hs)
	}
}

// Holds expire after post.hold_expiry (injected clock, both engines):
// the owners are told which, expired holds cannot be approved, and when
// the owners cannot be told the holds wait for the next run.
func TestHoldsExpire(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			db := ""
			if engine == "postgres" {
				db = storetest.PostgresDSN(t)
			}
			e := newHoldEnv(t, db, "")
			ctx := context.Background()
			t0 := e.now
			old := e.hold(t, t0)
			young := e.hold(t, t0.Add(2*24*time.Hour))
			for _, id := range []int64{old, young} { // the moderators were told
				if ok, err := e.site.Admin.Store.ClaimHoldNotice(ctx, id, t0); err != nil || !ok {
					t.Fatal(ok, err)
				}
			}
			srv, _ := e.server(t, "")
			down, _ := e.server(t, "127.0.0.1:1")

			e.now = t0.Add(13 * 24 * time.Hour)
			if n, err := srv.ExpireHolds(ctx, e.now); err != nil || n != 0 || len(e.sink.Messages()) != 0 {
				t.Fatalf("before expiry: %d %v, %d messages", n, err, len(e.sink.Messages()))
			}
			e.now = t0.Add(14*24*time.Hour + time.Hour)
			// Not marked yet, but past post.hold_expiry: no approval.
			if _, err := e.site.Admin.ApproveHold(ctx, old); err == nil || !strings.Contains(err.Error(), "expired") {
				t.Fatalf("approve past expiry: %v", err)
			}
			// The owners cannot be told: nothing expires yet.
			if n, err := down.ExpireHolds(ctx, e.now); err == nil || n != 0 {
				t.Fatalf("with the listener down: %d %v", n, err)
			}
			if h, _ := e.site.Admin.Store.HoldMeta(ctx, old); h.State != store.HoldHeld || h.Expired() {
				t.Fatalf("hold expired although nobody was told: %+v", h)
			}
			if n, err := srv.ExpireHolds(ctx, e.now); err != nil || n != 1 {
				t.Fatalf("ExpireHolds = %d, %v", n, err)
			}
			got := e.notices(t, 0)
			if len(got) != 1 || got[0].to != "owner@example.org" || got[0].encrypted {
				t.Fatalf("owner notices %+v", got)
			}
			contains(t, got[0].text, "These posts to devs@lists.example.org waited longer than post.hold_expiry (14d)",
				"hold "+strconv.FormatInt(old, 10)+"  sender mallory@evil.example  reason non-member  held 14d 1h ago")
			if strings.Contains(got[0].text, "hold "+strconv.FormatInt(young, 10)+" ") {
				t.Fatal("the young hold is listed")
			}
			h, err := e.site.Admin.Store.HoldMeta(ctx, old)
			if err != nil || !h.Expired() || !h.ExpiredAt.Equal(e.now) || h.State != store.HoldRejected {
				t.Fatalf("expired hold %+v %v", h, err)
			}
			if h, _ := e.site.Admin.Store.HoldMeta(ctx, young); h.State != store.HoldHeld {
				t.Fatalf("young hold %+v", h)
			}
			for _, op := range []func() error{
				func() error { _, err := e.site.Admin.ApproveHold(ctx, old); return err },
				func() error { return e.site.Admin.RejectHold(ctx, old) },
			} {
				if err := op(); err == nil || !strings.Contains(err.Error(), "expired on") {
					t.Errorf("decision on an expired hold: %v", err)
				}
			}
			if n, err := srv.ExpireHolds(ctx, e.now); err != nil || n != 0 || len(e.sink.Messages()) != 1 {
				t.Fatalf("second run: %d %v, %d messages", n, err, len(e.sink.Messages()))
			}
			e.logs.waitFor(t, "held posts expired", time.Second)
		})
	}
}

// The daemon expires held posts when it starts (then hourly).
func TestDaemonExpiresHoldsAtStart(t *testing.T) {
	e := newHoldEnv(t, "", "")
	old := e.hold(t, time.Now().Add(-15*24*time.Hour))
	if ok, err := e.site.Admin.Store.ClaimHoldNotice(context.Background(), old, time.Now()); err != nil || !ok {
		t.Fatal(ok, err)
	}
	startDaemon(t, e.site)
	got, err := e.sink.Wait(ctxT(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].To[0] != "owner@example.org" || !bytes.Contains(got[0].Data, []byte("held post(s) expired")) {
		t.Fatalf("notice to %v:\n%s", got[0].To, got[0].Data)
	}
	if h, err := e.site.Admin.Store.HoldMeta(context.Background(), old); err != nil || !h.Expired() {
		t.Fatalf("hold %+v %v", h, err)
	}
}

// The hourly run sends the responder's replies left in the outbox (a
// responder died after its commit, or the MTA was down), each once.
func TestHourlyRunResumesOutbox(t *testing.T) {
	e := newHoldEnv(t, "", "")
	ctx := context.Background()
	for _, to := range []string{"r1@example.org", "r2@example.org"} {
		if _, err := e.site.Admin.Store.Queue(ctx, store.OutboxMail{List: milterfix.List, Sender: "devs-bounces@lists.example.org",
			Recipients: []string{to}, Message: []byte("Subject: reply\r\n\r\nqueued\r\n")}); err != nil {
			t.Fatal(err)
		}
	}
	down, _ := e.server(t, "127.0.0.1:1")
	if _, err := down.ExpireHolds(ctx, e.now); err == nil {
		t.Fatal("no error with the reinjection listener down")
	}
	srv, _ := e.server(t, "")
	for range 2 {
		if _, err := srv.ExpireHolds(ctx, e.now); err != nil {
			t.Fatal(err)
		}
	}
	got := e.sink.Messages()
	if len(got) != 2 || got[0].To[0] != "r1@example.org" || got[1].To[0] != "r2@example.org" {
		t.Fatalf("outbox rows sent: %+v", got)
	}
	if n, _ := e.site.Admin.Store.CountOutbox(ctx, ""); n != 0 {
		t.Fatalf("%d outbox rows left", n)
	}
}
