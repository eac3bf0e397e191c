#!/usr/bin/env bash
# conn.sh - connection setup and memory: what many short or many concurrent connections cost an
# intercepted program and ztapd, next to kernel-to-kernel over a veth pair in the same run.
#
# Cases (MTU 1500 unless MTU= says otherwise; the servers are kernel sockets on the TAP's side):
#   connect+close   `connrate cc`: connect and close in a loop, connections/s
#   connect+echo    `connrate tcp`: connect, 1-byte echo, close, connections/s
#   10k open        `connrate open`: N (10000) concurrent non-blocking connects, seconds until
#                   all are established; then each echoes 4 KiB, 256 at a time (the burst); then all
#                   close
#   ztapd RSS       idle before anything; at the end of and 3 s after 40 bulk downloads from idle
#                   (`connrate bulk`, 2 s, then the program exits without closing); with the N
#                   connections open and idle, at the peak of their burst, 2 s after it, 3 s
#                   after they closed (they are in TIME-WAIT then, for 60 s)
# Baseline: the same commands namespace to namespace across a veth pair (RSS: ztap only).
#
# Everything runs in namespaces this script creates (zc-*) and deletes on exit; processes are
# stopped by the PIDs it started. Env: DUR=5 seconds per rate run, REPS=5 runs (median), MTU=1500,
# N=10000 concurrent connections (needs RLIMIT_NOFILE above it: the script raises it).
# On a shared machine run it only as DUR=1 REPS=1 (figures are then indicative only).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DUR=${DUR:-5}
REPS=${REPS:-5}
MTU=${MTU:-1500}
N=${N:-10000}
[ "$(id -u)" -eq 0 ] || { echo "conn.sh: needs root (namespaces, TAP)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

bench_init zcbench
swift build -c release --product ztctl >/dev/null
scripts/build-intercept.sh >/dev/null
gcc -O2 -o .build/bench/connrate bench/connrate.c
CONNRATE=$PWD/.build/bench/connrate
ZTCTL=$PWD/.build/release/ztctl
TAG=$$
NS_ZT=zc-zt-$TAG NS_VA=zc-va-$TAG NS_VB=zc-vb-$TAG

declare -A RESULT
record() { # name values...
    local name=$1; shift
    RESULT[$name]=$(printf '%s\n' "$@" | median)
    log "$name: $* -> median ${RESULT[$name]}"
    echo "case=$name median=${RESULT[$name]} runs=$*"
}
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$ZTAPD_PID/status"; }

# ztap: ztapd in its namespace, the kernel servers on the TAP's kernel side.
netns_new $NS_ZT
mkdir -p "$TMP/etc/networks.d" "$TMP/run"
# N connections of one user: above the default budgets (1024 sockets, 512 requests in flight)
# and MaxConnections (4096).
cat > "$TMP/etc/ztapd.conf" <<CONF
[Limits]
TCPSocketsPerUser=$((N + 1024))
PendingRequestsPerUser=1024
CONF
cat > "$TMP/etc/networks.d/bench.conf" <<CONF
[Network]
Interface=zctap
MTU=$MTU
Address=10.207.0.2/24
KernelAddress=10.207.0.1/24

[Stack]
MaxConnections=65536
CONF
ip netns exec $NS_ZT "$ZTAPD" --config-dir "$TMP/etc" --run-dir "$TMP/run" 2>"$TMP/ztapd.log" & PIDS+=($!)
ZTAPD_PID=$!
for _ in $(seq 100); do [ -S "$TMP/run/bench.sock" ] && break; sleep 0.1; done
[ -S "$TMP/run/bench.sock" ] || { cat "$TMP/ztapd.log" >&2; exit 1; }
ip netns exec $NS_ZT "$CONNRATE" tcpserve 10.207.0.1 7007 & PIDS+=($!)
ip netns exec $NS_ZT "$BLAST" serve 10.207.0.1 & PIDS+=($!)   # chargen on 19

# Baseline: two namespaces joined by a veth pair.
veth_pair $NS_VA $NS_VB zcva zcvb 10.208.0.1/24 10.208.0.2/24 "$MTU"
# The kernel client takes over its TIME-WAITs as ztap does (timestamps, after 1 s; Linux's default
# does so only on loopback): a few seconds of connect+close otherwise spend its whole range, and
# connect() slows down scanning the ports TIME-WAIT holds.
ip netns exec $NS_VA sysctl -q -w net.ipv4.tcp_tw_reuse=1
ip netns exec $NS_VB "$CONNRATE" tcpserve 10.208.0.2 7007 & PIDS+=($!)
ip netns exec $NS_VB "$BLAST" serve 10.208.0.2 & PIDS+=($!)
sleep 1

ZRUN=(ip netns exec $NS_ZT "$ZTCTL" run bench --run-dir "$TMP/run" --)
VRUN=(ip netns exec $NS_VA)
ZDST=10.207.0.1 VDST=10.208.0.2
RESULT[rss_idle]=$(rss_mib)

# The issue's burst first, from idle: 40 bulk downloads, ended after 2 s by the program exiting.
"${ZRUN[@]}" "$CONNRATE" bulk $ZDST 19 40 2 >/dev/null
RSS_BULK_END=$(rss_mib)
sleep 3
RSS_BULK=$(rss_mib)

for mode in cc tcp; do
    z=() v=()
    for _ in $(seq "$REPS"); do
        z+=("$("${ZRUN[@]}" "$CONNRATE" $mode $ZDST 7007 "$DUR")")
        v+=("$("${VRUN[@]}" "$CONNRATE" $mode $VDST 7007 "$DUR")")
        sleep 1
    done
    record "ztap_$mode" "${z[@]}"
    record "veth_$mode" "${v[@]}"
done

# N concurrent connections, driven phase by phase; RSS sampled between the phases.
open_run() { # RUN... ; sets OPEN_S BURST_S and (ztap) the RSS figures
    local peak=0 line
    coproc CR { "$@" "$CONNRATE" open "$DST" 7007 "$N" 4096 2>&1; }
    local in=${CR[1]} out=${CR[0]}
    echo go >&"$in"; read -r -u "$out" line; OPEN_S=${line#open }
    [ "$line" != "${line#open }" ] || { echo "conn.sh: open: $line" >&2; exit 1; }
    sleep 1; [ -n "${SAMPLE:-}" ] && RSS_OPEN=$(rss_mib)
    echo go >&"$in"
    if [ -n "${SAMPLE:-}" ]; then
        while ! read -r -t 0.05 -u "$out" line; do
            local r; r=$(rss_mib); peak=$(awk -v a="$peak" -v b="$r" 'BEGIN { print (b > a ? b : a) }')
        done
        RSS_PEAK=$peak
    else
        read -r -u "$out" line
    fi
    BURST_S=${line#burst }
    sleep 2; [ -n "${SAMPLE:-}" ] && RSS_AFTER_BURST=$(rss_mib)
    echo go >&"$in"; read -r -u "$out" line
    exec {in}>&-
    wait "$CR_PID" 2>/dev/null || true
}
zo=() vo=()
for _ in $(seq "$REPS"); do
    DST=$ZDST SAMPLE=1 open_run "${ZRUN[@]}"; zo+=("$OPEN_S")
    sleep 3; RSS_CLOSED=$(rss_mib)
    DST=$VDST SAMPLE= open_run "${VRUN[@]}"; vo+=("$OPEN_S")
    sleep 2
done
record ztap_open "${zo[@]}"
record veth_open "${vo[@]}"


echo
machine
echo "Command: bench/conn.sh (DUR=$DUR REPS=$REPS MTU=$MTU N=$N), median of $REPS runs (RSS: last run)"
echo
echo "| case (MTU $MTU) | ztap (ztctl run) | kernel veth | ztap / veth |"
echo "|---|---|---|---|"
echo "| connect + close, conn/s | ${RESULT[ztap_cc]} | ${RESULT[veth_cc]} | $(ratio "${RESULT[ztap_cc]}" "${RESULT[veth_cc]}") |"
echo "| connect + 1 B echo + close, conn/s | ${RESULT[ztap_tcp]} | ${RESULT[veth_tcp]} | $(ratio "${RESULT[ztap_tcp]}" "${RESULT[veth_tcp]}") |"
echo "| open $N concurrent connections, s | ${RESULT[ztap_open]} | ${RESULT[veth_open]} | $(ratio "${RESULT[ztap_open]}" "${RESULT[veth_open]}") |"
echo
echo "| ztapd RSS, MiB | |"
echo "|---|---|"
echo "| idle, before any connection | ${RESULT[rss_idle]} |"
echo "| 40 bulk downloads for 2 s from idle: at their end / 3 s later | $RSS_BULK_END / $RSS_BULK |"
echo "| $N connections open, idle | $RSS_OPEN |"
echo "| $N connections, peak during a 4 KiB echo on each | $RSS_PEAK |"
echo "| $N connections, 2 s after that burst | $RSS_AFTER_BURST |"
echo "| 3 s after the $N connections closed (in TIME-WAIT) | $RSS_CLOSED |"
