package outbound

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/keyring"
)

// Benchmarks (issue 3, "make bench"): the cost of one post of 50 KB to N
// members, against (a) the single-core crypto floor with the same library
// and (b) GnuPG doing the same work (one gpg --sign --encrypt with N
// hidden recipients).
//
// Member keys: every member has its own key (distinct fingerprints and
// key IDs, so GnuPG cannot merge recipients). "x25519" keys are what gpg
// 2.2, sq 0.27 and rnp 0.16 generate by default (v4 Ed25519 primary,
// Curve25519 ECDH subkey). "rsa3072" keys have an Ed25519 primary and an
// RSA-3072 encryption subkey; generating 10,000 RSA-3072 keys takes hours,
// so the RSA material comes from a pool of 50 keys used cyclically, each
// use with its own creation time (hence its own fingerprint). The PKESK
// cost is the same as with 10,000 distinct moduli. Keys are generated
// once per process, outside the timed part.

var benchNs = []int{10, 100, 1000, 10000}

var benchKinds = []string{"x25519", "rsa3072"}

const benchBase = 1_700_000_000

var (
	benchMu      sync.Mutex
	benchMembers = map[string][]Recipient{}
	rsaPool      []*rsa.PrivateKey
)

func benchRecipients(b *testing.B, kind string, n int) []Recipient {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	have := benchMembers[kind]
	if len(have) >= n {
		return have[:n]
	}
	if kind == "rsa3072" && rsaPool == nil {
		for range 50 {
			k, err := rsa.GenerateKey(rand.Reader, 3072)
			if err != nil {
				b.Fatal(err)
			}
			rsaPool = append(rsaPool, k)
		}
	}
	for i := len(have); i < n; i++ {
		created := time.Unix(benchBase+int64(i), 0)
		cfg := keyring.PacketConfig(keyring.DefaultLimits, func() time.Time { return created })
		cfg.Algorithm, cfg.Curve, cfg.AEADConfig = packet.PubKeyAlgoEdDSA, packet.Curve25519, nil
		name := fmt.Sprintf("member%05d", i)
		e, err := openpgp.NewEntity(name, "", name+"@example.net", cfg)
		if err != nil {
			b.Fatal(err)
		}
		if kind == "rsa3072" {
			sub := packet.NewRSAPrivateKey(created, rsaPool[i%len(rsaPool)])
			sub.IsSubkey, sub.PublicKey.IsSubkey = true, true
			sig := &packet.Signature{
				Version: 4, SigType: packet.SigTypeSubkeyBinding, PubKeyAlgo: e.PrimaryKey.PubKeyAlgo,
				Hash: crypto.SHA256, CreationTime: created, IssuerKeyId: &e.PrimaryKey.KeyId,
				IssuerFingerprint: e.PrimaryKey.Fingerprint,
				FlagsValid:        true, FlagEncryptStorage: true, FlagEncryptCommunications: true,
			}
			if err := sig.SignKey(&sub.PublicKey, e.PrivateKey, cfg); err != nil {
				b.Fatal(err)
			}
			e.Subkeys = []openpgp.Subkey{{Primary: e, PublicKey: &sub.PublicKey, PrivateKey: sub, Bindings: []*packet.VerifiableSignature{packet.NewVerifiableSig(sig)}}}
		}
		have = append(have, Recipient{Address: name + "@example.net", Key: keyring.EntityKey(e)})
	}
	benchMembers[kind] = have
	return have
}

// benchPost is a 50 KB plain-text post.
func benchPost() Post {
	var body strings.Builder
	body.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
	for i := 0; body.Len() < 50_000; i++ {
		fmt.Fprintf(&body, "Line %05d of the post, some words to make it look like text.\r\n", i)
	}
	p := testPost()
	p.Inner = []byte(body.String())
	return p
}

// heapPeak samples the live heap while f runs and returns the highest
// value above the live heap before it.
func heapPeak(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	f()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if m.HeapAlloc > peak.Load() {
		peak.Store(m.HeapAlloc)
	}
	close(stop)
	<-done
	if p := peak.Load(); p > base {
		return p - base
	}
	return 0
}

func benchParams(b *testing.B) Params {
	return Params{
		ListAddress:    "devs@lists.example.org",
		ListKey:        testListKey(b),
		BatchSize:      50,
		HideRecipients: true,
		Now:            time.Now,
	}
}

