#!/usr/bin/env bash
# try-deb.sh DEB - installs DEB into a throwaway copy of this machine's root, checks that it
# works, purges it and reports anything the purge left behind. As root; the real root is never
# written.
#
# How: a private mount namespace (unshare --mount) with an overlayfs whose lower layer is / and
# whose upper layer is a tmpfs. dpkg runs in a chroot onto the overlay, with fresh /run and /tmp
# (no /run/systemd/system, so no service is started on the host's systemd) and the host's /dev
# and a new /proc. Everything the package does lands in the tmpfs, which vanishes with the
# namespace. The upper layer after the purge is exactly what the package changed for good.
#
# Checks after `dpkg -i`: ztctl/ztapd --version, the ztapd user, /etc/ztapd/ztapd.conf with
# User=ztapd, networks.d owned by ztapd, the unit enabled, man pages render; then the installed
# ztapd runs from /etc/ztapd in a network namespace of its own (unshare --net: nothing reaches
# the host's network), drops to the ztapd user, joins a network the namespace's kernel pings,
# and `ztctl run` finds the installed library. After `dpkg --purge`: no user, no /etc/ztapd,
# no enablement link, and every file in the upper layer is either dpkg's own bookkeeping
# (/var/lib/dpkg, /var/log, /var/cache), the shadow-utils backups /etc/*- that any user change
# rewrites, or identical to the real root's.
#
# Prints "try-deb: ok" at the end; any failed check stops with "try-deb: FAILED: reason".
set -euo pipefail

if [ "${1:-}" != "--inside" ]; then
    [ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: try-deb.sh DEB" >&2; exit 64; }
    [ "$(id -u)" -eq 0 ] || { echo "try-deb.sh: needs root (mount namespaces, overlayfs, chroot)" >&2; exit 1; }
    exec unshare --mount --propagation private -- bash "$0" --inside "$(realpath "$1")"
fi
DEB=$2
fail() { echo "try-deb: FAILED: $*"; exit 1; }
ok() { echo "try-deb: $*"; }

T=$(mktemp -d /tmp/ztap-try-deb.XXXXXX)
# The mount namespace is private: these mounts, and the tmpfs holding every change, end with it.
trap 'umount -R "$T" 2>/dev/null; rmdir "$T" 2>/dev/null || true' EXIT
mount -t tmpfs -o size=4g,mode=0755 tmpfs "$T"
mkdir "$T/upper" "$T/work" "$T/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
R=$T/root
# A /dev of its own, with the modes Debian's udev rules give (/dev/net/tun 0666: ztapd opens it
# as the ztapd user for networks joined after start); the host's may differ (containers).
mount -t tmpfs -o mode=0755 tmpfs "$R/dev"
mkdir -m 0755 "$R/dev/net" "$R/dev/pts"
mknod -m 0666 "$R/dev/null" c 1 3
mknod -m 0666 "$R/dev/zero" c 1 5
mknod -m 0666 "$R/dev/full" c 1 7
mknod -m 0666 "$R/dev/random" c 1 8
mknod -m 0666 "$R/dev/urandom" c 1 9
mknod -m 0666 "$R/dev/tty" c 5 0
mknod -m 0666 "$R/dev/net/tun" c 10 200
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
cp "$DEB" "$R/tmp/ztap.deb"
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"; }

in_root dpkg-query -W ztap >/dev/null 2>&1 && fail "ztap is already installed on this machine"
in_root dpkg -i /tmp/ztap.deb > "$T/dpkg-install.log" 2>&1 || { cat "$T/dpkg-install.log"; fail "dpkg -i"; }
ok "installed $(in_root dpkg-query -W -f '${Package} ${Version}' ztap)"

v=$(in_root ztctl --version) || fail "ztctl --version"
[ "$v" = "$(in_root ztapd --version)" ] || fail "ztctl and ztapd versions differ"
ok "ztctl --version: $v"
in_root getent passwd ztapd >/dev/null || fail "no ztapd user"
[ "$(in_root stat -c %U /etc/ztapd/networks.d)" = ztapd ] || fail "networks.d is not ztapd's"
grep -qx 'User=ztapd' "$R/etc/ztapd/ztapd.conf" || fail "ztapd.conf does not set User=ztapd"
[ -L "$R/etc/systemd/system/multi-user.target.wants/ztapd.service" ] || fail "ztapd.service not enabled"
for page in ztapd.8 ztctl.8 ztapd.conf.5; do
    in_root man -l "/usr/share/man/man${page##*.}/$page.gz" 2>&1 | grep -q '^NAME' || fail "man page $page"
done
ok "user ztapd, networks.d owned by ztapd, unit enabled, man pages render"

# The installed daemon, the way the unit starts it, in network and PID namespaces of its own
# (whatever happens, it ends with the shell: the PID namespace's init).
in_root unshare --net --pid --fork --mount-proc sh -ec '
    ip link set lo up
    /usr/sbin/ztapd --config-dir /etc/ztapd --run-dir /run/ztapd 2>/tmp/ztapd.log &
    pid=$!
    trap "kill $pid 2>/dev/null || true" EXIT
    i=0
    until ztctl status >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 200 ] || { cat /tmp/ztapd.log; exit 1; }; sleep 0.05
    done
    ztctl status | grep -q "^user  *ztapd$"
    ztctl join lab --address 10.77.0.2/24 --kernel-address 10.77.0.1/24 >/dev/null
    ping -c 1 -W 2 10.77.0.2 >/dev/null
    [ "$(stat -c %U /etc/ztapd/networks.d/lab.conf)" = ztapd ]
    [ "$(ztctl run lab -- sh -c "echo \$LD_PRELOAD")" = /usr/lib/ztap/libztintercept.so ]
    kill -TERM $pid
    wait $pid
    trap - EXIT
