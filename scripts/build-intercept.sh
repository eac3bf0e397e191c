#!/usr/bin/env bash
# build-intercept.sh - builds libztintercept.so (plain C, no Swift runtime) into .build/intercept/.
#
# SwiftPM does not build these sources: Sources/ztintercept has no target in Package.swift.
# Usage: scripts/build-intercept.sh [extra cc flags...]   (CC overrides the compiler, default cc)
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build/intercept
mkdir -p "$out"
CC=${CC:-cc}
srcs=(Sources/ztintercept/zti_core.c Sources/ztintercept/zti_rpc.c
      Sources/ztintercept/zti_sock.c Sources/ztintercept/zti_udp.c Sources/ztintercept/zti_opts.c)
# -fno-semantic-interposition is deliberately absent: the exported replacements must interpose.
"$CC" -shared -fPIC -O2 -g -Wall -Wextra -Werror=implicit-function-declaration \
    -fvisibility=hidden -std=gnu11 -D_GNU_SOURCE \
    -ISources/CZTRPC/include -Wl,-z,defs -Wl,-z,now -Wl,--as-needed \
    -o "$out/libztintercept.so.tmp" "${srcs[@]}" "$@" -ldl
mv -f "$out/libztintercept.so.tmp" "$out/libztintercept.so"
echo "$PWD/$out/libztintercept.so"
