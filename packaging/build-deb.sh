#!/usr/bin/env bash
# build-deb.sh - builds out/ztap_VERSION_amd64.deb from a release build (dpkg-deb, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-0.1.0}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
DESTDIR=$STAGE packaging/install.sh
mkdir -p "$STAGE/DEBIAN" out
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: ztap
Version: $VERSION
Architecture: amd64
Maintainer: ztap developers <ztap@localhost>
Depends: libnl-3-200, libnl-route-3-200, libcap2, libseccomp2, libc6
Section: net
Priority: optional
Description: userspace TCP/IP networks for unmodified applications
 ztapd gives applications their own TCP/IP stack (written in Swift) on a TAP device;
 ztctl controls it; libztintercept.so moves an app's sockets onto a ztap network.
CONTROL
printf '/etc/ztapd/ztapd.conf\n' > "$STAGE/DEBIAN/conffiles"
# The ztapd user and networks.d owned by it, before the unit can start.
cat > "$STAGE/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    systemd-sysusers /usr/lib/sysusers.d/ztapd.conf || true
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/ztapd.conf || true
fi
POSTINST
chmod 0755 "$STAGE/DEBIAN/postinst"
dpkg-deb --root-owner-group --build "$STAGE" "out/ztap_${VERSION}_amd64.deb"
