#!/usr/bin/env bash
# Benchmarks: daxfs against the FUSE ceiling and against tmpfs, in one run.
#
# Four filesystems, mounted side by side and measured interleaved (every pass runs every
# workload on each in turn, so load from elsewhere on the machine hits them alike):
#   daxfs       daxfs on memfd (emulated device-DAX)
#   daxfs-disk  daxfs on an image file on the machine's disk (/var/tmp; DAXFS_BENCH_DISK)
#   memfs       the in-repo FUSE reference: examples/memfs.rs, in-memory, on the same
#               fuser version and session setup as daxfs (the ceiling for any FUSE fs)
#   tmpfs       the kernel's
# Workloads: fio psync 4 KiB random and 1 MiB sequential read/write, buffered and
# O_DIRECT, 1 and 2 jobs; 4 KiB write + fdatasync; 4 KiB appends; create / stat / readdir
# / rename / unlink / mkdir / rmdir of N entries; cp -a and rm -rf of a source tree.
# Prints a table of medians (spread shown) with daxfs ÷ reference and daxfs ÷ tmpfs,
# writes results.json / results.csv under the results directory it prints, and draws
# images/bench.png (python3-matplotlib, optional). Figures, not pass/fail. For every write
# job on a daxfs mount it also reports write amplification: the daemon's write_bytes
# (/proc/PID/io) over the job and the fsync that makes it durable, ÷ the bytes fio wrote.
#
# Usage: scripts/bench.sh [--quick] [--passes N] [--runtime S] [--entries N | --big]
#                         [--fs LIST] [--only REGEX] [--out DIR]
#   --quick      one pass, 1 s per fio job, 64 MiB files, 2,000 entries (about 6 minutes on a busy 2-core machine)
#   (default)    3 passes, 2 s per fio job, 256 MiB files, 10,000 entries
#   --big        100,000 entries for the metadata workloads
#   --fs LIST    comma-separated subset of daxfs,daxfs-disk,memfs,tmpfs
#   --only REGEX run only the workloads whose name matches
#
# Scaling: scripts/bench.sh --scaling [--max-extents N] [--max-entries N] [--batch N]
#                                     [--kinds extents,dir] [--fs LIST] [--perf]
#   Cost per operation as a file grows in extents (4 KiB writes into holes, then
#   overwrites) and as a directory grows in entries (create, lookup, unlink, readdir), at
#   checkpoints 10, 20, 50, ... up to the maxima (default 100,000 each; 1,000,000 works,
#   slowly), on daxfs and memfs unless --fs says otherwise. Writes scaling.csv and
#   images/scaling-extents.png, images/scaling-dir.png. --perf records a call-graph
#   profile of each daxfs daemon (perf record -g) into the results directory.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh

passes=3; runtime=2; size_mb=256; entries=10000; maxsecs=10
fslist="daxfs,daxfs-disk,memfs,tmpfs"; only="."; out=""
scaling=0; max_extents=100000; max_entries=100000; batch=1000; perf=0; fs_given=0; kinds=extents,dir
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) passes=1; runtime=1; size_mb=64; entries=2000; maxsecs=3 ;;
        --passes) passes=$2; shift ;;
        --runtime) runtime=$2; shift ;;
        --entries) entries=$2; shift ;;
        --big) entries=100000; maxsecs=120 ;;
        --fs) fslist=$2; fs_given=1; shift ;;
        --scaling) scaling=1 ;;
        --max-extents) max_extents=$2; shift ;;
        --max-entries) max_entries=$2; shift ;;
        --batch) batch=$2; shift ;;
        --kinds) kinds=$2; shift ;;
        --perf) perf=1 ;;
        --only) only=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: scripts/bench.sh [--quick] [--passes N] [--runtime S] [--entries N | --big] [--fs LIST] [--only REGEX] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done

