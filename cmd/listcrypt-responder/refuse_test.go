package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/listcrypt/listcrypt/contrib/postfix"
)

// countingReader counts what is read of it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// --refuse reads the whole message, keeps nothing, writes exactly the
// refusal of Postfix's listcrypt-refuse service and exits 77, without
// opening a config (the one named does not exist) or writing a file.
func TestRefuse(t *testing.T) {
	t.Chdir(t.TempDir())
	dir, _ := os.Getwd()
	msg := bytes.Repeat([]byte("From: x@example.org\r\n\r\nsecret line\r\n"), 100_000) // 3.7 MB
	in := &countingReader{r: bytes.NewReader(msg)}
	var stderr bytes.Buffer
	for _, args := range [][]string{{"--refuse"}, {"-c", "missing.toml", "--refuse"}} {
		in.r, in.n = bytes.NewReader(msg), 0
		stderr.Reset()
		if code := run(args, in, &stderr); code != 77 {
			t.Errorf("%q: exit %d, want 77 (EX_NOPERM)", args, code)
		}
		if in.n != int64(len(msg)) {
			t.Errorf("%q: read %d of %d bytes: the MTA would see a broken pipe", args, in.n, len(msg))
		}
		if got := stderr.String(); got != postfix.RefusalText+"\n" {
			t.Errorf("%q: wrote %q, want the refusal %q", args, got, postfix.RefusalText)
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("files written in the working directory: %v %v", ents, err)
	}
}

// The binary as the MTA runs it (the include file's command line, no
// HOME, an empty environment): the refusal on its standard error, none
// on standard output, exit 77.
func TestRefuseCommand(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(self, "--refuse")
	cmd.Dir = dir
	cmd.Env = []string{envMain + "=1", "PATH=/usr/bin:/bin"}
	cmd.Stdin = strings.NewReader("Subject: x\n\nbody\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 77 {
		t.Fatalf("exit: %v, want 77", err)
	}
	if stdout.Len() != 0 || stderr.String() != postfix.RefusalText+"\n" {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files written: %v", ents)
	}
}

// Both MTAs' routes of a list address bounce with the same text:
// master.cf.snippet's listcrypt-refuse service echoes postfix.RefusalText.
func TestRefusalTextIsPostfixs(t *testing.T) {
	if !strings.Contains(postfix.MasterCF, "echo '"+postfix.RefusalText+"'; exit 77") {
		t.Fatalf("master.cf.snippet's listcrypt-refuse does not echo %q", postfix.RefusalText)
	}
	if !strings.HasPrefix(postfix.RefusalText, "5.7.1 ") {
		t.Fatalf("the refusal does not start with its status: %q", postfix.RefusalText)
	}
}
