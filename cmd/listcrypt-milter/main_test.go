package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/listcrypt/listcrypt/keyring/site"
)

// siteConfig is the start of a test config: every path in the test's
// folder (the defaults are the system's).
const siteConfig = "state_dir = \"state\"\ndatabase = \"sqlite:state/state.db\"\npassphrase_file = \"passphrase\"\n"

// initSite does what "listcrypt init" does for the config cfg: state
// folder, database, passphrase file.
func initSite(t *testing.T, cfg string) {
	t.Helper()
	s, err := site.Open(context.Background(), cfg, site.Options{Store: site.StoreInit})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestCheckFlag(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "listcrypt.toml")
	os.WriteFile(cfg, []byte(siteConfig+"policy_dir = \"lists.d\"\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "lists.d"), 0o755)
	// Before "listcrypt init": no passphrase file and no database, both
	// reported in one run.
	var out, errb bytes.Buffer
	if rc := run([]string{"-c", cfg, "-n"}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "passphrase_file") ||
		!strings.Contains(errb.String(), "listcrypt init") {
		t.Fatalf("uninitialised site: rc %d err %q", rc, errb.String())
	}
	initSite(t, cfg)
	os.WriteFile(filepath.Join(dir, "lists.d", "a.toml"), []byte("address = \"a@lists.example.org\"\n"), 0o644)
	out.Reset()
	errb.Reset()
	if rc := run([]string{"-c", cfg, "-n"}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "OK") {
		t.Fatalf("rc %d out %q err %q", rc, out.String(), errb.String())
	}
	os.WriteFile(filepath.Join(dir, "lists.d", "b.toml"), []byte("address = \"b@lists.example.org\"\n[post]\nreplay = \"shrug\"\n"), 0o644)
	out.Reset()
	errb.Reset()
	if rc := run([]string{"-c", cfg, "-n"}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "b.toml:3: post.replay") {
		t.Fatalf("rc %d err %q", rc, errb.String())
	}
	os.WriteFile(cfg, []byte(siteConfig+"[milter]\nlisten = \"carrier-pigeon\"\n"), 0o644)
	errb.Reset()
	if rc := run([]string{"-c", cfg, "-n"}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "listcrypt.toml:5:") {
		t.Fatalf("rc %d err %q", rc, errb.String())
	}
}

// The shipped systemd unit runs the binary with flags it accepts: its
// ExecStartPre check passes on a valid config, and ExecStart uses the
// same config without -n.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../contrib/systemd/listcrypt-milter.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "listcrypt.toml")
	os.WriteFile(cfg, []byte(siteConfig+"policy_dir = \"lists.d\"\n"), 0o644)
	initSite(t, cfg)
	var pre, start []string
	for _, line := range strings.Split(string(unit), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "ExecStartPre":
			pre = f
		case "ExecStart":
			start = f
		}
	}
	if len(pre) < 2 || len(start) < 2 || filepath.Base(pre[0]) != "listcrypt-milter" || filepath.Base(start[0]) != "listcrypt-milter" {
		t.Fatalf("unit Exec lines: %q %q", pre, start)
	}
	args := append([]string(nil), pre[1:]...)
	for i, a := range args {
		if a == "/etc/listcrypt/listcrypt.toml" {
			args[i] = cfg
		}
	}
	var out, errb bytes.Buffer
	if rc := run(args, &out, &errb); rc != 0 {
		t.Fatalf("ExecStartPre %v: rc %d: %s", args, rc, errb.String())
	}
	if strings.Join(start[1:], " ") != strings.Replace(strings.Join(pre[1:], " "), " -n", "", 1) {
		t.Fatalf("ExecStart %q differs from ExecStartPre %q beyond -n", start, pre)
	}
}

// -n also checks that milter.socket_group names a group, so the unit's
// ExecStartPre stops a start that would fail on it.
func TestCheckFlagSocketGroup(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lists.d"), 0o755)
	cfg := filepath.Join(dir, "listcrypt.toml")
	for _, tc := range []struct {
		group string
		ok    bool
	}{
		{"", true},
		{"0", true},
		{"no-such-group-listcrypt", false},
	} {
		os.WriteFile(cfg, []byte(siteConfig+"policy_dir = \"lists.d\"\n[milter]\nsocket_group = \""+tc.group+"\"\n"), 0o644)
		initSite(t, cfg)
		var out, errb bytes.Buffer
		rc := run([]string{"-c", cfg, "-n"}, &out, &errb)
		if (rc == 0) != tc.ok || (!tc.ok && !strings.Contains(errb.String(), "no such group")) {
			t.Errorf("socket_group %q: rc %d err %q", tc.group, rc, errb.String())
		}
	}
}

// The unit gives the daemon the group that the sample config hands the
// socket to.
func TestSystemdUnitSocketGroup(t *testing.T) {
	unit, err := os.ReadFile("../../contrib/systemd/listcrypt-milter.service")
	if err != nil {
		t.Fatal(err)
	}
	sample, err := os.ReadFile("../../contrib/listcrypt.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nSupplementaryGroups=postfix\n") || !strings.Contains(string(sample), `socket_group = "postfix"`) {
		t.Fatal("unit and sample config disagree on the socket group")
	}
}
