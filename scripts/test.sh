#!/usr/bin/env bash
# The whole daxfs test suite: unit, core and mount tests (cargo nextest), the
# xfstests-style runner, and pjdfstest on a real mount. Installs what it needs.
# Usage: scripts/test.sh [--quick]   (--quick: cargo tests only)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
quick=0
[ "${1:-}" = "--quick" ] && quick=1

scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
build_daxfs

declare -a summary
status=0
run_part() {
    local name=$1; shift
    local start=$SECONDS
    if "$@"; then
        summary+=("$name: passed ($((SECONDS - start))s)")
    else
        summary+=("$name: FAILED ($((SECONDS - start))s)")
        status=1
    fi
}

run_part "cargo tests" cargo nextest run --release --no-fail-fast
if [ $quick = 0 ]; then
    run_part "xfst" scripts/xfst/run
    run_part "pjdfstest" scripts/pjdfstest.sh
fi
echo
echo "== summary =="
printf '%s\n' "${summary[@]}"
exit $status
