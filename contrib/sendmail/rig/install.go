package rig

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Dir is where the rig finds (and, as root, unpacks) Debian's
// sendmail-bin, sendmail-base and sendmail-cf packages: with "dpkg-deb
// -x", never "apt-get install sendmail", which would remove Postfix (the
// packages conflict). The environment variable LISTCRYPT_SENDMAIL_DIR
// overrides it. The .deb files are kept in Dir + "-debs".
var Dir = defaultDir()

func defaultDir() string {
	if d := os.Getenv("LISTCRYPT_SENDMAIL_DIR"); d != "" {
		return d
	}
	return "/var/cache/listcrypt-tests/sendmail"
}

// debPackages are unpacked into Dir; sysPackages are installed with apt:
// m4 builds the cf, the libraries are sendmail-bin's dependencies that a
// Postfix machine lacks. None of them conflicts with postfix.
var (
	debPackages = []string{"sendmail-bin", "sendmail-base", "sendmail-cf"}
	sysPackages = []string{"m4", "liblockfile1", "libwrap0"}
)

func sendmailBinary() string { return filepath.Join(Dir, "usr/libexec/sendmail/sendmail") }
func cfM4() string           { return filepath.Join(Dir, "usr/share/sendmail/cf/m4/cf.m4") }

var (
	installOnce sync.Once
	installErr  error
)

// unavailable says why a private Sendmail cannot run here ("" if it can).
// As root it installs what is missing first, once per test process.
func unavailable() string {
	if os.Geteuid() != 0 {
		return "a private Sendmail needs root (mount and UTS namespaces, port binding, queue ownership)"
	}
	for _, name := range []string{"unshare", "dpkg-query"} {
		if _, err := exec.LookPath(name); err != nil {
			return name + " not found"
		}
	}
	installOnce.Do(func() { installErr = install() })
	if installErr != nil {
		return "installing Sendmail: " + installErr.Error()
	}
	return ""
}

// install makes sure m4 and sendmail-bin's libraries are installed and
// Debian's sendmail packages are unpacked in Dir. It holds a lock file
// so that test processes of several packages do not install at once.
func install() error {
	if err := os.MkdirAll(filepath.Dir(Dir), 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(Dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing unlocks too

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if missing := missingPackages(ctx); len(missing) > 0 {
		args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)
		if _, err := aptGet(ctx, "", args...); err != nil {
			if _, err := aptGet(ctx, "", "update", "-qq"); err != nil {
				return err
			}
			if _, err := aptGet(ctx, "", args...); err != nil {
				return err
			}
		}
	}
	if _, err := os.Stat(filepath.Join(Dir, ".unpacked")); err != nil {
		if err := unpack(ctx); err != nil {
			return err
		}
	}
	out, err := exec.CommandContext(ctx, "ldd", sendmailBinary()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ldd %s: %v\n%s", sendmailBinary(), err, out)
	}
	if bytes.Contains(out, []byte("not found")) {
		return fmt.Errorf("%s lacks libraries:\n%s", sendmailBinary(), out)
	}
	return nil
}

func missingPackages(ctx context.Context) []string {
	var missing []string
	for _, p := range sysPackages {
		out, _ := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Status}", p).Output()
		if !strings.Contains(string(out), "install ok installed") {
			missing = append(missing, p)
		}
	}
	return missing
}

// unpack downloads the sendmail packages (apt-get download: no install,
// no maintainer scripts) and extracts them into a fresh folder that is
// then renamed to Dir, so that Dir is either complete or absent.
func unpack(ctx context.Context) error {
	debs := Dir + "-debs"
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return err
	}
	// apt-get download runs as the _apt user: it must be able to write here.
	if err := os.Chmod(debs, 0o755); err != nil {
		return err
	}
	files := func() []string {
		var out []string
		for _, p := range debPackages {
			m, _ := filepath.Glob(filepath.Join(debs, p+"_*.deb"))
			out = append(out, m...)
		}
		return out
	}
	if len(files()) != len(debPackages) {
		args := append([]string{"download", "-qq"}, debPackages...)
		if _, err := aptGet(ctx, debs, args...); err != nil {
			if _, err := aptGet(ctx, "", "update", "-qq"); err != nil {
				return err
			}
			if _, err := aptGet(ctx, debs, args...); err != nil {
				return err
			}
		}
	}
	got := files()
	if len(got) != len(debPackages) {
		return fmt.Errorf("%s: want one .deb of each of %v, have %v", debs, debPackages, got)
	}
	staging := Dir + ".new"
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return err
	}
	for _, f := range got {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", f, staging).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -x %s: %v\n%s", f, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(staging, ".unpacked"), []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(Dir); err != nil {
		return err
	}
	return os.Rename(staging, Dir)
}

func aptGet(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}
