#!/usr/bin/env bash
# netstack.sh - NetStack throughput and latency through ztapd, next to kernel-to-kernel over a
# veth pair measured in the same run.
#
# Cases (each at MTU 1500 and 2800):
#   discard  kernel client -> NetStack discard service (TCP 9)       "kernel->stack"
#   chargen  NetStack chargen service (TCP 19) -> kernel client        "stack->kernel"
#   rr       64-byte request/response with the echo service (TCP 7), median round trip
#   *6       the same over IPv6 (fd01::2 / fd02::2), next to the IPv4 figures
# Baseline: the same client against bench/tcpblast's kernel server across a veth pair
# (namespace to namespace), same MTU.
#
# Everything runs in namespaces this script creates (zb-*) and deletes on exit; processes are
# stopped by the PIDs it started. Env: DUR=5 seconds per run, REPS=5 runs (median reported),
# MTUS="1500 2800", OFFLOAD=yes (the network's Offload=: virtio header, TSO/checksum offloads).
# Output: one line per case on stdout, then a Markdown table (paste into BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DUR=${DUR:-5}
REPS=${REPS:-5}
MTUS=${MTUS:-"1500 2800"}
OFFLOAD=${OFFLOAD:-yes}
[ "$(id -u)" -eq 0 ] || { echo "netstack.sh: needs root (namespaces, TAP)" >&2; exit 1; }

bench_init zbench
TAG=$$
NS_ZT=zb-zt-$TAG NS_VA=zb-va-$TAG NS_VB=zb-vb-$TAG

declare -A RESULT
runcase() { # name ns cmd...  -> median of first output field over REPS
    local name=$1 ns=$2; shift 2
    local vals=() i
    for i in $(seq "$REPS"); do
        vals+=("$(ip netns exec "$ns" "$@" | awk '{print $1}')")
    done
    RESULT[$name]=$(printf '%s\n' "${vals[@]}" | median)
    log "$name: ${vals[*]} -> median ${RESULT[$name]}"
    echo "case=$name median=${RESULT[$name]} runs=${vals[*]}"
}

netns_new $NS_ZT
veth_pair $NS_VA $NS_VB zbva zbvb 10.202.0.1/24 10.202.0.2/24 1500
ip -n $NS_VA addr add fd02::1/64 dev zbva nodad; ip -n $NS_VB addr add fd02::2/64 dev zbvb nodad
ip netns exec $NS_VB "$BLAST" serve 10.202.0.2 & PIDS+=($!)
ip netns exec $NS_VB "$BLAST" serve fd02::2 & PIDS+=($!)

mkdir -p "$TMP/etc/networks.d" "$TMP/run"
for MTU in $MTUS; do
    cat > "$TMP/etc/networks.d/bench.conf" <<CONF
