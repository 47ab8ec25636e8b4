package reinject

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// client is one SMTP connection to the listener, able to carry several
// transactions one after another (RFC 5321 §4.1.4: after the reply to
// the end of DATA the session is ready for the next MAIL).
//
// go-smtp's Client sends one command and waits for its reply (no
// PIPELINING), sends EHLO again after every RSET and replaces the
// connection's deadline by its own per command. This client is the part
// of it that reinjection needs, on net/textproto, with RFC 2920
// PIPELINING: MAIL and every RCPT go out in one write and their replies
// are read in order.
type client struct {
	conn      net.Conn
	text      *textproto.Conn
	pipelined bool // the server advertised PIPELINING
	eightBit  bool // the server advertised 8BITMIME
	xverp     bool // the server offers XVERP (Postfix, to authorized clients)
	used      int  // transactions begun on this connection
	spent     bool // not to be reused
	born      time.Time
	idleSince time.Time
}

// writeBuffer is the size of a connection's write buffer.
const writeBuffer = 32 << 10

// hostname is the name we give in EHLO.
func hostname() string {
	h, _ := os.Hostname()
	if h == "" || strings.ContainsAny(h, " \r\n") {
		return "localhost"
	}
	return h
}

// dial connects to addr, reads the greeting and says EHLO (HELO when
// EHLO is refused).
func dial(ctx context.Context, addr string) (*client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// A copy goes out in writes of writeBuffer bytes (textproto's
	// default is 4 KiB: 18 write calls for a 70 KB copy).
	text := &textproto.Conn{
		Reader: *textproto.NewReader(bufio.NewReader(conn)),
		Writer: *textproto.NewWriter(bufio.NewWriterSize(conn, writeBuffer)),
	}
	c := &client{conn: conn, text: text, born: time.Now()}
	stop := c.bound(ctx)
	defer stop()
	if _, _, err := c.read(220); err != nil {
		c.close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	host := hostname()
	_, msg, err := c.cmd(250, "EHLO %s", host)
	var se *smtp.SMTPError
	if errors.As(err, &se) && (se.Code == 500 || se.Code == 502) {
		_, _, err = c.cmd(250, "HELO %s", host)
		msg = ""
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	for _, line := range strings.Split(msg, "\n")[1:] {
		kw, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(line)), " ")
		switch kw {
		case "PIPELINING":
			c.pipelined = true
		case "8BITMIME":
			c.eightBit = true
		case "XVERP":
			c.xverp = true
		}
	}
	return c, nil
}

// bound makes ctx's deadline (or Timeout) the connection's and aborts
// blocked I/O when ctx ends. The returned func undoes it; when ctx ended
// meanwhile, the connection is not reused (its deadline may yet be set
// in the past).
func (c *client) bound(ctx context.Context) func() {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(Timeout)
	}
	_ = c.conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		if !stop() {
			c.spent = true
		}
		_ = c.conn.SetDeadline(time.Time{})
	}
}

// cmd sends one command and reads its reply.
func (c *client) cmd(expect int, format string, args ...any) (int, string, error) {
	if err := c.text.PrintfLine(format, args...); err != nil {
		return 0, "", err
	}
	return c.read(expect)
}

// read reads one reply; a reply other than expect (a prefix such as 25
// matches 250-259) is an *smtp.SMTPError.
func (c *client) read(expect int) (int, string, error) {
	code, msg, err := c.text.ReadResponse(expect)
	var pe *textproto.Error
	if errors.As(err, &pe) {
		return code, msg, smtpError(pe)
	}
	return code, msg, err
}

// smtpError turns a textproto reply into go-smtp's error type, with the
// RFC 3463 enhanced status code split off.
func smtpError(pe *textproto.Error) *smtp.SMTPError {
	se := &smtp.SMTPError{Code: pe.Code, EnhancedCode: smtp.NoEnhancedCode, Message: pe.Msg}
	first, rest, _ := strings.Cut(pe.Msg, " ")
	parts := strings.Split(first, ".")
	if len(parts) == 3 {
		var ec smtp.EnhancedCode
		ok := true
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n > 999 {
				ok = false
				break
			}
			ec[i] = n
		}
		if ok && ec[0] == pe.Code/100 {
			se.EnhancedCode = ec
			se.Message = rest
		}
	}
	return se
}

// errNoTransaction marks a failure before any reply of the transaction
// was read: the server took nothing, so the message may go again on a
// fresh connection.
var errNoTransaction = errors.New("connection closed before the transaction began")

// window bounds one group of pipelined commands, in bytes: a client that
// writes the whole group before reading replies "MUST ... make sure that
// each group of commands fits entirely within the [TCP] window", usually
// 4K octets (RFC 2920 §3.1). A batch of 50 members is one group.
const window = 4096

