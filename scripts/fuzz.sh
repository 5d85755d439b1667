#!/usr/bin/env bash
# Fuzz every on-media parser of daxfs with cargo-fuzz (libFuzzer), on stable Rust.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 10 s, every target)
#
# Installs cargo-fuzz when missing, writes the seed corpora cut from a real image
# (examples/fuzz_seeds.rs -> fuzz/corpus/TARGET/), builds the targets of fuzz/ once and
# runs each for SECONDS_PER_TARGET, starting from fuzz/corpus/TARGET and the inputs that
# once crashed it (fuzz/regressions/TARGET/). Prints per target the executions libFuzzer
# reports and any crash (panic, timeout, out-of-memory) with the input it saved under
# fuzz/artifacts/TARGET/. Exits 1 when a target crashed. See docs/testing.md, "Fuzzing".
#
# What works on stable Rust (no nightly here):
# - `cargo fuzz build -s none` (the default here): no sanitizer, nothing unstable. The
#   coverage instrumentation is stable, and cargo-fuzz's default build keeps debug
#   assertions and overflow checks on, so arithmetic overflow on media values is a crash.
# - DAXFS_FUZZ_ASAN=1: AddressSanitizer, cargo-fuzz's default. It needs the unstable
#   -Zsanitizer, which stable rustc accepts with RUSTC_BOOTSTRAP=1 (the ASan runtime ships
#   with the stable toolchain). About 10 to 100 times fewer executions; Rust's own bounds
#   checks already cover the safe code, and the device's raw copies are bounds-checked.
# The script runs the built binaries itself (`cargo fuzz run` would rebuild first).
# Replay a crash: cargo fuzz run -s none --fuzz-dir fuzz TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh

secs=10
if [ $# -gt 0 ]; then
    case $1 in
        -h|--help) sed -n 's/^# \{0,1\}//; 2,3p' "$0"; exit 0 ;;
        *[!0-9]*|'') echo "fuzz.sh: SECONDS_PER_TARGET must be a number, not \"$1\"" >&2; exit 2 ;;
    esac
    secs=$1
    shift
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
# libfuzzer-sys compiles libFuzzer's C++ sources.
if ! command -v c++ >/dev/null 2>&1; then
    echo "== installing g++"
    apt-get update -qq && apt-get install -y -qq g++ >/dev/null
fi

all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^daxfs-fuzz$')
if [ $# -gt 0 ]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        grep -qx "$t" <<<"$all" || { echo "fuzz.sh: no target \"$t\" (targets: $(echo $all))" >&2; exit 2; }
    done
else
    mapfile -t targets <<<"$all"
fi

echo "== seeding fuzz/corpus from a real image"
cargo run --release --quiet --example fuzz_seeds fuzz/corpus

sanitizer=(-s none)
if [ "${DAXFS_FUZZ_ASAN:-0}" = 1 ]; then
    sanitizer=()
    export RUSTC_BOOTSTRAP=1
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
echo "== building the targets (the first build takes a few minutes)"
cargo fuzz build "${sanitizer[@]}" --fuzz-dir fuzz 2>&1 | tail -1
bindir=fuzz/target/$triple/release

mkdir -p fuzz/artifacts
results=()
status=0
for t in "${targets[@]}"; do
    log=fuzz/artifacts/$t.log
    echo "== $t (${secs}s)"
    rc=0
    regressions=()
    [ -d "fuzz/regressions/$t" ] && regressions=("fuzz/regressions/$t")
    mkdir -p "fuzz/artifacts/$t"
    "$bindir/$t" "fuzz/corpus/$t" "${regressions[@]}" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$( (grep -o 'Done [0-9]* runs' "$log" || true) | tail -1 | tr -dc 0-9)
    took=$( (grep -o 'Done [0-9]* runs in [0-9]* second' "$log" || true) | tail -1 | awk '{print $5}')
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        results+=("$(printf '%-12s %9s execs in %ss, corpus %s, no crash' "$t" "${runs:-?}" "${took:-$secs}" "$corpus")")
    else
        status=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        results+=("$(printf '%-12s %9s execs, CRASH (exit %s): %s' "$t" "${runs:-?}" "$rc" "${artifact:-see $log}")")
        { grep -E -A1 "panicked at|ERROR: libFuzzer|SUMMARY: libFuzzer" "$log" || true; } | head -6 | sed 's/^/    /'
    fi
done

echo
echo "== fuzz summary (${secs}s per target; logs in fuzz/artifacts/TARGET.log)"
printf '%s\n' "${results[@]}"
exit $status