' || fail "the installed ztapd did not run as the ztapd user, join, answer a ping and serve ztctl run"
ok "installed ztapd ran as ztapd, joined a network that answers ping, ztctl run found the library"

in_root dpkg --purge ztap > "$T/dpkg-purge.log" 2>&1 || { cat "$T/dpkg-purge.log"; fail "dpkg --purge"; }
in_root dpkg-query -W ztap >/dev/null 2>&1 && fail "ztap still known to dpkg"
in_root getent passwd ztapd >/dev/null && fail "user ztapd left"
in_root getent group ztapd >/dev/null && fail "group ztapd left"
for p in /etc/ztapd /var/lib/ztapd /run/ztapd /etc/systemd/system/multi-user.target.wants/ztapd.service; do
    [ -e "$R$p" ] || [ -L "$R$p" ] && fail "$p left"
done
ok "purged: no package, user, group, config or enablement left"

# What the purge left for good: the upper layer, entry by entry.
left=0
cd "$T/upper"
while IFS= read -r -d '' p; do
    case "$p" in
    var/lib/dpkg|var/lib/dpkg/*|var/log|var/log/*|var/cache|var/cache/*) continue ;;
    var/lib/systemd/deb-systemd-helper-*) continue ;;   # helper state dirs, emptied by purge
    etc/*-) continue ;;                                 # shadow-utils' backups of passwd, group...
    esac
    if [ -c "$p" ] && [ "$(stat -c %t:%T "$p")" = 0:0 ]; then
        echo "try-deb: deleted from the real root: /$p"; left=1; continue
    fi
    if [ -d "$p" ] && [ ! -L "$p" ]; then
        [ -d "/$p" ] || { echo "try-deb: directory left: /$p"; left=1; }
        continue
    fi
    if [ -L "$p" ]; then
        [ -L "/$p" ] && [ "$(readlink "$p")" = "$(readlink "/$p")" ] || { echo "try-deb: link left: /$p"; left=1; }
        continue
    fi
    cmp -s "$p" "/$p" 2>/dev/null || { echo "try-deb: file left or changed: /$p"; left=1; }
done < <(find . -mindepth 1 -printf '%P\0')
cd /
[ $left -eq 0 ] || fail "the purge left traces (above)"
ok "nothing left behind outside dpkg's own records"
ok "ok"
