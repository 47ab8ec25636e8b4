// Package reinject submits mail that listcrypt creates itself (approved
// holds, extra recipient batches, responder replies) to the MTA's SMTP
// listener with milters off ([reinject] address).
package reinject

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/emersion/go-smtp"
)

// Timeout bounds one submission.
const Timeout = 2 * time.Minute

// Send submits data from the envelope sender to the recipients at addr
// (HOST:PORT). Every refusal is an error naming the stage and the reply.
func Send(ctx context.Context, addr, from string, to []string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("reinject to %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			conn.Close()
			return fmt.Errorf("reinject to %s: %w", addr, err)
		}
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	if err := c.Hello(host); err != nil {
		return fmt.Errorf("reinject to %s: EHLO: %w", addr, err)
	}
	if err := c.Mail(from, nil); err != nil {
		return fmt.Errorf("reinject to %s: MAIL FROM:<%s>: %w", addr, from, err)
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return fmt.Errorf("reinject to %s: RCPT TO:<%s>: %w", addr, r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("reinject to %s: DATA: %w", addr, err)
	}
	if _, err := w.Write(crlf(data)); err != nil {
		w.Close()
		return fmt.Errorf("reinject to %s: DATA: %w", addr, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("reinject to %s: end of DATA: %w", addr, err)
	}
	// The MTA took the message at the end of DATA: a failing QUIT must not
	// make the caller send it again.
	c.Quit()
	return nil
}

// crlf makes every line end in CRLF, as SMTP requires.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}