// BenchmarkPost: Prepare + Batches, using every core.
func BenchmarkPost(b *testing.B) {
	post := benchPost()
	for _, n := range benchNs {
		for _, kind := range benchKinds {
			b.Run(fmt.Sprintf("N=%d/key=%s", n, kind), func(b *testing.B) {
				rs := benchRecipients(b, kind, n)
				p := benchParams(b)
				// Warm go-crypto's cached key validity, as the member cache does.
				pr, err := Prepare(post, p)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := pr.Batches(rs); err != nil {
					b.Fatal(err)
				}
				op := func() {
					pr, err := Prepare(post, p)
					if err != nil {
						b.Fatal(err)
					}
					bs, err := pr.Batches(rs)
					if err != nil {
						b.Fatal(err)
					}
					runtime.KeepAlive(bs)
				}
				b.ResetTimer()
				for b.Loop() {
					op()
				}
				b.StopTimer()
				// Peak memory, untimed: the heap above the resident
				// fixtures (member keys) while one post is made, with the
				// GC set to keep up (GOGC=5), so the figure is what the
				// post needs rather than the GC's headroom over the
				// fixtures (GOGC=100 lets garbage grow to the size of the
				// live heap, here ~70 MB of test keys for N=10000).
				old := debug.SetGCPercent(5)
				peak := heapPeak(op)
				debug.SetGCPercent(old)
				b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
			})
		}
	}
}

