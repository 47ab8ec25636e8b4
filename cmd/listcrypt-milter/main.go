// Command listcrypt-milter is the milter daemon: Postfix or Sendmail hand
// it every SMTP transaction; it decides list posts. SIGHUP reloads the
// policy files (an invalid reload keeps the last good ones); SIGTERM and
// SIGINT drain running sessions and stop. A config or policy change other
// than the policy files needs a restart.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/listcrypt/listcrypt/milter"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
)

func main() {
	cfgPath := flag.String("c", config.DefaultPath, "site config file")
	check := flag.Bool("n", false, "check the config and the policy files, then exit (non-zero on any error)")
	flag.Parse()
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fail(err)
	}
	if *check {
		if _, err := policy.LoadDir(cfg.PolicyDir); err != nil {
			fail(err)
		}
		fmt.Println("config and policies OK")
		return
	}
	log := config.NewLogger(cfg, os.Stderr)
	d, err := milter.Start(context.Background(), cfg, log)
	if err != nil {
		fail(err)
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
		fail(err)
	}
	<-stopped
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "listcrypt-milter:", err)
	os.Exit(1)
}
