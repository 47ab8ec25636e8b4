package milter_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-smtp"
	"golang.org/x/sync/errgroup"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/milter/reinject"
	"github.com/listcrypt/listcrypt/policy"
)

// The benchmarks through a real Postfix (rig) run only when asked for:
// each iteration is a whole post (a tenth of a second to seconds), so
// make bench's -benchtime 300x would take hours. make bench sets
// LISTCRYPT_BENCH_POSTFIX=1 and -benchtime 10x.
//
// Environment (all optional; lists are comma-separated):
//
//	LISTCRYPT_BENCH_MEMBERS      list sizes N (default 100,1000,10000)
//	LISTCRYPT_BENCH_CONNECTIONS  [reinject] connections (default: the config default, 2)
//	LISTCRYPT_BENCH_BATCH        distribute.batch_size (default: the policy default)
//	LISTCRYPT_BENCH_VERP         non-empty: [bounces] verp = true (XVERP, docs/bounces.md)
//	LISTCRYPT_BENCH_BIG_POSTS    posts timed at N >= 10,000 (default 3)
//	LISTCRYPT_BENCH_CPUPROFILE   run the milter in the test process and
//	                             write a CPU profile of the timed posts here
//	LISTCRYPT_BENCH_RECORDS      the floor's records: none, sqlite (default both)
//	LISTCRYPT_BENCH_POSTFIX_MAIN extra main.cf settings for the rig, NAME=VALUE;NAME=VALUE

func benchPostfix(b *testing.B) {
	b.Helper()
	if os.Getenv("LISTCRYPT_BENCH_POSTFIX") == "" {
		b.Skip("set LISTCRYPT_BENCH_POSTFIX=1 to run")
	}
	rig.Require(b)
}

// benchInts reads a comma-separated list of integers from the
// environment, or returns def.
func benchInts(b *testing.B, name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		out = append(out, n)
	}
	return out
}

// benchRecords is LISTCRYPT_BENCH_RECORDS (none, sqlite or both, the
// default) as the floor's record switch.
func benchRecords() []bool {
	switch os.Getenv("LISTCRYPT_BENCH_RECORDS") {
	case "none":
		return []bool{false}
	case "sqlite":
		return []bool{true}
	}
	return []bool{false, true}
}

