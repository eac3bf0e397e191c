#!/usr/bin/env bash
# demo.sh - runs ztapd's main job on the built-in default config (config/) inside a network
# namespace this script creates, so nothing touches the host's network.
#
# It installs what is missing, builds ztapd, starts it in the namespace "ztdemo-PID" with the
# example network (TAP zt-example, stack 10.200.0.2, kernel side 10.200.0.1), shows the network,
# pings the stack and talks to its echo service, runs curl under the intercept (`ztctl run`) against
# a kernel-side web server, then keeps ztapd running in the foreground until Ctrl-C (or for
# DEMO_SECONDS seconds). Everything it created is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
# Root is needed (a network namespace and a TAP device): as root it just runs, otherwise it asks
# sudo, so `scripts/demo.sh` works both on a root-only machine without sudo and from a user account.
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && exec sudo -- "$PWD/scripts/demo.sh" "$@"
    echo "demo.sh: run as root (it creates a network namespace and a TAP device)" >&2
    exit 1
fi

scripts/install-deps.sh
scripts/build-release.sh --product ztapd 2>&1 | tail -1
scripts/build-release.sh --product ztctl 2>&1 | tail -1
scripts/build-intercept.sh >/dev/null
BIN=$PWD/.build/release

NS=ztdemo-$$
TMP=$(mktemp -d /tmp/ztdemo.XXXXXX)
ZTAPD_PID="" WEB_PID=""
cleanup() {
    [ -n "$WEB_PID" ] && kill -TERM "$WEB_PID" 2>/dev/null && wait "$WEB_PID" 2>/dev/null
    [ -n "$ZTAPD_PID" ] && kill -TERM "$ZTAPD_PID" 2>/dev/null && wait "$ZTAPD_PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

cp -r config "$TMP/etc"
mkdir -p "$TMP/run"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" "$BIN/ztapd" --config-dir "$TMP/etc" --run-dir "$TMP/run" &
ZTAPD_PID=$!
for _ in $(seq 100); do [ -S "$TMP/run/control.sock" ] && break; sleep 0.1; done
export ZTAPD_RUN_DIR=$TMP/run
sleep 0.5
echo "== ztctl status";  "$BIN/ztctl" status
echo "== ztctl list";    "$BIN/ztctl" list
echo "== ip addr (namespace $NS)"; ip -n "$NS" -br addr
echo "== ping the stack (10.200.0.2) from the kernel side"
ip netns exec "$NS" ping -c 3 -i 0.2 10.200.0.2 || true
echo "== TCP echo service"
echo "hello through ztap" | ip netns exec "$NS" timeout 3 nc -q 1 10.200.0.2 7 || true
echo "== curl under the intercept: ztctl run example -- curl http://10.200.0.1:8000/hello.txt"
mkdir -p "$TMP/www"; echo "hello from the kernel side, fetched over NetStack" > "$TMP/www/hello.txt"
ip netns exec "$NS" python3 -m http.server --bind 10.200.0.1 --directory "$TMP/www" 8000 >/dev/null 2>&1 &
WEB_PID=$!
for _ in $(seq 50); do ip netns exec "$NS" ss -Hltn 'src 10.200.0.1:8000' | grep -q . && break; sleep 0.1; done
ip netns exec "$NS" "$BIN/ztctl" run example -- curl -sS --max-time 5 http://10.200.0.1:8000/hello.txt || true
kill -TERM "$WEB_PID" 2>/dev/null; wait "$WEB_PID" 2>/dev/null || true; WEB_PID=""
echo "== ztapd is running (pid $ZTAPD_PID). Try: ZTAPD_RUN_DIR=$TMP/run $BIN/ztctl list"
echo "   or: ip netns exec $NS ping 10.200.0.2. Ctrl-C stops it and removes everything."
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait "$ZTAPD_PID"; fi
