#!/usr/bin/env bash
# all.sh - every ztap benchmark in one run, plus the competition measured by the shared anchors
# script (kernel veth, slirp4netns, pasta), so all figures come from the same machine state.
# Installs the benchmark tools it needs (iperf3, sockperf, slirp4netns, passt) when missing.
# Env: DUR, REPS (passed on), OFFLOAD=yes|no (ztap's Offload=), INTERCEPT_MTUS="1500 2800 9000".
# Output goes to stdout; paste the tables into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "all.sh: needs root" >&2; exit 1; }
need=()
for p in iperf3 sockperf slirp4netns passt; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "## NetStack (bench/netstack.sh)"
bench/netstack.sh
# Intercepted apps at the MTU most networks use (1500), the default (2800) and a jumbo one;
# ztap with its TAP offloads (Offload=yes, the default; OFFLOAD=no for the plain TAP), the veth
# baseline with the kernel's default offloads.
if [ -x bench/intercept.sh ]; then
    for m in ${INTERCEPT_MTUS:-1500 2800 9000}; do
        echo "## Intercept (MTU=$m bench/intercept.sh)"
        MTU=$m bench/intercept.sh
    done
fi
if [ -x bench/seccomp.sh ]; then
    echo "## Seccomp mode next to LD_PRELOAD (bench/seccomp.sh)"
    bench/seccomp.sh
fi
if [ -x bench/conn.sh ]; then
    echo "## Connection setup and memory (bench/conn.sh)"
    bench/conn.sh
fi
if [ -x bench/http.sh ]; then
    echo "## nginx with Debian's habits under wrk (bench/http.sh)"
    bench/http.sh
fi
if [ -x bench/multihost.sh ]; then
    echo "## Multi-host over VXLAN (bench/multihost.sh)"
    bench/multihost.sh
fi
ANCHORS=${ANCHORS:-../shared/bench/anchors.sh}
if [ -x "$ANCHORS" ] || [ -f "$ANCHORS" ]; then
    echo "## Anchors ($ANCHORS)"
    CASES=${ANCHOR_CASES:-"veth slirp pasta lat"} bash "$ANCHORS" 2>/dev/null | sed -n '/SUMMARY/,$p'
fi