// procCPU is the CPU time (user + system) a process has used, and with
// children that of its children that exited and were waited for.
func procCPU(pid int, children bool) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime, stime, cutime, cstime are 14-17.
	var ticks int64
	last := 15
	if children {
		last = 17
	}
	for k := 14; k <= last; k++ {
		v, _ := strconv.ParseInt(f[k-3], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// postfixCPU is the CPU time the rig's Postfix processes have used so
// far, per program (smtpd, cleanup, trivial-rewrite, qmgr, smtp, ...);
// "master" includes every exited child.
func postfixCPU(pf *rig.Postfix) map[string]time.Duration {
	out := map[string]time.Duration{}
	pidText, err := os.ReadFile(filepath.Join(pf.QueueDir(), "pid", "master.pid"))
	if err != nil {
		return out
	}
	master, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		return out
	}
	out["master"] = procCPU(master, true)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(st, '('), bytes.LastIndexByte(st, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(st[end+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(master) {
			continue
		}
		out[string(st[open+1:end])] += procCPU(pid, false)
	}
	return out
}

// reportPostfixCPU reports, as metrics per post, the CPU time each Postfix
// program used between before and after.
func reportPostfixCPU(b *testing.B, before, after map[string]time.Duration, posts int) {
	var total time.Duration
	for name, d := range after {
		d -= before[name]
		total += d
		switch name {
		case "smtpd", "cleanup", "trivial-rewrite":
			// A process that exited meanwhile (cleanup's max_use, idle
			// time) took its time to "master": no per-program figure.
			if d < 0 {
				continue
			}
			b.ReportMetric(float64(d.Microseconds())/1000/float64(posts), "cpu-ms-"+name)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(posts), "cpu-ms-postfix")
}

// probeRun reports the first call of a benchmark function, with b.N = 1,
// that the testing package makes before the real run when -benchtime is
// a count above 1 (e.g. 10x): its results are thrown away, and a list of
// 10,000 members is expensive to set up twice.
func probeRun(b *testing.B) bool {
	if b.N != 1 {
		return false
	}
	f := flag.Lookup("test.benchtime")
	if f == nil {
		return false
	}
	n, err := strconv.Atoi(strings.TrimSuffix(f.Value.String(), "x"))
	return err == nil && strings.HasSuffix(f.Value.String(), "x") && n > 1
}

// benchMain is LISTCRYPT_BENCH_POSTFIX_MAIN as rig ExtraMain.
func benchMain() map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(os.Getenv("LISTCRYPT_BENCH_POSTFIX_MAIN"), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

// BenchmarkPostThroughPostfix measures one post of 50 KB to a list of N
// members with Ed25519/X25519 keys through a real Postfix (rig) and the
// listcrypt-milter daemon running as its own process (as deployed, and
// so that its memory is its own):
//
//   - ms-eod-to-250: from the end of DATA (the final dot written to
//     Postfix's smtpd) to Postfix's 250. It covers the milter's whole
//     end-of-message work (decrypt, verify, replay check, expansion, one
//     signature, one encryption, N key packets, every reinjected batch
//     committed by Postfix and recorded) and Postfix's commit of the
//     original. Every copy is in Postfix's queue when the 250 comes (a
//     batch rewritten in place is committed with the original).
//   - ms-eod-to-sink: from the same instant until the last copy arrived
//     at the rig's sink (Postfix delivered every copy).
//   - peak-RSS-MiB: the milter's resident-set high-water mark (VmHWM)
//     over the timed posts (reset after the warm-up post); base-RSS-MiB
//     its resident set before them (member keys and caches loaded).
//   - cpu-ms-milter, cpu-ms-postfix (smtpd, cleanup, trivial-rewrite):
//     CPU time per post of the milter and of Postfix's processes
//     (delivery to the sink included), which on a busy machine say more
//     than the wall-clock times.
//
// Between posts (not timed) the benchmark waits until Postfix has
// delivered every copy, so each post starts on an idle machine. Run:
//
//	LISTCRYPT_BENCH_POSTFIX=1 CI=1 go test -run '^$' -bench PostThroughPostfix -benchtime 10x ./milter/
func BenchmarkPostThroughPostfix(b *testing.B) {
	benchPostfix(b)
	conns := benchInts(b, "LISTCRYPT_BENCH_CONNECTIONS", []int{0})
	batches := benchInts(b, "LISTCRYPT_BENCH_BATCH", []int{0})
	for _, n := range benchInts(b, "LISTCRYPT_BENCH_MEMBERS", []int{100, 1000, 10000}) {
		for _, c := range conns {
			for _, bs := range batches {
				name := fmt.Sprintf("members=%d", n)
				if c > 0 {
					name += fmt.Sprintf("/connections=%d", c)
				}
				if bs > 0 {
					name += fmt.Sprintf("/batch=%d", bs)
				}
				b.Run(name, func(b *testing.B) { benchPostThroughPostfix(b, n, c, bs) })
			}
		}
	}
}

func benchPostThroughPostfix(b *testing.B, n, conns, batch int) {
	if probeRun(b) {
		return
	}
	site := milterfix.New(b, milterfix.Options{})
	list := "bench@lists.example.org"
	if verp := os.Getenv("LISTCRYPT_BENCH_VERP") != ""; batch > 0 || verp {
		pol := policy.Template(list, "owner@example.org")
		if batch > 0 {
			pol = regexp.MustCompile(`(?m)^batch_size = \d+$`).ReplaceAllString(pol, fmt.Sprintf("batch_size = %d", batch))
		}
		if verp {
			pol += "\n[bounces]\nverp = true\n"
		}
		if err := os.WriteFile(filepath.Join(site.Config.PolicyDir, list+".toml"), []byte(pol), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	began := time.Now()
	members, keys := addList(b, site, list, n)
	b.Logf("list of %d members made in %v", n, time.Since(began).Round(time.Millisecond))
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	pf := rig.Start(b, rig.Options{MilterAddr: "unix:" + sock, ExtraMain: benchMain()})
	profile := os.Getenv("LISTCRYPT_BENCH_CPUPROFILE")
	var pid int
	if profile != "" {
		site.Config.Reinject.Address = pf.ReinjectAddr()
		if conns > 0 {
			site.Config.Reinject.Connections = conns
		}
		startDaemon(b, site)
	} else {
		pid = startMilterProcess(b, site, pf.ReinjectAddr(), conns)
	}
	author := members[0]
	listKey := listKeyOf(b, site, list)
	body := strings.Repeat("All work and no play makes Jack a dull boy. 0123456789\n", 50<<10/55)
	post := func(i int) []byte {
		msg := milterfix.Build(b, milterfix.Post{From: author, SignWith: keys[author],
			EncryptTo: []*openpgp.Entity{listKey}, Body: fmt.Sprintf("%d\n%s", i, body)})
		return bytes.ReplaceAll(msg, []byte("To: "+milterfix.List), []byte("To: "+list))
	}
	bounce := "bench-bounces@lists.example.org"
	copies := 0
	send := func(msg []byte) (toEnd, toSink time.Duration) {
		dot, d, err := timedSend(pf.SMTPAddr(), author, list, msg)
		if err != nil {
			b.Fatal(err)
		}
		copies += n
		last := waitCopiesTB(b, pf.Sink(), bounce, copies)
		return d, last.Sub(dot)
	}
	// Warm-up: the list key is opened once, the member keys are loaded
	// and checked once, Postfix starts its processes.
	send(post(-1))
	posts := b.N
	if n >= 10000 {
		posts = min(posts, benchInts(b, "LISTCRYPT_BENCH_BIG_POSTS", []int{3})[0])
	}
	msgs := make([][]byte, posts)
	for i := range msgs {
		msgs[i] = post(i)
	}
	var baseRSS int64
	if pid > 0 {
		baseRSS = procStatus(pid, "VmRSS")
		// Writing 5 to clear_refs resets VmHWM to the current RSS.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			b.Fatal(err)
		}
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
	}
	toEnd := make([]time.Duration, 0, posts)
	toSink := make([]time.Duration, 0, posts)
	b.ResetTimer()
	b.StopTimer()
	cpu := postfixCPU(pf)
	var milterCPU time.Duration
	if pid > 0 {
		milterCPU = procCPU(pid, false)
	}
	for i := range posts {
		e, s := send(msgs[i])
		toEnd = append(toEnd, e)
		toSink = append(toSink, s)
	}
	reportPostfixCPU(b, cpu, postfixCPU(pf), posts)
	if pid > 0 {
		b.ReportMetric(float64((procCPU(pid, false)-milterCPU).Microseconds())/1000/float64(posts), "cpu-ms-milter")
	}
	if profile != "" {
		pprof.StopCPUProfile()
	}
	var load string
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(l))[:3], " ")
	}
	b.Logf("N=%d: eod-to-250 %v, eod-to-sink %v (load %s)", n, toEnd, toSink, load)
	b.ReportMetric(medianMs(toEnd), "ms-eod-to-250")
	b.ReportMetric(medianMs(toSink), "ms-eod-to-sink")
	if pid > 0 {
		b.ReportMetric(float64(procStatus(pid, "VmHWM"))/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(baseRSS)/(1<<20), "base-RSS-MiB")
	}
	if l, err := strconv.ParseFloat(strings.Fields(load + " 0")[0], 64); err == nil {
		b.ReportMetric(l, "load")
	}
	b.ReportMetric(0, "ns/op")
}

func medianMs(ds []time.Duration) float64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return float64(m.Microseconds()) / 1000
}

// procStatus reads a "kB" field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

var (
	milterBinOnce sync.Once
	milterBin     string
	milterBinErr  error
)

// removeMilterBin removes the folder of the binary startMilterProcess
// built (TestMain, at the end of the process).
func removeMilterBin() {
	if milterBin != "" {
		os.RemoveAll(filepath.Dir(milterBin))
	}
}

// startMilterProcess builds cmd/listcrypt-milter (once per process) and
// runs it on site's config with the reinjection address and connections
// set; it returns its pid. The process is stopped at the end of the
// benchmark.
func startMilterProcess(b *testing.B, site *milterfix.Site, reinjectAddr string, conns int) int {
	b.Helper()
	milterBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "listcrypt-bench-bin-")
		if err != nil {
			milterBinErr = err
			return
		}
		milterBin = filepath.Join(dir, "listcrypt-milter")
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		cmd := exec.Command(goBin, "build", "-o", milterBin, "github.com/listcrypt/listcrypt/cmd/listcrypt-milter")
		if out, err := cmd.CombinedOutput(); err != nil {
			milterBinErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if milterBinErr != nil {
		b.Fatal(milterBinErr)
	}
	src, err := os.ReadFile(filepath.Join(site.Dir, "listcrypt.toml"))
	if err != nil {
		b.Fatal(err)
	}
	cfg := string(src)
	re := regexp.MustCompile(`(?m)^\[reinject\]\naddress = .*$`)
	reinjectSec := fmt.Sprintf("[reinject]\naddress = %q", reinjectAddr)
	if conns > 0 {
		reinjectSec += fmt.Sprintf("\nconnections = %d", conns)
	}
	if !re.MatchString(cfg) {
		b.Fatalf("no [reinject] address in %s", cfg)
	}
	cfg = re.ReplaceAllLiteralString(cfg, reinjectSec)
	cfg = strings.Replace(cfg, `level = "debug"`, `level = "warn"`, 1)
	path := filepath.Join(site.Dir, "bench.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(milterBin, "-c", path)
	cmd.Dir = site.Dir
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if b.Failed() {
			b.Logf("milter log:\n%s", logs.String())
		}
	})
	_, sock, _ := strings.Cut(site.Config.Milter.Listen, ":")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			b.Fatalf("listcrypt-milter exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("listcrypt-milter did not listen on %s:\n%s", sock, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd.Process.Pid
}

// timedSend submits msg to Postfix and returns the instant of the end
// of DATA (the final dot) and the time from it to the reply.
func timedSend(addr, from, to string, msg []byte) (time.Time, time.Duration, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return time.Time{}, 0, err
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.rig.test"); err != nil {
		return time.Time{}, 0, err
	}
	if err := c.Mail(from, nil); err != nil {
		return time.Time{}, 0, err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return time.Time{}, 0, err
	}
	w, err := c.Data()
	if err != nil {
		return time.Time{}, 0, err
	}
	if _, err := w.Write(msg); err != nil {
		return time.Time{}, 0, err
	}
	// DataCommand.Close writes the final dot and reads the reply.
	start := time.Now()
	if err := w.Close(); err != nil {
		return time.Time{}, 0, err
	}
	d := time.Since(start)
	return start, d, c.Quit()
}

// waitCopiesTB waits until the sink holds want list copies from bounce
// and returns when the last of them arrived.
func waitCopiesTB(t testing.TB, sink *rig.Sink, bounce string, want int) time.Time {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		total := 0
		var last time.Time
		for _, m := range sink.Messages() {
			if m.From != bounce && !isVERP(m.From, bounce) {
				continue
			}
			total += len(m.To)
			if m.At.After(last) {
				last = m.At
			}
		}
		if total >= want {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink: %d of %d copies", total, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		sink.Wait(ctx, len(sink.Messages())+1)
		cancel()
	}
}

// BenchmarkPostfixFloor is what Postfix itself costs, with no milter and
// no cryptography: a 50 KB message (base64 lines, like a copy) to N
// recipients submitted to the rig's reinjection listener in batches, over
// the milter's own pipelining client and pool (milter/reinject), as many
// batches at once as there are connections, each batch's 250 awaited.
// ms-to-last-250 is the time from the first command to the last batch's
// 250 (all copies in Postfix's queue); with records=sqlite every batch is
// also recorded in the store right after its 250 (store.MarkDelivered on
// SQLite, as the milter does). Sub-benchmarks vary N, batch size and
// connections (LISTCRYPT_BENCH_MEMBERS, LISTCRYPT_BENCH_BATCH,
// LISTCRYPT_BENCH_CONNECTIONS; defaults 100,1000,10000, 50 and the
// [reinject] default). cpu-ms-* are the CPU time of Postfix's processes
// per post (cpu-ms-postfix: all of them, delivery to the sink included).
func BenchmarkPostfixFloor(b *testing.B) {
	benchPostfix(b)
	pf := rig.Start(b, rig.Options{ExtraMain: benchMain()})
	site := milterfix.New(b, milterfix.Options{})
	raw := make([]byte, 37<<10)
	rand.Read(raw)
	var msg bytes.Buffer
	msg.WriteString("From: bench@lists.example.org\r\nTo: bench@lists.example.org\r\nSubject: floor\r\nMessage-ID: <floor@lists.example.org>\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(raw)
	for len(enc) > 0 {
		l := min(64, len(enc))
		msg.WriteString(enc[:l] + "\r\n")
		enc = enc[l:]
	}
	data := msg.Bytes()
	bounce := "floor-bounces@lists.example.org"
	copies := 0
	postID := 0
	for _, n := range benchInts(b, "LISTCRYPT_BENCH_MEMBERS", []int{100, 1000, 10000}) {
		rcpts := make([]string, n)
		for i := range rcpts {
			rcpts[i] = fmt.Sprintf("floor-m%05d@example.org", i)
		}
		for _, bs := range benchInts(b, "LISTCRYPT_BENCH_BATCH", []int{50}) {
			for _, c := range benchInts(b, "LISTCRYPT_BENCH_CONNECTIONS", []int{reinject.DefaultConnections}) {
				for _, record := range benchRecords() {
					name := fmt.Sprintf("members=%d/batch=%d/connections=%d/records=none", n, bs, c)
					if record {
						name = strings.Replace(name, "records=none", "records=sqlite", 1)
					}
					b.Run(name, func(b *testing.B) {
						if probeRun(b) {
							return
						}
						pool := reinject.NewPool(pf.ReinjectAddr(), c, 5*time.Second)
						defer pool.CloseIdle()
						post := func() time.Duration {
							postID++
							id := []byte(fmt.Sprintf("floor-post-%d", postID))
							start := time.Now()
							g, ctx := errgroup.WithContext(context.Background())
							g.SetLimit(c)
							for lo := 0; lo < n; lo += bs {
								to := rcpts[lo:min(lo+bs, n)]
								number := lo/bs + 1
								g.Go(func() error {
									res, err := pool.SendEach(ctx, bounce, to, bytes.NewReader(data))
									if err != nil {
										return err
									}
									if record {
										_, err = site.Admin.Store.MarkDelivered(ctx, milterfix.List, id, number, res.Accepted, time.Now())
									}
									return err
								})
							}
							if err := g.Wait(); err != nil {
								b.Fatal(err)
							}
							d := time.Since(start)
							copies += n
							waitCopiesTB(b, pf.Sink(), bounce, copies)
							return d
						}
						post() // warm-up: connections, smtpd and cleanup processes
						posts := b.N
						if n >= 10000 {
							posts = min(posts, benchInts(b, "LISTCRYPT_BENCH_BIG_POSTS", []int{3})[0])
						}
						times := make([]time.Duration, 0, posts)
						b.ResetTimer()
						b.StopTimer()
						cpu := postfixCPU(pf)
						for range posts {
							times = append(times, post())
						}
						reportPostfixCPU(b, cpu, postfixCPU(pf), posts)
						b.ReportMetric(medianMs(times), "ms-to-last-250")
						b.ReportMetric(0, "ns/op")
					})
				}
			}
		}
	}
}

// isVERP reports whether from is bounce with a VERP extension
// (LIST-bounces+MEMBER@DOMAIN, [bounces] verp).
func isVERP(from, bounce string) bool {
	local, domain, _ := strings.Cut(bounce, "@")
	return strings.HasPrefix(from, local+"+") && strings.HasSuffix(from, "@"+domain)
}
