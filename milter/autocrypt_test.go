package milter_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/milter/milterfix"
)

// A member's post that carries an Autocrypt header naming another key
// (mallory's, for alice's address) changes nothing in the store: the
// inbound path never reads Autocrypt (only the responder's challenge
// registers a key, docs/responder.md). The post is delivered, and the
// members' copies carry the list's Autocrypt header only, not the
// author's.
func TestMemberAutocryptChangesNoKey(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	st := f.site.Admin.Store
	// What the store holds of the members' keys: rows and keys version.
	snapshot := func() (members []store.Member, version int64) {
		members, err := st.Members(ctx, milterfix.List)
		if err == nil {
			version, err = st.KeysVersion(ctx, milterfix.List)
		}
		if err != nil {
			t.Fatal(err)
		}
		return members, version
	}
	membersBefore, versionBefore := snapshot()

	var other bytes.Buffer
	if err := f.mallory.Serialize(&other); err != nil {
		t.Fatal(err)
	}
	kd := base64.StdEncoding.EncodeToString(other.Bytes())
	authorKeydata := kd[:76]
	var folded strings.Builder
	folded.WriteString("Autocrypt: addr=alice@example.org; prefer-encrypt=mutual; keydata=")
	for len(kd) > 0 {
		n := min(76, len(kd))
		folded.WriteString("\r\n " + kd[:n])
		kd = kd[n:]
	}
	folded.WriteString("\r\n")
	msg := milterfix.Build(t, milterfix.Post{From: "alice@example.org", SignWith: f.alice, EncryptTo: []*openpgp.Entity{f.site.ListKey}, Body: "hello"})
	msg = append([]byte(folded.String()), msg...)

	r := f.mta.send("alice@example.org", []string{milterfix.List}, msg)
	if !r.delivered() {
		t.Fatalf("post with an Autocrypt header: %+v", r.action)
	}
	membersAfter, versionAfter := snapshot()
	if versionAfter != versionBefore || !reflect.DeepEqual(membersAfter, membersBefore) {
		t.Fatalf("the store changed: keys version %d -> %d, members %+v -> %+v", versionBefore, versionAfter, membersBefore, membersAfter)
	}
	if len(r.copies) == 0 {
		t.Fatal("no copy reinjected")
	}
	malloryFpr := keyring.Fingerprint(f.mallory)
	for _, c := range r.copies {
		checkListAutocrypt(t, c.Data, f.site.ListKey)
		if bytes.Contains(c.Data, []byte(authorKeydata)) {
			t.Fatalf("the author's Autocrypt keydata (key %s) reached the members", malloryFpr)
		}
	}
}

// checkListAutocrypt checks the Autocrypt header of a copy as it arrived:
// exactly one, every raw line of it at most 78 characters with
// continuation lines starting with a space (folding survived the MTA),
// addr the list address (the outer From), and keydata that decodes into
// the list key with exactly one user ID and one subkey.
func checkListAutocrypt(t *testing.T, msg []byte, listKey *openpgp.Entity) {
	t.Helper()
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var raw []string
	in := false
	for _, l := range strings.Split(string(head), "\r\n") {
		switch {
		case strings.HasPrefix(strings.ToLower(l), "autocrypt:"):
			if raw != nil {
				t.Fatal("more than one Autocrypt field")
			}
			raw, in = []string{l}, true
		case in && l != "" && (l[0] == ' ' || l[0] == '\t'):
			raw = append(raw, l)
		default:
			in = false
		}
	}
	if raw == nil {
		t.Fatal("copy without an Autocrypt field")
	}
	for i, l := range raw {
		if len(l) > 78 || i > 0 && !strings.HasPrefix(l, " ") {
			t.Fatalf("Autocrypt line %d arrived as %q", i, l)
		}
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil {
		t.Fatal(err)
	}
	value := h.Get("Autocrypt")
	if !strings.Contains(h.Get("From"), "<"+milterfix.List+">") {
		t.Fatalf("Autocrypt on a copy from %q", h.Get("From"))
	}
	attrs := strings.Split(value, ";")
	if len(attrs) != 3 || strings.TrimSpace(attrs[0]) != "addr="+milterfix.List ||
		strings.TrimSpace(attrs[1]) != "prefer-encrypt=mutual" || !strings.HasPrefix(strings.TrimSpace(attrs[2]), "keydata=") {
		t.Fatalf("Autocrypt attributes %q", attrs)
	}
	kd, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(strings.TrimPrefix(strings.TrimSpace(attrs[2]), "keydata=")), ""))
	if err != nil {
		t.Fatalf("keydata: %v", err)
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(kd))
	if err != nil || len(el) != 1 {
		t.Fatalf("keydata: %d keys, %v", len(el), err)
	}
	if keyring.Fingerprint(el[0]) != keyring.Fingerprint(listKey) || len(el[0].Identities) != 1 || len(el[0].Subkeys) != 1 {
		t.Fatalf("keydata: key %s with %d user IDs and %d subkeys, want the list key %s with one of each",
			keyring.Fingerprint(el[0]), len(el[0].Identities), len(el[0].Subkeys), keyring.Fingerprint(listKey))
	}
}
