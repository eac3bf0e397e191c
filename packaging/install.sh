#!/usr/bin/env bash
# install.sh - builds ztap (release, Swift runtime linked statically) and installs it as root, or
# stages it into DESTDIR (packaging/build-deb.sh does that).
#
#   PREFIX=/usr      where binaries, libraries and shared data go
#   DESTDIR=         staging root (empty: this machine)
#   NO_BUILD=1       install what .build/release and .build/intercept already hold
#   STRIP=1          strip binaries (build-deb.sh sets it)
#
# Installs ztapd ($PREFIX/sbin), ztctl ($PREFIX/bin), libztintercept.so and ztap-seccomp ($PREFIX/lib/ztap), the
# unit (/lib/systemd/system), sysusers.d and tmpfiles.d entries, NetworkManager and networkd
# snippets that leave zt* interfaces unmanaged, man pages, bash/zsh/fish completions, docs and
# examples, and /etc/ztapd/ztapd.conf (never overwritten; it sets User=ztapd). Starts nothing and
# creates no user: a package's postinst does that; after a plain install run
#   systemd-sysusers; systemd-tmpfiles --create ztapd.conf; systemctl enable --now ztapd
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
export PATH=/opt/swift/usr/bin:$PATH
D=$DESTDIR

if [ -z "${NO_BUILD:-}" ]; then
    # The same build scripts/test.sh tests (a no-op after it).
    scripts/build-release.sh --product ztapd
    scripts/build-release.sh --product ztctl
    # Hardened like any Debian binary (fortify, stack protector, relro, bindnow).
    INTERCEPT_FLAGS=()
    if command -v dpkg-buildflags >/dev/null; then
        read -r -a INTERCEPT_FLAGS <<< "$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS) \
$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS) \
$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)"
    fi
    ZTI_OUT_DIR=.build/intercept-release scripts/build-intercept.sh "${INTERCEPT_FLAGS[@]}" >/dev/null
fi
LIB=.build/intercept-release/libztintercept.so
[ -f "$LIB" ] || LIB=.build/intercept/libztintercept.so
for f in .build/release/ztapd .build/release/ztctl "$LIB"; do
    [ -f "$f" ] || { echo "install.sh: $f is missing (build first, or unset NO_BUILD)" >&2; exit 1; }
done
if readelf -d .build/release/ztapd .build/release/ztctl | grep -q 'NEEDED.*libswift'; then
    echo "install.sh: the binaries need the Swift runtime; build them with scripts/build-release.sh (or unset NO_BUILD)" >&2
    exit 1
fi

install -d "$D$PREFIX/sbin" "$D$PREFIX/bin" "$D$PREFIX/lib/ztap" "$D/lib/systemd/system" \
           "$D$PREFIX/lib/sysusers.d" "$D$PREFIX/lib/tmpfiles.d" "$D$PREFIX/lib/NetworkManager/conf.d" \
           "$D$PREFIX/lib/systemd/network" "$D$PREFIX/share/man/man5" "$D$PREFIX/share/man/man8" \
           "$D$PREFIX/share/bash-completion/completions" "$D$PREFIX/share/zsh/vendor-completions" \
           "$D$PREFIX/share/fish/vendor_completions.d" "$D$PREFIX/share/doc/ztap/examples" \
           "$D/etc/ztapd/networks.d"
install -m 0755 .build/release/ztapd "$D$PREFIX/sbin/ztapd"
install -m 0755 .build/release/ztctl "$D$PREFIX/bin/ztctl"
install -m 0644 "$LIB" "$D$PREFIX/lib/ztap/libztintercept.so"
# The seccomp supervisor ztctl runs for static and Go programs (ztctl run --mode seccomp).
install -m 0755 "$(dirname "$LIB")/ztap-seccomp" "$D$PREFIX/lib/ztap/ztap-seccomp"
if [ -n "${STRIP:-}" ]; then
    strip --remove-section=.comment --remove-section=.note "$D$PREFIX/sbin/ztapd" "$D$PREFIX/bin/ztctl"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$D$PREFIX/lib/ztap/libztintercept.so" \
        "$D$PREFIX/lib/ztap/ztap-seccomp"
fi

sed "s#/usr/bin/ztapd#$PREFIX/sbin/ztapd#g" systemd/ztapd.service > "$D/lib/systemd/system/ztapd.service"
chmod 0644 "$D/lib/systemd/system/ztapd.service"
install -m 0644 packaging/debian/ztapd.sysusers "$D$PREFIX/lib/sysusers.d/ztapd.conf"
install -m 0644 packaging/debian/ztapd.tmpfiles "$D$PREFIX/lib/tmpfiles.d/ztapd.conf"
install -m 0644 packaging/debian/networkmanager.conf "$D$PREFIX/lib/NetworkManager/conf.d/90-ztap-unmanaged.conf"
install -m 0644 packaging/debian/networkd.network "$D$PREFIX/lib/systemd/network/10-ztap-unmanaged.network"

# Man pages compressed as Debian policy wants (no timestamp in the gzip header).
for page in docs/man/*.[0-9]; do
    section=${page##*.}
    gzip -9n < "$page" > "$D$PREFIX/share/man/man$section/$(basename "$page").gz"
    chmod 0644 "$D$PREFIX/share/man/man$section/$(basename "$page").gz"
done

# Completions come from the installed ztctl itself, so they always match its commands.
# bash-completion sources its files: no #! line.
"$D$PREFIX/bin/ztctl" --generate-completion-script bash | sed '1{/^#!/d}' > "$D$PREFIX/share/bash-completion/completions/ztctl"
"$D$PREFIX/bin/ztctl" --generate-completion-script zsh > "$D$PREFIX/share/zsh/vendor-completions/_ztctl"
"$D$PREFIX/bin/ztctl" --generate-completion-script fish > "$D$PREFIX/share/fish/vendor_completions.d/ztctl.fish"
chmod 0644 "$D$PREFIX/share/bash-completion/completions/ztctl" "$D$PREFIX/share/zsh/vendor-completions/_ztctl" \
           "$D$PREFIX/share/fish/vendor_completions.d/ztctl.fish"

install -m 0644 README.md docs/*.md "$D$PREFIX/share/doc/ztap/"
install -m 0644 config/networks.d/example.conf packaging/metrics/ztap-metrics.service \
                packaging/metrics/ztap-metrics.timer "$D$PREFIX/share/doc/ztap/examples/"

# The daemon's config: the commented defaults, with User=ztapd switched on (the packaged
# sysusers.d entry creates that user). An existing file is the admin's and stays.
if [ ! -f "$D/etc/ztapd/ztapd.conf" ]; then
    sed 's/^#User=ztapd$/User=ztapd/' config/ztapd.conf > "$D/etc/ztapd/ztapd.conf"
    chmod 0644 "$D/etc/ztapd/ztapd.conf"
    grep -q '^User=ztapd$' "$D/etc/ztapd/ztapd.conf" || { echo "install.sh: config/ztapd.conf has no #User=ztapd line" >&2; exit 1; }
fi
echo "installed ztap into ${DESTDIR:-/}"
