#!/usr/bin/env bash
# The direct path's figures (issue 9), in one run: 4 KiB overwrites through a client
# mapping with persist per operation, 4 KiB appends through the client with one fsync at
# the end, pwrite through the daxfs mount and pwrite on tmpfs (the client bench example,
# client/examples/bench.rs), PASSES passes interleaved, medians and ratios; then layout
# breaks: a truncate under a cooperative `daxfs layout --hold` holder (daxfs stat's
# dax_longest_break_us), and under a stopped (SIGSTOP) holder with lease_break_ms=300.
# Mounts memfd:1G with -o dax=always in a temporary directory; figures, not pass/fail.
# Usage: scripts/daxbench.sh [--ops N] [--passes P]   (default 100000 ops, 3 passes; about 1 minute)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh

ops=100000
passes=3
while [ $# -gt 0 ]; do
    case "$1" in
        --ops) ops=$2; shift 2 ;;
        --passes) passes=$2; shift 2 ;;
        *) echo "usage: scripts/daxbench.sh [--ops N] [--passes P]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "daxbench: needs root (mounts)" >&2; exit 2; }
build_daxfs
cargo build --release --quiet -p daxfs-client --example bench
bench=target/release/examples/bench

work=$(mktemp -d /tmp/daxfs-daxbench.XXXXXX)
shm=$(mktemp -d "$(test_tmpdir)/daxfs-daxbench.XXXXXX")
mkdir "$work/mnt"
holder=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    if [ -n "$holder" ]; then kill -CONT "$holder" 2>/dev/null || true; kill -9 "$holder" 2>/dev/null || true; fi
    unmount_dir "$work/mnt"
    rm -rf "$work" "$shm"
}
trap cleanup EXIT

mount_dax() {
    "$DAXFS" mount memfd:1G "$work/mnt" -o "dax=always${1:+,$1}"
}
stat_of() {
    "$DAXFS" stat "$work/mnt" | awk -v k="$1" '$1 == k { print $2 }'
}

echo "== direct path: $ops ops per figure, $passes passes (memfd:1G, dax=always)"
mount_dax
results=$work/results.txt
: >"$results"
for p in $(seq "$passes"); do
    rm -f "$work/mnt/f" "$work/mnt/f.append" "$shm/f"
    : >"$work/mnt/f"
    "$bench" "$work/mnt/f" "$ops" "$shm/f" | tee -a "$results" | sed "s/^/pass $p: /"
done
unmount_dir "$work/mnt"

python3 - "$results" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(.+?)\s+([0-9]+) ops/s\s+([0-9]+) ns/op", line.strip())
    if m:
        rows.setdefault(m.group(1).strip(), []).append(float(m.group(2)))
med = {k: statistics.median(v) for k, v in rows.items()}
tmpfs = med.get("pwrite 4 KiB on TMPFS_FILE")
mount = med.get("pwrite 4 KiB through the mount")
print()
print(f"{'4 KiB operation':<40} {'median ops/s':>14} {'min..max':>22} {'÷ tmpfs pwrite':>15} {'÷ mount pwrite':>15}")
for k, v in rows.items():
    r1 = f"{med[k] / tmpfs:.2f}x" if tmpfs else "-"
    r2 = f"{med[k] / mount:.2f}x" if mount else "-"
    print(f"{k:<40} {med[k]:>14.0f} {f'{min(v):.0f}..{max(v):.0f}':>22} {r1:>15} {r2:>15}")
PY

echo
echo "== layout breaks (truncate of a 1 MiB write lease)"
mount_dax
f=$work/mnt/leased
for i in 1 2 3; do
    : >"$f"
    "$DAXFS" layout "$f" --range 0:1048576 --write --hold 10 >/dev/null &
    holder=$!
    for _ in $(seq 100); do [ -n "$("$DAXFS" leases "$work/mnt" | awk 'NR > 1')" ] && break; sleep 0.05; done
    start=$(date +%s%N)
    truncate -s 4096 "$f"
    echo "cooperative holder, break $i: truncate took $(( ($(date +%s%N) - start) / 1000 )) us"
    wait "$holder" || true
    holder=""
done
echo "cooperative: dax_recalls $(stat_of dax_recalls), dax_revokes $(stat_of dax_revokes), longest break $(stat_of dax_longest_break_us) us"
unmount_dir "$work/mnt"

mount_dax lease_break_ms=300
f=$work/mnt/leased
: >"$f"
"$DAXFS" layout "$f" --range 0:1048576 --write --hold 60 >/dev/null &
holder=$!
for _ in $(seq 100); do [ -n "$("$DAXFS" leases "$work/mnt" | awk 'NR > 1')" ] && break; sleep 0.05; done
kill -STOP "$holder"
start=$(date +%s%N)
truncate -s 4096 "$f"
echo "stopped holder (lease_break_ms=300): truncate took $(( ($(date +%s%N) - start) / 1000 )) us; dax_revokes $(stat_of dax_revokes), longest break $(stat_of dax_longest_break_us) us, quarantined blocks $(stat_of dax_quarantined_blocks)"
kill -CONT "$holder"; kill -9 "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
holder=""
for _ in $(seq 50); do [ "$(stat_of dax_quarantined_blocks)" = 0 ] && break; sleep 0.1; done
echo "after the holder was killed: quarantined blocks $(stat_of dax_quarantined_blocks)"
