package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/policy/tomlx"
)

var update = flag.Bool("update", false, "rewrite docs/config.md and the sample config")

func TestDefaultsWhenEmpty(t *testing.T) {
	c, err := Parse("/etc/listcrypt/listcrypt.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Milter.Listen != "unix:/run/listcrypt/milter.sock" || c.Reinject.Address != "127.0.0.1:10026" ||
		c.Database != "sqlite:/var/lib/listcrypt/state.db" || c.Limits.MaxMIMEDepth != 32 ||
		c.Milter.Timeout.D != 5*time.Minute {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestStableKeysAndRelativePaths(t *testing.T) {
	src := `state_dir = "state"
database = "sqlite:state/state.db"
policy_dir = "lists.d"
passphrase_file = "passphrase"
[milter]
listen = "unix:run/milter.sock"
[reinject]
address = "127.0.0.1:10026"
[limits]
max_message_size = "10MB"
`
	c, err := Parse("/srv/lc/listcrypt.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		c.StateDir:       "/srv/lc/state",
		c.Database:       "sqlite:/srv/lc/state/state.db",
		c.PolicyDir:      "/srv/lc/lists.d",
		c.PassphraseFile: "/srv/lc/passphrase",
		c.Milter.Listen:  "unix:/srv/lc/run/milter.sock",
	}
	for got, w := range want {
		if got != w {
			t.Errorf("got %q, want %q", got, w)
		}
	}
	if c.Limits.MaxMessageSize.Bytes != 10<<20 {
		t.Errorf("max_message_size = %d", c.Limits.MaxMessageSize.Bytes)
	}
	p, err := Parse("/x.toml", []byte(`database = "postgres://lc@db/lc?sslmode=disable"
[milter]
listen = "inet:8891@127.0.0.1"`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Database != "postgres://lc@db/lc?sslmode=disable" {
		t.Errorf("postgres dsn changed: %q", p.Database)
	}
	if n, a, _ := ParseListen(p.Milter.Listen); n != "tcp" || a != "127.0.0.1:8891" {
		t.Errorf("listen = %s %s", n, a)
	}
}

// Every problem is reported at once, each with its file and line.
func TestAllErrorsAtOnce(t *testing.T) {
	src := `state_dir = "/var/lib/listcrypt"
database = "mysql://nope"
[milter]
listen = "tcp:1234"
timeout = "soon"
max_connections = 0
[reinject]
address = "nohost"
[limits]
max_message_size = "10 parsecs"
max_mime_depth = 0
[log]
level = "loud"
`
	_, err := Parse("/etc/lc.toml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"/etc/lc.toml:2: database",
		"/etc/lc.toml:4: milter listen",
		"/etc/lc.toml:5: timeout",
		"/etc/lc.toml:6: max_connections",
		"/etc/lc.toml:8: reinject address",
		"/etc/lc.toml:10: max_message_size",
		"/etc/lc.toml:11: max_mime_depth",
		"/etc/lc.toml:13: log level",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// An unknown key does not hide the other mistakes: an invalid
// [milter] listen at line 3 and a misspelt key at line 6 are reported
// together, each with its line.
func TestUnknownKeyDoesNotHideOthers(t *testing.T) {
	src := "state_dir = \"/x\"\n[milter]\nlisten = \"tcp:25\"\n[limits]\nmax_mime_depth = 0\nmax_mime_dept = 4\n"
	_, err := Parse("/c.toml", []byte(src))
	for _, want := range []string{"/c.toml:3: ", "/c.toml:5: ", `/c.toml:6: unknown key "limits.max_mime_dept"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestUnknownKeyAndSyntax(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"state_dir = \"/x\"\n[milter]\nlisten_on = \"unix:/x\"\n", `/c.toml:3: unknown key "milter.listen_on"`},
		{"state_dir = \n", "/c.toml:1:"},
		{"[limits]\nmax_pkesk = \"many\"\n", "/c.toml:2:"},
	} {
		_, err := Parse("/c.toml", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("err = %v", err)
	}
}

// The reference page and the sample config are generated from the code;
// this test fails when they drift (regenerate with -update), and the
// shipped sample must load.
func TestReferenceUpToDate(t *testing.T) {
	ref := "# listcrypt.toml reference\n\nThe site config, read by every listcrypt program (`-c FILE`, default `" + DefaultPath + "`).\n" +
		"Generated from `policy/config/config.go` by `go test ./policy/config -update`; do not edit.\n" +
		"Relative paths resolve against the config file's folder. Every error is reported at once as `file:line: message`.\n\n" +
		tomlx.Reference(Default())
	golden(t, "../../docs/config.md", ref)
	sample, err := os.ReadFile("../../contrib/listcrypt.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("/etc/listcrypt/listcrypt.toml", sample); err != nil {
		t.Fatalf("shipped sample config: %v", err)
	}
}

func golden(t *testing.T, path, want string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is out of date: run go test ./policy/... -update", path)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("state_dir = \"/x\"\n[milter]\nlisten = \"inet:1@h\"\n"))
	f.Add([]byte("[limits]\nmax_message_size = \"10MB\"\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse("/f.toml", src)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}
