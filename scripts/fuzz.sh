#!/usr/bin/env bash
# fuzz.sh - fuzz one target with libFuzzer + AddressSanitizer.
#
# Usage: scripts/fuzz.sh [TARGET] SECONDS [libFuzzer options...]
#   TARGET: netstack (default; NetStack.receive, Sources/NetStackFuzz), rpc (the intercept's RPC
#   decoder and the hub's handling of requests with fds), control (ControlCodec + Daemon.handle),
#   ini (the INI parser and config models) — the last three in Sources/ZTapFuzz. SECONDS 0 runs
#   until -runs=N or forever.
#   Builds the harnesses in their own scratch path so the normal build is untouched, then fuzzes
#   from the committed seeds (Tests/Fuzz/corpus for netstack, Tests/Fuzz/TARGET otherwise). New
#   inputs go to .build/fuzz/corpus-TARGET, crashes to .build/fuzz/artifacts/TARGET/.
#   Reproduce a crash: .build/fuzz/release/NetStackFuzz FILE, ZTAP_FUZZ_TARGET=T .build/fuzz/release/ZTapFuzz FILE
#   (or without sanitizers: `swift run NetStackFuzz FILE`, `swift run ZTapFuzz T FILE`).
#   Long runs: scripts/fuzz-long.sh.
#
# Why these flags: -D NETSTACK_LIBFUZZER drops the replayers' @main; SwiftPM links executables
# with `main` aliased to <Target>_main, which each harness defines and forwards to libFuzzer's
# LLVMFuzzerRunDriver, which must therefore be exported for dlsym.
set -euo pipefail
cd "$(dirname "$0")/.."
target=netstack
case "${1:-}" in netstack|rpc|control|ini) target=$1; shift ;; esac
secs="${1:-60}"
shift || true
product=ZTapFuzz; seeds=Tests/Fuzz/$target; maxlen=8192
case $target in
    netstack) product=NetStackFuzz; seeds=Tests/Fuzz/corpus ;;
    rpc) maxlen=600 ;;
    control) maxlen=4096 ;;
esac
swift build -c release --product "$product" --scratch-path .build/fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DNETSTACK_LIBFUZZER \
    -Xlinker --export-dynamic-symbol=LLVMFuzzerRunDriver
corpus=.build/fuzz/corpus-$target
[ "$target" = netstack ] && [ -d .build/fuzz/corpus ] && [ ! -d "$corpus" ] && mv .build/fuzz/corpus "$corpus"
mkdir -p "$corpus" ".build/fuzz/artifacts/$target"
export ZTAP_FUZZ_TARGET=$target
exec ".build/fuzz/release/$product" -max_total_time="$secs" -max_len="$maxlen" -timeout=10 \
    -artifact_prefix=".build/fuzz/artifacts/$target/" "$@" "$corpus" "$seeds"
