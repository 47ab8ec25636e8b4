// Package store is listcrypt's state database: lists and their keys,
// members and their public keys, the replay table, delivery records,
// moderation holds and responder challenges.
//
// # Engines
//
// One schema, written once in portable SQL through sqlx, runs on two
// engines, chosen by the DSN given to [Open]:
//
//   - "sqlite:PATH" — embedded SQLite (pure Go, modernc.org/sqlite), the
//     default for a single host. The file is opened in WAL mode with
//     busy_timeout=10000, foreign keys on and BEGIN IMMEDIATE transactions,
//     so concurrent writers (several milter and responder processes on one
//     host) queue instead of failing with "database is locked".
//   - "postgres://..." or "postgresql://..." — PostgreSQL through lib/pq,
//     for several MTA hosts sharing one database. lib/pq defaults to
//     sslmode=require: say sslmode=disable for a local socket or loopback,
//     sslmode=verify-full across a network.
//
// Where the engines differ the migrations use a small type map: bytes are
// BLOB on SQLite and BYTEA on PostgreSQL; the hold id is an
// AUTOINCREMENT rowid on SQLite and an identity column on PostgreSQL.
// Every statement is written with "?" placeholders and rebound for the
// engine; upserts use INSERT ... ON CONFLICT, and generated ids come back
// through RETURNING (lib/pq has no LastInsertId).
//
// Every race between processes or hosts (two MX hosts seeing the same
// replayed post, two moderators approving one hold, one challenge token
// used twice) is settled by a single statement or transaction in the
// database, never by the process.
//
// # Conventions
//
// Times are stored as TIMESTAMP in UTC, truncated to microseconds (the
// precision of PostgreSQL); every time returned is in UTC. Addresses are
// stored and compared exactly as given: callers normalise them (trim,
// lower-case) before calling. Secret key material and held messages are
// opaque bytes that the caller has already encrypted. Missing rows are
// reported as errors wrapping [ErrNotFound]; test with errors.Is.
//
// # Schema
//
// Versioned migrations (the slice in migrate.go, recorded in
// schema_migrations) create:
//
//	lists            address PK, key_fingerprint, public_key, secret_key,
//	                 keys_version (bumped by every member or list-key change), created_at
//	members          (list, address) PK, state, fingerprint, public_key, created_at, updated_at
//	member_key_ids   (list, key_id, address) PK: primary and subkey IDs, as the signed
//	                 int64 bit pattern of the uint64 key ID, to find a signer by issuer ID
//	replay           (list, digest) PK, post_id, seen_at: signature and ciphertext digests
//	deliveries       (list, post_id, batch) PK, delivered_at: outbound batches already sent
//	posts_complete   (list, post_id) PK, completed_at
//	holds            id PK, list, sender, recipients (JSON array), reason, message, state, created_at,
//	                 expired_at (post.hold_expiry), notified_at (moderators told)
//	challenges       token_hash PK, list, address, command, fingerprint,
//	                 created_at, expires_at, used_at (NULL until used)
//	delivered_recipients (list, post_id, address) PK, batch, delivered_at: who got a post
//	pending_keys     (list, address, fingerprint) PK, public_key, purpose, state: keys
//	                 waiting for "key confirm" or a moderator
//	responder_replies list, address, sent_at: replies to unverified senders, for
//	                 the [responder] rate limits
//	refused_recipients (list, post_id, address) PK, reply, refused_at: members the
//	                 MTA refused permanently for one post (not retried)
//
// Members, holds, replay, delivery and challenge rows reference their list
// and go with it.
//
// Package [github.com/listcrypt/listcrypt/keyring/store/storetest] provides
// migrated stores on both engines for tests.
package store
