package reinject

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// scripted is a minimal SMTP server that offers the given EHLO keywords
// and records every MAIL command line it gets.
func scripted(t *testing.T, keywords ...string) (addr string, mails <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
				say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
				say("220 scripted")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
					switch {
					case verb == "EHLO":
						ext := append([]string{"scripted"}, keywords...)
						for i, k := range ext {
							sep := "-"
							if i == len(ext)-1 {
								sep = " "
							}
							say("250" + sep + k)
						}
					case strings.HasPrefix(strings.ToUpper(line), "MAIL FROM:"):
						ch <- line
						say("250 ok")
					case verb == "DATA":
						say("354 go")
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
						}
						say("250 queued")
					case verb == "QUIT":
						say("221 bye")
						return
					default:
						say("250 ok")
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// XVERP is asked for only when the listener offers it and the caller
// wants it, with the delimiters bounce.ParseVERP reads; never for the
// null sender.
func TestSendEachVERP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		keywords []string
		verp     bool
		from     string
		want     string
	}{
		{"offered and wanted", []string{"PIPELINING", "XVERP"}, true, "devs-bounces@lists.example.org", "MAIL FROM:<devs-bounces@lists.example.org> XVERP=+="},
		{"offered, not wanted", []string{"XVERP"}, false, "devs-bounces@lists.example.org", "MAIL FROM:<devs-bounces@lists.example.org>"},
		{"wanted, not offered (Sendmail)", []string{"PIPELINING", "8BITMIME"}, true, "devs-bounces@lists.example.org", "MAIL FROM:<devs-bounces@lists.example.org> BODY=8BITMIME"},
		{"null sender", []string{"XVERP"}, true, "", "MAIL FROM:<>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, mails := scripted(t, tc.keywords...)
			p := NewPool(addr, 1, time.Minute)
			defer p.CloseIdle()
			send := p.SendEach
			if tc.verp {
				send = p.SendEachVERP
			}
			res, err := send(context.Background(), tc.from, []string{"a@example.org", "b@example.org"}, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
			if err != nil || len(res.Accepted) != 2 {
				t.Fatalf("send: %+v %v", res, err)
			}
			if got := <-mails; got != tc.want {
				t.Errorf("MAIL line %q, want %q", got, tc.want)
			}
			if res.VERP != strings.HasSuffix(tc.want, "XVERP=+=") {
				t.Errorf("Result.VERP = %v for %q", res.VERP, tc.want)
			}
		})
	}
}
