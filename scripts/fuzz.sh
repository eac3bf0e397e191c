#!/usr/bin/env bash
# fuzz.sh - fuzz NetStack.receive with libFuzzer + AddressSanitizer.
#
# Usage: scripts/fuzz.sh SECONDS [libFuzzer options...]
#   Builds the NetStackFuzz harness (Sources/NetStackFuzz) in its own scratch path so the normal
#   build is untouched, then fuzzes for SECONDS starting from the committed seed corpus
#   (Tests/Fuzz/corpus). New inputs go to .build/fuzz/corpus, crashes to .build/fuzz/artifacts/.
#   Reproduce a crash with:  .build/fuzz/release/NetStackFuzz .build/fuzz/artifacts/crash-...
#   (or, without sanitizers, `swift run NetStackFuzz FILE` — the plain build is a replayer).
#
# Why these flags: -D NETSTACK_LIBFUZZER drops the replayer's @main; SwiftPM links executables
# with `main` aliased to NetStackFuzz_main, which the harness defines and forwards to
# libFuzzer's LLVMFuzzerRunDriver, which must therefore be exported for dlsym.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
swift build -c release --product NetStackFuzz --scratch-path .build/fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DNETSTACK_LIBFUZZER \
    -Xlinker --export-dynamic-symbol=LLVMFuzzerRunDriver
mkdir -p .build/fuzz/corpus .build/fuzz/artifacts
exec .build/fuzz/release/NetStackFuzz -max_total_time="$secs" -max_len=8192 -timeout=10 \
    -artifact_prefix=.build/fuzz/artifacts/ "$@" .build/fuzz/corpus Tests/Fuzz/corpus
