package milter_test

import (
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/milter/milterfix"
	"github.com/listcrypt/listcrypt/policy/tomlx"
)

// A real Postfix keeps working while max_connections idle clients (and
// more) sit on the milter socket: its smtpd's milter connection evicts
// one of them, and mail is accepted, not tempfailed. The socket is
// srw-rw---- with group postfix, the layout the sample config ships.
func TestIdleClientsDoNotStarvePostfix(t *testing.T) {
	rig.Require(t)
	site := milterfix.New(t, milterfix.Options{})
	alice := site.AddMember(t, "alice@example.org")
	m := &site.Config.Milter
	if m.SocketGroup != "postfix" {
		t.Fatalf("fixture socket_group %q, want postfix", m.SocketGroup)
	}
	m.MaxConnections = 4
	// Long enough that no timeout frees a slot during the test.
	m.HandshakeTimeout = tomlx.NewDuration("10m")
	m.IdleTimeout = tomlx.NewDuration("10m")
	_, sock, _ := strings.Cut(m.Listen, ":")
	pf := rig.Start(t, rig.Options{MilterAddr: "unix:" + sock})
	site.Config.Reinject.Address = pf.ReinjectAddr()
	d, logs := startDaemon(t, site)

	pg, err := user.LookupGroup("postfix")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if gid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)); fi.Mode().Perm() != 0o660 || gid != pg.Gid {
		t.Fatalf("socket mode %v group %s, want 0660 group postfix (%s)", fi.Mode().Perm(), gid, pg.Gid)
	}

	var crowd []net.Conn
	for range m.MaxConnections {
		crowd = append(crowd, idleSession(t, d.Addr()))
	}
	for range 2 {
		crowd = append(crowd, silent(t, d.Addr()))
	}

	post := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: alice,
		EncryptTo: []*openpgp.Entity{site.ListKey}, Body: "past the idle crowd"})
	if err := rig.Send(pf.SMTPAddr(), "alice@example.org", []string{milterfix.List}, post); err != nil {
		t.Fatalf("list post: %v", err)
	}
	plain := []byte("From: x@example.net\r\nTo: bob@example.org\r\nSubject: hi\r\nMessage-ID: <slots@x>\r\n\r\nhi\r\n")
	if err := rig.Send(pf.SMTPAddr(), "x@example.net", []string{"bob@example.org"}, plain); err != nil {
		t.Fatalf("ordinary mail: %v", err)
	}
	if !strings.Contains(logs.String(), "evicted a connection") {
		t.Fatal("no eviction logged")
	}
	if _, err := pf.Sink().Wait(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
}
