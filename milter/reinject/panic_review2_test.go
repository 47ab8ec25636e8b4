package reinject

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// panicky writes part of a message, then panics (a bug in the batch's
// WriteTo, which runs inside the pool's transaction).
type panicky struct{}

func (panicky) WriteTo(w io.Writer) (int64, error) {
	n, _ := io.WriteString(w, "Subject: x\r\n\r\nhalf a mes")
	if n > 0 {
		panic("bug in WriteTo")
	}
	return int64(n), nil
}

// Found in review (it failed before the fix): deliver.submitBatches now recovers a panic in a batch's
// goroutine, but a panic inside the pool's transaction (msg.WriteTo runs
// in the middle of DATA) leaves its connection neither closed nor back
// in the pool: it stays open mid-DATA until the garbage collector finds
// it, and the MTA keeps an smtpd (Sendmail: up to Timeout.datablock, 1 h)
// waiting on it. A retried post that panics again leaks one per retry.
// The pool should close the connection when the transaction panics.
func TestReview2PanicInWriteToClosesTheConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan struct{})
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
		say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
		say("220 test")
		inData := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				close(closed)
				return
			}
			if inData {
				if line == ".\r\n" {
					inData = false
					say("250 queued")
				}
				continue
			}
			switch verb := strings.ToUpper(strings.Fields(line + " x")[0]); verb {
			case "EHLO":
				say("250-test")
				say("250 PIPELINING")
			case "DATA":
				inData = true
				say("354 go")
			case "QUIT":
				say("221 bye")
			default:
				say("250 ok")
			}
		}
	}()
	p := NewPool(ln.Addr().String(), 1, time.Minute)
	func() {
		defer func() {
			if v := recover(); v == nil {
				t.Fatal("no panic")
			}
		}()
		p.SendEach(context.Background(), "list-bounces@example.org", []string{"a@example.org"}, panicky{})
	}()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the connection of a transaction that panicked mid-DATA is still open (neither closed nor pooled)")
	}
}
