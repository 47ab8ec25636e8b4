//go:build tools

// Package listcrypt pins the design card's modules in go.mod before every
// package that uses them exists. Remove an entry once real code imports it.
package listcrypt

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/ProtonMail/go-crypto/openpgp/v2"
	_ "github.com/emersion/go-message"
	_ "github.com/emersion/go-milter"
	_ "github.com/emersion/go-smtp"
	_ "github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	_ "golang.org/x/sync/errgroup"
	_ "modernc.org/sqlite"
)
