#!/usr/bin/env bash
# intercept.sh - unmodified programs on a ztap network (LD_PRELOAD intercept -> ztapd ->
# NetStack -> TAP), next to kernel-to-kernel over a veth pair measured in the same run.
#
# Cases (MTU 2800 unless MTU= says otherwise):
#   iperf3 up    `ztctl run bench -- iperf3 -c KERNEL`     app on ztap sends to kernel iperf3
#   iperf3 down  `ztctl run bench -- iperf3 -c KERNEL -R`  kernel iperf3 sends to the app
#   rr           `ztctl run bench -- tcpblast rr KERNEL 7` 64-byte request/response against a
#                kernel echo server, median round trip
# Baseline: the same commands without ztap, namespace to namespace across a veth pair.
#
# Everything runs in namespaces this script creates (zi-*) and deletes on exit; processes are
# stopped by the PIDs it started. Env: DUR=5 seconds per run, REPS=5 runs (median), MTU=2800,
# OFFLOAD=yes (the network's Offload=: virtio header, TSO/checksum offloads).
# Output: one line per case on stdout, then a Markdown table (paste into BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DUR=${DUR:-5}
REPS=${REPS:-5}
MTU=${MTU:-2800}
OFFLOAD=${OFFLOAD:-yes}
[ "$(id -u)" -eq 0 ] || { echo "intercept.sh: needs root (namespaces, TAP)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "intercept.sh: iperf3 missing (scripts/install-deps.sh)" >&2; exit 1; }

bench_init zibench
swift build -c release --product ztctl >/dev/null
scripts/build-intercept.sh >/dev/null
ZTCTL=$PWD/.build/release/ztctl
TAG=$$
NS_ZT=zi-zt-$TAG NS_VA=zi-va-$TAG NS_VB=zi-vb-$TAG
# Received rate of an iperf3 -J run, Gbit/s (fails the run on an iperf3 error).
iperf_gbps() {
    python3 -c 'import json,sys; r=json.load(sys.stdin); e=r.get("error")
if e: sys.exit("iperf3: " + e)
print("%.3f" % (r["end"]["sum_received"]["bits_per_second"] / 1e9))'
}

declare -A RESULT
record() { # name values...
    local name=$1; shift
    RESULT[$name]=$(printf '%s\n' "$@" | median)
    log "$name: $* -> median ${RESULT[$name]}"
    echo "case=$name median=${RESULT[$name]} runs=$*"
}

# ztap: ztapd in its namespace; the kernel side of the TAP runs the servers.
netns_new $NS_ZT
mkdir -p "$TMP/etc/networks.d" "$TMP/run"
cat > "$TMP/etc/networks.d/bench.conf" <<CONF
[Network]
Interface=zitap
MTU=$MTU
Address=10.203.0.2/24
KernelAddress=10.203.0.1/24
[Stack]
Offload=$OFFLOAD
CONF
ip netns exec $NS_ZT "$ZTAPD" --config-dir "$TMP/etc" --run-dir "$TMP/run" 2>"$TMP/ztapd.log" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$TMP/run/bench.sock" ] && break; sleep 0.1; done
[ -S "$TMP/run/bench.sock" ] || { cat "$TMP/ztapd.log" >&2; exit 1; }
ip netns exec $NS_ZT iperf3 -s -B 10.203.0.1 -p 5301 >/dev/null 2>&1 & PIDS+=($!)
ip netns exec $NS_ZT "$BLAST" serve 10.203.0.1 & PIDS+=($!)

# Baseline: two namespaces joined by a veth pair.
veth_pair $NS_VA $NS_VB ziva zivb 10.204.0.1/24 10.204.0.2/24 "$MTU"
ip netns exec $NS_VB iperf3 -s -B 10.204.0.2 -p 5301 >/dev/null 2>&1 & PIDS+=($!)
ip netns exec $NS_VB "$BLAST" serve 10.204.0.2 & PIDS+=($!)
sleep 1

ZRUN=(ip netns exec $NS_ZT "$ZTCTL" run bench --run-dir "$TMP/run" --)
VRUN=(ip netns exec $NS_VA)
for dir in up down; do
    R=(); [ $dir = down ] && R=(-R)
    z=() v=()
    for _ in $(seq "$REPS"); do
        z+=("$("${ZRUN[@]}" iperf3 -c 10.203.0.1 -p 5301 -t "$DUR" -J "${R[@]}" | iperf_gbps)")
        v+=("$("${VRUN[@]}" iperf3 -c 10.204.0.2 -p 5301 -t "$DUR" -J "${R[@]}" | iperf_gbps)")
    done
    record "ztap_iperf3_$dir" "${z[@]}"
    record "veth_iperf3_$dir" "${v[@]}"
done
z=() v=()
for _ in $(seq "$REPS"); do
    z+=("$("${ZRUN[@]}" "$BLAST" rr 10.203.0.1 7 "$DUR" 64 | awk '{print $1}')")
    v+=("$("${VRUN[@]}" "$BLAST" rr 10.204.0.2 7 "$DUR" 64 | awk '{print $1}')")
done
record ztap_rr "${z[@]}"
record veth_rr "${v[@]}"

echo
machine
echo "Command: bench/intercept.sh (DUR=$DUR REPS=$REPS MTU=$MTU OFFLOAD=$OFFLOAD), median of $REPS runs"
echo
echo "| case (MTU $MTU) | ztap (ztctl run) | kernel veth | ztap / veth |"
echo "|---|---|---|---|"
echo "| iperf3 app -> kernel, Gbit/s | ${RESULT[ztap_iperf3_up]} | ${RESULT[veth_iperf3_up]} | $(ratio "${RESULT[ztap_iperf3_up]}" "${RESULT[veth_iperf3_up]}") |"
echo "| iperf3 kernel -> app (-R), Gbit/s | ${RESULT[ztap_iperf3_down]} | ${RESULT[veth_iperf3_down]} | $(ratio "${RESULT[ztap_iperf3_down]}" "${RESULT[veth_iperf3_down]}") |"
echo "| 64 B request/response, median µs | ${RESULT[ztap_rr]} | ${RESULT[veth_rr]} | $(ratio "${RESULT[ztap_rr]}" "${RESULT[veth_rr]}") |"
