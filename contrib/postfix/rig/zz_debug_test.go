package rig_test

import (
	"os/exec"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
)

func TestZZDebug(t *testing.T) {
	pf := rig.Start(t, rig.Options{})
	for _, args := range [][]string{{"postfix", "-c", pf.ConfigDir(), "check"}, {"/usr/lib/postfix/sbin/postfix-script", "check-fatal"}, {"/usr/lib/postfix/sbin/postfix-script", "check-warn"}, {"/usr/lib/postfix/sbin/post-install", "create-missing"}} {
		s := time.Now()
		c := exec.Command(args[0], args[1:]...)
		c.Env = append(c.Environ(), "MAIL_CONFIG="+pf.ConfigDir(), "daemon_directory=/usr/lib/postfix/sbin", "config_directory="+pf.ConfigDir(), "queue_directory="+pf.QueueDir(), "command_directory=/usr/sbin", "meta_directory=/etc/postfix", "data_directory="+pf.QueueDir()+"/../data", "mail_owner=postfix", "setgid_group=postdrop")
		out, err := c.CombinedOutput()
		t.Logf("%v: %v %v %s", args, time.Since(s), err, out)
	}
}
