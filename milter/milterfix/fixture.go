// Package milterfix builds a complete listcrypt site for tests: config,
// store (SQLite in a temp folder), a list with its key, member keys, and
// posts as a member's mail client would write them (PGP/MIME, RFC 3156).
// The milter, CLI and end-to-end tests share it.
package milterfix

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"mime"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/listcrypt/listcrypt/contrib/postfix/rig"
	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/milter/admin"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
)

// List is the fixture list's address.
const List = "devs@lists.example.org"

// Site is a test site with one list.
type Site struct {
	Dir     string
	Config  *config.Config
	Admin   *admin.Site
	ListKey *openpgp.Entity // public part
	Members map[string]*openpgp.Entity
	// Reinjected records what the milter reinjected when Options.Reinject
	// was empty: an SMTP server in the test process standing in for the
	// MTA's reinjection listener (every copy of a post arrives there).
	Reinjected *rig.Sink
}

// Options adjust the fixture.
type Options struct {
	// Policy is appended to the list's policy file ([post] keys etc.).
	Policy string
	// Listen is the milter socket spec; default a unix socket in Dir.
	Listen string
	// Reinject is the reinjection address; default a recording SMTP
	// server (Site.Reinjected).
	Reinject string
	// Database overrides the SQLite default.
	Database string
}

