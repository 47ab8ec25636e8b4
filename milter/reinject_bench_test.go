package milter_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-smtp"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// BenchmarkPostThroughPostfix measures one post of 50 KB to a list of N
// members with Ed25519/X25519 keys through a real Postfix (rig): the time
// from the end of DATA (the final dot written to Postfix's smtpd) to
// Postfix's 250, which covers the milter's whole end-of-message work
// (decrypt, verify, replay check, expansion, one signature, one
// encryption, N key packets, batch 1 rewritten in place, batches 2..n
// reinjected and recorded) and Postfix's own queue-file commit. Between
// iterations (not timed) the test waits until Postfix has delivered
// every copy to the sink, so each post starts on an idle machine.
//
// Each iteration is a whole post through Postfix (about a second), so
// the benchmark runs only when asked for (make bench's -benchtime 300x
// would take hours):
//
//	LISTCRYPT_BENCH_POSTFIX=1 CI=1 go test -run '^$' -bench PostThroughPostfix -benchtime 10x ./milter/
func BenchmarkPostThroughPostfix(b *testing.B) {
	if os.Getenv("LISTCRYPT_BENCH_POSTFIX") == "" {
		b.Skip("set LISTCRYPT_BENCH_POSTFIX=1 to run")
	}
	rig.Require(b)
	for _, c := range benchConnections {
		n := 1000
		b.Run(fmt.Sprintf("members=%d/connections=%d", n, c), func(b *testing.B) {
			site := milterfix.New(b, milterfix.Options{})
			site.Config.Reinject.Connections = c
			list := "bench@lists.example.org"
			members, keys := addListTB(b, site, list, n)
			_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
			pf := rig.Start(b, rig.Options{MilterAddr: "unix:" + sock})
			site.Config.Reinject.Address = pf.ReinjectAddr()
			startDaemon(b, site)
			author := members[0]
			listKey := listKeyOfTB(b, site, list)
			body := strings.Repeat("All work and no play makes Jack a dull boy. 0123456789\n", 50<<10/55)
			post := func(i int) []byte {
				msg := milterfix.Build(b, milterfix.Post{From: author, SignWith: keys[author],
					EncryptTo: []*openpgp.Entity{listKey}, Body: fmt.Sprintf("%d\n%s", i, body)})
				return bytes.ReplaceAll(msg, []byte("To: "+milterfix.List), []byte("To: "+list))
			}
			bounce := "bench-bounces@lists.example.org"
			copies := 0
			send := func(msg []byte) time.Duration {
				d, err := timedSend(pf.SMTPAddr(), author, list, msg)
				if err != nil {
					b.Fatal(err)
				}
				copies += n
				waitCopiesTB(b, pf.Sink(), bounce, copies)
				return d
			}
			// Warm-up: the list key is opened once, Postfix starts its
			// processes.
			send(post(-1))
			msgs := make([][]byte, b.N)
			for i := range msgs {
				msgs[i] = post(i)
			}
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				times = append(times, send(msgs[i]))
			}
			var total time.Duration
			for _, d := range times {
				total += d
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-eod-to-250/op")
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-eod-to-250-median")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// benchConnections are the [reinject] connections the benchmark tries.
var benchConnections = []int{1, 2, 4}

// timedSend submits msg to Postfix and returns the time from the end of
// DATA (the final dot) to the reply.
func timedSend(addr, from, to string, msg []byte) (time.Duration, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.rig.test"); err != nil {
		return 0, err
	}
	if err := c.Mail(from, nil); err != nil {
		return 0, err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return 0, err
	}
	w, err := c.Data()
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(msg); err != nil {
		return 0, err
	}
	// DataCommand.Close writes the final dot and reads the reply.
	start := time.Now()
	if err := w.Close(); err != nil {
		return 0, err
	}
	d := time.Since(start)
	return d, c.Quit()
}

// addListTB creates list addr with n members (Ed25519/X25519 keys).
func addListTB(t testing.TB, site *milterfix.Site, addr string, n int) ([]string, map[string]*openpgp.Entity) {
	t.Helper()
	ctx := context.Background()
	if _, err := site.Admin.CreateList(ctx, addr, "owner@example.org", keyring.KeyEd25519); err != nil {
		t.Fatal(err)
	}
	local, _, _ := strings.Cut(addr, "@")
	keys := map[string]*openpgp.Entity{}
	var addrs []string
	for i := range n {
		m := fmt.Sprintf("%s-m%04d@example.org", local, i)
		e := milterfix.NewKey(t, m)
		a, err := keyring.ArmorPublicKey(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := site.Admin.AddMember(ctx, addr, m, []byte(a)); err != nil {
			t.Fatal(err)
		}
		keys[m] = e
		addrs = append(addrs, m)
	}
	return addrs, keys
}

// waitCopiesTB waits until the sink holds want list copies from bounce.
func waitCopiesTB(t testing.TB, sink *rig.Sink, bounce string, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		total := 0
		for _, c := range copiesPerRecipient(sink.Messages(), bounce) {
			total += c
		}
		if total >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink: %d of %d copies", total, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		sink.Wait(ctx, len(sink.Messages())+1)
		cancel()
	}
}

func listKeyOfTB(t testing.TB, site *milterfix.Site, addr string) *openpgp.Entity {
	t.Helper()
	l, err := site.Admin.Store.GetList(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	e, err := keyring.ParseStoredKey(l.PublicKey, keyring.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
