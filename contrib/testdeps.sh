#!/usr/bin/env bash
# What the test suite drives for real: Postfix, PostgreSQL, GnuPG, sq,
# RNP, man/groff (man page rendering), and for the private Sendmail of
# contrib/sendmail/rig: m4 and sendmail-bin's libraries (the rig itself
# unpacks Debian's sendmail packages beside Postfix, which they conflict
# with; see contrib/sendmail/rig). (dpkg-deb, for the package test and the
# Sendmail rig, comes with dpkg.)
# "make test" runs this first. As root it installs whatever is missing
# (Debian, apt-get, DEBIAN_FRONTEND=noninteractive) and prepares what the
# tools need; as another user it only says what is missing (tests that
# need a missing tool then skip, or fail when CI is set).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(postfix postgresql gnupg sq rnp ca-certificates make man-db groff-base m4 liblockfile1 libwrap0)

missing=()
for pkg in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done

if [ "$(id -u)" -ne 0 ]; then
	if [ "${#missing[@]}" -gt 0 ]; then
		echo "testdeps: not root, not installing: ${missing[*]} (tests that need them skip; with CI set they fail)" >&2
	fi
	exit 0
fi

if [ "${#missing[@]}" -gt 0 ]; then
	echo "testdeps: installing ${missing[*]}"
	# Without this answer the postfix package writes a system configuration.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Postfix tools complain when the default main.cf does not exist; the
# tests run private instances with their own config directories.
if [ ! -e /etc/postfix/main.cf ]; then
	touch /etc/postfix/main.cf
fi
