package milter_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// addList creates list addr with n members on the site; it returns the
// member addresses and keys.
func addList(t testing.TB, site *milterfix.Site, addr string, n int) ([]string, map[string]*openpgp.Entity) {
	t.Helper()
	ctx := context.Background()
	if _, err := site.Admin.CreateList(ctx, addr, "owner@example.org", keyring.KeyEd25519); err != nil {
		t.Fatal(err)
	}
	local, _, _ := strings.Cut(addr, "@")
	keys := map[string]*openpgp.Entity{}
	var addrs []string
	for i := range n {
		m := fmt.Sprintf("%s-m%05d@example.org", local, i)
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

func listKeyOf(t testing.TB, site *milterfix.Site, addr string) *openpgp.Entity {
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

// copiesPerRecipient counts, per envelope recipient, the list copies the
// sink received from the list's bounce address.
func copiesPerRecipient(msgs []rig.Delivered, bounce string) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		if m.From != bounce {
			continue
		}
		for _, r := range m.To {
			n[r]++
		}
	}
	return n
}

// waitCopies waits until the sink holds want list copies from bounce.
func waitCopies(t *testing.T, sink *rig.Sink, bounce string, want int) map[string]int {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := copiesPerRecipient(sink.Messages(), bounce)
		total := 0
		for _, c := range got {
			total += c
		}
		if total >= want || time.Now().After(deadline) {
			return got
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		sink.Wait(ctx, len(sink.Messages())+1)
		cancel()
	}
}

// Lists of 1, 49, 50, 51 and 1,000 members (batch 50) each receive
// exactly one copy per member through a real MTA (Postfix and Sendmail),
// every batch reinjected.
func TestExactlyOnePerMember(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000-member list")
	}
	for _, mta := range mtas {
		t.Run(mta, func(t *testing.T) { exactlyOnePerMember(t, mta) })
	}
}

func exactlyOnePerMember(t *testing.T, mta string) {
	requireMTA(t, mta)
	site := milterfix.New(t, milterfix.Options{})
	sizes := []int{1, 49, 50, 51, 1000}
	members := map[int][]string{}
	keys := map[int]map[string]*openpgp.Entity{}
	for _, n := range sizes {
		members[n], keys[n] = addList(t, site, fmt.Sprintf("size%d@lists.example.org", n), n)
	}
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := startMTA(t, mta, sock)
	// Batches go back in through the MTA's reinjection listener.
	site.Config.Reinject.Address = pf.ReinjectAddr()
	startDaemon(t, site)
	for _, n := range sizes {
		list := fmt.Sprintf("size%d@lists.example.org", n)
		author := members[n][0]
		msg := milterfix.Build(t, milterfix.Post{From: author, SignWith: keys[n][author],
			EncryptTo: []*openpgp.Entity{listKeyOf(t, site, list)}, Body: fmt.Sprintf("post to %d members", n)})
		msg = bytes.ReplaceAll(msg, []byte("To: "+milterfix.List), []byte("To: "+list))
		if err := rig.Send(pf.SMTPAddr(), author, []string{list}, msg); err != nil {
			t.Fatalf("list of %d: %v", n, err)
		}
		bounce := fmt.Sprintf("size%d-bounces@lists.example.org", n)
		got := waitCopies(t, pf.Sink(), bounce, n)
		if len(got) != n {
			t.Fatalf("list of %d: %d members got a copy", n, len(got))
		}
		for _, m := range members[n] {
			if got[m] != 1 {
				t.Fatalf("list of %d: %s got %d copies", n, m, got[m])
			}
		}
	}
	t.Logf("through %s: %d posts, every member of lists of %v exactly one copy", mta, len(sizes), sizes)
}

// reinjectProxy forwards reinjection connections to Postfix and calls
// onMail with the number of each transaction (MAIL FROM command, counted
// over all connections) before forwarding it. The milter keeps its
// connections and pipelines, so transactions, not connections, mark
// the batches.
type reinjectProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	n      int
	onMail func(n int) bool // false: drop the connection instead
}

func newProxy(t *testing.T, target string, onMail func(int) bool) *reinjectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &reinjectProxy{ln: ln, target: target, onMail: onMail}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(c, u)
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadSlice('\n')
					if len(line) >= 10 && strings.EqualFold(string(line[:10]), "MAIL FROM:") {
						p.mu.Lock()
						p.n++
						n := p.n
						p.mu.Unlock()
						if !p.onMail(n) {
							return
						}
					}
					if _, werr := u.Write(line); werr != nil {
						return
					}
					if err != nil && err != bufio.ErrBufferFull {
						return
					}
				}
			}()
		}
	}()
	return p
}

