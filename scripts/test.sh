#!/usr/bin/env bash
# The whole daxfs test suite: unit, core, model, crash and mount tests (cargo nextest, or
# cargo test when nextest is missing), the xfstests-style runner, pjdfstest on a real
# mount, a concurrency stress (dbench + stress-ng, with room and on a full device), and a
# short cargo-fuzz run. Installs what it needs. See docs/testing.md.
# Usage: scripts/test.sh [--quick]   (--quick: the cargo tests only)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh

quick=0
case $# in
    0) ;;
    1) case $1 in
           --quick) quick=1 ;;
           -h|--help) sed -n 's/^# //; 6p' "$0"; exit 0 ;;
           *) echo "test.sh: unknown argument \"$1\" (usage: scripts/test.sh [--quick])" >&2; exit 2 ;;
       esac ;;
    *) echo "usage: scripts/test.sh [--quick]" >&2; exit 2 ;;
esac

scripts/deps.sh
build_daxfs

summary=()
status=0
run_part() {
    local name=$1; shift
    local start=$SECONDS
    echo "== $name"
    if "$@"; then
        summary+=("$name: passed ($((SECONDS - start))s)")
    else
        summary+=("$name: FAILED ($((SECONDS - start))s)")
        status=1
    fi
}

# deps.sh installed every tool the tests use: a test must not skip for want of one.
export DAXFS_REQUIRE_TOOLS=1
if cargo nextest --version >/dev/null 2>&1; then
    run_part "cargo tests" cargo nextest run --release --no-fail-fast
else
    echo "cargo-nextest not found; using cargo test"
    run_part "cargo tests" cargo test --release --no-fail-fast
fi
run_part "layers (no import cycle)" scripts/layers.sh
if [ $quick = 0 ]; then
    run_part "xfst" scripts/xfst/run
    run_part "pjdfstest" scripts/pjdfstest.sh
    run_part "stress" scripts/stress.sh 30
    run_part "stress (full device)" scripts/stress.sh --full 30
    # A short cargo-fuzz run of every parser target (scripts/fuzz.sh 600 is the long one).
    run_part "fuzz" scripts/fuzz.sh 5
fi
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [ $status = 0 ]; then echo "all passed"; else echo "SOME PARTS FAILED"; fi
exit $status
