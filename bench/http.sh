#!/usr/bin/env bash
# http.sh - a real server under the intercept: Debian's nginx with its stock habits (root master,
# `user www-data`, 2 workers, sendfile, tcp_nopush, tcp_nodelay, keep-alive) serving a small
# static file to wrk, next to the same nginx over a veth pair measured in the same run.
#
# Cases: wrk keep-alive (requests/s) and wrk with `Connection: close` (a new connection per
# request, requests/s). ztap: nginx under `ztctl run --bind-any` in the ztapd namespace, wrk on
# the kernel side of the TAP. Baseline: nginx in one namespace, wrk in another, joined by a veth.
#
# Everything runs in namespaces this script creates (zh-*) and deletes on exit; processes are
# stopped by the PIDs it started. Env: DUR=5 seconds per run, REPS=5 runs (median), MTU=1500,
# CONNS=50 wrk connections, THREADS=2.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DUR=${DUR:-5}
REPS=${REPS:-5}
MTU=${MTU:-1500}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
[ "$(id -u)" -eq 0 ] || { echo "http.sh: needs root (namespaces, TAP)" >&2; exit 1; }
for t in nginx wrk; do
    command -v $t >/dev/null || { echo "http.sh: $t missing (scripts/install-deps.sh)" >&2; exit 1; }
done
id www-data >/dev/null 2>&1 || { echo "http.sh: user www-data missing" >&2; exit 1; }

bench_init zhbench
# nginx's workers run as www-data: they must reach the files and ztapd's RPC socket.
chmod 755 "$TMP"
swift build -c release --product ztctl >/dev/null
scripts/build-intercept.sh >/dev/null
ZTCTL=$PWD/.build/release/ztctl
TAG=$$
NS_ZT=zh-zt-$TAG NS_VA=zh-va-$TAG NS_VB=zh-vb-$TAG

# nginx config: Debian's defaults that matter here, in a private prefix.
nginx_conf() { # DIR LISTEN_ADDR
    mkdir -p "$1/html" "$1/logs" "$1/tmp"
    head -c 612 /dev/zero | tr '\0' 'x' > "$1/html/index.html"
    chmod -R a+rX "$1"
    chown -R www-data "$1/logs" "$1/tmp"
    cat > "$1/nginx.conf" <<CONF
user www-data;
worker_processes 2;
pid $1/nginx.pid;
error_log $1/logs/error.log;
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    access_log off;
    client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
    uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
    server {
        listen $2:8080 deferred;
        root $1/html;
    }
}
CONF
}

declare -A RESULT
record() { # name values...
    local name=$1; shift
    RESULT[$name]=$(printf '%s\n' "$@" | median)
    log "$name: $* -> median ${RESULT[$name]}"
    echo "case=$name median=${RESULT[$name]} runs=$*"
}
# Requests/s of one wrk run (fails the run if wrk saw socket errors on most requests).
wrk_rps() { # NS URL [extra wrk args]
    local ns=$1 url=$2; shift 2
    ip netns exec "$ns" wrk -t "$THREADS" -c "$CONNS" -d "${DUR}s" "$@" "$url" 2>&1 |
        awk '/Requests\/sec/ {print $2} /Socket errors/ {print "errors: " $0 > "/dev/stderr"}'
}

# ztap: ztapd and nginx (under ztctl run) in one namespace; wrk on the TAP's kernel side.
netns_new $NS_ZT
mkdir -p "$TMP/etc/networks.d" "$TMP/run"
cat > "$TMP/etc/networks.d/bench.conf" <<CONF
[Network]
Interface=zhtap
MTU=$MTU
Address=10.205.0.2/24
KernelAddress=10.205.0.1/24
CONF
ip netns exec $NS_ZT "$ZTAPD" --config-dir "$TMP/etc" --run-dir "$TMP/run" 2>"$TMP/ztapd.log" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$TMP/run/bench.sock" ] && break; sleep 0.1; done
[ -S "$TMP/run/bench.sock" ] || { cat "$TMP/ztapd.log" >&2; exit 1; }
nginx_conf "$TMP/nz" 10.205.0.2
ip netns exec $NS_ZT "$ZTCTL" run bench --run-dir "$TMP/run" -- nginx -g 'daemon off;' -c "$TMP/nz/nginx.conf" \
    2>"$TMP/nginx-ztap.log" & PIDS+=($!)

# Baseline: the same nginx in namespace B, wrk in A.
veth_pair $NS_VA $NS_VB zhva zhvb 10.206.0.1/24 10.206.0.2/24 "$MTU"
nginx_conf "$TMP/nv" 10.206.0.2
ip netns exec $NS_VB nginx -g 'daemon off;' -c "$TMP/nv/nginx.conf" 2>"$TMP/nginx-veth.log" & PIDS+=($!)
sleep 1.5
curl -sf -o /dev/null --max-time 5 "http://10.205.0.2:8080/" --interface 10.205.0.1 2>/dev/null ||
    ip netns exec $NS_ZT curl -sf -o /dev/null --max-time 5 "http://10.205.0.2:8080/" ||
    { echo "http.sh: nginx under ztap does not answer" >&2; cat "$TMP/nginx-ztap.log" "$TMP/nz/logs/error.log" >&2; exit 1; }

for mode in keepalive close; do
    H=(); [ $mode = close ] && H=(-H "Connection: close")
    z=() v=()
    for _ in $(seq "$REPS"); do
        z+=("$(wrk_rps $NS_ZT "http://10.205.0.2:8080/" "${H[@]}")")
        v+=("$(wrk_rps $NS_VA "http://10.206.0.2:8080/" "${H[@]}")")
    done
    record "ztap_http_$mode" "${z[@]}"
    record "veth_http_$mode" "${v[@]}"
done
alerts=$(grep -c "\[alert\]\|\[crit\]\|\[emerg\]" "$TMP/nz/logs/error.log" || true)

machine
echo "Command: bench/http.sh (DUR=$DUR REPS=$REPS MTU=$MTU CONNS=$CONNS THREADS=$THREADS), median of $REPS runs"
echo "nginx under ztap: $alerts alert/crit/emerg lines in its error log"
echo
echo "| case (MTU $MTU, nginx 2 workers, 612 B file) | ztap (ztctl run) | kernel veth | ztap / veth |"
echo "|---|---|---|---|"
echo "| wrk keep-alive, requests/s | ${RESULT[ztap_http_keepalive]} | ${RESULT[veth_http_keepalive]} | $(ratio "${RESULT[ztap_http_keepalive]}" "${RESULT[veth_http_keepalive]}") |"
echo "| wrk Connection: close, requests/s | ${RESULT[ztap_http_close]} | ${RESULT[veth_http_close]} | $(ratio "${RESULT[ztap_http_close]}" "${RESULT[veth_http_close]}") |"
