// Command listcrypt-responder answers one command mail for
// LIST-request@DOMAIN, read on standard input: the MTA runs it as a
// Postfix pipe(8) transport or a Sendmail prog mailer (contrib/postfix,
// contrib/sendmail). The commands and replies are in docs/responder.md.
//
//	listcrypt-responder [-c CONFIG] [--recipient ADDRESS]
//	listcrypt-responder --refuse
//
// With --refuse it is the route of a list address itself on Sendmail
// (contrib/sendmail/devs.include; Postfix's is the listcrypt-refuse pipe
// service): it reads the message to the end without keeping it, writes
// the refusal (postfix.RefusalText) to standard error, which Sendmail
// puts in the bounce, and exits 77 (EX_NOPERM), a permanent failure. It
// opens no config, store or file: listcrypt takes the list address out
// of every post it handles, so mail that still reaches it went around
// the milter and must never be delivered in clear.
//
// Exit status per sysexits.h: 0 answered (or deliberately ignored), 65
// (EX_DATAERR) a message it cannot parse, 67 (EX_NOUSER) no list has this
// request address, 75 (EX_TEMPFAIL) anything transient (and config or
// usage errors, so that no mail is lost while the admin fixes them): the
// MTA keeps the mail and retries.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/listcrypt/listcrypt/contrib/postfix"
	"github.com/listcrypt/listcrypt/keyring/site"
	"github.com/listcrypt/listcrypt/milter/workflow"
	"github.com/listcrypt/listcrypt/policy/config"
)

// timeout bounds one command mail, reply submission included.
const timeout = 5 * time.Minute

// exitNoPerm is sysexits.h's EX_NOPERM: Sendmail and Postfix bounce the
// mail for good.
const exitNoPerm = 77

// refuseReadMax bounds what --refuse reads (and discards) of a message.
const refuseReadMax = 1 << 32

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stderr))
}

func run(args []string, stdin io.Reader, stderr io.Writer) int {
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "listcrypt-responder: "+format+"\n", a...)
		return code
	}
	fs := flag.NewFlagSet("listcrypt-responder", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("c", config.DefaultPath, "site config file")
	recipient := fs.String("recipient", "", "the LIST-request address the MTA delivered to (Postfix: ${recipient})")
	refuseMail := fs.Bool("refuse", false, "bounce the message (the route of a list address itself)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return fail(workflow.ExitTempFail, "usage: listcrypt-responder [-c CONFIG] [--recipient ADDRESS] < message\n       listcrypt-responder --refuse < message")
	}
	if *refuseMail {
		return refuse(stdin, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := site.Open(ctx, *cfgPath, site.Options{})
	if err != nil {
		return fail(workflow.ExitTempFail, "%v", err)
	}
	defer s.Close()
	max := s.Config.Limits.MaxMessageSize.Bytes
	msg, err := io.ReadAll(io.LimitReader(stdin, max+1))
	if err != nil {
		return fail(workflow.ExitTempFail, "reading the message: %v", err)
	}
	if int64(len(msg)) > max {
		return fail(workflow.ExitDataErr, "message larger than limits.max_message_size (%d bytes)", max)
	}
	r, err := workflow.ForSite(s, config.NewLogger(s.Config, stderr))
	if err != nil {
		return fail(workflow.ExitTempFail, "%v", err)
	}
	if _, err := r.Handle(ctx, msg, *recipient); err != nil {
		return fail(workflow.ExitCode(err), "%v", err)
	}
	return workflow.ExitOK
}

// refuse reads the message to its end (up to refuseReadMax bytes, kept
// nowhere, so that the MTA never sees a broken pipe), writes the refusal
// for the bounce and returns EX_NOPERM.
func refuse(stdin io.Reader, stderr io.Writer) int {
	_, _ = io.CopyN(io.Discard, stdin, refuseReadMax)
	fmt.Fprintln(stderr, postfix.RefusalText)
	return exitNoPerm
}
