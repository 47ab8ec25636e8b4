#!/bin/sh
# contrib/debian/build-deb.sh: builds listcrypt_VERSION_ARCH.deb with
# dpkg-deb alone (no debhelper). Called by "make deb"; see README.md here.
#
# Environment: GO (go command), OUT (folder for the .deb, default bin),
# VERSION (Debian version; default derived from git describe, below).
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
GO=${GO:-go}
OUT=${OUT:-bin}
DEB=contrib/debian

# VERSION: "git describe --tags --always" mapped to a Debian version.
# A tag v1.2.3 gives 1.2.3; 4 commits after it, 1.2.3+4.gabc1234; no tag
# at all, 0~gitYYYYMMDDHHMMSS.abc1234 (the commit's date, so newer builds
# sort higher). Uncommitted changes are not part of the version.
if [ -z "${VERSION:-}" ]; then
	desc=$(git describe --tags --always)
	case $desc in
	v[0-9]* | [0-9]*.*)
		VERSION=$(printf '%s\n' "$desc" | sed -e 's/^v//' -e 's/-\([0-9][0-9]*\)-g\([0-9a-f]*\)$/+\1.g\2/' -e 's/-/~/g')
		;;
	*)
		VERSION=0~git$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd).$(git rev-parse --short HEAD)
		;;
	esac
fi
case $VERSION in
[0-9]*) ;;
*) echo "build-deb: version $VERSION must start with a digit" >&2; exit 1 ;;
esac

ARCH=$(dpkg --print-architecture)
GOARCH=$(printf '%s' "$ARCH" | sed -e 's/^i386$/386/' -e 's/^armhf$/arm/')
# File times in the package: the commit's time, so two builds of one commit
# give the same .deb.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$OUT/deb-root
rm -rf "$ROOT"
umask 022
mkdir -p "$ROOT/DEBIAN" "$ROOT/usr/bin" "$ROOT/etc/listcrypt" "$ROOT/lib/systemd/system" \
	"$ROOT/usr/lib/tmpfiles.d" "$ROOT/usr/share/doc/listcrypt/postfix" "$ROOT/usr/share/doc/listcrypt/docs"

# Binaries: static (pure Go; SQLite is modernc.org/sqlite), reproducible.
CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH "$GO" build -trimpath -buildvcs=false -ldflags='-s -w' \
	-o "$ROOT/usr/bin/" ./cmd/...

# Man pages, if any: contrib/man/NAME.SECTION -> /usr/share/man/manSECTION/NAME.SECTION.gz
for m in contrib/man/*.[158]; do
	[ -f "$m" ] || continue
	sec=${m##*.}
	mkdir -p "$ROOT/usr/share/man/man$sec"
	gzip -9n <"$m" >"$ROOT/usr/share/man/man$sec/$(basename "$m").gz"
done

# Config (a conffile: dpkg never overwrites an admin's edits).
install -m 0644 contrib/listcrypt.toml "$ROOT/etc/listcrypt/listcrypt.toml"
install -m 0644 $DEB/conffiles "$ROOT/DEBIAN/conffiles"

# The systemd unit from contrib/systemd: binaries in /usr/bin, and the
# runtime folder made by tmpfiles.d (listcrypt:postfix 0750), not by
# RuntimeDirectory= (which would hand it to listcrypt:listcrypt).
sed -e 's|/usr/local/bin/|/usr/bin/|g' \
	-e '/^RuntimeDirectory=/d' -e '/^RuntimeDirectoryMode=/d' \
	-e 's|^# systemd unit for listcrypt-milter\. Install to /etc/systemd/system/,$|# systemd unit for listcrypt-milter, from the listcrypt package. The package|' \
	-e 's|^# create the user (useradd --system --home /var/lib/listcrypt listcrypt),$|# made the listcrypt user and /run/listcrypt (tmpfiles.d). As listcrypt,|' \
	-e 's|^# run "listcrypt -c /etc/listcrypt/listcrypt.toml init" once, then$|# run "runuser -u listcrypt -- listcrypt init" once, then|' \
	contrib/systemd/listcrypt-milter.service >"$ROOT/lib/systemd/system/listcrypt-milter.service"
if grep -q -e /usr/local -e '^RuntimeDirectory' "$ROOT/lib/systemd/system/listcrypt-milter.service"; then
	echo "build-deb: the unit still names /usr/local or RuntimeDirectory" >&2
	exit 1
fi
chmod 0644 "$ROOT/lib/systemd/system/listcrypt-milter.service"
install -m 0644 $DEB/listcrypt.tmpfiles "$ROOT/usr/lib/tmpfiles.d/listcrypt.conf"

# Documentation.
D=$ROOT/usr/share/doc/listcrypt
install -m 0644 $DEB/copyright "$D/copyright"
install -m 0644 README.md "$D/README.md"
install -m 0644 $DEB/README.md "$D/README.Debian.md"
install -m 0644 contrib/listcrypt.toml "$D/listcrypt.toml.example"
install -m 0644 contrib/postfix/README.md contrib/postfix/*.snippet contrib/postfix/responder.transport "$D/postfix/"
install -m 0644 docs/*.md "$D/docs/"
if [ -d contrib/sendmail ]; then
	mkdir -p "$D/sendmail"
	for f in contrib/sendmail/*; do
		case $f in *.go) continue ;; esac
		[ -f "$f" ] && install -m 0644 "$f" "$D/sendmail/"
	done
fi

# Maintainer scripts.
for s in postinst prerm postrm; do
	install -m 0755 $DEB/$s "$ROOT/DEBIAN/$s"
done
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" $DEB/control.in >"$ROOT/DEBIAN/control"
chmod 0644 "$ROOT/DEBIAN/control"
(cd "$ROOT" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/md5sums"

find "$ROOT" -type d -exec chmod 0755 {} +
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

PKG=$OUT/listcrypt_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$PKG" >/dev/null
rm -rf "$ROOT"
echo "$PKG"
