#!/bin/sh
# Regenerates the OpenPGP test fixtures in this directory with GnuPG 2.2.
# See README.md for what each key is for. These are TEST-ONLY keys: their
# secret parts are published here on purpose, unprotected.
#
# Usage: sh testdata/keys/generate.sh   (from anywhere; needs gpg and python3)
set -eu

out=$(cd "$(dirname "$0")" && pwd)
GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill gpg-agent >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT
chmod 700 "$GNUPGHOME"
echo 'auto-key-locate local' >"$GNUPGHOME/gpg.conf"

# Every key is made at a frozen clock so creation and expiry dates are
# stable: tests evaluate the keys at 2025-06-01.
NOW='20250101T000000!'
g() { gpg --batch --no-tty --quiet --faked-system-time "$NOW" --passphrase '' --pinentry-mode loopback "$@"; }
fpr() { gpg --batch --with-colons --list-keys "$1" | awk -F: '/^fpr/ {print $10; exit}'; }

# newkey NAME UID PRIMARY-ALGO [SUBKEY-ALGO [EXPIRY]]
newkey() {
	g --quick-gen-key "$2" "$3" sign,cert "${5:-never}"
	if [ -n "${4:-}" ]; then
		g --quick-add-key "$(fpr "$2")" "$4" encr "${5:-never}"
	fi
}
export_pair() { # NAME UID-OR-FPR [nosec]
	gpg --batch --armor --export "$2" >"$out/$1.pub.asc"
	if [ "${3:-}" != nosec ]; then
		gpg --batch --armor --pinentry-mode loopback --passphrase '' \
			--export-secret-keys "$2" >"$out/$1.sec.asc"
	fi
}

# Ordinary members: Ed25519 primary + Curve25519 encryption subkey (the gpg
# 2.2 default). Alice has a second user ID for another address.
newkey alice 'Alice <alice@example.org>' ed25519 cv25519
g --quick-add-uid alice@example.org 'Alice Work <alice@work.example>'
newkey bob 'Bob <bob@example.org>' ed25519 cv25519
newkey mallory 'Mallory <mallory@evil.example>' ed25519 cv25519
newkey dave 'Dave <dave@example.org>' rsa3072 rsa3072

# Bob's key carries two third-party certifications (by Alice and Mallory).
g -u "$(fpr alice@example.org)" --quick-sign-key "$(fpr bob@example.org)"
g -u "$(fpr mallory@evil.example)" --quick-sign-key "$(fpr bob@example.org)"

# Refused keys.
newkey weak-rsa1024 'Weak <weak@example.org>' rsa1024 rsa1024
newkey dsa-elgamal 'Old <old@example.org>' dsa2048 elg2048
newkey signonly 'Signonly <signonly@example.org>' ed25519
g --cert-digest-algo SHA1 --quick-gen-key 'Sha1 <sha1@example.org>' rsa2048 sign,cert never
g --cert-digest-algo SHA1 --quick-add-key "$(fpr sha1@example.org)" rsa2048 encr never
newkey revoked 'Revoked <revoked@example.org>' ed25519 cv25519
# gpg stores a revocation certificate with its first line escaped by ':'.
sed 's/^:-----BEGIN/-----BEGIN/' "$GNUPGHOME/openpgp-revocs.d/$(fpr revoked@example.org).rev" >"$GNUPGHOME/rev.asc"
g --import "$GNUPGHOME/rev.asc"
# Expired: made a year earlier with a one-year lifetime (primary and subkey).
NOW='20240101T000000!'
newkey expired 'Expired <expired@example.org>' ed25519 cv25519 1y
NOW='20250101T000000!'

# Flooded: 300 third-party certifications by throw-away keys.
newkey flood 'Flood <flood@example.org>' ed25519 cv25519
floodfpr=$(fpr flood@example.org)
i=1
while [ $i -le 300 ]; do
	g --quick-gen-key "Signer $i <signer$i@flood.example>" ed25519 sign,cert never
	g -u "$(fpr "signer$i@flood.example")" --quick-sign-key "$floodfpr"
	i=$((i + 1))
done

# Huge: a 300 KiB photo ID (user attribute) pushes it over the 256 KiB limit.
newkey huge 'Huge <huge@example.org>' ed25519 cv25519
python3 -c '
import os, sys
jfif = bytes([0xFF, 0xD8, 0xFF, 0xE0, 0, 16]) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
sys.stdout.buffer.write(jfif + os.urandom(300 * 1024))' >"$GNUPGHOME/big.jpg"
printf 'addphoto\n%s\ny\nsave\n' "$GNUPGHOME/big.jpg" |
	gpg --batch --no-tty --quiet --faked-system-time "$NOW" --command-fd 0 --edit-key "$(fpr huge@example.org)"

for k in alice bob dave; do
	export_pair $k $k@example.org
done
export_pair mallory mallory@evil.example
export_pair weak-rsa1024 weak@example.org
export_pair dsa-elgamal old@example.org
export_pair signonly signonly@example.org
export_pair sha1 sha1@example.org
export_pair revoked revoked@example.org
export_pair expired expired@example.org
export_pair flood flood@example.org nosec
export_pair huge huge@example.org nosec
