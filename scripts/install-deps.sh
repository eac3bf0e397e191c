#!/usr/bin/env bash
# install-deps.sh - installs what ztap needs to build and test, only what is missing.
# Debian/Ubuntu (apt). Safe to run repeatedly.
set -euo pipefail

PKGS=(libnl-3-dev libnl-route-3-dev libcap-dev libseccomp-dev pkg-config iproute2 iputils-ping iputils-arping
      nftables iperf3 curl netcat-openbsd socat nginx python3 python3-pytest util-linux procps systemd gcc
      wrk postgresql postgresql-client                # real-server tests, bench/http.sh
      wireguard-tools golang-go busybox-static            # seccomp tests (static and Go programs)
      tcpdump man-db dpkg-dev binutils xz-utils lintian)   # ztctl capture, man pages and the .deb

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then echo "install-deps: need root to install packages" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # nginx must not start a server on the host: policy-rc.d forbids service starts during install.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # A `swift build` that ran before libnl/libcap were here cached the failed pkg-config probe
    # in .build/*.yaml and would keep failing: drop those manifests (SwiftPM rewrites them).
    build_dir="$(dirname "$0")/../.build"
    if compgen -G "$build_dir/*.yaml" >/dev/null; then
        echo "install-deps: removing stale SwiftPM manifests $build_dir/*.yaml" >&2
        rm -f "$build_dir"/*.yaml
    fi
fi
# pytest: the interpreter on PATH may not be Debian's python3; make sure it has pytest.
if ! python3 -c 'import pytest' 2>/dev/null; then
    python3 -m pip install -q pytest
fi
# The Prometheus text parser that checks `ztctl metrics` (Tests/integration/test_operator.py).
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    python3 -m pip install -q prometheus_client
fi
command -v swift >/dev/null || { echo "install-deps: swift toolchain not on PATH (expected /opt/swift)" >&2; exit 1; }