// New builds a site in a fresh temp folder (world-searchable, so that
// Postfix's smtpd, running as postfix, can reach a unix socket in it).
func New(t testing.TB, o Options) *Site {
	t.Helper()
	dir, err := os.MkdirTemp("", "listcrypt-site-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.Listen == "" {
		o.Listen = "unix:" + filepath.Join(dir, "run", "milter.sock")
	}
	var sink *rig.Sink
	if o.Reinject == "" {
		sink = rig.NewSink(t)
		o.Reinject = sink.Addr()
	}
	if o.Database == "" {
		o.Database = "sqlite:state/state.db"
	}
	// The socket is mode 0660 (the default): give it to smtpd's group,
	// as contrib/listcrypt.toml does, where there is one.
	group := ""
	if _, err := user.LookupGroup("postfix"); err == nil && strings.HasPrefix(o.Listen, "unix:") {
		group = "postfix"
	}
	cfgSrc := fmt.Sprintf(`state_dir = "state"
database = %q
policy_dir = "lists.d"
passphrase_file = "passphrase"
[milter]
listen = %q
socket_group = %q
[reinject]
address = %q
[log]
level = "debug"
`, o.Database, o.Listen, group, o.Reinject)
	cfgPath := filepath.Join(dir, "listcrypt.toml")
	if err := os.WriteFile(cfgPath, []byte(cfgSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := admin.Init(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	pol := policy.Template(List, "owner@example.org")
	if o.Policy != "" {
		pol = strings.Replace(pol, "[post]\n", "[post]\n"+o.Policy+"\n", 1)
		// Later duplicate keys would be a TOML error: drop the template's.
		pol = dropDuplicateKeys(pol)
	}
	if err := os.WriteFile(filepath.Join(cfg.PolicyDir, List+".toml"), []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := admin.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if _, err := a.CreateList(ctx, List, "owner@example.org", keyring.KeyEd25519); err != nil {
		t.Fatal(err)
	}
	armored, err := a.ExportListKey(ctx, List)
	if err != nil {
		t.Fatal(err)
	}
	lk, err := openpgp.ReadArmoredKeyRing(strings.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	s := &Site{Dir: dir, Config: cfg, Admin: a, ListKey: lk[0], Members: map[string]*openpgp.Entity{}, Reinjected: sink}
	return s
}

func dropDuplicateKeys(src string) string {
	seen := map[string]bool{}
	var out []string
	table := ""
	for _, l := range strings.Split(src, "\n") {
		tl := strings.TrimSpace(l)
		if strings.HasPrefix(tl, "[") {
			table = tl
		} else if k, _, ok := strings.Cut(tl, "="); ok && !strings.HasPrefix(tl, "#") {
			key := table + strings.TrimSpace(k)
			if seen[key] {
				continue
			}
			seen[key] = true
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// NewKey generates a member-style key (Ed25519 + X25519) for addr.
func NewKey(t testing.TB, addr string) *openpgp.Entity {
	t.Helper()
	e, err := keyring.GenerateListKey(addr, keyring.KeyEd25519, time.Now().Add(-time.Hour), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// EditPolicy replaces the first old in the fixture list's policy file
// by new; the test fails if the file lacks old.
func (s *Site) EditPolicy(t testing.TB, old, new string) {
	t.Helper()
	pf := filepath.Join(s.Config.PolicyDir, List+".toml")
	src, err := os.ReadFile(pf)
	if err != nil || !bytes.Contains(src, []byte(old)) {
		t.Fatalf("policy %s lacks %q: %v", pf, old, err)
	}
	if err := os.WriteFile(pf, bytes.Replace(src, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

// AddMember generates a key for addr and registers it on the list.
func (s *Site) AddMember(t testing.TB, addr string) *openpgp.Entity {
	t.Helper()
	e := NewKey(t, addr)
	s.Register(t, addr, e)
	return e
}

// Register adds addr to the list with key e.
func (s *Site) Register(t testing.TB, addr string, e *openpgp.Entity) {
	t.Helper()
	armored, err := keyring.ArmorPublicKey(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.AddMember(context.Background(), List, addr, []byte(armored)); err != nil {
		t.Fatal(err)
	}
	s.Members[addr] = e
}

// Post describes a message to build.
type Post struct {
	From      string
	MessageID string
	Subject   string
	Body      string // the inner text/plain body
	// SignWith signs the post (nil: unsigned).
	SignWith *openpgp.Entity
	// EncryptTo encrypts the post (nil: plain); usually the list key.
	EncryptTo []*openpgp.Entity
}

// Build writes the post as a mail client does: PGP/MIME encrypted (RFC
// 3156 §4, combined signature §6.2) when EncryptTo is set, PGP/MIME
// signed (§5) when only SignWith is set, else plain text.
func Build(t testing.TB, p Post) []byte {
	t.Helper()
	if p.MessageID == "" {
		p.MessageID = fmt.Sprintf("<%d.%s>", time.Now().UnixNano(), strings.ReplaceAll(p.From, "@", ".at."))
	}
	if p.Subject == "" {
		p.Subject = "test post"
	}
	hdr := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\n",
		p.From, List, p.Subject, p.MessageID, time.Now().UTC().Format(time.RFC1123Z))
	inner := "Content-Type: text/plain; charset=utf-8\r\n\r\n" + strings.ReplaceAll(p.Body, "\n", "\r\n") + "\r\n"
	cfg := keyring.PacketConfig(keyring.DefaultLimits, nil)
	switch {
	case len(p.EncryptTo) > 0:
		var ct bytes.Buffer
		aw, err := armor.Encode(&ct, "PGP MESSAGE", nil)
		if err != nil {
			t.Fatal(err)
		}
		var signers []*openpgp.Entity
		if p.SignWith != nil {
			signers = []*openpgp.Entity{p.SignWith}
		}
		w, err := openpgp.EncryptWithParams(aw, p.EncryptTo, nil, &openpgp.EncryptParams{Signers: signers, Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(inner))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		aw.Close()
		const b = "enc-boundary-42"
		return []byte(hdr + "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"" + b + "\"\r\n\r\n" +
			"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n" +
			"--" + b + "\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n" +
			"--" + b + "\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n" +
			strings.ReplaceAll(ct.String(), "\n", "\r\n") + "\r\n--" + b + "--\r\n")
	case p.SignWith != nil:
		var sig bytes.Buffer
		if err := openpgp.ArmoredDetachSign(&sig, []*openpgp.Entity{p.SignWith}, strings.NewReader(inner), &openpgp.SignParams{Config: cfg}); err != nil {
			t.Fatal(err)
		}
		const b = "sig-boundary-42"
		return []byte(hdr + "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"" + b + "\"\r\n\r\n" +
			"--" + b + "\r\n" + inner + "\r\n--" + b + "\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n" +
			strings.ReplaceAll(sig.String(), "\n", "\r\n") + "\r\n--" + b + "--\r\n")
	}
	return []byte(hdr + inner)
}

// ArmoredPart returns the armored OpenPGP message of a PGP/MIME copy.
func ArmoredPart(t testing.TB, msg []byte) []byte {
	t.Helper()
	i := bytes.Index(msg, []byte("-----BEGIN PGP MESSAGE-----"))
	j := bytes.Index(msg, []byte("-----END PGP MESSAGE-----"))
	if i < 0 || j < i {
		t.Fatalf("no armored OpenPGP message in:\n%s", msg)
	}
	return msg[i : j+len("-----END PGP MESSAGE-----\n")]
}

// DecryptCopy decrypts a member's copy with that member's key alone and
// checks that the list key signed it; it returns the decrypted entity.
func DecryptCopy(t testing.TB, msg []byte, member, listKey *openpgp.Entity) []byte {
	t.Helper()
	block, err := armor.Decode(bytes.NewReader(ArmoredPart(t, msg)))
	if err != nil {
		t.Fatal(err)
	}
	md, err := openpgp.ReadMessage(block.Body, openpgp.EntityList{member, listKey}, nil, keyring.PacketConfig(keyring.DefaultLimits, nil))
	if err != nil {
		t.Fatalf("decrypt with %s: %v", keyring.Fingerprint(member), err)
	}
	var pt bytes.Buffer
	if _, err := pt.ReadFrom(md.UnverifiedBody); err != nil {
		t.Fatal(err)
	}
	if md.SignatureError != nil || md.SignedBy == nil || md.SignedBy.Entity.PrimaryKey.KeyId != listKey.PrimaryKey.KeyId {
		t.Fatalf("copy not signed by the list key: %v", md.SignatureError)
	}
	return pt.Bytes()
}

// FirstSignedPart returns the first body part of a multipart/signed
// entity exactly as transmitted (RFC 3156 §5), parsed with go-message.
// Tests use it to verify an author's signature in a member's copy.
func FirstSignedPart(entity []byte) ([]byte, bool) {
	br := bufio.NewReader(bytes.NewReader(entity))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, false
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/signed" || params["boundary"] == "" {
		return nil, false
	}
	p, err := textproto.NewMultipartReader(br, params["boundary"]).NextPart()
	if err != nil {
		return nil, false
	}
	body, err := io.ReadAll(p)
	if err != nil {
		return nil, false
	}
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, p.Header); err != nil {
		return nil, false
	}
	b.Write(body)
	return b.Bytes(), true
}
