#!/usr/bin/env bash
# build-deb.sh - builds out/ztap_VERSION_amd64.deb: a release build staged by install.sh, plus
# Debian metadata (control with dependencies from dpkg-shlibdeps, conffiles, md5sums, maintainer
# scripts from packaging/debian/). Uses dpkg-deb only, no debhelper, no network.
#
#   VERSION=x.y.z    default: ztapVersion from Sources/ZTService/Daemon.swift
#   NO_BUILD=1       package what is already built (install.sh checks that it is usable)
#   OUT=dir          where the .deb goes (default out/)
#   DEB_COMPRESS_LEVEL=1..9   xz level (default 6; 1 compresses six times faster, 15% larger)
#
# Check it with `lintian out/ztap_*.deb`; Tests/integration/test_deb.py installs and purges it
# in a throwaway root.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-$(sed -n 's/^public let ztapVersion = "\(.*\)"$/\1/p' Sources/ZTService/Daemon.swift)}
[ -n "$VERSION" ] || { echo "build-deb.sh: cannot find ztapVersion; set VERSION" >&2; exit 1; }
OUT=${OUT:-out}
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
chmod 0755 "$STAGE"

DESTDIR=$STAGE STRIP=1 packaging/install.sh >/dev/null
# networks.d belongs to ztapd's user: tmpfiles.d makes it at install time, not dpkg.
rmdir "$STAGE/etc/ztapd/networks.d"

DOC=$STAGE/usr/share/doc/ztap
install -m 0644 packaging/debian/copyright "$DOC/copyright"
# A native package's changelog; its date is the last commit's, so rebuilds are identical.
WHEN=$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
printf 'ztap (%s) unstable; urgency=medium\n\n  * Release %s: see /usr/share/doc/ztap/README.md.\n\n -- ztap developers <ztap@ztap.invalid>  %s\n' \
    "$VERSION" "$VERSION" "$WHEN" | gzip -9n > "$DOC/changelog.gz"
chmod 0644 "$DOC/changelog.gz"
if [ -f packaging/debian/lintian-overrides ]; then
    install -D -m 0644 packaging/debian/lintian-overrides "$STAGE/usr/share/lintian/overrides/ztap"
fi

# Shared-library dependencies of what is shipped, as dpkg-shlibdeps computes them.
SHLIBS=$(mktemp -d)
mkdir "$SHLIBS/debian"
printf 'Source: ztap\nMaintainer: ztap developers <ztap@ztap.invalid>\n\nPackage: ztap\nArchitecture: any\n' \
    > "$SHLIBS/debian/control"
DEPENDS=$(cd "$SHLIBS" && dpkg-shlibdeps -O -e"$STAGE/usr/sbin/ztapd" -e"$STAGE/usr/bin/ztctl" \
          -e"$STAGE/usr/lib/ztap/libztintercept.so" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
rm -rf "$SHLIBS"
[ -n "$DEPENDS" ] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

mkdir -m 0755 "$STAGE/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"
printf '/etc/ztapd/ztapd.conf\n' > "$STAGE/DEBIAN/conffiles"
(cd "$STAGE" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums)
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: ztap
Version: $VERSION
Architecture: $ARCH
Maintainer: ztap developers <ztap@ztap.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: $DEPENDS, systemd | systemd-standalone-sysusers | systemd-sysusers
Suggests: tcpdump, prometheus-node-exporter
Section: net
Priority: optional
Description: userspace TCP/IP networks for unmodified applications
 ztap gives applications their own TCP/IP stack on a virtual Ethernet network.
 ztapd creates a TAP device per network, configures it over netlink and answers
 its frames with NetStack, a TCP/IP stack written in Swift; ztctl joins and
 leaves networks, edits their configuration in place, lists connections with
 their TCP internals, captures frames in pcap format and prints metrics for
 Prometheus; libztintercept.so (LD_PRELOAD) and ztap-seccomp (seccomp user
 notification, for static and Go programs) move an application's sockets onto
 a network (ztctl run NAME -- COMMAND).
 .
 The service runs as the ztapd system user with only CAP_NET_ADMIN. Interfaces
 named zt* are left unmanaged by NetworkManager and systemd-networkd.
CONTROL
mkdir -p "$OUT"
DEB="$OUT/ztap_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz -z"${DEB_COMPRESS_LEVEL:-6}" --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