scripts/deps.sh --bench >/dev/null || scripts/deps.sh >/dev/null
build_daxfs
(cargo build --release --quiet --example memfs)
MEMFS=$DAXFS_ROOT/target/release/examples/memfs
# The plots want matplotlib: the first python3 that has it (a pyenv python3 ahead in PATH
# may not see the distribution's python3-matplotlib).
PYPLOT=python3
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import matplotlib' 2>/dev/null; then PYPLOT=$p; break; fi
done
"$PYPLOT" -c 'import matplotlib' 2>/dev/null ||
    echo "bench: python3-matplotlib is missing: no plots (scripts/deps.sh --bench installs it)" >&2

[ -n "$out" ] || out=$DAXFS_ROOT/target/bench/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
work=$(mktemp -d /tmp/daxfs-bench.XXXXXX)
disk=$(mktemp -d "${DAXFS_BENCH_DISK:-/var/tmp}/daxfs-bench.XXXXXX")
memfs_pid=""

# Every mount made here goes, however the run ends (EXIT also runs after INT/TERM).
# shellcheck disable=SC2317  # invoked by the traps
cleanup() {
    set +e
    for fs in daxfs daxfs-disk; do unmount_dir "$work/$fs"; done
    if [ -n "$memfs_pid" ]; then
        is_mounted "$work/memfs" && { umount "$work/memfs" 2>/dev/null || umount -l "$work/memfs"; }
        # The unmount ends its session; it exits by itself.
        for _ in $(seq 50); do kill -0 "$memfs_pid" 2>/dev/null || break; sleep 0.1; done
        kill "$memfs_pid" 2>/dev/null
        wait "$memfs_pid" 2>/dev/null
    fi
    is_mounted "$work/tmpfs" && { umount "$work/tmpfs" 2>/dev/null || umount -l "$work/tmpfs"; }
    rm -rf "$work" "$disk"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_mounted DIR [PID]: until DIR is a mount (or PID died).
wait_mounted() {
    local _
    for _ in $(seq 100); do
        is_mounted "$1" && return 0
        [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: $1 did not mount" >&2
    return 1
}

# mount_fs NAME DIR: mount filesystem NAME on DIR.
mount_fs() {
    mkdir -p "$2"
    case "$1" in
        daxfs) "$DAXFS" mount "memfd:${memfd_gb:-4}G" "$2" ;;
        daxfs-disk)
            "$DAXFS" mkfs --size 4G "$disk/bench.img" >/dev/null
            "$DAXFS" mount "$disk/bench.img" "$2" ;;
        memfs) "$MEMFS" "$2" & memfs_pid=$!; wait_mounted "$2" "$memfs_pid" ;;
        tmpfs) mount -t tmpfs -o size=4G tmpfs "$2" ;;
        *) echo "bench: unknown filesystem $1" >&2; return 2 ;;
    esac
}

# Does this filesystem accept O_DIRECT? (tmpfs does since Linux 6.6; before, it refuses.)
direct_ok() {
    python3 -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)); os.unlink(sys.argv[1])' \
        "$1/direct-probe" 2>/dev/null
}

IFS=, read -r -a filesystems <<<"$fslist"

if [ "$scaling" = 1 ]; then
    [ "$fs_given" = 1 ] || filesystems=(daxfs memfs)
    # Room for the extents file's blocks (4 KiB each, plus the batches) and metadata.
    memfd_gb=$(( (max_extents + 4 * batch) * 4096 * 3 / 2 / (1 << 30) + 4 ))
    csv=$out/scaling.csv
    echo "kind,fs,size,op,ns_per_op" >"$csv"
    echo "bench --scaling: ${filesystems[*]}; up to $max_extents extents and $max_entries entries, batches of $batch; results in $out"
    for fs in "${filesystems[@]}"; do
        mount_fs "$fs" "$work/$fs"
        IFS=, read -r -a kind_list <<<"$kinds"
        for kind in "${kind_list[@]}"; do
            mx=$([ $kind = extents ] && echo "$max_extents" || echo "$max_entries")
            perf_pid=""
            if [ "$perf" = 1 ] && [[ $fs == daxfs* ]]; then
                dpid=$(pgrep -f "daxfs mount .* $work/$fs\$" | head -1)
                perf record -g -q -p "$dpid" -o "$out/perf-$fs-$kind.data" 2>/dev/null &
                perf_pid=$!
            fi
            python3 scripts/bench/scaling.py "$kind" "$work/$fs" "$fs" "$mx" "$batch" | tee -a "$csv"
            if [ -n "$perf_pid" ]; then
                kill -INT "$perf_pid"; wait "$perf_pid" || true
                echo "profile: perf report -i $out/perf-$fs-$kind.data"
            fi
        done
        if [[ $fs == daxfs* ]]; then unmount_dir "$work/$fs"; fi
    done
    "$PYPLOT" scripts/bench/scaling_plot.py "$csv" "$DAXFS_ROOT/images" | tee "$out/scaling.txt"
    echo "results: $csv $out/scaling.txt"
    exit 0
