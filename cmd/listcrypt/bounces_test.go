package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// member disable / enable / bounces, and their errors.
func TestMemberDelivery(t *testing.T) {
	site := milterfix.New(t, milterfix.Options{})
	site.AddMember(t, "bob@example.org")
	site.AddMember(t, "carol@example.org")
	cfg := site.Config.File
	list := milterfix.List
	if out := mustCLI(t, cfg, "member", "bounces", list); out != "" {
		t.Fatalf("bounces of a fresh list: %q", out)
	}
	// A bounce counted by the responder shows with its score.
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if _, err := site.Admin.Store.RecordBounce(context.Background(), list, "carol@example.org",
		store.BounceEvent{Permanent: true, Status: "5.1.1", At: at}, store.BounceRules{Threshold: 5, ResetAfter: 7 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, cfg, "member", "disable", list, "Bob@Example.org"); out != "delivery to bob@example.org on "+list+" disabled\n" {
		t.Fatalf("disable: %q", out)
	}
	if out := mustCLI(t, cfg, "member", "disable", list, "bob@example.org"); !strings.Contains(out, "was disabled already") {
		t.Fatalf("disable again: %q", out)
	}
	lines := strings.Split(strings.TrimSpace(mustCLI(t, cfg, "member", "bounces", list)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "bob@example.org\t0\t0\t-\t-\tdisabled since ") ||
		lines[1] != "carol@example.org\t1\t1\t2026-12-01T10:00:00Z\t5.1.1\tenabled" {
		t.Fatalf("bounces: %q", lines)
	}
	if out := mustCLI(t, cfg, "member", "enable", list, "bob@example.org"); out != "delivery to bob@example.org on "+list+" enabled\n" {
		t.Fatalf("enable: %q", out)
	}
	if out := mustCLI(t, cfg, "member", "enable", list, "carol@example.org"); !strings.Contains(out, "enabled\n") || strings.Contains(out, "already") {
		t.Fatalf("enable clears a score: %q", out)
	}
	if out := mustCLI(t, cfg, "member", "enable", list, "carol@example.org"); !strings.Contains(out, "was enabled already") {
		t.Fatalf("enable again: %q", out)
	}
	for _, args := range [][]string{
		{"member", "disable", list, "nobody@example.org"},
		{"member", "enable", "nolist@lists.example.org", "bob@example.org"},
		{"member", "bounces", "nolist@lists.example.org"},
	} {
		if _, err := cli(t, cfg, args...); err == nil || !(strings.Contains(err.Error(), "is not a member") || strings.Contains(err.Error(), "no list")) {
			t.Errorf("%v: %v", args, err)
		}
	}
}
