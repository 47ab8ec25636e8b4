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
	fmt.Fprintf(w, "| the same post delivered to 20 members (batch 1 rewritten in place) | %s | |\n",
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