// SIGKILL in the middle of reinjection, then the sender's MTA retries:
// still exactly one copy per member.
func TestKilledDuringReinjectionDeliversExactlyOnce(t *testing.T) {
	rig.Require(t)
	if testing.Short() {
		t.Skip("builds and kills the milter binary")
	}
	site := milterfix.New(t, milterfix.Options{})
	const n = 260 // 6 reinjected batches
	members, keys := addList(t, site, "big@lists.example.org", n)

	bin := filepath.Join(t.TempDir(), "listcrypt-milter")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "github.com/listcrypt/listcrypt/cmd/listcrypt-milter")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := rig.Start(t, rig.Options{MilterAddr: "unix:" + sock})

	// The proxy goroutine kills the process the test started: guard it.
	var procMu sync.Mutex
	var proc *exec.Cmd
	logs := &logBuf{}
	current := func() *exec.Cmd {
		procMu.Lock()
		defer procMu.Unlock()
		return proc
	}
	start := func() {
		p := exec.Command(bin, "-c", site.Config.File)
		p.Stderr = logs
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		procMu.Lock()
		proc = p
		procMu.Unlock()
		for i := 0; ; i++ {
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				return
			}
			if i > 500 {
				t.Fatalf("milter did not start: %s", logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	killed := make(chan struct{})
	var once sync.Once
	proxy := newProxy(t, pf.ReinjectAddr(), func(n int) bool {
		if n == 3 {
			// The third reinjected batch: kill the milter while its SMTP
			// transaction is open, before the batch is handed over.
			once.Do(func() {
				p := current()
				p.Process.Signal(syscall.SIGKILL)
				p.Wait()
				close(killed)
			})
			return false
		}
		return true
	})
	// Rewrite the config so the milter process reinjects through the
	// proxy, one batch at a time: then when the kill comes, the batch
	// before has been recorded and none is between the MTA's 250 and its
	// record. (With [reinject] connections = k, up to k batches can be in
	// that window at once: docs/outbound.md.)
	cfgSrc, _ := os.ReadFile(site.Config.File)
	cfgSrc = bytes.Replace(cfgSrc, []byte(fmt.Sprintf("address = %q", site.Config.Reinject.Address)), []byte(fmt.Sprintf("address = %q\nconnections = 1", proxy.ln.Addr().String())), 1)
	os.WriteFile(site.Config.File, cfgSrc, 0o644)
	start()
	t.Cleanup(func() {
		p := current()
		p.Process.Kill()
		p.Wait()
	})

	list := "big@lists.example.org"
	author := members[0]
	msg := milterfix.Build(t, milterfix.Post{From: author, SignWith: keys[author],
		EncryptTo: []*openpgp.Entity{listKeyOf(t, site, list)}, Body: "killed mid-way"})
	err := rig.Send(pf.SMTPAddr(), author, []string{list}, msg)
	var se *rig.SMTPError
	if !errors.As(err, &se) || !se.Temporary() {
		t.Fatalf("first attempt: %v, want a 4xx (milter killed)", err)
	}
	<-killed
	// The sender's MTA retries after the milter is back.
	start()
	if err := rig.Send(pf.SMTPAddr(), author, []string{list}, msg); err != nil {
		t.Fatalf("retry: %v\n%s", err, logs.String())
	}
	got := waitCopies(t, pf.Sink(), "big-bounces@lists.example.org", n)
	for _, m := range members {
		if got[m] != 1 {
			t.Fatalf("%s got %d copies\n%s", m, got[m], logs.String())
		}
	}
	// A third send of the completed post in the same envelope is the
	// sender's MTA retrying: accepted, and nothing delivered again.
	if err := rig.Send(pf.SMTPAddr(), author, []string{list}, msg); err != nil {
		t.Fatalf("resend after completion: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "reason=retry-of-completed") {
		t.Fatalf("resend after completion not logged as retry-of-completed\n%s", logs.String())
	}
	// From another envelope sender it is a replay.
	if err := rig.Send(pf.SMTPAddr(), "someone@example.net", []string{list}, msg); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("resend from another sender: %v", err)
	}
	time.Sleep(2 * time.Second) // what the resends would have delivered
	got = copiesPerRecipient(pf.Sink().Messages(), "big-bounces@lists.example.org")
	for _, m := range members {
		if got[m] != 1 {
			t.Fatalf("after the resends, %s got %d copies", m, got[m])
		}
	}
}

// A 10 MB post goes through a real Postfix intact, and nothing of its
// plaintext is left on disk: state folder, Postfix queue, logs, temp.
func TestLargePostIntactAndNoPlaintextOnDisk(t *testing.T) {
	rig.Require(t)
	site := milterfix.New(t, milterfix.Options{Policy: `max_size = "20MB"`})
	alice := site.AddMember(t, "alice@example.org")
	bob := site.AddMember(t, "bob@example.org")
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := rig.Start(t, rig.Options{MilterAddr: "unix:" + sock, MessageSizeLimit: 40 << 20})
	site.Config.Reinject.Address = pf.ReinjectAddr()
	_, logs := startDaemon(t, site)
	canary := fmt.Sprintf("CANARY-%d-plaintext", time.Now().UnixNano())
	var body strings.Builder
	body.WriteString(canary + "\n")
	for body.Len() < 10<<20 {
		fmt.Fprintf(&body, "%08d the quick brown fox jumps over the lazy dog %s\n", body.Len(), canary[:12])
	}
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: body.String()})
	if err := rig.Send(pf.SMTPAddr(), "alice@example.org", []string{milterfix.List}, msg); err != nil {
		t.Fatal(err)
	}
	got := waitCopies(t, pf.Sink(), "devs-bounces@lists.example.org", 2)
	if got["bob@example.org"] != 1 {
		t.Fatalf("copies: %v", got)
	}
	var copyData []byte
	for _, m := range pf.Sink().Messages() {
		if m.From == "devs-bounces@lists.example.org" {
			copyData = m.Data
		}
	}
	pt := milterfix.DecryptCopy(t, copyData, bob, site.ListKey)
	want := strings.ReplaceAll(body.String(), "\n", "\r\n")
	if !bytes.Contains(pt, []byte(want)) {
		t.Fatalf("10 MB post not intact: got %d bytes (sha256 %x)", len(pt), sha256.Sum256(pt))
	}
	for _, dir := range []string{site.Dir, filepath.Dir(pf.ConfigDir()), pf.QueueDir(), os.TempDir()} {
		assertNoPlaintextOnDisk(t, dir, canary)
	}
	if strings.Contains(logs.String(), canary) || strings.Contains(pf.Maillog(), canary) {
		t.Fatal("plaintext in a log")
	}
}

