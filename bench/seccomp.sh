#!/usr/bin/env bash
# seccomp.sh - what seccomp mode (ztap-seccomp) costs next to the LD_PRELOAD library: the same
# dynamic binaries under `ztctl run --mode preload` and `--mode seccomp`, and a Go program
# (CGO_ENABLED=0, seccomp only: the library cannot reach it).
#
# Cases (MTU 2800 unless MTU= says otherwise), all against kernel peers on the TAP's kernel side:
#   bulk up      tcpblast send KERNEL 9       app writes to a kernel discard server, Gbit/s
#   bulk down    tcpblast recv KERNEL 19      app reads from a kernel chargen server, Gbit/s
#   connect      connrate tcp KERNEL 7        connect + 1-byte echo + close per iteration, conn/s
#   udp rr       connrate udp KERNEL 7        64-byte datagram request/response, round trips/s
#   go get       goprobe get (a Go program, CGO_ENABLED=0) of a tiny file, 20 runs: ms per
#                whole program (start, connect, GET, exit), seccomp only
# The bulk cases should be equal (the data path is a native AF_UNIX stream in both modes); the
# control path pays a notification round trip per trapped call in seccomp mode, and datagrams go
# through the supervisor.
#
# Everything runs in a namespace this script creates (zs-*) and deletes on exit; processes are
# stopped by the PIDs it started. Env: DUR=5 seconds per run, REPS=5 runs (median), MTU=2800.
# On a shared machine run it only as DUR=1 REPS=1 (figures are then indicative only).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DUR=${DUR:-5}
REPS=${REPS:-5}
MTU=${MTU:-2800}
[ "$(id -u)" -eq 0 ] || { echo "seccomp.sh: needs root (namespaces, TAP)" >&2; exit 1; }

bench_init zsbench
swift build -c release --product ztctl >/dev/null
scripts/build-intercept.sh >/dev/null
gcc -O2 -o .build/bench/connrate bench/connrate.c
CONNRATE=$PWD/.build/bench/connrate
ZTCTL=$PWD/.build/release/ztctl
GOPROBE=
if command -v go >/dev/null; then
    GOPROBE=$PWD/.build/bench/goprobe
    (cd Tests/integration/goprobe && CGO_ENABLED=0 GOFLAGS=-mod=mod GOPROXY=off \
        GOCACHE=$PWD/../../../.build/gocache GOPATH=$PWD/../../../.build/gopath go build -o "$GOPROBE" .)
fi
TAG=$$
NS=zs-zt-$TAG

declare -A RESULT
record() { # name values...
    local name=$1; shift
    RESULT[$name]=$(printf '%s\n' "$@" | median)
    log "$name: $* -> median ${RESULT[$name]}"
    echo "case=$name median=${RESULT[$name]} runs=$*"
}

netns_new "$NS"
mkdir -p "$TMP/etc/networks.d" "$TMP/run"
cat > "$TMP/etc/networks.d/bench.conf" <<CONF
[Network]
Interface=zstap
MTU=$MTU
Address=10.205.0.2/24
KernelAddress=10.205.0.1/24
CONF
ip netns exec "$NS" "$ZTAPD" --config-dir "$TMP/etc" --run-dir "$TMP/run" 2>"$TMP/ztapd.log" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$TMP/run/bench.sock" ] && break; sleep 0.1; done
[ -S "$TMP/run/bench.sock" ] || { cat "$TMP/ztapd.log" >&2; exit 1; }
ip netns exec "$NS" "$BLAST" serve 10.205.0.1 & PIDS+=($!)
ip netns exec "$NS" "$CONNRATE" serve 10.205.0.1 7 & PIDS+=($!)
# A kernel HTTP server for the Go client's connection loop (keep-alive off: one connection each).
mkdir -p "$TMP/www" && echo ok > "$TMP/www/ok"
ip netns exec "$NS" python3 -m http.server --bind 10.205.0.1 --directory "$TMP/www" 8000 >/dev/null 2>&1 & PIDS+=($!)
sleep 1

run_mode() { # MODE CMD...
    local mode=$1; shift
    ip netns exec "$NS" "$ZTCTL" run bench --run-dir "$TMP/run" --mode "$mode" -- "$@"
}
for mode in preload seccomp; do
    up=() down=() conn=() udp=()
    for _ in $(seq "$REPS"); do
        up+=("$(run_mode $mode "$BLAST" send 10.205.0.1 9 "$DUR" | awk '{print $1}')")
        down+=("$(run_mode $mode "$BLAST" recv 10.205.0.1 19 "$DUR" | awk '{print $1}')")
        conn+=("$(run_mode $mode "$CONNRATE" tcp 10.205.0.1 7 "$DUR")")
        udp+=("$(run_mode $mode "$CONNRATE" udp 10.205.0.1 7 "$DUR")")
    done
    record "${mode}_bulk_up" "${up[@]}"
    record "${mode}_bulk_down" "${down[@]}"
    record "${mode}_connect" "${conn[@]}"
    record "${mode}_udp_rr" "${udp[@]}"
done
# Go: whole-program runs (process start included), the way such a client is used from scripts.
if [ -n "$GOPROBE" ]; then
    g=()
    for _ in $(seq "$REPS"); do
        t0=$(date +%s.%N)
        for _ in $(seq 20); do run_mode seccomp "$GOPROBE" get http://10.205.0.1:8000/ok /dev/null >/dev/null; done
        t1=$(date +%s.%N)
        g+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 / 20 }')")
    done
    record go_get_ms "${g[@]}"
fi

echo
machine
echo "Command: bench/seccomp.sh (DUR=$DUR REPS=$REPS MTU=$MTU), median of $REPS runs"
echo
echo "| case (MTU $MTU) | LD_PRELOAD (--mode preload) | seccomp (--mode seccomp) | seccomp / preload |"
echo "|---|---|---|---|"
for c in bulk_up:"bulk app -> kernel, Gbit/s" bulk_down:"bulk kernel -> app, Gbit/s" \
         connect:"connect + 1 B echo + close, conn/s" udp_rr:"UDP 64 B request/response, round trips/s"; do
    k=${c%%:*} label=${c#*:}
    echo "| $label | ${RESULT[preload_$k]} | ${RESULT[seccomp_$k]} | $(ratio "${RESULT[seccomp_$k]}" "${RESULT[preload_$k]}") |"
done
[ -n "$GOPROBE" ] && echo "| Go HTTP GET, whole program (start, connect, GET, exit), ms | - | ${RESULT[go_get_ms]} | - |"
true
