#!/usr/bin/env bash
# install.sh - installs a release build of ztap on this machine (as root).
#   PREFIX=/usr  DESTDIR=  (DESTDIR stages into a directory, e.g. for packaging)
# Installs: ztapd, ztctl -> $PREFIX/bin; libztintercept.so -> $PREFIX/lib/ztap;
# config/ -> /etc/ztapd (existing files are never overwritten); systemd unit ->
# /lib/systemd/system; the ztapd system user (sysusers.d) and networks.d owned by it
# (tmpfiles.d), both applied at once when installing into / . Does not start anything.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
export PATH=/opt/swift/usr/bin:$PATH

swift build -c release --static-swift-stdlib --product ztapd
swift build -c release --static-swift-stdlib --product ztctl
[ -x scripts/build-intercept.sh ] && scripts/build-intercept.sh

install -d "$DESTDIR$PREFIX/bin" "$DESTDIR$PREFIX/lib/ztap" "$DESTDIR/etc/ztapd/networks.d" \
           "$DESTDIR/lib/systemd/system" "$DESTDIR$PREFIX/share/doc/ztap" \
           "$DESTDIR$PREFIX/lib/sysusers.d" "$DESTDIR$PREFIX/lib/tmpfiles.d"
install -m 0755 .build/release/ztapd .build/release/ztctl "$DESTDIR$PREFIX/bin/"
[ -f .build/intercept/libztintercept.so ] && install -m 0644 .build/intercept/libztintercept.so "$DESTDIR$PREFIX/lib/ztap/"
[ -f "$DESTDIR/etc/ztapd/ztapd.conf" ] || install -m 0644 config/ztapd.conf "$DESTDIR/etc/ztapd/ztapd.conf"
sed "s#/usr/bin/ztapd#$PREFIX/bin/ztapd#" systemd/ztapd.service > "$DESTDIR/lib/systemd/system/ztapd.service"
install -m 0644 systemd/ztapd.sysusers "$DESTDIR$PREFIX/lib/sysusers.d/ztapd.conf"
install -m 0644 systemd/ztapd.tmpfiles "$DESTDIR$PREFIX/lib/tmpfiles.d/ztapd.conf"
if [ -z "$DESTDIR" ] && command -v systemd-sysusers >/dev/null; then
    systemd-sysusers "$PREFIX/lib/sysusers.d/ztapd.conf"
    systemd-tmpfiles --create "$PREFIX/lib/tmpfiles.d/ztapd.conf"
fi
install -m 0644 README.md docs/*.md "$DESTDIR$PREFIX/share/doc/ztap/" 2>/dev/null || true
echo "installed ztap into ${DESTDIR:-/}$PREFIX (enable with: systemctl enable --now ztapd)"
