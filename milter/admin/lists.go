package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/policy"
)

// Lists returns every list with its key fingerprint and member count.
func (s *Site) Lists(ctx context.Context) ([]store.ListSummary, error) {
	return s.Store.ListSummaries(ctx)
}

// DeleteOptions adjust DeleteList.
type DeleteOptions struct {
	// Force deletes a list that has holds still to decide.
	Force bool
	// Purge keeps no export of the list's keys and removes its policy
	// file instead of moving it aside.
	Purge bool
}

// Deleted is what DeleteList did.
type Deleted struct {
	Address string
	// ExportPath is the file the list's keys were written to ("" with
	// Purge).
	ExportPath string
	// PolicyFile is the list's policy file ("" if it had none);
	// PolicyMoved where it was moved ("" when it was removed).
	PolicyFile, PolicyMoved string
	Members, Holds          int
}

// exportStamp is the time format in the names of the files list delete
// keeps.
const exportStamp = "20060102T150405Z"

// DeleteList deletes the list and its rows. Unless opt.Purge it first
// writes the list's key (public, and secret sealed by the site
// passphrase exactly as stored) armored to
// state_dir/deleted-ADDRESS-TIMESTAMP.key.asc (0600, atomically), and
// afterwards moves the list's policy file aside (FILE.deleted-TIMESTAMP,
// which the milter no longer loads); with Purge the policy file is
// removed. A list with holds still to decide is refused unless
// opt.Force; then the export is removed again and nothing changes.
func (s *Site) DeleteList(ctx context.Context, address string, opt DeleteOptions) (Deleted, error) {
	l, err := s.list(ctx, address)
	if err != nil {
		return Deleted{}, err
	}
	d := Deleted{Address: l.Address}
	now := s.Now().UTC()
	if !opt.Purge {
		path, err := s.exportKeys(ctx, l, now)
		if err != nil {
			return Deleted{}, err
		}
		d.ExportPath = path
	}
	dl, err := s.Store.DeleteList(ctx, l.Address, opt.Force)
	if err != nil {
		if d.ExportPath != "" {
			// Nothing was deleted: the export is not needed.
			os.Remove(d.ExportPath)
			d.ExportPath = ""
		}
		var hw *store.HoldsWaitingError
		if errors.As(err, &hw) {
			return d, fmt.Errorf("%w; nothing was deleted: decide them first (listcrypt hold list %s --all), or delete the list anyway with --force", err, l.Address)
		}
		return d, err
	}
	d.Members, d.Holds = dl.Members, dl.Holds
	// The policy file: the owner's text is kept aside unless purged.
	if set, perr := policy.LoadDir(s.Config.PolicyDir); perr == nil {
		if p := set.Lookup(l.Address); p != nil && p.File != "" {
			d.PolicyFile = p.File
		}
	} else if f := filepath.Join(s.Config.PolicyDir, l.Address+".toml"); fileExists(f) {
		d.PolicyFile = f
	}
	if d.PolicyFile != "" {
		if opt.Purge {
			err = os.Remove(d.PolicyFile)
		} else {
			d.PolicyMoved = d.PolicyFile + ".deleted-" + now.Format(exportStamp)
			err = os.Rename(d.PolicyFile, d.PolicyMoved)
		}
		if err != nil {
			return d, fmt.Errorf("list %s deleted, but its policy file stays: %w (remove it, then reload listcrypt-milter)", l.Address, err)
		}
	}
	return d, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// exportKeys writes the list's key, armored, to a new 0600 file in
// state_dir and returns its path. The secret key is written as stored:
// sealed by the site passphrase.
func (s *Site) exportKeys(ctx context.Context, l store.List, now time.Time) (string, error) {
	if len(l.SecretKey) == 0 {
		return "", fmt.Errorf("list %s has no stored secret key to keep; delete it with --purge", l.Address)
	}
	// The keys a rotation retired go along: posts held or archived
	// before it are sealed to them.
	old, err := s.Store.OldListKeys(ctx, l.Address)
	if err != nil {
		return "", fmt.Errorf("keep the keys of %s (nothing was deleted): %w", l.Address, err)
	}
	comment := fmt.Sprintf("listcrypt list key of %s (deleted %s), fingerprint %s; the secret key is protected by the site passphrase",
		l.Address, now.Format(time.RFC3339), l.KeyFingerprint)
	secrets := [][]byte{l.SecretKey}
	for _, o := range old {
		comment += fmt.Sprintf("; retired key %s", o.Fingerprint)
		secrets = append(secrets, o.SecretKey)
	}
	var b bytes.Buffer
	w, err := armor.Encode(&b, "PGP PRIVATE KEY BLOCK", map[string]string{"Comment": comment})
	if err != nil {
		return "", err
	}
	for _, sec := range secrets {
		if _, err := w.Write(sec); err != nil {
			return "", err
		}
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	b.WriteString("\n")
	name := "deleted-" + strings.ReplaceAll(l.Address, "/", "_") + "-" + now.Format(exportStamp) + ".key.asc"
	path := filepath.Join(s.Config.StateDir, name)
	// Written in full under a name of this process's own, then linked
	// into place: link fails when the name exists, so two deletes in
	// the same second never share (or remove) one export.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := keyring.WriteFileAtomic(tmp, b.Bytes(), 0o600); err != nil {
		return "", fmt.Errorf("keep the keys of %s (nothing was deleted): %w", l.Address, err)
	}
	err = os.Link(tmp, path)
	os.Remove(tmp)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("keep the keys of %s: %s exists already; try again in a second", l.Address, path)
	}
	if err != nil {
		return "", fmt.Errorf("keep the keys of %s (nothing was deleted): %w", l.Address, err)
	}
	return path, nil
}
