# lib.sh - shared by bench/netstack.sh and bench/intercept.sh (sourced, not run).
#
# bench_init PREFIX  builds ztapd and tcpblast, sets BLAST/ZTAPD/TMP, and arms a trap that stops
#                    every PID in PIDS and deletes every namespace in NAMESPACES (names given by
#                    the caller, PREFIX-*-PID) plus TMP. Processes are stopped by PID only.
# veth_pair NS_A NS_B IF_A IF_B ADDR_A ADDR_B MTU   two namespaces joined by a veth pair
# log, median (stdin), ratio A B, machine (one "Machine: ..." line)
export PATH=/opt/swift/usr/bin:$PATH

PIDS=()
NAMESPACES=()

log() { echo "[$(date +%T)] $*" >&2; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
machine() { echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"; }

bench_cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    for n in "${NAMESPACES[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    [ -n "${TMP:-}" ] && rm -rf "$TMP"
}

bench_init() {
    local out
    out=$(swift build -c release --product ztapd 2>&1) || { echo "$out" | tail -20 >&2; echo "bench: build failed" >&2; exit 1; }
    mkdir -p .build/bench
    gcc -O2 -pthread -o .build/bench/tcpblast bench/tcpblast.c
    BLAST=$PWD/.build/bench/tcpblast
    ZTAPD=$PWD/.build/release/ztapd
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    trap bench_cleanup EXIT INT TERM
}

netns_new() { ip netns add "$1"; NAMESPACES+=("$1"); ip -n "$1" link set lo up; }

veth_pair() { # NS_A NS_B IF_A IF_B ADDR_A/PFX ADDR_B/PFX MTU
    netns_new "$1"; netns_new "$2"
    ip link add "$3" type veth peer name "$4"
    ip link set "$3" netns "$1"; ip link set "$4" netns "$2"
    ip -n "$1" addr add "$5" dev "$3"; ip -n "$2" addr add "$6" dev "$4"
    ip -n "$1" link set "$3" mtu "$7" up; ip -n "$2" link set "$4" mtu "$7" up
}
