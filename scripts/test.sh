#!/usr/bin/env bash
# test.sh - installs what is missing, builds, and runs every test: unit tests (swift test), the
# integration tests (pytest, real TAP devices, network namespaces, the kernel as the peer) and the
# differential socket test (Tests/diff: the same probe on Linux's sockets and under ztap, with the
# library and again with ztap-seccomp).
#
# Privileged parts run only as root (CI is root). Not root: it asks sudo if there is one (so
# `scripts/test.sh` works as root without sudo and from a user account), else the privileged
# tests skip with the reason; ZTAP_NO_SUDO=1 keeps an unprivileged run unprivileged.
# Everything runs inside network namespaces the tests create and delete.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ] && [ -z "${ZTAP_NO_SUDO:-}" ] && command -v sudo >/dev/null; then
    exec sudo -- "$PWD/scripts/test.sh" "$@"
fi
export PATH=/opt/swift/usr/bin:$PATH

scripts/install-deps.sh || exit 1

echo "== build (debug + release)"
swift build 2>&1 | tail -3 || exit 1
scripts/build-release.sh 2>&1 | tail -3 || exit 1
[ -x .build/release/ztapd ] || { echo "build failed"; exit 1; }
scripts/build-intercept.sh || exit 1

unit_rc=0
echo "== unit tests (swift test)"
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
    # A private, throwaway network namespace for the whole unit-test process: tests that create
    # TAP devices or bridges cannot touch the host's network, and everything vanishes at exit.
    unshare --net env ZTAP_PRIVATE_NETNS=1 swift test 2>&1 | tee /tmp/ztap-unit.log | grep -E "✘|error:|Test run|Executed" ; unit_rc=${PIPESTATUS[0]}
else
    echo "not root: privileged unit tests will skip (they need their own network namespace)"
    swift test 2>&1 | tee /tmp/ztap-unit.log | grep -E "✘|error:|Test run|Executed"; unit_rc=${PIPESTATUS[0]}
fi
unit_pass=$(grep -oE "Test run with [0-9]+ tests?" /tmp/ztap-unit.log | grep -oE "[0-9]+" | tail -1)
unit_fail=$(grep -cE "^✘ Test .* failed after" /tmp/ztap-unit.log)

fuzz_fail=0; fuzz_pass=0
for target in netstack rpc control ini; do
    echo "== fuzz $target (libFuzzer + ASan, ${FUZZ_SECONDS:=60}s)"
    if scripts/fuzz.sh "$target" "$FUZZ_SECONDS" > "/tmp/ztap-fuzz-$target.log" 2>&1; then
        grep -E "^Done [0-9]+ runs" "/tmp/ztap-fuzz-$target.log"; fuzz_pass=$(( fuzz_pass + 1 ))
    else
        tail -30 "/tmp/ztap-fuzz-$target.log"; fuzz_fail=$(( fuzz_fail + 1 ))
    fi
done

int_pass=0; int_fail=0; int_rc=0
run_suite() { # LABEL SUITE [VAR=VALUE...]
    local label=$1 suite=$2; shift 2
    echo "== $label (pytest)"
    env "$@" ZTAP_BIN_DIR="$PWD/.build/release" python3 -m pytest -q -p no:cacheprovider "$suite" 2>&1 | tee /tmp/ztap-pytest.log
    rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ] && int_rc=$rc
    p=$(grep -oE "[0-9]+ passed" /tmp/ztap-pytest.log | tail -1 | grep -oE "[0-9]+")
    f=$(grep -oE "[0-9]+ (failed|errors?)" /tmp/ztap-pytest.log | awk '{s+=$1} END {print s+0}')
    int_pass=$(( int_pass + ${p:-0} )); int_fail=$(( int_fail + ${f:-0} ))
}
run_suite Tests/intercept Tests/intercept
run_suite Tests/integration Tests/integration
run_suite Tests/diff Tests/diff
# The same cases with ztap-seccomp (programs that bypass libc) against their own list.
run_suite "Tests/diff, seccomp mode" Tests/diff ZTAP_DIFF_MODE=seccomp

passed=$(( ${unit_pass:-0} - ${unit_fail:-0} + ${int_pass:-0} + fuzz_pass ))
failed=$(( ${unit_fail:-0} + ${int_fail:-0} + fuzz_fail ))
if [ "$unit_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$int_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