// BenchmarkFloor: the raw single-core cost with go-crypto of N PKESK
// packets + one signature + one symmetric encryption (SEIPDv1, AES-256)
// of the same post; encryption keys resolved beforehand.
func BenchmarkFloor(b *testing.B) {
	post := benchPost()
	for _, n := range benchNs {
		for _, kind := range benchKinds {
			b.Run(fmt.Sprintf("N=%d/key=%s", n, kind), func(b *testing.B) {
				rs := benchRecipients(b, kind, n)
				cfg := keyring.PacketConfig(keyring.DefaultLimits, nil)
				pubs := make([]*packet.PublicKey, n)
				for i, r := range rs {
					k, ok := ent(r.Key).EncryptionKey(time.Now(), cfg)
					if !ok {
						b.Fatal("no encryption key")
					}
					pubs[i] = k.PublicKey
				}
				b.ResetTimer()
				for b.Loop() {
					var signed bytes.Buffer
					w, err := openpgp.SignWithParams(&signed, []*openpgp.Entity{testListKey(b)}, &openpgp.SignParams{Config: cfg})
					if err != nil {
						b.Fatal(err)
					}
					w.Write(post.Inner)
					if err := w.Close(); err != nil {
						b.Fatal(err)
					}
					key := make([]byte, 32)
					rand.Read(key)
					var data bytes.Buffer
					ew, err := packet.SerializeSymmetricallyEncrypted(&data, packet.CipherAES256, false, packet.CipherSuite{}, key, cfg)
					if err != nil {
						b.Fatal(err)
					}
					ew.Write(signed.Bytes())
					if err := ew.Close(); err != nil {
						b.Fatal(err)
					}
					var keys bytes.Buffer
					for _, pub := range pubs {
						if err := packet.SerializeEncryptedKeyAEADwithHiddenOption(&keys, pub, packet.CipherAES256, false, key, true, cfg); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// gpgHome is a GnuPG home with the list secret key and N member keys
// imported, made once per process and kind (import is slow).
type gpgHome struct {
	dir     string
	options string // options file naming every member as hidden recipient
	listFpr string
}

var (
	gpgMu    sync.Mutex
	gpgHomes = map[string]*gpgHome{}
	gpgDirs  []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range gpgDirs {
		_ = exec.Command("gpgconf", "--homedir", dir, "--kill", "all").Run()
		_ = os.RemoveAll(dir)
	}
	os.Exit(code)
}

// vmHWM samples the peak resident set size (VmHWM, which exec resets)
// of a running process until done is closed; it returns bytes.
func vmHWM(pid int, done <-chan struct{}) int64 {
	var peak int64
	path := fmt.Sprintf("/proc/%d/status", pid)
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				var kb int64
				if _, err := fmt.Sscanf(l, "VmHWM: %d kB", &kb); err == nil {
					peak = max(peak, kb<<10)
				}
			}
		}
		select {
		case <-done:
			return peak
		case <-time.After(time.Millisecond):
		}
	}
}

func gpgFor(b *testing.B, kind string, n int) *gpgHome {
	b.Helper()
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		if os.Getenv("CI") != "" {
			b.Fatalf("gpg not found and CI is set: %v", err)
		}
		b.Skip("gpg not found")
	}
	gpgMu.Lock()
	defer gpgMu.Unlock()
	key := fmt.Sprintf("%s/%d", kind, n)
	if h := gpgHomes[key]; h != nil {
		return h
	}
	rs := benchRecipients(b, kind, n)
	dir, err := os.MkdirTemp("", "gpgb")
	if err != nil {
		b.Fatal(err)
	}
	// Removed by TestMain at the end of the process: the home is reused
	// by every -count run of the benchmark.
	gpgDirs = append(gpgDirs, dir)
	conf := "auto-key-locate local\nno-auto-key-retrieve\nbatch\npinentry-mode loopback\ntrust-model always\nno-tty\n"
	if err := os.WriteFile(filepath.Join(dir, "gpg.conf"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	var keys bytes.Buffer
	if err := testListKey(b).SerializePrivateWithoutSigning(&keys, nil); err != nil {
		b.Fatal(err)
	}
	opts := conf + "no-greeting\n"
	for _, r := range rs {
		if err := ent(r.Key).Serialize(&keys); err != nil {
			b.Fatal(err)
		}
		opts += "hidden-recipient " + r.Key.Fingerprint() + "\n"
	}
	start := time.Now()
	cmd := exec.Command(gpg, "--homedir", dir, "--import")
	cmd.Stdin = &keys
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("gpg --import: %v: %s", err, out)
	}
	b.Logf("gpg: imported %d %s keys in %v", n, kind, time.Since(start).Round(time.Millisecond))
	h := &gpgHome{dir: dir, options: filepath.Join(dir, "encrypt.conf"), listFpr: keyring.Fingerprint(testListKey(b))}
	if err := os.WriteFile(h.options, []byte(opts), 0o600); err != nil {
		b.Fatal(err)
	}
	gpgHomes[key] = h
	return h
}

// BenchmarkGnuPG: gpg --sign --encrypt with N hidden recipients, no
// compression (listcrypt does not compress either), armored.
func BenchmarkGnuPG(b *testing.B) {
	post := benchPost()
	for _, n := range benchNs {
		for _, kind := range benchKinds {
			b.Run(fmt.Sprintf("N=%d/key=%s", n, kind), func(b *testing.B) {
				if n >= 10000 {
					// Importing 10,000 keys takes gpg 2.5-3.5 minutes per
					// key type (measured), more than go test's default
					// 10-minute timeout allows for the whole run.
					if f := flag.Lookup("test.timeout"); f != nil {
						if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 && d < 30*time.Minute {
							b.Skipf("gpg with %d keys needs ~7 minutes of key import; run with -timeout 60m", n)
						}
					}
				}
				h := gpgFor(b, kind, n)
				var maxRSS int64
				for b.Loop() {
					cmd := exec.Command("gpg", "--homedir", h.dir, "--options", h.options,
						"--sign", "--encrypt", "--armor", "-z", "0", "-u", h.listFpr, "-o", "-")
					cmd.Stdin = bytes.NewReader(post.Inner)
					var out, errOut bytes.Buffer
					cmd.Stdout, cmd.Stderr = &out, &errOut
					if err := cmd.Start(); err != nil {
						b.Fatal(err)
					}
					// The child's rusage Maxrss also counts this (large)
					// test process; sample gpg's own VmHWM instead.
					done, rss := make(chan struct{}), make(chan int64, 1)
					go func() { rss <- vmHWM(cmd.Process.Pid, done) }()
					err := cmd.Wait()
					close(done)
					maxRSS = max(maxRSS, <-rss)
					if err != nil {
						b.Fatalf("gpg: %v: %s", err, errOut.String())
					}
					if c := bytes.Count(out.Bytes(), []byte("\n")); c < 100 {
						b.Fatalf("gpg output too short: %s", errOut.String())
					}
				}
				b.ReportMetric(float64(maxRSS)/(1<<20), "peak-RSS-MiB")
			})
		}
	}
}
