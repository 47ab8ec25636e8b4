package rig

import (
	"slices"
	"strings"
	"testing"

	"github.com/listcrypt/listcrypt/contrib/postfix"
)

// The shipped main.cf.snippet carries the settings the design relies on.
// (No root needed: this runs on every machine.)
func TestMainCFSnippet(t *testing.T) {
	ps, err := parseMainCF(postfix.MainCF)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range ps {
		if _, dup := got[p.name]; dup {
			t.Errorf("%s set twice", p.name)
		}
		got[p.name] = p.value
	}
	for name, want := range map[string]string{
		"smtpd_milters":          "unix:/run/listcrypt/milter.sock",
		"milter_default_action":  "tempfail",
		"milter_protocol":        "6",
		"smtp_line_length_limit": "0",
	} {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
	if !slices.Contains(strings.Fields(got["milter_end_of_data_macros"]), "i") {
		t.Errorf("milter_end_of_data_macros = %q lacks the queue id i", got["milter_end_of_data_macros"])
	}
}

func TestMasterCFSnippet(t *testing.T) {
	out, err := masterCF(postfix.MasterCF, "127.0.0.1:2525", "127.0.0.1:2626")
	if err != nil {
		t.Fatal(err)
	}
	listeners := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 8 && f[1] == "inet" {
			listeners[f[0]] = true
			if f[4] != "n" {
				t.Errorf("chrooted listener: %q", line)
			}
		}
	}
	if !listeners["127.0.0.1:2525"] || !listeners["127.0.0.1:2626"] || len(listeners) != 2 {
		t.Errorf("listeners %v, want 127.0.0.1:2525 and 127.0.0.1:2626", listeners)
	}
	for _, want := range []string{
		"\n  -o receive_override_options=no_milters\n",
		"\n  -o smtpd_milters=\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rig master.cf lacks %q:\n%s", want, out)
		}
	}
	chrooted := strings.Replace(postfix.MasterCF, "smtp      inet  n       -       n", "smtp      inet  n       -       y", 1)
	if _, err := masterCF(chrooted, "127.0.0.1:2525", "127.0.0.1:2626"); err == nil {
		t.Error("a chrooted smtp listener was accepted")
	}
}

// Extra reinjection options go at the end of that service's entry, after
// the snippet's own -o lines (the last -o of a name wins).
func TestMasterCFReinjectExtra(t *testing.T) {
	extra := "-o smtpd_recipient_restrictions=check_recipient_access,hash:/x,permit_mynetworks,reject"
	out, err := masterCF(postfix.MasterCF, "127.0.0.1:2525", "127.0.0.1:2626", extra)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	at, last := -1, -1
	for i, l := range lines {
		switch {
		case strings.TrimSpace(l) == extra:
			at = i
		case strings.HasPrefix(strings.TrimSpace(l), "-o smtpd_authorized_verp_clients="):
			last = i
		}
	}
	if at < 0 || at != last+1 {
		t.Fatalf("extra line at %d, snippet's last -o at %d:\n%s", at, last, out)
	}
}

func TestAccessTable(t *testing.T) {
	got := accessTable(map[string]string{"b@x": "450 4.2.1 later", "a@x": "550 5.1.1 unknown"})
	if got != "a@x\t550 5.1.1 unknown\nb@x\t450 4.2.1 later\n" {
		t.Fatalf("%q", got)
	}
}
