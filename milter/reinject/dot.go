package reinject

import (
	"bufio"
	"bytes"
)

// dotWriter writes a message as the DATA of an SMTP transaction (RFC
// 5321 §4.5.2): a line that begins with "." gets another in front, a
// bare LF becomes CRLF, and Close ends the data with ".\r\n" (after a
// CRLF when the message was empty or did not end with one) and flushes.
//
// It does what net/textproto's DotWriter does, a line at a time instead
// of a byte at a time: a copy is mostly 76-byte base64 lines, which it
// hands to the buffered writer whole (textproto's took ~19 ms of CPU
// for the 1,000 copies of a 50 KB post, this one under 1 ms). A CR
// before a line's LF is kept as it is (textproto's would double the
// first of two CRs before an LF; both are invalid in mail).
type dotWriter struct {
	w    *bufio.Writer
	mid  bool // inside a line: something was written since the last LF
	cr   bool // the last byte written was a CR
	some bool // anything was written
}

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w} }

func (d *dotWriter) Write(b []byte) (int, error) {
	n := 0
	d.some = d.some || len(b) > 0
	for len(b) > 0 {
		if !d.mid {
			if b[0] == '.' {
				if err := d.w.WriteByte('.'); err != nil {
					return n, err
				}
			}
			d.mid = true
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if _, err := d.w.Write(b); err != nil {
				return n, err
			}
			d.cr = b[len(b)-1] == '\r'
			return n + len(b), nil
		}
		cr := d.cr
		if i > 0 {
			cr = b[i-1] == '\r'
		}
		if _, err := d.w.Write(b[:i]); err != nil {
			return n, err
		}
		if !cr {
			if err := d.w.WriteByte('\r'); err != nil {
				return n, err
			}
		}
		if err := d.w.WriteByte('\n'); err != nil {
			return n, err
		}
		d.mid, d.cr = false, false
		n += i + 1
		b = b[i+1:]
	}
	return n, nil
}

// Close ends the data and flushes it.
func (d *dotWriter) Close() error {
	if d.mid || !d.some {
		end := "\r\n"
		if d.cr {
			end = "\n"
		}
		if _, err := d.w.WriteString(end); err != nil {
			return err
		}
	}
	if _, err := d.w.WriteString(".\r\n"); err != nil {
		return err
	}
	return d.w.Flush()
}
