// Package site opens a listcrypt site: the site config (listcrypt.toml),
// the state store it names, and the list keys sealed by the site
// passphrase. It is the one place where a program opens these: the three
// mains and the milter daemon call [Open] (or [OpenConfig]) once and hand
// the [Site] to the services they wire (milter, milter/admin,
// milter/workflow).
//
// A site reads its passphrase once, when the list keys are first needed
// (or at Open with [Options].Passphrase), and keeps one [keyring.Cache]
// of opened list keys and parsed member keys for the process.
package site

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/listcrypt/listcrypt/keyring"
	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/policy"
	"github.com/listcrypt/listcrypt/policy/config"
)

// StoreMode says what Open does with the state store.
type StoreMode int

const (
	// StoreCurrent opens the store named by `database`; its schema must be
	// exactly the one this program knows (every program but "listcrypt
	// init"). The default.
	StoreCurrent StoreMode = iota
	// StoreNone opens no store: the config alone ("listcrypt policy
	// check", "listcrypt-milter -n"). Site.Store is nil.
	StoreNone
	// StoreInit first creates what is missing: state_dir, the SQLite
	// database's folder, policy_dir, the schema (or migrates it to this
	// program's) and the passphrase file (mode 0600), then keeps the store
	// open ("listcrypt init"). Site.Created says what it made.
	StoreInit
)

// Options adjust Open.
type Options struct {
	Store StoreMode
	// Passphrase reads the site passphrase file at Open, so that a site
	// whose list keys cannot be opened fails at once (the milter daemon:
	// nothing listens unless everything is in order). Without it the file
	// is read when the keys are first needed, and programs that never
	// need them (listing members, say) never read it.
	Passphrase bool
}

// Site is an opened site. Close it when done.
type Site struct {
	Config *config.Config
	// Store is the state store (nil with StoreNone).
	Store *store.Store
	// Created lists what StoreInit created ("schema sqlite",
	// "passphrase PATH").
	Created []string

	ownStore bool // Close closes Store

	mu   sync.Mutex
	pass []byte
	keys *keyring.Cache

	closeOnce sync.Once
	closeErr  error
}

// Open reads the site config at configPath (its errors carry file:line)
// and opens the site it describes as opts say. Errors name what failed:
// the config, the passphrase file, the database, or its schema.
func Open(ctx context.Context, configPath string, opts Options) (*Site, error) {
	cfg, err := config.Load(configPath)
	if err != nil {
		return nil, err
	}
	return OpenConfig(ctx, cfg, opts)
}

// OpenConfig is Open with a config already read.
func OpenConfig(ctx context.Context, cfg *config.Config, opts Options) (*Site, error) {
	s := &Site{Config: cfg}
	switch opts.Store {
	case StoreNone:
	case StoreInit:
		if err := s.init(ctx); err != nil {
			s.Close()
			return nil, err
		}
	default:
		// The passphrase first: a daemon that cannot open the list keys
		// says so before it touches the database.
		if opts.Passphrase {
			if _, err := s.Passphrase(); err != nil {
				return nil, err
			}
		}
		st, err := store.Open(ctx, cfg.Database)
		if err != nil {
			return nil, err
		}
		s.Store, s.ownStore = st, true
		if err := st.CheckSchema(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	if opts.Passphrase {
		if _, err := s.Passphrase(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// New is a site over a store its caller opened (tests, and services
// handed a bare store). It opens nothing; Close leaves st open.
func New(cfg *config.Config, st *store.Store) *Site {
	return &Site{Config: cfg, Store: st}
}

// init is StoreInit: folders, schema, passphrase file.
func (s *Site) init(ctx context.Context) error {
	cfg := s.Config
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if engine, path, _ := config.SplitDatabase(cfg.Database); engine == "sqlite" {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return fmt.Errorf("database dir: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.PolicyDir, 0o755); err != nil {
		return fmt.Errorf("policy dir: %w", err)
	}
	st, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	s.Store, s.ownStore = st, true
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	s.Created = append(s.Created, "schema "+st.Engine())
	if err := os.MkdirAll(filepath.Dir(cfg.PassphraseFile), 0o750); err != nil {
		return fmt.Errorf("passphrase dir: %w", err)
	}
	made, err := keyring.CreatePassphraseFile(cfg.PassphraseFile, rand.Reader)
	if err != nil {
		return err
	}
	if made {
		s.Created = append(s.Created, "passphrase "+cfg.PassphraseFile)
	}
	return nil
}

// Passphrase returns the site passphrase, reading passphrase_file on
// the first call (keyring.LoadPassphrase: mode 0600, not empty).
func (s *Site) Passphrase() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pass == nil {
		p, err := keyring.LoadPassphrase(s.Config.PassphraseFile)
		if err != nil {
			return nil, err
		}
		s.pass = p
	}
	return s.pass, nil
}

// Keys is the site's key service: list keys opened with the passphrase,
// members' keys parsed under the config's limits, cached for the
// process and refreshed when the store's keys version moves.
func (s *Site) Keys() (*keyring.Cache, error) {
	pass, err := s.Passphrase()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = keyring.NewCache(s.Store, pass, keyring.ConfigLimits(s.Config))
	}
	return s.keys, nil
}

// Policies reads the list policy files of policy_dir, afresh on every
// call (a reload sees the files as they are now).
func (s *Site) Policies() (*policy.Set, error) {
	set, err := policy.LoadDir(s.Config.PolicyDir)
	if err != nil {
		return nil, fmt.Errorf("policy files: %w", err)
	}
	return set, nil
}

// Close closes the store if the site opened it. Calling it again
// returns the first call's result.
func (s *Site) Close() error {
	s.closeOnce.Do(func() {
		if s.ownStore && s.Store != nil {
			s.closeErr = s.Store.Close()
		}
	})
	return s.closeErr
}

// Check reports, every problem at once, whether the site's passphrase
// file and state database are usable as the daemons will use them: the
// passphrase file readable, mode 0600 and not empty; the database
// reachable with this program's schema. A SQLite file that does not
// exist yet is reported, not created. For "listcrypt-milter -n".
func Check(ctx context.Context, cfg *config.Config) error {
	var errs []error
	if _, err := keyring.LoadPassphrase(cfg.PassphraseFile); err != nil {
		errs = append(errs, fmt.Errorf("passphrase_file: %w", err))
	}
	if engine, path, err := config.SplitDatabase(cfg.Database); err != nil {
		errs = append(errs, err)
	} else if _, serr := os.Stat(path); engine == "sqlite" && serr != nil {
		errs = append(errs, fmt.Errorf("database %s: %w (run \"listcrypt init\")", path, serr))
	} else if st, err := store.Open(ctx, cfg.Database); err != nil {
		errs = append(errs, err)
	} else {
		if err := st.CheckSchema(ctx); err != nil {
			errs = append(errs, err)
		}
		st.Close()
	}
	return errors.Join(errs...)
}
