// Package config reads the site config, listcrypt.toml, shared by
// listcrypt, listcrypt-milter and listcrypt-responder. The Config struct
// is the source of truth: docs/config.md is generated from its tags and
// defaults (see TestReferenceUpToDate).
package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/listcrypt/listcrypt/policy/tomlx"
)

// DefaultPath is where the programs look without -c.
const DefaultPath = "/etc/listcrypt/listcrypt.toml"

// Config is the site config. Keys marked stable in docs/config.md are an
// interface that outside tooling relies on: never rename them.
type Config struct {
	StateDir       string   `toml:"state_dir" doc:"Folder for listcrypt's state (the SQLite database by default). Relative paths in this file resolve against the config file's folder."`
	Database       string   `toml:"database" doc:"State database: \"sqlite:PATH\" (embedded, one host) or a PostgreSQL URL \"postgres://user@host/db?sslmode=disable\" (several MTA hosts; lib/pq defaults to sslmode=require, so say what you want)."`
	PolicyDir      string   `toml:"policy_dir" doc:"Folder of list policy files, one \"*.toml\" per list (see docs/policy.md)."`
	PassphraseFile string   `toml:"passphrase_file" doc:"File holding the site passphrase that protects list secret keys at rest. Must be mode 0600 (or stricter); \"listcrypt init\" creates it."`
	Milter         Milter   `toml:"milter"`
	Reinject       Reinject `toml:"reinject"`
	Limits         Limits   `toml:"limits"`
	Log            Log      `toml:"log"`
	Metrics        Metrics  `toml:"metrics"`

	// File is the absolute path the config was read from ("" for Default).
	File string `toml:"-"`
}

// Milter configures listcrypt-milter's socket and its connection slots.
type Milter struct {
	Listen             string         `toml:"listen" doc:"Milter socket: \"unix:/path\" or \"inet:HOST:PORT\" (also \"inet:PORT@HOST\", as OpenDKIM writes it). The Postfix side is smtpd_milters = unix:/path or inet:HOST:PORT. Every local user can connect to an inet: socket; prefer unix: with socket_mode 0660 and socket_group."`
	SocketMode         string         `toml:"socket_mode" doc:"Permissions of a unix socket (octal), set after socket_group whatever the umask. With 0660 only the owner and socket_group can connect; smtpd runs as user postfix with only its primary group postfix, so it needs socket_group = \"postfix\" (or a setgid-postfix socket folder)."`
	SocketGroup        string         `toml:"socket_group" doc:"Group (name or number) that owns a unix socket, set with chown right after listening; a group name that does not exist stops the daemon at start. The daemon must be a member of the group (systemd: SupplementaryGroups=postfix) or run as root. Empty: the group the socket is created with (the daemon's, or the folder's when the folder is setgid)."`
	RecipientDelimiter string         `toml:"recipient_delimiter" doc:"The MTA's address extension delimiters (Postfix recipient_delimiter, Sendmail's \"+\"): RCPT TO devs+anything@ is recognised as the list devs@. Every character in the string is a delimiter; empty: none."`
	Timeout            tomlx.Duration `toml:"timeout" doc:"Longest silence of the MTA within a transaction (from MAIL FROM to the milter's final answer) before the milter drops the connection; also bounds each write to the MTA. Postfix's own limits are milter_command_timeout and milter_content_timeout. 0: no limit."`
	HandshakeTimeout   tomlx.Duration `toml:"handshake_timeout" doc:"Time a new connection has to complete milter option negotiation, counted from accept and not extended by anything it sends. The MTA negotiates at once. 0: no limit."`
	IdleTimeout        tomlx.Duration `toml:"idle_timeout" doc:"Longest time a negotiated connection may stay between transactions (before its first MAIL FROM, or after the answer to its last message), counted from the end of the last transaction; macro and abort packets do not extend it. Postfix connects when the SMTP client connects, so this also bounds EHLO, STARTTLS and AUTH; an SMTP client that waits longer before its next MAIL FROM gets 4xx and retries. A connection in a transaction that has been silent this long may be evicted when every slot is taken. 0: no limit."`
	MaxConnections     int            `toml:"max_connections" doc:"Most MTA connections served at once. When all slots are taken, a new connection evicts one that is not working on a message (see above) rather than waiting; it waits only while every slot is busy in a transaction."`
}