// A transaction with list and non-list recipients: the others get the
// original untouched; the list copy is handled apart (reinjected).
func TestMixedTransaction(t *testing.T) {
	rig.Require(t)
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	bob := site.AddMember(t, "bob@example.org")
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := rig.Start(t, rig.Options{MilterAddr: "unix:" + sock})
	site.Config.Reinject.Address = pf.ReinjectAddr()
	startDaemon(t, site)
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "to list and carol"})
	if err := rig.Send(pf.SMTPAddr(), "alice@example.org", []string{milterfix.List, "carol@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	got := waitCopies(t, pf.Sink(), "devs-bounces@lists.example.org", 2)
	if got["alice@example.org"] != 1 || got["bob@example.org"] != 1 || got[milterfix.List] != 0 {
		t.Fatalf("list copies: %v", got)
	}
	var original []byte
	for i := 0; original == nil && i < 100; i++ {
		for _, m := range pf.Sink().Messages() {
			if m.From == "alice@example.org" {
				if strings.Join(m.To, ",") != "carol@example.net" {
					t.Fatalf("original went to %v", m.To)
				}
				original = m.Data
			}
		}
		if original == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			pf.Sink().Wait(ctx, len(pf.Sink().Messages())+1)
			cancel()
		}
	}
	_, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !bytes.HasSuffix(original, body) {
		t.Fatal("carol's copy is not the original body")
	}
	for _, m := range pf.Sink().Messages() {
		if m.From == "devs-bounces@lists.example.org" {
			if pt := milterfix.DecryptCopy(t, m.Data, bob, site.ListKey); !bytes.Contains(pt, []byte("to list and carol")) {
				t.Fatalf("list copy: %q", pt)
			}
		}
	}
}

// A member whose key expired gets nothing (distribute.encrypt =
// "require"); the owner is told who was skipped and why, and the notice
// carries nothing of the post.
func TestSkippedMemberOwnerNotified(t *testing.T) {
	rig.Require(t)
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	// A member whose key expired after joining: registered as the admin
	// path would have done while the key was valid.
	ctx := context.Background()
	armored, err := os.ReadFile("../testdata/keys/expired.pub.asc")
	if err != nil {
		t.Fatal(err)
	}
	mk, err := keyring.ParseMemberKey(armored, keyring.DefaultLimits, time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if err := site.Admin.Store.PutMember(ctx, store.Member{List: milterfix.List, Address: "expired@example.org", State: "active",
		Fingerprint: mk.Fingerprint, PublicKey: mk.Binary, KeyIDs: mk.KeyIDs, CreatedAt: time.Now(), UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := rig.Start(t, rig.Options{MilterAddr: "unix:" + sock})
	site.Config.Reinject.Address = pf.ReinjectAddr()
	startDaemon(t, site)
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice, EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "SKIP-CANARY"})
	if err := rig.Send(pf.SMTPAddr(), "alice@example.org", []string{milterfix.List}, msg); err != nil {
		t.Fatal(err)
	}
	got := waitCopies(t, pf.Sink(), "devs-bounces@lists.example.org", 2)
	if got["expired@example.org"] != 0 || got["alice@example.org"] != 1 || got["owner@example.org"] != 1 {
		t.Fatalf("deliveries: %v", got)
	}
	for _, m := range pf.Sink().Messages() {
		if len(m.To) == 1 && m.To[0] == "owner@example.org" {
			if !bytes.Contains(m.Data, []byte("expired@example.org: key")) || bytes.Contains(m.Data, []byte("SKIP-CANARY")) {
				t.Fatalf("owner notice:\n%s", m.Data)
			}
		}
	}
}
