#!/usr/bin/env bash
# fuzz-long.sh - long fuzzing runs: every target until RUNS executions (default 10 million),
# one after another, at the lowest CPU priority (the machine is shared). Prints each target's
# final libFuzzer line and the crash count, and fails if any target crashed.
#
# Usage: scripts/fuzz-long.sh [RUNS] [TARGET...]   (targets: netstack rpc control ini)
# FUZZ_TIMEOUT (seconds, default 10) is libFuzzer's per-input hang limit; raise it when the run
# may be paused (kill -STOP) while the machine measures something else.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(netstack rpc control ini)
failed=0
for t in "${targets[@]}"; do
    log=.build/fuzz/long-$t.log
    mkdir -p .build/fuzz
    start=$(date +%s)
    nice -n 19 scripts/fuzz.sh "$t" 0 -runs="$runs" -timeout="${FUZZ_TIMEOUT:-10}" -print_final_stats=1 > "$log" 2>&1
    rc=$?
    crashes=$(ls ".build/fuzz/artifacts/$t" 2>/dev/null | grep -c -E '^(crash|leak|timeout|oom)-' || true)
    done_line=$(grep -E "^Done [0-9]+ runs" "$log" | tail -1)
    echo "$t: ${done_line:-no Done line (rc $rc)} in $(( $(date +%s) - start ))s; artifacts: $crashes"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then failed=1; tail -30 "$log"; fi
done
exit $failed