fi
declare -A has_direct
notes=()
for fs in "${filesystems[@]}"; do
    mount_fs "$fs" "$work/$fs"
    if direct_ok "$work/$fs"; then has_direct[$fs]=1; else
        has_direct[$fs]=0
        notes+=("$fs refuses O_DIRECT here: its -direct rows are buffered runs of the same job.")
    fi
done

# The fio data file, laid out once per filesystem with 1 MiB writes (fio would lay it out
# with the job's block size, which on an image on disk means minutes of EOF-moving 4 KiB
# writes before every job).
for fs in "${filesystems[@]}"; do
    dd if=/dev/zero of="$work/$fs/data" bs=1M count="$size_mb" conv=fsync status=none
done

# name:rw:bs:direct:jobs:extra fio options (comma-separated)
fio_jobs=()
for d in 0 1; do
    for j in 1 2; do
        sfx=$([ $d = 1 ] && echo -direct || echo "")$([ $j = 2 ] && echo -2j || echo "")
        fio_jobs+=("randread-4k$sfx:randread:4k:$d:$j:" "randwrite-4k$sfx:randwrite:4k:$d:$j:"
                   "read-1m$sfx:read:1M:$d:$j:" "write-1m$sfx:write:1M:$d:$j:")
    done
done
fio_jobs+=("fdatasync-4k:randwrite:4k:0:1:--fdatasync=1" "append-4k:write:4k:0:1:--create_on_open=1")

raw=$out/raw.txt
: >"$raw"

# daemon_write_bytes FS: write_bytes of FS's daxfs daemon (/proc/PID/io: bytes of page
# cache it dirtied, which writeback sends to the disk), or nothing for other filesystems.
daemon_write_bytes() {
    local pid
    [[ $1 == daxfs* ]] || return 0
    pid=$(pgrep -f "daxfs mount .* $work/$1\$" | head -1)
    [ -n "$pid" ] || return 0
    awk '/^write_bytes/ {print $2}' "/proc/$pid/io" 2>/dev/null || true
}

# write_amp PASS FS JOB W0 FILE JSON: after a write job, make it durable (fsync of the
# file: a log force and checkpoint), then record the daemon's bytes written ÷ the bytes
# the job wrote (write amplification) into wamp.txt.
write_amp() {
    local w1 fio_bytes
    [ -n "$4" ] || return 0
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.close(fd)' "$5" 2>/dev/null || true
    w1=$(daemon_write_bytes "$2")
    fio_bytes=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["io_bytes"])' "$6")
    [ "$fio_bytes" -gt 0 ] || return 0
    python3 -c "print('$1 $2 $3', $w1 - $4, $fio_bytes, round(($w1 - $4) / $fio_bytes, 2))" >>"$out/wamp.txt"
}