// TableDoc documents the table in the reference.
func (Milter) TableDoc() string {
	return "The milter daemon's socket and its connection slots.\n\n" +
		"Slots: each MTA connection takes one of `max_connections` slots. A connection is in one of three phases, each with its own read deadline: " +
		"*negotiating* (from accept until milter option negotiation is done: `handshake_timeout`, absolute), " +
		"*idle* (negotiated, between transactions: `idle_timeout`, absolute from the end of the last transaction), and " +
		"*in a transaction* (from MAIL FROM, RCPT TO or any message packet to the milter's final answer or an abort: `timeout`, renewed by every packet). " +
		"Every write to the MTA is bounded by `timeout` too, so a client that stops reading cannot hold a slot. " +
		"When a connection arrives and every slot is taken, the milter evicts, in this order: the longest-waiting connection that has not negotiated, " +
		"then the connection idle for the longest time, then the connection in a transaction that has been silent the longest, if that silence exceeds `idle_timeout`. " +
		"A transaction that is making progress is never evicted; only when every slot is such a transaction does the new connection wait for the first slot that frees up " +
		"(Postfix gives up after milter_command_timeout and answers 4xx). " +
		"So clients that connect and stay silent, or negotiate and then do nothing, cannot keep the MTA's connections out: each new MTA connection takes the slot of one of them. " +
		"A local client that floods the socket with new connections can still evict the MTA's idle connections (their SMTP clients get 4xx and retry), and one that speaks the protocol and keeps transactions moving is indistinguishable from a slow MTA: " +
		"keep the socket to the MTA only (unix: with `socket_mode = \"0660\"` and `socket_group`)."
}

// Reinject configures the MTA listener with milters off.
type Reinject struct {
	Address     string         `toml:"address" doc:"HOST:PORT of the MTA's SMTP listener with milters off (see contrib/postfix). Approved holds, extra recipient batches and responder replies are submitted here."`
	Connections int            `toml:"connections" doc:"Most SMTP connections the milter keeps open to the listener at once, shared by all its sessions. The batches of a post go out over them in parallel, several transactions per connection with PIPELINING; each batch is recorded right after the MTA's reply to its own DATA. Each connection is one smtpd process of the MTA. Measured in docs/outbound.md."`
	IdleTimeout tomlx.Duration `toml:"idle_timeout" doc:"A connection to the listener unused this long is closed (QUIT), so the MTA's smtpd does not hold it (Postfix's smtpd_timeout is 300s). Must be positive."`
}

// TableDoc documents the table in the reference.
func (Reinject) TableDoc() string {
	return "Where listcrypt submits mail it creates itself."
}

// Limits bound the work one input can cause. Each limit has a test.
type Limits struct {
	MaxMessageSize      tomlx.Size `toml:"max_message_size" doc:"Largest message the milter reads for any list; a list's post.max_size may lower it. Larger posts get 552 5.3.4 during DATA."`
	MaxMIMEDepth        int        `toml:"max_mime_depth" doc:"Deepest MIME nesting examined; deeper posts are refused (554 5.6.0)."`
	MaxMIMEParts        int        `toml:"max_mime_parts" doc:"Most MIME parts in one post; more are refused (554 5.6.0)."`
	MaxHeaderSize       tomlx.Size `toml:"max_header_size" doc:"Largest header block of a message or MIME part."`
	MaxDecompressedSize tomlx.Size `toml:"max_decompressed_size" doc:"Largest size OpenPGP compressed data may expand to (compression bombs are refused in bounded memory)."`
	MaxPKESK            int        `toml:"max_pkesk" doc:"Most public-key encrypted session key packets in one post (each may cost a private-key operation)."`
	MaxKeySize          tomlx.Size `toml:"max_key_size" doc:"Largest OpenPGP key accepted on import."`
	MaxKeySignatures    int        `toml:"max_key_signatures" doc:"Most signature packets one imported key may carry (certificate flooding)."`
}

// TableDoc documents the table in the reference.
func (Limits) TableDoc() string { return "Bounds on every input; each refusal is a clear error." }

// Log configures logging.
type Log struct {
	Level  string `toml:"level" values:"debug|info|warn|error" doc:"Least severe level written."`
	Format string `toml:"format" values:"text|json" doc:"Log line format on standard error: logfmt-like text or JSON, one line per decision."`
}

// TableDoc documents the table in the reference.
func (Log) TableDoc() string { return "Structured logs (log/slog) on standard error." }

