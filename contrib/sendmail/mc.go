// Package sendmail holds the Sendmail configuration that listcrypt ships:
// the lines an admin adds to sendmail.mc (listcrypt.mc) and the command
// responder's alias and include file. The files themselves are the
// product; this package embeds listcrypt.mc so that contrib/sendmail/rig
// can build a private Sendmail from exactly those lines and the tests
// prove that they work.
package sendmail

import _ "embed" // for listcrypt.mc

// MC is the text of listcrypt.mc.
//
//go:embed listcrypt.mc
var MC string

// MilterSocket is the milter socket listcrypt.mc names (Sendmail syntax,
// "local:PATH"); the default [milter] listen of listcrypt.toml.
const MilterSocket = "local:/run/listcrypt/milter.sock"

// ReinjectPort is the port of the reinjection listener in listcrypt.mc
// (on 127.0.0.1); the default [reinject] address is 127.0.0.1:10026.
const ReinjectPort = 10026

// ResponderUser is the user listcrypt.mc trusts (confTRUSTED_USERS) so
// that Sendmail runs the responder of an :include: file owned by it.
const ResponderUser = "listcrypt"
