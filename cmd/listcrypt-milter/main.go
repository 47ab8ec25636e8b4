// Command listcrypt-milter is the milter daemon: Postfix or Sendmail hand
// it every SMTP transaction; it decides list posts. SIGHUP reloads the
// policy files (an invalid reload keeps the last good ones); SIGTERM and
// SIGINT drain running sessions and stop. A change to listcrypt.toml
// needs a restart.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/listcrypt/listcrypt/keyring/site"
	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/policy/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("listcrypt-milter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", config.DefaultPath, "site config file")
	check := fs.Bool("n", false, "check the config and the policy files, then exit (non-zero on any error)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "listcrypt-milter:", err)
		return 1
	}
	opts := milter.SiteOptions
	if *check {
		opts = site.Options{Store: site.StoreNone}
	}
	s, err := site.Open(context.Background(), *cfgPath, opts)
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	if *check {
		if err := milter.Check(s.Config); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, "config and policies OK")
		return 0
	}
	log := config.NewLogger(s.Config, stderr)
	// go-milter reports dropped MTA connections and panics it recovered
	// through the standard logger: route them into the structured log
	// (panics at Error, with their stack).
	stdlog.SetFlags(0)
	stdlog.SetOutput(milter.LibraryLog(log))
	d, err := milter.StartSite(context.Background(), s, log)
	if err != nil {
		return fail(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for s := range sigs {
			if s == syscall.SIGHUP {
				d.Reload()
				continue
			}
			log.Info("stopping", "signal", s.String())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			d.Shutdown(ctx)
			cancel()
			return
		}
	}()
	if err := d.Serve(); err != nil {
		return fail(err)
	}
	<-stopped
	return 0
}
