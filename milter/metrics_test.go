package milter_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// [metrics] listen serves Prometheus metrics: after an accepted post, a
// refused one and a held one, the counters and gauges say so, and no
// sender's or member's address or content is in any of it.
func TestMetricsAfterPosts(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{Policy: `non_member = "hold"`})
	alice := site.AddMember(t, "alice@example.org")
	site.AddMember(t, "bob@example.org")
	site.Config.Metrics.Listen = "127.0.0.1:0"
	d, _ := startDaemon(t, site)
	m := newMTA(t, d)
	m.sink = site.Reinjected
	list := []*openpgp.Entity{site.ListKey}
	const secret = "METRICS-CANARY-subject"
	if r := m.send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", Subject: secret, SignWith: alice, EncryptTo: list})); !r.delivered() {
		t.Fatalf("member post: %+v", r.action)
	}
	if r := m.send("alice@example.org", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "alice@example.org", EncryptTo: list})); r.code() != 550 {
		t.Fatalf("unsigned post: %+v", r.action)
	}
	mallory := milterfix.NewKey(t, "mallory@evil.example")
	if r := m.send("mallory@evil.example", []string{milterfix.List}, milterfix.Build(t, milterfix.Post{From: "mallory@evil.example", SignWith: mallory, EncryptTo: list})); !r.accepted() {
		t.Fatalf("non-member post (held): %+v", r.action)
	}
	// The responder counts bounce mail in the store; a member disabled.
	if err := site.Admin.Store.CountBounceMail(context.Background(), milterfix.List, "member"); err != nil {
		t.Fatal(err)
	}
	if _, err := site.Admin.Store.SetDelivery(context.Background(), milterfix.List, "bob@example.org", false, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + d.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	text := string(b)
	for _, want := range []string{
		`listcrypt_posts_total{action="accept",list="devs@lists.example.org",reason="ok"} 1`,
		`listcrypt_posts_total{action="reject",list="devs@lists.example.org",reason="not-signed"} 1`,
		`listcrypt_posts_total{action="hold",list="devs@lists.example.org",reason="non-member"} 1`,
		`listcrypt_replies_total{code="250"} 2`,
		`listcrypt_replies_total{code="550"} 1`,
		`listcrypt_delivery_batches_total{list="devs@lists.example.org"} 1`,
		`listcrypt_delivery_recipients_total{list="devs@lists.example.org"} 2`,
		`listcrypt_decide_duration_seconds_count{list="devs@lists.example.org"} 3`,
		`listcrypt_deliver_duration_seconds_count{list="devs@lists.example.org"} 1`,
		`listcrypt_holds_waiting{list="devs@lists.example.org"} 1`,
		`listcrypt_bounce_mail_total{kind="member",list="devs@lists.example.org"} 1`,
		`listcrypt_members_delivery_disabled{list="devs@lists.example.org"} 1`,
		`listcrypt_milter_connections `,
		`listcrypt_reinject_errors_total 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, leak := range []string{"alice@", "bob@", "mallory@", secret} {
		if strings.Contains(text, leak) {
			t.Errorf("metrics carry %q", leak)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}
