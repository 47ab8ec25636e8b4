package rig_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
)

// QueueEmpty sees a message that Postfix keeps (on hold, then released
// to the deferred queue, a hashed folder), and WaitQueueEmpty returns
// once it has been delivered to the sink.
func TestQueueEmpty(t *testing.T) {
	pf := rig.Start(t, rig.Options{
		Tables: map[string]string{"hold": "bob@example.org HOLD\n"},
		ExtraMain: map[string]string{
			"smtpd_recipient_restrictions": "check_recipient_access hash:$config_directory/hold, permit_mynetworks, reject",
		},
	})
	if ok, err := pf.QueueEmpty(); err != nil || !ok {
		t.Fatalf("fresh rig: queue empty %v, %v", ok, err)
	}
	if err := rig.Send(pf.SMTPAddr(), "alice@example.net", []string{"bob@example.org"}, message("queued", "bob@example.org")); err != nil {
		t.Fatal(err)
	}
	if ok, err := pf.QueueEmpty(); err != nil || ok {
		t.Fatalf("a held message: queue empty %v, %v", ok, err)
	}
	if n := len(pf.Sink().Messages()); n != 0 {
		t.Fatalf("defer_transports: %d messages delivered", n)
	}
	postsuper := "/usr/sbin/postsuper"
	if p, err := exec.LookPath("postsuper"); err == nil {
		postsuper = p
	}
	if out, err := exec.Command(postsuper, "-c", pf.ConfigDir(), "-H", "ALL").CombinedOutput(); err != nil {
		t.Fatalf("postsuper -H ALL: %v\n%s", err, out)
	}
	pf.Flush()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatalf("after postqueue -f: %v\n%s", err, pf.Maillog())
	}
	if n := len(pf.Sink().Messages()); n != 1 {
		t.Fatalf("queue empty, but %d messages at the sink", n)
	}
}