// Metrics configures the Prometheus metrics of listcrypt-milter.
type Metrics struct {
	Listen string `toml:"listen" doc:"HOST:PORT where listcrypt-milter serves Prometheus metrics over HTTP at /metrics (posts by list and action, SMTP replies by code, delivery batches and recipients, decision and delivery times, holds waiting, bounce mail by kind and members disabled by bounces, milter connections in use, reinjection errors). Empty: off. Labels carry list addresses, actions, reason words and reply codes only: never a sender's or member's address, a subject or any content. Serve it on loopback or behind the scraper's network rules: it is not authenticated."`
}

// TableDoc documents the table in the reference.
func (Metrics) TableDoc() string { return "Prometheus metrics (off by default)." }

// Default returns the config used for every key a file does not set.
func Default() *Config {
	return &Config{
		StateDir:       "/var/lib/listcrypt",
		Database:       "sqlite:/var/lib/listcrypt/state.db",
		PolicyDir:      "/etc/listcrypt/lists.d",
		PassphraseFile: "/etc/listcrypt/passphrase",
		Milter: Milter{
			Listen:             "unix:/run/listcrypt/milter.sock",
			SocketMode:         "0660",
			Timeout:            tomlx.NewDuration("5m"),
			HandshakeTimeout:   tomlx.NewDuration("10s"),
			IdleTimeout:        tomlx.NewDuration("1m"),
			MaxConnections:     64,
			RecipientDelimiter: "+",
		},
		Reinject: Reinject{Address: "127.0.0.1:10026", Connections: 2, IdleTimeout: tomlx.NewDuration("5s")},
		Limits: Limits{
			MaxMessageSize:      tomlx.NewSize("25MB"),
			MaxMIMEDepth:        32,
			MaxMIMEParts:        500,
			MaxHeaderSize:       tomlx.NewSize("256KB"),
			MaxDecompressedSize: tomlx.NewSize("64MB"),
			MaxPKESK:            64,
			MaxKeySize:          tomlx.NewSize("256KB"),
			MaxKeySignatures:    256,
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// Load reads and validates the config file at path. Every problem is
// reported at once, each as "file:line: message".
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	src, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(abs, src)
}

// Parse validates src as the config file named file (absolute).
func Parse(file string, src []byte) (*Config, error) {
	c := Default()
	errs := tomlx.Decode(file, src, c)
	if errs.Unreadable {
		return nil, errs.Err()
	}
	// Unknown keys and invalid values are reported together: an admin
	// fixes every mistake in one go.
	c.File = file
	c.validate(errs)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	c.resolve(filepath.Dir(file))
	return c, nil
}

func (c *Config) validate(e *tomlx.Errors) {
	nonEmpty := func(v string, path ...string) {
		if strings.TrimSpace(v) == "" {
			e.At(path, "%s must not be empty", strings.Join(path, "."))
		}
	}
	nonEmpty(c.StateDir, "state_dir")
	nonEmpty(c.PolicyDir, "policy_dir")
	nonEmpty(c.PassphraseFile, "passphrase_file")
	if _, _, err := SplitDatabase(c.Database); err != nil {
		e.At([]string{"database"}, "%v", err)
	}
	if _, _, err := ParseListen(c.Milter.Listen); err != nil {
		e.At([]string{"milter", "listen"}, "%v", err)
	}
	if m, err := strconv.ParseUint(c.Milter.SocketMode, 8, 32); err != nil || m > 0o777 {
		e.At([]string{"milter", "socket_mode"}, "socket_mode %q is not an octal mode such as \"0660\"", c.Milter.SocketMode)
	}
	if g := c.Milter.SocketGroup; g != "" && (strings.TrimSpace(g) != g || strings.ContainsAny(g, ":/")) {
		e.At([]string{"milter", "socket_group"}, "socket_group %q is not a group name or number", g)
	}
	for _, d := range []struct {
		name string
		v    tomlx.Duration
	}{{"timeout", c.Milter.Timeout}, {"handshake_timeout", c.Milter.HandshakeTimeout}, {"idle_timeout", c.Milter.IdleTimeout}} {
		if d.v.Err != nil {
			e.At([]string{"milter", d.name}, "%s: %v", d.name, d.v.Err)
		} else if d.v.D < 0 {
			e.At([]string{"milter", d.name}, "%s must not be negative", d.name)
		}
	}
	if c.Milter.MaxConnections < 1 {
		e.At([]string{"milter", "max_connections"}, "max_connections must be at least 1")
	}
	if _, _, err := net.SplitHostPort(c.Reinject.Address); err != nil {
		e.At([]string{"reinject", "address"}, "reinject address %q is not HOST:PORT", c.Reinject.Address)
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			e.At([]string{"metrics", "listen"}, "metrics listen %q is not HOST:PORT", c.Metrics.Listen)
		}
	}
	if c.Reinject.Connections < 1 || c.Reinject.Connections > 64 {
		e.At([]string{"reinject", "connections"}, "connections must be between 1 and 64")
	}
	if d := c.Reinject.IdleTimeout; d.Err != nil {
		e.At([]string{"reinject", "idle_timeout"}, "idle_timeout: %v", d.Err)
	} else if d.D <= 0 {
		e.At([]string{"reinject", "idle_timeout"}, "idle_timeout must be positive")
	}
	sizes := []struct {
		name string
		v    tomlx.Size
		min  int64
	}{
		{"max_message_size", c.Limits.MaxMessageSize, 1024},
		{"max_header_size", c.Limits.MaxHeaderSize, 1024},
		{"max_decompressed_size", c.Limits.MaxDecompressedSize, 1024},
		{"max_key_size", c.Limits.MaxKeySize, 1024},
	}
	for _, s := range sizes {
		if s.v.Err != nil {
			e.At([]string{"limits", s.name}, "%s: %v", s.name, s.v.Err)
		} else if s.v.Bytes < s.min {
			e.At([]string{"limits", s.name}, "%s must be at least %d bytes", s.name, s.min)
		}
	}
	ints := []struct {
		name string
		v    int
	}{
		{"max_mime_depth", c.Limits.MaxMIMEDepth},
		{"max_mime_parts", c.Limits.MaxMIMEParts},
		{"max_pkesk", c.Limits.MaxPKESK},
		{"max_key_signatures", c.Limits.MaxKeySignatures},
	}
	for _, n := range ints {
		if n.v < 1 {
			e.At([]string{"limits", n.name}, "%s must be at least 1", n.name)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		e.At([]string{"log", "level"}, "log level %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		e.At([]string{"log", "format"}, "log format %q is not one of text, json", c.Log.Format)
	}
}

// resolve makes relative paths absolute against dir (the config's folder).
func (c *Config) resolve(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	c.StateDir = abs(c.StateDir)
	c.PolicyDir = abs(c.PolicyDir)
	c.PassphraseFile = abs(c.PassphraseFile)
	if engine, path, _ := SplitDatabase(c.Database); engine == "sqlite" {
		c.Database = "sqlite:" + abs(path)
	}
	if network, addr, _ := ParseListen(c.Milter.Listen); network == "unix" {
		c.Milter.Listen = "unix:" + abs(addr)
	}
}

// SplitDatabase returns the engine ("sqlite" or "postgres") and the
// engine's own DSN (a path for SQLite, the URL for PostgreSQL).
func SplitDatabase(db string) (engine, dsn string, err error) {
	switch {
	case strings.HasPrefix(db, "sqlite:"):
		p := strings.TrimPrefix(db, "sqlite:")
		p = strings.TrimPrefix(p, "//")
		if p == "" {
			return "", "", fmt.Errorf("database %q names no file (sqlite:/var/lib/listcrypt/state.db)", db)
		}
		return "sqlite", p, nil
	case strings.HasPrefix(db, "postgres://"), strings.HasPrefix(db, "postgresql://"):
		return "postgres", db, nil
	}
	return "", "", fmt.Errorf("database %q is neither sqlite:PATH nor postgres://...", db)
}

// ParseListen splits a milter socket spec into a net.Listen network and
// address. It accepts unix:/path, local:/path, inet:HOST:PORT,
// inet:PORT@HOST and inet6:[HOST]:PORT.
func ParseListen(s string) (network, addr string, err error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("milter listen %q is not unix:/path or inet:HOST:PORT", s)
	}
	switch scheme {
	case "unix", "local":
		return "unix", rest, nil
	case "inet", "inet6":
		if port, host, ok := strings.Cut(rest, "@"); ok {
			rest = net.JoinHostPort(host, port)
		}
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return "", "", fmt.Errorf("milter listen %q: %v", s, err)
		}
		return "tcp", rest, nil
	}
	return "", "", fmt.Errorf("milter listen %q: unknown socket type %q (unix, inet)", s, scheme)
}
