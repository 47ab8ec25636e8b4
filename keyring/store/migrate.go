package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// migrations are applied in order; migration i has version i+1. Never edit
// or reorder an applied migration: append a new one. Each is valid on both
// engines once the type map below is applied; statements are separated by
// ";\n".
var migrations = []string{
	// 1: the initial schema.
	`CREATE TABLE lists (
	address         TEXT PRIMARY KEY,
	key_fingerprint TEXT NOT NULL,
	public_key      {{BLOB}} NOT NULL,
	secret_key      {{BLOB}} NOT NULL,
	keys_version    BIGINT NOT NULL DEFAULT 0,
	created_at      TIMESTAMP NOT NULL
);
CREATE TABLE members (
	list        TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	address     TEXT NOT NULL,
	state       TEXT NOT NULL CHECK (state IN ('active', 'pending', 'needs-key')),
	fingerprint TEXT NOT NULL,
	public_key  {{BLOB}},
	created_at  TIMESTAMP NOT NULL,
	updated_at  TIMESTAMP NOT NULL,
	PRIMARY KEY (list, address)
);
CREATE TABLE member_key_ids (
	list    TEXT NOT NULL,
	key_id  BIGINT NOT NULL,
	address TEXT NOT NULL,
	PRIMARY KEY (list, key_id, address),
	FOREIGN KEY (list, address) REFERENCES members(list, address) ON DELETE CASCADE
);
CREATE INDEX member_key_ids_member ON member_key_ids(list, address);
CREATE TABLE replay (
	list    TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	digest  {{BLOB}} NOT NULL,
	post_id {{BLOB}} NOT NULL,
	seen_at TIMESTAMP NOT NULL,
	PRIMARY KEY (list, digest)
);
CREATE INDEX replay_seen_at ON replay(seen_at);
CREATE TABLE deliveries (
	list         TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	post_id      {{BLOB}} NOT NULL,
	batch        INTEGER NOT NULL,
	delivered_at TIMESTAMP NOT NULL,
	PRIMARY KEY (list, post_id, batch)
);
CREATE INDEX deliveries_delivered_at ON deliveries(delivered_at);
CREATE TABLE posts_complete (
	list         TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	post_id      {{BLOB}} NOT NULL,
	completed_at TIMESTAMP NOT NULL,
	PRIMARY KEY (list, post_id)
);
CREATE INDEX posts_complete_completed_at ON posts_complete(completed_at);
CREATE TABLE holds (
	id         {{ID}},
	list       TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	sender     TEXT NOT NULL,
	recipients TEXT NOT NULL,
	reason     TEXT NOT NULL,
	message    {{BLOB}} NOT NULL,
	state      TEXT NOT NULL CHECK (state IN ('held', 'approved', 'rejected')),
	created_at TIMESTAMP NOT NULL
);
CREATE INDEX holds_list_state ON holds(list, state, id);
CREATE TABLE challenges (
	token_hash  {{BLOB}} PRIMARY KEY,
	list        TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	address     TEXT NOT NULL,
	command     TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	created_at  TIMESTAMP NOT NULL,
	expires_at  TIMESTAMP NOT NULL,
	used_at     TIMESTAMP
);
CREATE INDEX challenges_expires_at ON challenges(expires_at)`,
	// 2: which members a post was delivered to, so that a retried
	// transaction delivers to nobody twice even when the list changed.
	`CREATE TABLE delivered_recipients (
	list         TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	post_id      {{BLOB}} NOT NULL,
	address      TEXT NOT NULL,
	batch        INTEGER NOT NULL,
	delivered_at TIMESTAMP NOT NULL,
	PRIMARY KEY (list, post_id, address)
);
CREATE INDEX delivered_recipients_delivered_at ON delivered_recipients(delivered_at)`,
	// 3: keys sent to the responder that are not (yet) a member's
	// registered key: "key set" / "key change" waiting for "key confirm",
	// and confirmed key changes waiting for a moderator.
	`CREATE TABLE pending_keys (
	list        TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	address     TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	public_key  {{BLOB}} NOT NULL,
	purpose     TEXT NOT NULL CHECK (purpose IN ('set', 'change')),
	state       TEXT NOT NULL CHECK (state IN ('unconfirmed', 'confirmed')),
	created_at  TIMESTAMP NOT NULL,
	updated_at  TIMESTAMP NOT NULL,
	PRIMARY KEY (list, address, fingerprint)
);
CREATE INDEX challenges_list_expires_at ON challenges(list, expires_at)`,
	// 4: replies the responder sent to senders it could not verify, for
	// the per-address and per-list rate limits ([responder] policy keys).
	`CREATE TABLE responder_replies (
	list     TEXT NOT NULL,
	address  TEXT NOT NULL,
	sent_at  TIMESTAMP NOT NULL
);
CREATE INDEX responder_replies_list_sent_at ON responder_replies(list, sent_at);
CREATE INDEX responder_replies_address ON responder_replies(list, address, sent_at)`,
	// 5: members the MTA refused permanently (5xx at RCPT) for one post:
	// taken out of that delivery, not retried, told to the owners.
	`CREATE TABLE refused_recipients (
	list       TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	post_id    {{BLOB}} NOT NULL,
	address    TEXT NOT NULL,
	reply      TEXT NOT NULL,
	refused_at TIMESTAMP NOT NULL,
	PRIMARY KEY (list, post_id, address)
);
CREATE INDEX refused_recipients_refused_at ON refused_recipients(refused_at)`,
	// 6: held posts expire (post.hold_expiry): when, and whether the
	// moderators were told about the hold.
	`ALTER TABLE holds ADD COLUMN expired_at TIMESTAMP;
ALTER TABLE holds ADD COLUMN notified_at TIMESTAMP`,
	// 7: claims on posts being delivered, so that the database (not a
	// process) settles which host delivers a post: owner and lease.
	`CREATE TABLE post_claims (
	list        TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	post_id     {{BLOB}} NOT NULL,
	owner       TEXT NOT NULL,
	lease_until TIMESTAMP NOT NULL,
	claimed_at  TIMESTAMP NOT NULL,
	PRIMARY KEY (list, post_id)
);
CREATE INDEX post_claims_lease_until ON post_claims(lease_until)`,
	// 8: an approved hold is being delivered until delivered_at is set
	// (hold approve resumes it); mail the responder writes inside a
	// transaction waits in the outbox and is sent after the commit.
	`ALTER TABLE holds ADD COLUMN delivered_at TIMESTAMP;
CREATE TABLE outbox (
	id         {{ID}},
	list       TEXT NOT NULL,
	sender     TEXT NOT NULL,
	recipients TEXT NOT NULL,
	message    {{BLOB}} NOT NULL,
	created_at TIMESTAMP NOT NULL,
	sent_at    TIMESTAMP
);
CREATE INDEX outbox_unsent ON outbox(sent_at, id)`,
	// 9: bounces (docs/bounces.md): each member's bounce score and
	// whether delivery to it is disabled; counters of the mail that
	// reached each list's bounce address, by kind (for metrics).
	`CREATE TABLE member_bounces (
	list            TEXT NOT NULL,
	address         TEXT NOT NULL,
	score           DOUBLE PRECISION NOT NULL DEFAULT 0,
	bounces         INTEGER NOT NULL DEFAULT 0,
	last_bounce_at  TIMESTAMP,
	last_counted_at TIMESTAMP,
	last_status     TEXT NOT NULL DEFAULT '',
	disabled_at     TIMESTAMP,
	PRIMARY KEY (list, address),
	FOREIGN KEY (list, address) REFERENCES members(list, address) ON DELETE CASCADE
);
CREATE INDEX member_bounces_disabled ON member_bounces(list, disabled_at);
CREATE TABLE bounce_counts (
	list TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	kind TEXT NOT NULL,
	n    BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (list, kind)
)`,
	// 10: a held post names its post id, once per list: the retry of a
	// transaction that failed after its hold was stored (the MTA or the
	// milter died before the answer) finds that hold instead of adding a
	// second one. Holds from before have none (NULLs never clash).
	`ALTER TABLE holds ADD COLUMN post_id {{BLOB}};
CREATE UNIQUE INDEX holds_post ON holds(list, post_id)`,
	// 11: list keys retired by "list key rotate" / "list key import",
	// kept (public and sealed secret) so that posts encrypted to them
	// still open during [keys] old_key_grace, and are recognised and
	// refused with a pointer to the new key after it.
	`CREATE TABLE old_list_keys (
	list        TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,
	fingerprint TEXT NOT NULL,
	public_key  {{BLOB}} NOT NULL,
	secret_key  {{BLOB}} NOT NULL,
	retired_at  TIMESTAMP NOT NULL,
	PRIMARY KEY (list, fingerprint)
)`,
}

