// Command benchdoc turns `go test -bench` output (standard input) into
// docs/benchmarks.md (standard output): medians over -count runs, and the
// outbound ratios to the crypto floor and to GnuPG measured in the same
// run. `make bench` runs it.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sample is one benchmark line's metrics (unit -> value).
type sample map[string]float64

var lineRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

func parse(r io.Reader) (map[string][]sample, string) {
	out := map[string][]sample{}
	var cpu string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "cpu: "); ok {
			cpu = v
		}
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		s := sample{}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				s[f[i+1]] = v
			}
		}
		out[m[1]] = append(out[m[1]], s)
	}
	return out, cpu
}

// median of one unit over the samples of a benchmark (NaN-free: 0 if none).
func median(ss []sample, unit string) float64 {
	var v []float64
	for _, s := range ss {
		if x, ok := s[unit]; ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func ms(ns float64) string {
	if ns == 0 {
		return "n/a"
	}
	switch {
	case ns < 1e6:
		return fmt.Sprintf("%.3f ms", ns/1e6)
	case ns < 1e8:
		return fmt.Sprintf("%.1f ms", ns/1e6)
	}
	return fmt.Sprintf("%.2f s", ns/1e9)
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func main() {
	res, cpu := parse(os.Stdin)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintf(w, "# Benchmarks\n\nWritten by `make bench` on %s (%s, %d cores%s). Medians over the runs of `-count`.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOARCH, runtime.NumCPU(), cpuNote(cpu))
	fmt.Fprintf(w, "Absolute times drift on shared machines: compare the ratios, measured in the same run.\n\n")

	fmt.Fprintf(w, "## Inbound (milter/bench_test.go)\n\n| what | median | goal |\n|---|---|---|\n")
	fmt.Fprintf(w, "| 50 KB post, Ed25519/X25519 list key: milter transaction with decrypt + verify + replay check (SQLite), delivered to 1 member | %s | ≤ 5 ms |\n",
		ms(median(res["BenchmarkInboundPost/members=1"], "ns/op")))
	fmt.Fprintf(w, "| the same post delivered to 20 members (one batch, reinjected to the fixture's listener) | %s | |\n",
		ms(median(res["BenchmarkInboundPost/members=20"], "ns/op")))
	fmt.Fprintf(w, "| non-list transaction (MAIL, RCPT, 5 headers, accepted at end of headers: 9 milter round trips) | %s | ≤ 0.2 ms |\n\n",
		ms(median(res["BenchmarkNonListTransaction"], "ns/op")))

	fmt.Fprintf(w, "## Outbound (milter/outbound/bench_test.go)\n\n")
	fmt.Fprintf(w, "A 50 KB post to N members: one signature, one symmetric encryption, N key packets over both cores, batches of 50, hidden recipients. ")
	fmt.Fprintf(w, "Floor: the same work on one core with the same library (N key packets + one signature + one encryption). ")
	fmt.Fprintf(w, "GnuPG: one `gpg --sign --encrypt` with N hidden recipients. Goals: ≤ 1.0× the floor, faster than GnuPG, peak memory ≤ 64 MiB + 4× post size.\n\n")
	fmt.Fprintf(w, "| N | member keys | listcrypt | per member | vs floor | vs GnuPG | GnuPG | peak memory |\n|---|---|---|---|---|---|---|---|\n")
	var names []string
	for n := range res {
		if strings.HasPrefix(n, "BenchmarkPost/") {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool { return key(names[i]) < key(names[j]) })
	for _, n := range names {
		sub := strings.TrimPrefix(n, "BenchmarkPost/")
		nStr, kind, _ := strings.Cut(sub, "/")
		members, _ := strconv.Atoi(strings.TrimPrefix(nStr, "N="))
		post := median(res[n], "ns/op")
		floor := median(res["BenchmarkFloor/"+sub], "ns/op")
		gpg := median(res["BenchmarkGnuPG/"+sub], "ns/op")
		peak := median(res[n], "peak-MiB")
		per := "n/a"
		if members > 0 && post > 0 {
			per = fmt.Sprintf("%.3f ms", post/float64(members)/1e6)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %.1f MiB |\n", members, strings.TrimPrefix(kind, "key="),
			ms(post), per, ratio(post, floor), ratio(post, gpg), ms(gpg), peak)
	}
	fmt.Fprintf(w, "\nFor scale: Schleuder spends about 62 ms per member per post on this kind of machine.\n")

	throughPostfix(w, res)

	fmt.Fprintf(w, "\n## What the batch size costs a member\n\n")
	fmt.Fprintf(w, "With hidden recipients a member's client tries its key on every key packet of its batch. ")
	fmt.Fprintf(w, "Real `gpg --decrypt` of a copy whose own packet comes last in a batch of B (gpg's default Curve25519 key); ")
	fmt.Fprintf(w, "a member's packet is on average in the middle. The default `distribute.batch_size = 50` keeps the worst case near a quarter second ")
	fmt.Fprintf(w, "per message for a GnuPG user while a 10,000-member post is 200 SMTP transactions.\n\n| batch size | gpg --decrypt, worst case | above batch size 1 |\n|---|---|---|\n")
	base := median(res["BenchmarkMemberDecrypt/gpg/batch=1"], "ns/op")
	for _, b := range []int{1, 10, 50, 100, 200} {
		v := median(res[fmt.Sprintf("BenchmarkMemberDecrypt/gpg/batch=%d", b)], "ns/op")
		extra := "n/a"
		if v > 0 && base > 0 {
			extra = ms(v - base)
		}
		fmt.Fprintf(w, "| %d | %s | %s |\n", b, ms(v), extra)
	}
}

// throughPostfix writes the end-to-end table: a post through a real
// Postfix and the milter daemon (milter/reinject_bench_test.go), next to
// Postfix alone, the crypto floor and GnuPG of the same run.
func throughPostfix(w io.Writer, res map[string][]sample) {
	var ns []int
	for name := range res {
		if v, ok := strings.CutPrefix(name, "BenchmarkPostThroughPostfix/members="); ok && !strings.Contains(v, "/") {
			if n, err := strconv.Atoi(v); err == nil {
				ns = append(ns, n)
			}
		}
	}
	if len(ns) == 0 {
		return
	}
	sort.Ints(ns)
	fmt.Fprintf(w, "\n## One post through Postfix (milter/reinject_bench_test.go)\n\n")
	fmt.Fprintf(w, "A 50 KB signed and encrypted post to a list of N members (Ed25519/X25519 keys, batches of 50, hidden recipients) through a real Postfix 3.7 (`contrib/postfix/rig`) ")
	fmt.Fprintf(w, "and the `listcrypt-milter` daemon as its own process (SQLite store, `[reinject] connections` default). ")
	fmt.Fprintf(w, "**To 250**: from the end of DATA to Postfix's 250; every copy is then committed in Postfix's queue (each batch is reinjected and recorded before the milter answers). ")
	fmt.Fprintf(w, "**To the last copy**: until the last copy reached the rig's sink. Medians over the posts of one run, each post started on an idle Postfix. ")
	fmt.Fprintf(w, "**Postfix alone**: the same N recipients in batches of 50 over the same number of connections to the reinjection listener, with no milter and no cryptography (a 50 KB message), until the last 250; \"+ records\" also records each batch in SQLite as the milter does. ")
	fmt.Fprintf(w, "vs GnuPG and vs floor: To 250 over one `gpg --sign --encrypt` to N hidden recipients and over the single-core crypto floor (x25519 rows above), same run. ")
	fmt.Fprintf(w, "CPU: milter and Postfix processes (delivery to the sink included) per post. Peak memory: the milter's VmHWM over the timed posts (its resident set before them). ")
	fmt.Fprintf(w, "Goals (issue 9) at N = 1,000: To 250 ≤ 0.3× GnuPG and ≤ 2.5× the floor; cost linear in N; peak memory ≤ 64 MiB + 4× post size.\n\n")
	fmt.Fprintf(w, "| N | to 250 | per member | to the last copy | vs GnuPG | vs floor | Postfix alone | + records | CPU milter / Postfix | peak memory | load |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range ns {
		ss := res[fmt.Sprintf("BenchmarkPostThroughPostfix/members=%d", n)]
		toEnd := median(ss, "ms-eod-to-250") * 1e6
		toSink := median(ss, "ms-eod-to-sink") * 1e6
		gpg := median(res[fmt.Sprintf("BenchmarkGnuPG/N=%d/key=x25519", n)], "ns/op")
		floor := median(res[fmt.Sprintf("BenchmarkFloor/N=%d/key=x25519", n)], "ns/op")
		var alone, rec float64
		for name, fs := range res {
			if strings.HasPrefix(name, fmt.Sprintf("BenchmarkPostfixFloor/members=%d/batch=50/", n)) {
				switch {
				case strings.HasSuffix(name, "/records=none"):
					alone = median(fs, "ms-to-last-250") * 1e6
				case strings.HasSuffix(name, "/records=sqlite"):
					rec = median(fs, "ms-to-last-250") * 1e6
				}
			}
		}
		per := "n/a"
		if toEnd > 0 {
			per = fmt.Sprintf("%.3f ms", toEnd/float64(n)/1e6)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %.0f / %.0f ms | %.1f MiB (%.1f) | %.1f |\n", n, ms(toEnd), per, ms(toSink),
			ratio(toEnd, gpg), ratio(toEnd, floor), ms(alone)+" ("+ratio(alone, gpg)+" GnuPG)", ms(rec),
			median(ss, "cpu-ms-milter"), median(ss, "cpu-ms-postfix"), median(ss, "peak-RSS-MiB"), median(ss, "base-RSS-MiB"), median(ss, "load"))
	}
	fmt.Fprintf(w, "\nWhere the time goes, and why the goal is out of reach while every copy is committed before the answer: docs/outbound.md, *Reinjection*.\n")
}

func key(name string) string {
	sub := strings.TrimPrefix(name, "BenchmarkPost/")
	nStr, kind, _ := strings.Cut(sub, "/")
	n, _ := strconv.Atoi(strings.TrimPrefix(nStr, "N="))
	return fmt.Sprintf("%s/%09d", kind, n)
}

func cpuNote(cpu string) string {
	if cpu == "" {
		return ""
	}
	return ", " + cpu
}