// send runs one transaction: [RSET,] MAIL and every RCPT in one write
// when the server pipelines (RFC 2920), then DATA and the message. The
// error says at which stage it failed; after any error the connection
// must be dropped.
func (c *client) send(ctx context.Context, from string, to []string, msg io.WriterTo, perRecipient, verp bool) (Result, error) {
	var res Result
	stop := c.bound(ctx)
	defer stop()
	reused := c.used > 0
	c.used++

	// A reused connection that fails at its first exchange with no reply
	// or 421 was closed by the server while idle: nothing of this
	// transaction reached it (errNoTransaction), it may go again.
	first := true
	gone := func(err error) error {
		if err != nil && first && reused && closing(err) {
			return fmt.Errorf("%w: %w", errNoTransaction, err)
		}
		return err
	}
	w := c.text.W
	var replies []func() error // readers of the replies still due, in order
	flush := func() error {
		if err := w.Flush(); err != nil {
			return gone(err)
		}
		for len(replies) > 0 {
			r := replies[0]
			replies = replies[1:]
			if err := r(); err != nil {
				return err
			}
		}
		return nil
	}
	queue := func(line string, reply func() error) error {
		if len(replies) > 0 && w.Buffered()+len(line)+2 > window {
			if err := flush(); err != nil {
				return err
			}
		}
		if _, err := w.WriteString(line + "\r\n"); err != nil {
			return gone(err)
		}
		replies = append(replies, reply)
		if !c.pipelined {
			return flush()
		}
		return nil
	}
	stage := func(what string, expect int) func() error {
		return func() error {
			_, _, err := c.read(expect)
			err = gone(err)
			first = false
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		}
	}
	if reused {
		// Clean state whatever the last transaction left (one that sent
		// no DATA), at no extra round trip when pipelining.
		if err := queue("RSET", stage("RSET", 250)); err != nil {
			return Result{}, err
		}
	}
	if err := validLine(from); err != nil {
		return Result{}, fmt.Errorf("MAIL FROM:<%s>: %w", from, err)
	}
	mail := "MAIL FROM:<" + from + ">"
	if c.eightBit {
		mail += " BODY=8BITMIME"
	}
	if local, _, _ := strings.Cut(from, "@"); verp && c.xverp && from != "" && !strings.Contains(local, "+") {
		// The delimiters bounce.ParseVERP reads, whatever the server's
		// default_verp_delimiters. A sender whose local part has a "+"
		// gets none: the member could not be read back from it.
		mail += " XVERP=+="
		res.VERP = true
	}
	if err := queue(mail, stage("MAIL FROM:<"+from+">", 250)); err != nil {
		return Result{}, err
	}
	for _, r := range to {
		if err := validLine(r); err != nil {
			return Result{}, fmt.Errorf("RCPT TO:<%s>: %w", r, err)
		}
		if err := queue("RCPT TO:<"+r+">", func() error {
			_, _, err := c.read(25)
			first = false
			if err == nil {
				res.Accepted = append(res.Accepted, r)
				return nil
			}
			var se *smtp.SMTPError
			if perRecipient && errors.As(err, &se) && se.Code >= 500 && se.Code <= 599 {
				res.Refused = append(res.Refused, Refusal{Address: r, Code: se.Code, Reply: replyLine(se)})
				return nil
			}
			return fmt.Errorf("RCPT TO:<%s>: %w", r, err)
		}); err != nil {
			return Result{}, err
		}
	}
	if err := flush(); err != nil {
		return Result{}, err
	}
	if len(res.Refused) > 0 {
		// Postfix's smtpd counts refusals per connection until mail is
		// delivered, and slows down (smtpd_soft_error_limit) or hangs up
		// (smtpd_hard_error_limit) past its limits: the next batch gets a
		// fresh connection, as it did when each had its own.
		c.spent = true
	}
	if len(res.Accepted) == 0 {
		// Every recipient was refused: no DATA.
		return res, nil
	}
	// DATA waits for the RCPT replies (RFC 2920 allows it in the group):
	// a batch whose every member was refused sends no DATA at all, and a
	// refusal never meets a 354 already under way.
	if _, _, err := c.cmd(354, "DATA"); err != nil {
		return Result{}, fmt.Errorf("DATA: %w", err)
	}
	dw := newDotWriter(c.text.W)
	if _, err := msg.WriteTo(dw); err != nil {
		return Result{}, fmt.Errorf("DATA: %w", err)
	}
	if err := dw.Close(); err != nil { // the final dot, flushed
		return Result{}, fmt.Errorf("end of DATA: %w", err)
	}
	if _, _, err := c.read(250); err != nil {
		return Result{}, fmt.Errorf("end of DATA: %w", err)
	}
	return res, nil
}

// closing reports a connection that is gone or going: no reply, or 421
// (RFC 5321 §3.8: the server closes the transmission channel).
func closing(err error) bool {
	var se *smtp.SMTPError
	return !errors.As(err, &se) || se.Code == 421
}

// validLine refuses what would break the command line.
func validLine(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return errors.New("address contains a line break")
	}
	return nil
}

// quit ends the session politely and closes the connection.
func (c *client) quit() {
	_ = c.conn.SetDeadline(time.Now().Add(time.Second))
	_, _, _ = c.cmd(221, "QUIT")
	c.close()
}

func (c *client) close() { _ = c.conn.Close() }