// typeMap holds the per-engine spelling of the types that differ.
var typeMap = map[string]*strings.Replacer{
	EngineSQLite: strings.NewReplacer(
		"{{BLOB}}", "BLOB",
		"{{ID}}", "INTEGER PRIMARY KEY AUTOINCREMENT",
	),
	EnginePostgres: strings.NewReplacer(
		"{{BLOB}}", "BYTEA",
		"{{ID}}", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
	),
}

// migrationLock is the pg_advisory_xact_lock key that serialises Migrate
// across processes and hosts on PostgreSQL ("lcmigr" in ASCII).
const migrationLock = 0x6c636d696772

// Migrate brings the schema up to this program's version, applying each
// missing migration in its own transaction. It is idempotent, and safe to run from
// several processes at once: on PostgreSQL each transaction holds an
// advisory lock, on SQLite each takes the write lock at BEGIN. A database
// with a newer schema than this program knows is an error.
func (s *Store) Migrate(ctx context.Context) error {
	for i, m := range migrations {
		version := i + 1
		stmts := strings.Split(typeMap[s.engine].Replace(m), ";\n")
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			if s.engine == EnginePostgres {
				if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
					return fmt.Errorf("lock: %w", err)
				}
			}
			if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version    INTEGER PRIMARY KEY,
				applied_at TIMESTAMP NOT NULL
			)`); err != nil {
				return fmt.Errorf("create schema_migrations: %w", err)
			}
			var newest int
			if err := tx.GetContext(ctx, &newest, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`); err != nil {
				return fmt.Errorf("read schema version: %w", err)
			}
			if newest > len(migrations) {
				return fmt.Errorf("database schema version %d is newer than this program's %d: upgrade listcrypt", newest, len(migrations))
			}
			if newest >= version {
				return nil
			}
			for _, stmt := range stmts {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), version, ts(time.Now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("store: migrate %s to version %d: %w", s.engine, version, err)
		}
	}
	return nil
}

// CheckSchema reports whether the database has exactly the schema this
// program knows; the daemons call it at start instead of migrating (that
// is "listcrypt init"'s job).
func (s *Store) CheckSchema(ctx context.Context) error {
	var newest int
	err := s.db.GetContext(ctx, &newest, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("store: no listcrypt schema in the %s database (run \"listcrypt init\"): %w", s.engine, err)
	}
	switch {
	case newest < len(migrations):
		return fmt.Errorf("store: database schema version %d is older than this program's %d: run \"listcrypt init\" to migrate", newest, len(migrations))
	case newest > len(migrations):
		return fmt.Errorf("store: database schema version %d is newer than this program's %d: upgrade listcrypt", newest, len(migrations))
	}
	return nil
}