[Network]
Interface=zbtap
MTU=$MTU
Address=10.201.0.2/24 fd01::2/64
KernelAddress=10.201.0.1/24 fd01::1/64
Services=echo discard chargen
[Stack]
Offload=$OFFLOAD
CONF
    ip netns exec $NS_ZT "$ZTAPD" --config-dir "$TMP/etc" --run-dir "$TMP/run" 2>"$TMP/ztapd.log" & ZPID=$!
    PIDS+=($ZPID)
    for _ in $(seq 100); do [ -S "$TMP/run/control.sock" ] && break; sleep 0.1; done
    sleep 0.5
    # IPv6: both sides' duplicate address detection (a second or two).
    for _ in $(seq 50); do
        ip netns exec $NS_ZT ping -6 -c 1 -W 1 fd01::2 >/dev/null 2>&1 && break; sleep 0.2
    done
    ip -n $NS_VA link set zbva mtu "$MTU"; ip -n $NS_VB link set zbvb mtu "$MTU"
    log "MTU $MTU"
    runcase "ztap_discard_$MTU" $NS_ZT "$BLAST" send 10.201.0.2 9 "$DUR"
    runcase "veth_send_$MTU"    $NS_VA "$BLAST" send 10.202.0.2 9 "$DUR"
    runcase "ztap_chargen_$MTU" $NS_ZT "$BLAST" recv 10.201.0.2 19 "$DUR"
    runcase "veth_recv_$MTU"    $NS_VA "$BLAST" recv 10.202.0.2 19 "$DUR"
    runcase "ztap_rr_$MTU"      $NS_ZT "$BLAST" rr 10.201.0.2 7 "$DUR" 64
    runcase "veth_rr_$MTU"      $NS_VA "$BLAST" rr 10.202.0.2 7 "$DUR" 64
    runcase "ztap_discard6_$MTU" $NS_ZT "$BLAST" send fd01::2 9 "$DUR"
    runcase "veth_send6_$MTU"    $NS_VA "$BLAST" send fd02::2 9 "$DUR"
    runcase "ztap_chargen6_$MTU" $NS_ZT "$BLAST" recv fd01::2 19 "$DUR"
    runcase "veth_recv6_$MTU"    $NS_VA "$BLAST" recv fd02::2 19 "$DUR"
    runcase "ztap_rr6_$MTU"      $NS_ZT "$BLAST" rr fd01::2 7 "$DUR" 64
    runcase "veth_rr6_$MTU"      $NS_VA "$BLAST" rr fd02::2 7 "$DUR" 64
    kill -TERM $ZPID; wait $ZPID 2>/dev/null || true
done

echo
machine
echo "Command: bench/netstack.sh (DUR=$DUR REPS=$REPS OFFLOAD=$OFFLOAD), median of $REPS runs"
echo
echo "| MTU | case | ztap | kernel veth | ztap / veth |"
echo "|---|---|---|---|---|"
for MTU in $MTUS; do
    echo "| $MTU | kernel -> stack (discard), Gbit/s | ${RESULT[ztap_discard_$MTU]} | ${RESULT[veth_send_$MTU]} | $(ratio "${RESULT[ztap_discard_$MTU]}" "${RESULT[veth_send_$MTU]}") |"
    echo "| $MTU | stack -> kernel (chargen), Gbit/s | ${RESULT[ztap_chargen_$MTU]} | ${RESULT[veth_recv_$MTU]} | $(ratio "${RESULT[ztap_chargen_$MTU]}" "${RESULT[veth_recv_$MTU]}") |"
    echo "| $MTU | echo 64 B round trip, median µs | ${RESULT[ztap_rr_$MTU]} | ${RESULT[veth_rr_$MTU]} | $(ratio "${RESULT[ztap_rr_$MTU]}" "${RESULT[veth_rr_$MTU]}") |"
    echo "| $MTU | IPv6 kernel -> stack (discard), Gbit/s | ${RESULT[ztap_discard6_$MTU]} | ${RESULT[veth_send6_$MTU]} | $(ratio "${RESULT[ztap_discard6_$MTU]}" "${RESULT[veth_send6_$MTU]}") |"
    echo "| $MTU | IPv6 stack -> kernel (chargen), Gbit/s | ${RESULT[ztap_chargen6_$MTU]} | ${RESULT[veth_recv6_$MTU]} | $(ratio "${RESULT[ztap_chargen6_$MTU]}" "${RESULT[veth_recv6_$MTU]}") |"
    echo "| $MTU | IPv6 echo 64 B round trip, median µs | ${RESULT[ztap_rr6_$MTU]} | ${RESULT[veth_rr6_$MTU]} | $(ratio "${RESULT[ztap_rr6_$MTU]}" "${RESULT[veth_rr6_$MTU]}") |"
done
echo
echo "IPv6 / IPv4 through ztap (bulk within 10% is the goal):"
for MTU in $MTUS; do
    echo "  MTU $MTU: discard $(ratio "${RESULT[ztap_discard6_$MTU]}" "${RESULT[ztap_discard_$MTU]}"), chargen $(ratio "${RESULT[ztap_chargen6_$MTU]}" "${RESULT[ztap_chargen_$MTU]}")"
done
