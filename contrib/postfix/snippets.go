// Package postfix holds the Postfix configuration that listcrypt ships:
// the lines an admin adds to main.cf and master.cf. The files themselves
// (main.cf.snippet, master.cf.snippet) are the product; this package
// embeds them so that contrib/postfix/rig can build a private Postfix from
// exactly those lines and the tests prove that they work.
package postfix

import _ "embed" // for the snippet files

// MainCF is the text of main.cf.snippet.
//
//go:embed main.cf.snippet
var MainCF string

// MasterCF is the text of master.cf.snippet.
//
//go:embed master.cf.snippet
var MasterCF string

// Transport is the text of responder.transport, the transport_maps table
// for one list (see TransportTable).
//
//go:embed responder.transport
var Transport string

// ReinjectService is the master.cf service name of the reinjection
// listener in MasterCF (host:port). The milter's default reinjection
// address must match it.
const ReinjectService = "127.0.0.1:10026"
