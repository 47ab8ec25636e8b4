package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/listcrypt/listcrypt/keyring"
)

// WKDOptions adjust WKDExport.
type WKDOptions struct {
	// Domain is the one domain the direct layout serves. "" is allowed
	// when the site's lists are all in one domain; with lists in several
	// domains it must be named (the direct layout,
	// https://DOMAIN/.well-known/openpgpkey/hu/HASH, has no domain in its
	// path, so one tree can serve only one domain that way).
	Domain string
}

// WKDEntry is one list's key in the directory.
type WKDEntry struct {
	Address, Domain, Hash string
	Fingerprint           string
}

// WKDExport is what WKDExport wrote.
type WKDExport struct {
	Entries []WKDEntry // by domain, then address
	Domains []string   // the advanced layout's domains, sorted
	Direct  string     // the direct layout's domain
	Files   int        // files written (keys and policy files)
}

// wkdRoot is the folder both layouts live in, under the export folder
// (draft-koch-openpgp-webkey-service §3.1).
const wkdRoot = ".well-known/openpgpkey"

// WKDExport writes the Web Key Directory of every list of the site under
// dir, for an admin to serve over HTTPS (docs/cli.md, "wkd export"):
//
//   - advanced layout, every domain with lists:
//     dir/.well-known/openpgpkey/DOMAIN/hu/HASH and .../DOMAIN/policy,
//     served at https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/;
//   - direct layout, one domain (opt.Domain, or the only one):
//     dir/.well-known/openpgpkey/hu/HASH and .../policy, served at
//     https://DOMAIN/.well-known/openpgpkey/.
//
// HASH is keyring.WKDHash of the list's local part; each file holds the
// list's minimal key (keyring.MinimalPublicKey), binary. Files are 0644
// and written atomically (temporary file, rename), folders it creates
// are 0755; the policy files are empty (no policy flags). Nothing else
// under dir is touched: a deleted list's file stays until the admin
// removes it. Every key is made before the first file is written, so a
// list whose key cannot give one leaves dir as it was. Running it twice
// writes the same bytes.
func (s *Site) WKDExport(ctx context.Context, dir string, opt WKDOptions) (WKDExport, error) {
	var res WKDExport
	if dir == "" {
		return res, errors.New("no export folder")
	}
	lists, err := s.Lists(ctx)
	if err != nil {
		return res, err
	}
	if len(lists) == 0 {
		return res, errors.New("the site has no lists")
	}
	now := s.Now()
	limits := keyring.ConfigLimits(s.Config)
	cfg := keyring.PacketConfig(limits, s.Now)
	keys := map[WKDEntry][]byte{}
	domains := map[string]bool{}
	for _, ls := range lists {
		l, err := s.list(ctx, ls.Address)
		if err != nil {
			return res, err
		}
		local, domain, ok := strings.Cut(l.Address, "@")
		if !ok || domain == "" || strings.ContainsAny(domain, `/\`) || strings.HasPrefix(domain, ".") {
			return res, fmt.Errorf("list %s: no domain to serve it under", l.Address)
		}
		e, err := keyring.ParseStoredKey(l.PublicKey, limits)
		if err != nil {
			return res, fmt.Errorf("list key of %s: %w", l.Address, err)
		}
		key, err := keyring.MinimalPublicKey(e, l.Address, now, cfg)
		if err != nil {
			return res, fmt.Errorf("list key of %s: %w", l.Address, err)
		}
		en := WKDEntry{Address: l.Address, Domain: domain, Hash: keyring.WKDHash(local), Fingerprint: keyring.Fingerprint(e)}
		keys[en] = key
		res.Entries = append(res.Entries, en)
		domains[domain] = true
	}
	for d := range domains {
		res.Domains = append(res.Domains, d)
	}
	sort.Strings(res.Domains)
	sort.Slice(res.Entries, func(i, j int) bool {
		a, b := res.Entries[i], res.Entries[j]
		if a.Domain != b.Domain {
			return a.Domain < b.Domain
		}
		return a.Address < b.Address
	})
	switch d := strings.ToLower(strings.TrimSpace(opt.Domain)); {
	case d != "" && !domains[d]:
		return res, fmt.Errorf("--domain %s: the site has no list there (domains: %s)", d, strings.Join(res.Domains, ", "))
	case d != "":
		res.Direct = d
	case len(res.Domains) == 1:
		res.Direct = res.Domains[0]
	default:
		return res, fmt.Errorf("the site has lists in %d domains (%s) and the direct layout serves one: name it with --domain", len(res.Domains), strings.Join(res.Domains, ", "))
	}

	root := filepath.Join(dir, filepath.FromSlash(wkdRoot))
	write := func(folder string, files map[string][]byte) error {
		if err := mkdirs(dir, folder); err != nil {
			return err
		}
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if err := keyring.WriteFileAtomic(filepath.Join(folder, n), files[n], 0o644); err != nil {
				return err
			}
			res.Files++
		}
		return nil
	}
	for _, d := range res.Domains {
		hu := map[string][]byte{}
		for _, en := range res.Entries {
			if en.Domain == d {
				hu[en.Hash] = keys[en]
			}
		}
		if err := write(filepath.Join(root, d, "hu"), hu); err != nil {
			return res, err
		}
		if err := write(filepath.Join(root, d), map[string][]byte{"policy": nil}); err != nil {
			return res, err
		}
		if d != res.Direct {
			continue
		}
		if err := write(filepath.Join(root, "hu"), hu); err != nil {
			return res, err
		}
		if err := write(root, map[string][]byte{"policy": nil}); err != nil {
			return res, err
		}
	}
	return res, nil
}

// mkdirs creates folder and the folders above it up to base (which must
// exist), each it creates with mode 0755 whatever the umask, so the web
// server can read them; folders that exist are left as they are.
func mkdirs(base, folder string) error {
	rel, err := filepath.Rel(base, folder)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%s is not under %s", folder, base)
	}
	if fi, err := os.Stat(base); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a folder", base)
	}
	p := base
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, part)
		err := os.Mkdir(p, 0o755)
		switch {
		case errors.Is(err, fs.ErrExist):
			if fi, serr := os.Stat(p); serr != nil || !fi.IsDir() {
				return fmt.Errorf("%s exists and is not a folder", p)
			}
		case err != nil:
			return err
		default:
			if err := os.Chmod(p, 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}
