#!/usr/bin/env bash
# build-release.sh - the one release build: what scripts/test.sh tests is what packaging ships.
# The Swift runtime is linked statically (an installed ztapd must not need /opt/swift), the
# binaries get no $ORIGIN RUNPATH (nothing is loaded from next to them) and full RELRO.
# Extra arguments go to swift build (e.g. --product ztctl).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
exec swift build -c release --static-swift-stdlib --disable-local-rpath \
    -Xlinker -z -Xlinker relro -Xlinker -z -Xlinker now "$@"
