package rig

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-smtp"
)

// SendTimeout bounds a whole Send: connect, transaction and QUIT.
const SendTimeout = 2 * time.Minute

// SMTPError is a refusal by the server, with the stage it came at.
type SMTPError struct {
	Code     int    // basic reply code, e.g. 451
	Enhanced string // RFC 3463 enhanced status code, e.g. "4.7.1"; "" if the reply had none
	Message  string // reply text without codes; lines of a multi-line reply joined by "\n"
	// Stage is the command that was refused: "CONNECT" (greeting or EHLO),
	// "MAIL", "RCPT" or "DATA" (the reply after the final dot, or to the
	// DATA command itself).
	Stage string
}

func (e *SMTPError) Error() string {
	if e.Enhanced != "" {
		return fmt.Sprintf("%s: %d %s %s", e.Stage, e.Code, e.Enhanced, e.Message)
	}
	return fmt.Sprintf("%s: %d %s", e.Stage, e.Code, e.Message)
}

// Temporary reports whether the refusal was a 4xx.
func (e *SMTPError) Temporary() bool { return e.Code/100 == 4 }

// Send submits one message over plain SMTP to addr (host:port) in one
// transaction. data should use CRLF line ends; a bare LF is sent as CRLF
// and dot-stuffing is done here. A refusal by the server is returned as
// *SMTPError; other errors (network, protocol) as they are.
func Send(addr, from string, to []string, data []byte) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	if err := conn.SetDeadline(time.Now().Add(SendTimeout)); err != nil {
		_ = conn.Close()
		return err
	}
	c := smtp.NewClient(conn)
	defer func() { _ = c.Close() }()

	if err := c.Hello("client.rig.test"); err != nil {
		return stageError("CONNECT", err)
	}
	if err := c.Mail(from, nil); err != nil {
		return stageError("MAIL", err)
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return stageError("RCPT", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return stageError("DATA", err)
	}
	if _, err := w.Write(data); err != nil {
		_ = w.Close()
		return fmt.Errorf("rig: writing message: %w", err)
	}
	if err := w.Close(); err != nil {
		return stageError("DATA", err)
	}
	return c.Quit()
}

// StageError is what Send returns for err, an error of a go-smtp client
// at stage ("MAIL", "DATA", ...), for tests that drive their own
// client: a refusal as *SMTPError; nil stays nil.
func StageError(stage string, err error) error {
	if err == nil {
		return nil
	}
	return stageError(stage, err)
}

func stageError(stage string, err error) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return fmt.Errorf("rig: %s: %w", stage, err)
	}
	out := &SMTPError{Code: se.Code, Message: se.Message, Stage: stage}
	if ec := se.EnhancedCode; ec[0] > 0 { // neither NoEnhancedCode nor EnhancedCodeNotSet
		out.Enhanced = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
	}
	return out
}
