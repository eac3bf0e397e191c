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
Depends: libnl-3-200, libnl-route-3-200, libcap2, libc6
Section: net
Priority: optional
Description: userspace TCP/IP networks for unmodified applications
 ztapd gives applications their own TCP/IP stack (written in Swift) on a TAP device;
 ztctl controls it; libztintercept.so (LD_PRELOAD) and ztap-seccomp (seccomp user
 notification, for static and Go programs) move an app's sockets onto a ztap network.
CONTROL
printf '/etc/ztapd/ztapd.conf\n' > "$STAGE/DEBIAN/conffiles"
dpkg-deb --root-owner-group --build "$STAGE" "out/ztap_${VERSION}_amd64.deb"