# run_fio PASS FS JOB
run_fio() {
    local pass=$1 fs=$2 name rw bs direct jobs extra dir=$work/$2 file sz unit
    IFS=: read -r name rw bs direct jobs extra <<<"$3"
    [ "${has_direct[$fs]}" = 1 ] || direct=0
    file=data; sz=$((size_mb / jobs))
    local args=(--name="$name" --directory="$dir" --rw="$rw" --bs="$bs" --direct="$direct"
                --ioengine=psync --runtime="$runtime" --time_based --numjobs="$jobs"
                --group_reporting --output-format=json --size="${sz}M")
    [ "$jobs" = 1 ] || args+=(--offset_increment="${sz}M")
    [ "$name" != append-4k ] || file=append
    if [ -n "$extra" ]; then
        local ex
        IFS=, read -r -a ex <<<"$extra"
        args+=("${ex[@]}")
    fi
    unit=$([ "$bs" = 4k ] && echo IOPS || echo MiB/s)
    local w0
    w0=$(daemon_write_bytes "$fs")
    if fio "${args[@]}" --filename="$file" >"$out/$fs-$name.json" 2>"$out/$fs-$name.err"; then
        write_amp "$pass" "$fs" "$name" "$w0" "$dir/$file" "$out/$fs-$name.json"
        python3 - "$out/$fs-$name.json" "$pass" "$fs" "$name" "$unit" >>"$raw" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["jobs"][0]
side = "read" if d["read"]["io_bytes"] > 0 else "write"
v = d[side]["iops"] if sys.argv[5] == "IOPS" else d[side]["bw_bytes"] / 2**20
print(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], round(v, 1))
PY
    else
        echo "bench: fio $name on $fs failed: $(tail -1 "$out/$fs-$name.err")" >&2
        echo "$pass $fs $name $unit nan" >>"$raw"
    fi
    rm -f "$dir/append"
}

# A source tree for cp -a: this repository's sources, four times over.
tree=$work/tree
mkdir -p "$tree"
for i in 1 2 3 4; do
    mkdir "$tree/copy$i"
    cp -a src tests examples scripts docs Cargo.toml README.md "$tree/copy$i/"
done
tree_files=$(find "$tree" | wc -l)

# run_tree PASS FS: cp -a of the tree into FS, then rm -rf of the copy (entries/s).
run_tree() {
    local pass=$1 fs=$2 t0 t1 t2
    t0=$(date +%s.%N)
    cp -a "$tree" "$work/$fs/tree"
    t1=$(date +%s.%N)
    rm -rf "$work/$fs/tree"
    t2=$(date +%s.%N)
    python3 -c "import sys; n=$tree_files; print('$pass $fs cp-a entries/s', round(n/($t1-$t0)));
print('$pass $fs rm-rf entries/s', round(n/($t2-$t1)))" >>"$raw"
}

echo "bench: $passes passes on ${filesystems[*]}; fio ${runtime}s per job on ${size_mb} MiB; $entries entries; cp -a of $tree_files entries; results in $out"
for pass in $(seq "$passes"); do
    # A different filesystem goes first in each pass (rotation), so a slow spell on the
    # machine does not always land on the same one.
    k=$(( (pass - 1) % ${#filesystems[@]} ))
    order=("${filesystems[@]:k}" "${filesystems[@]:0:k}")
    for j in "${fio_jobs[@]}"; do
        name=${j%%:*}
        [[ $name =~ $only ]] || continue
        for fs in "${order[@]}"; do run_fio "$pass" "$fs" "$j"; done
    done
    if [[ meta =~ $only || create =~ $only ]]; then
        for fs in "${order[@]}"; do
            python3 scripts/bench/meta.py "$work/$fs" "$fs" "$pass" "$entries" "$maxsecs" >>"$raw"
        done
    fi
    if [[ cp-a =~ $only ]]; then
        for fs in "${order[@]}"; do run_tree "$pass" "$fs"; done
    fi
    echo "bench: pass $pass of $passes done"
done

"$PYPLOT" scripts/bench/report.py "$raw" "$DAXFS_ROOT/images" | tee "$out/table.md"
if [ -s "$out/wamp.txt" ]; then
    echo
    echo "Write amplification (daemon write_bytes from /proc/PID/io, job made durable by an fsync at its end, ÷ bytes the job wrote):"
    echo "| pass | fs | job | bytes written | bytes changed | amplification |"
    echo "|---|---|---|---:|---:|---:|"
    awk '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$out/wamp.txt"
fi | tee -a "$out/table.md"
if [ ${#notes[@]} -gt 0 ]; then echo; printf '%s\n' "${notes[@]}"; fi
echo
echo "results: $out/results.json $out/results.csv $out/table.md (raw: $raw)"
