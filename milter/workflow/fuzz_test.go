package workflow_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/listcrypt/listcrypt/milter/workflow"
)

// FuzzParseCommand: command parsing never panics, and what it accepts is
// a known verb with a well-formed token that reads back the same.
// Seeds: testdata/fuzz/FuzzParseCommand.
func FuzzParseCommand(f *testing.F) {
	f.Add("subscribe", []byte(""))
	f.Add("Re: key set ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", []byte("my key\n"))
	f.Add("", []byte("> > key confirm abcdefghijklmnopqrstuvwxyz234567\nlist: devs@lists.example.org\nfingerprint: 0123 4567 89AB CDEF 0123  4567 89AB CDEF 0123 4567\n"))
	f.Add("[devs] Fwd: help", []byte("-- \nkey get\n"))
	f.Add("", []byte("key set\n"))
	f.Add("", []byte("unsubscribe me please\r\nkey show\r\n"))
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		cmd, err := workflow.ParseCommand(subject, body)
		st := workflow.ParseStatement(body)
		if st.Fingerprint != "" && len(st.Fingerprint) != 40 && len(st.Fingerprint) != 64 {
			t.Fatalf("fingerprint %q", st.Fingerprint)
		}
		if err != nil {
			var se *workflow.SyntaxError
			if !errors.Is(err, workflow.ErrNoCommand) && !errors.As(err, &se) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		switch cmd.Verb {
		case workflow.VerbHelp, workflow.VerbSubscribe, workflow.VerbUnsubscribe, workflow.VerbKeyChange,
			workflow.VerbKeyRevoke, workflow.VerbKeyGet, workflow.VerbKeyShow:
			if cmd.Token != "" && cmd.Verb != workflow.VerbUnsubscribe {
				t.Fatalf("%q with token", cmd.Verb)
			}
		case workflow.VerbKeySet, workflow.VerbKeyConfirm:
			if cmd.Token == "" {
				t.Fatalf("%q without token", cmd.Verb)
			}
		default:
			t.Fatalf("unknown verb %q", cmd.Verb)
		}
		if cmd.Token != "" {
			if n, err := workflow.NormalizeToken(cmd.Token); err != nil || n != cmd.Token || strings.ToUpper(n) != n {
				t.Fatalf("token %q: %v", cmd.Token, err)
			}
		}
		again, err := workflow.ParseCommand("", []byte(cmd.String()))
		if err != nil || again.Verb != cmd.Verb || again.Token != cmd.Token {
			t.Fatalf("%q reads back as %+v, %v", cmd.String(), again, err)
		}
	})
}

// FuzzEntityText: the MIME reader of command mails never panics.
func FuzzEntityText(f *testing.F) {
	f.Add([]byte("Content-Type: text/plain\r\n\r\nkey get\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nkey set X\r\n--b\r\nContent-Type: application/pgp-keys\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: text/plain\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nkey confirm X\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n"))
	f.Fuzz(func(t *testing.T, entity []byte) {
		_, _ = workflow.EntityText(entity)
	})
}
