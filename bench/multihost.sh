#!/usr/bin/env bash
# multihost.sh - bulk TCP across hosts on a [VXLAN] network (issue 14), next to the same
# transfer over the kernel's own VXLAN and over a plain veth, measured in the same run.
#
# Two namespaces are the hosts A and B, joined by a veth underlay (10.209.0.1/.2, MTU 1500); each
# runs its own ztapd with network "mh" over VXLAN (stacks 10.208.0.2/.3, kernel sides on the
# bridges .11/.12, MTU $MTU).
# Cases:
#   ztap stack->stack  `ztctl run mh -- iperf3 -c STACK_B` on A against
#                      `ztctl run mh -- iperf3 -s -B STACK_B` on B: NetStack on both ends, VXLAN between
#   kernel over VXLAN  iperf3 between the two bridges' kernel addresses over the same VXLAN devices
#   plain veth         iperf3 between two other namespaces joined by a veth pair, MTU $MTU
#
# Everything runs in namespaces this script creates (zm-*) and deletes on exit; processes are
# stopped by the PIDs it started. Env: DUR=5 seconds per run, REPS=5 runs (median), MTU=1400.
# A short check that the script works: DUR=1 REPS=1 bench/multihost.sh
# Output: one line per case on stdout, then a Markdown table (paste into BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DUR=${DUR:-5}
REPS=${REPS:-5}
MTU=${MTU:-1400}
[ "$(id -u)" -eq 0 ] || { echo "multihost.sh: needs root (namespaces, TAP, VXLAN)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "multihost.sh: iperf3 missing (scripts/install-deps.sh)" >&2; exit 1; }

bench_init zmbench
swift build -c release --product ztctl >/dev/null
scripts/build-intercept.sh >/dev/null
ZTCTL=$PWD/.build/release/ztctl
TAG=$$
NS_A=zm-a-$TAG NS_B=zm-b-$TAG NS_VA=zm-va-$TAG NS_VB=zm-vb-$TAG
STACK_B=10.208.0.3 KERNEL_B=10.208.0.12
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

# Hosts A and B on a veth underlay, each with its own ztapd and network mh.
veth_pair $NS_A $NS_B zmua zmub 10.209.0.1/24 10.209.0.2/24 1500
i=0
for h in A B; do
    ns=NS_$h; ns=${!ns}
    me=$((i + 1)) other=$((2 - i))
    mkdir -p "$TMP/$h/etc/networks.d" "$TMP/$h/run"
    cat > "$TMP/$h/etc/networks.d/mh.conf" <<CONF
[Network]
MTU=$MTU
Address=10.208.0.$((i + 2))/24
KernelAddress=10.208.0.$((i + 11))/24

[VXLAN]
VNI=4242
Local=10.209.0.$me
Remote=10.209.0.$other
CONF
    ip netns exec "$ns" "$ZTAPD" --config-dir "$TMP/$h/etc" --run-dir "$TMP/$h/run" 2>"$TMP/$h/ztapd.log" & PIDS+=($!)
    i=$((i + 1))
done
for h in A B; do
    for _ in $(seq 100); do [ -S "$TMP/$h/run/mh.sock" ] && break; sleep 0.1; done
    [ -S "$TMP/$h/run/mh.sock" ] || { cat "$TMP/$h/ztapd.log" >&2; exit 1; }
done
ZRUN_A=(ip netns exec $NS_A "$ZTCTL" run mh --run-dir "$TMP/A/run" --)
ZRUN_B=(ip netns exec $NS_B "$ZTCTL" run mh --run-dir "$TMP/B/run" --)
"${ZRUN_B[@]}" iperf3 -s -B $STACK_B -p 5301 >/dev/null 2>&1 & PIDS+=($!)
ip netns exec $NS_B iperf3 -s -B $KERNEL_B -p 5302 >/dev/null 2>&1 & PIDS+=($!)

# Baseline: two more namespaces joined by a plain veth pair with the network's MTU.
veth_pair $NS_VA $NS_VB zmva zmvb 10.207.0.1/24 10.207.0.2/24 "$MTU"
ip netns exec $NS_VB iperf3 -s -B 10.207.0.2 -p 5303 >/dev/null 2>&1 & PIDS+=($!)
ip netns exec $NS_A ping -c 1 -W 5 $STACK_B >/dev/null  # ARP across VXLAN settled
sleep 1

z=() k=() v=()
for _ in $(seq "$REPS"); do
    z+=("$("${ZRUN_A[@]}" iperf3 -c $STACK_B -p 5301 -t "$DUR" -J | iperf_gbps)")
    k+=("$(ip netns exec $NS_A iperf3 -c $KERNEL_B -p 5302 -t "$DUR" -J | iperf_gbps)")
    v+=("$(ip netns exec $NS_VA iperf3 -c 10.207.0.2 -p 5303 -t "$DUR" -J | iperf_gbps)")
done
record ztap_vxlan "${z[@]}"
record kernel_vxlan "${k[@]}"
record veth "${v[@]}"

echo
machine
echo "Command: bench/multihost.sh (DUR=$DUR REPS=$REPS MTU=$MTU), median of $REPS runs"
echo
echo "| case (MTU $MTU, underlay veth MTU 1500) | Gbit/s | / plain veth |"
echo "|---|---|---|"
echo "| ztap app -> ztap app across VXLAN (ztctl run on both hosts) | ${RESULT[ztap_vxlan]} | $(ratio "${RESULT[ztap_vxlan]}" "${RESULT[veth]}") |"
echo "| kernel -> kernel across the same VXLAN | ${RESULT[kernel_vxlan]} | $(ratio "${RESULT[kernel_vxlan]}" "${RESULT[veth]}") |"
echo "| kernel -> kernel over a plain veth | ${RESULT[veth]} | 1.00 |"
