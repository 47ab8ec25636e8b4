// Package sendmail tests the Sendmail lines listcrypt ships for the
// command responder (README.md).
package sendmail

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/workflow/wftest"
)

// progLine returns the argv of the request include file's "|program"
// line.
func progLine(t *testing.T) []string {
	t.Helper()
	return includeArgv(t, "devs-request.include")
}

// includeArgv returns the argv of the "|program" line of include file
// name.
func includeArgv(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(b))
	line = strings.TrimSuffix(strings.TrimPrefix(line, `"`), `"`)
	prog, ok := strings.CutPrefix(line, "|")
	if !ok || strings.ContainsAny(prog, `'"$;&<>`+"`") {
		t.Fatalf("include line %q: want \"|program args\" without shell syntax (smrsh)", line)
	}
	return strings.Fields(prog)
}

func TestIncludeRunsResponder(t *testing.T) {
	argv := progLine(t)
	if argv[0] != "/usr/local/bin/listcrypt-responder" || !strings.Contains(strings.Join(argv, " "), "--recipient devs-request@lists.example.org") {
		t.Fatalf("argv %q", argv)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "listcrypt-responder")
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/listcrypt/listcrypt/cmd/listcrypt-responder").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sink := rig.NewSink(t)
	site := milterfix.New(t, milterfix.Options{Reinject: sink.Addr()})
	repl := strings.NewReplacer("/usr/local/bin/listcrypt-responder", bin, "/etc/listcrypt/listcrypt.toml", site.Config.File)
	runProg := func(msg []byte, args ...string) (int, string) {
		t.Helper()
		a := make([]string, len(argv))
		for i, s := range argv {
			a[i] = repl.Replace(s)
		}
		a = append(a[:1], append(a[1:], args...)...)
		cmd := exec.Command(a[0], a[1:]...)
		cmd.Stdin = bytes.NewReader(msg)
		cmd.Env = []string{"PATH=/usr/bin:/bin"} // what a prog mailer gets, no HOME
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stderr.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, stderr.String()
	}
	const bob = "bob@example.org"
	if code, stderr := runProg(wftest.Mail(bob, "devs-request@lists.example.org", "x", "help")); code != 0 {
		t.Fatalf("help: exit %d\n%s", code, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := sink.Wait(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if text := wftest.Open(t, got[0].Data, nil, site.ListKey); !strings.Contains(text, "This is the command address") {
		t.Fatalf("reply:\n%s", text)
	}
	if code, _ := runProg([]byte("\x00garbage"), "--recipient", "devs-request@lists.example.org"); code != 65 {
		t.Errorf("garbage: exit %d, want 65", code)
	}
	if code, _ := runProg(wftest.Mail(bob, "x", "x", "help"), "--recipient", "nolist-request@lists.example.org"); code != 67 {
		t.Errorf("unknown list: exit %d, want 67", code)
	}
	// The MTA's listener is down: the command is carried out and its
	// reply waits in the outbox (exit 0: with 75 sendmail would run the
	// command again and send a second reply); the next run sends it.
	src, err := os.ReadFile(site.Config.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(site.Config.File, bytes.Replace(src, []byte(sink.Addr()), []byte("127.0.0.1:1"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stderr := runProg(wftest.Mail(bob, "x", "x", "subscribe")); code != 0 || !strings.Contains(stderr, "outbox") {
		t.Errorf("MTA down: exit %d, want 0 with the reply in the outbox\n%s", code, stderr)
	}
	if err := os.WriteFile(site.Config.File, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stderr := runProg(wftest.Mail(bob, "devs-request@lists.example.org", "x", "help")); code != 0 {
		t.Fatalf("help after the MTA is back: exit %d\n%s", code, stderr)
	}
	if got, err = sink.Wait(ctx, 3); err != nil {
		t.Fatalf("the waiting reply and the new one: %v (%d delivered)", err, len(got))
	}
}

// The list address's route: its alias includes devs.include, whose one
// line runs the responder with --refuse (no shell syntax: smrsh), so
// whatever reaches the list address bounces (cmd/listcrypt-responder's
// TestRefuse and TestListAddressRefusedThroughSendmail).
func TestListAddressInclude(t *testing.T) {
	if argv := includeArgv(t, "devs.include"); strings.Join(argv, " ") != "/usr/local/bin/listcrypt-responder --refuse" {
		t.Fatalf("devs.include runs %q", argv)
	}
	b, err := os.ReadFile("aliases.snippet")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\ndevs: :include:/etc/listcrypt/sendmail/devs.include\n",
		"\ndevs-request: :include:/etc/listcrypt/sendmail/devs-request.include\n",
		"\ndevs-bounces: :include:/etc/listcrypt/sendmail/devs-bounces.include\n",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("aliases.snippet lacks %q", strings.TrimSpace(want))
		}
	}
	if strings.Contains(string(b), "\nowner-devs:") {
		t.Error("aliases.snippet defines owner-devs: the list address's bounces would go there, not to the sender")
	}
}
