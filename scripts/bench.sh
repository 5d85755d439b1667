#!/usr/bin/env bash
# Benchmarks: fio (4 KiB random, 1 MiB sequential; buffered and O_DIRECT) and a
# create/stat/unlink metadata run, on daxfs (memfd, emulated device-DAX) and on tmpfs in
# the same run. Prints a table with daxfs/tmpfs ratios. Figures, not pass/fail.
# Usage: scripts/bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh
scripts/deps.sh >/dev/null
build_daxfs

runtime=10; size=512M; nfiles=20000
case "${1:-}" in
    "") ;;
    --quick) runtime=3; size=128M; nfiles=5000 ;;
    *) echo "usage: scripts/bench.sh [--quick]" >&2; exit 2 ;;
esac

work=$(mktemp -d /tmp/daxfs-bench.XXXXXX)
mkdir "$work/daxfs" "$work/tmpfs"
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() { unmount_dir "$work/daxfs"; umount "$work/tmpfs" 2>/dev/null || umount -l "$work/tmpfs" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$DAXFS" mount memfd:4G "$work/daxfs"
mount -t tmpfs -o size=4G tmpfs "$work/tmpfs"

jobs=(
  "randread-4k:randread:4k:0"
  "randwrite-4k:randwrite:4k:0"
  "seqread-1m:read:1M:0"
  "seqwrite-1m:write:1M:0"
  "randread-4k-direct:randread:4k:1"
  "randwrite-4k-direct:randwrite:4k:1"
  "seqread-1m-direct:read:1M:1"
  "seqwrite-1m-direct:write:1M:1"
)

# Does this filesystem accept O_DIRECT? (tmpfs does since Linux 6.6; before, it refuses.)
direct_ok() {
    python3 -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)); os.unlink(sys.argv[1])' \
        "$1/direct-probe" 2>/dev/null
}

results="$work/results"
: > "$results"
notes=()
for fs in daxfs tmpfs; do
    dir="$work/$fs"
    has_direct=1
    if ! direct_ok "$dir"; then
        has_direct=0
        notes+=("$fs refuses O_DIRECT here: its -direct rows are buffered runs of the same job.")
    fi
    for j in "${jobs[@]}"; do
        IFS=: read -r name rw bs direct <<<"$j"
        [ "$has_direct" = 1 ] || direct=0
        if fio --name="$name" --directory="$dir" --rw="$rw" --bs="$bs" --size="$size" \
            --direct="$direct" --ioengine=psync --runtime="$runtime" --time_based \
            --output-format=json --filename="bench-$name" >"$work/$fs-$name.json" 2>"$work/$fs-$name.err"; then
            python3 - "$work/$fs-$name.json" "$fs" "$name" "$bs" >>"$results" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["jobs"][0]
side = "read" if d["read"]["io_bytes"] > 0 else "write"
bw = d[side]["bw_bytes"] / 2**20
iops = d[side]["iops"]
unit = "IOPS" if sys.argv[4] == "4k" else "MiB/s"
print(sys.argv[2], sys.argv[3], unit, round(iops if unit == "IOPS" else bw, 1))
PY
        else
            echo "bench: fio $name on $fs failed: $(tail -1 "$work/$fs-$name.err")" >&2
            echo "$fs $name $([ "$bs" = 4k ] && echo IOPS || echo MiB/s) nan" >>"$results"
        fi
        rm -f "$dir/bench-$name"
    done
    python3 - "$dir" "$fs" "$nfiles" >>"$results" <<'PY'
import os, sys, time
d, fs, n = sys.argv[1] + "/meta", sys.argv[2], int(sys.argv[3])
os.mkdir(d)
for phase in ("create", "stat", "unlink"):
    t = time.perf_counter()
    for i in range(n):
        p = f"{d}/f{i}"
        if phase == "create":
            os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
        elif phase == "stat":
            os.stat(p)
        else:
            os.unlink(p)
    print(fs, phase, "ops/s", round(n / (time.perf_counter() - t)))
os.rmdir(d)
PY
done

python3 - "$results" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    fs, name, unit, v = line.split()
    rows.setdefault(name, {"unit": unit})[fs] = float(v)
print("| workload | unit | daxfs | tmpfs | daxfs/tmpfs |")
print("|---|---|---:|---:|---:|")
for name, r in rows.items():
    dax, tmp = r.get("daxfs", float("nan")), r.get("tmpfs", float("nan"))
    ratio = dax / tmp if tmp == tmp and tmp > 0 else float("nan")
    print(f"| {name} | {r['unit']} | {dax:.0f} | {tmp:.0f} | {ratio:.2f} |")
PY
if [ ${#notes[@]} -gt 0 ]; then echo; printf '%s\n' "${notes[@]}"; fi
