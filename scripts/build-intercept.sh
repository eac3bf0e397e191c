#!/usr/bin/env bash
# build-intercept.sh - builds libztintercept.so (plain C, no Swift runtime) into .build/intercept/.
#
# SwiftPM does not build these sources: Sources/ztintercept has no target in Package.swift.
# Usage: scripts/build-intercept.sh [extra cc flags...]   (CC overrides the compiler, default cc)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${ZTI_OUT_DIR:-.build/intercept}
mkdir -p "$out"
CC=${CC:-cc}
srcs=(Sources/ztintercept/zti_core.c Sources/ztintercept/zti_cfg.c Sources/ztintercept/zti_rpc.c
      Sources/ztintercept/zti_sock.c Sources/ztintercept/zti_accept.c Sources/ztintercept/zti_udp.c
      Sources/ztintercept/zti_opts.c Sources/ztintercept/zti_fd.c Sources/ztintercept/zti_names.c
      Sources/ztintercept/zti_xopts.c Sources/ztintercept/zti_create.c)
# -fno-semantic-interposition is deliberately absent: the exported replacements must interpose.
"$CC" -shared -fPIC -O2 -g -Wall -Wextra -Werror=implicit-function-declaration \
    -fvisibility=hidden -std=gnu11 -D_GNU_SOURCE \
    -ISources/CZTRPC/include -Wl,-z,defs -Wl,-z,now -Wl,--as-needed \
    -o "$out/libztintercept.so.tmp" "${srcs[@]}" "$@" -ldl
mv -f "$out/libztintercept.so.tmp" "$out/libztintercept.so"
echo "$PWD/$out/libztintercept.so"

# ztap-seccomp: the seccomp user-notification supervisor `ztctl run` uses for static and Go
# programs (Sources/ztseccomp). It links the library's configuration and RPC code, so both paths
# take the same routing decisions; the library's interposed libc functions stay out of it.
sup_srcs=(Sources/ztseccomp/zts_main.c Sources/ztseccomp/zts_filter.c Sources/ztseccomp/zts_target.c
          Sources/ztseccomp/zts_table.c Sources/ztseccomp/zts_sock.c Sources/ztseccomp/zts_udp.c
          Sources/ztseccomp/zts_rpc.c Sources/ztseccomp/zts_connect.c
          Sources/ztintercept/zti_core.c Sources/ztintercept/zti_cfg.c Sources/ztintercept/zti_rpc.c
          Sources/ztintercept/zti_xopts.c)
"$CC" -O2 -g -Wall -Wextra -Werror=implicit-function-declaration -std=gnu11 -D_GNU_SOURCE \
    -fvisibility=hidden -ISources/CZTRPC/include -Wl,-z,now \
    -o "$out/ztap-seccomp.tmp" "${sup_srcs[@]}" "$@" -ldl
mv -f "$out/ztap-seccomp.tmp" "$out/ztap-seccomp"
echo "$PWD/$out/ztap-seccomp"
