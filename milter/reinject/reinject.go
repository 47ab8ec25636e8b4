// Package reinject submits mail that listcrypt creates itself (approved
// holds, extra recipient batches, responder replies) to the MTA's SMTP
// listener with milters off ([reinject] address).
package reinject

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"
)

// Timeout bounds one submission.
const Timeout = 2 * time.Minute

// Send submits data from the envelope sender to the recipients at addr
// (HOST:PORT). Every refusal is an error naming the stage and the reply:
// either every recipient gets the message or none does.
func Send(ctx context.Context, addr, from string, to []string, data []byte) error {
	_, err := submit(ctx, addr, from, to, data, false)
	return err
}

// Refusal is a recipient the MTA refused permanently at RCPT TO.
type Refusal struct {
	Address string
	Code    int    // SMTP reply code, 5xx
	Reply   string // the whole reply on one line, e.g. "550 5.1.1 <a@b>: Recipient address rejected: User unknown"
}

// Result is the outcome of SendEach.
type Result struct {
	Accepted []string  // recipients the MTA took the message for, in the order given
	Refused  []Refusal // recipients refused permanently, in the order given
	// VERP: the transaction asked for per-recipient VERP (SendEachVERP,
	// and the listener offered XVERP).
	VERP bool
}

// SendEach submits data from the envelope sender to the recipients at
// addr, recipient by recipient: a permanent refusal (5xx) at RCPT TO
// leaves that recipient out and is reported in Result.Refused, the
// others get the message. When every recipient is refused no DATA is
// sent and the error is nil. A temporary refusal (4xx) of any recipient
// and every other failure (connection, MAIL FROM, DATA) is an error, and
// then nobody got the message: the caller retries it all later.
func SendEach(ctx context.Context, addr, from string, to []string, data []byte) (Result, error) {
	return submit(ctx, addr, from, to, data, true)
}

func submit(ctx context.Context, addr, from string, to []string, data []byte, perRecipient bool) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	c, err := dial(ctx, addr)
	if err != nil {
		return Result{}, fmt.Errorf("reinject to %s: %w", addr, err)
	}
	res, err := c.send(ctx, from, to, bytes.NewReader(data), perRecipient, false)
	if err != nil {
		c.close()
		return Result{}, fmt.Errorf("reinject to %s: %w", addr, err)
	}
	// The MTA took the message at the end of DATA: a failing QUIT must not
	// make the caller send it again.
	c.quit()
	return res, nil
}

// replyLine is an SMTP reply as one line of printable ASCII: code,
// enhanced code, text (lines of a multi-line reply joined by spaces),
// at most 300 bytes.
func replyLine(se *smtp.SMTPError) string {
	s := strconv.Itoa(se.Code)
	if ec := se.EnhancedCode; ec[0] > 0 {
		s += fmt.Sprintf(" %d.%d.%d", ec[0], ec[1], ec[2])
	}
	if se.Message != "" {
		s += " " + se.Message
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < 300; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = ' '
		}
		b = append(b, c)
	}
	return string(b)
}
