#!/usr/bin/env bash
# Memory figures (issue 10): N empty files created in directories of 1,000, the kernel's
# caches dropped (so it forgets every inode), then every file stat'd in a cold walk; on
# daxfs with mem=BUDGET, on daxfs with no budget to speak of (mem=1T), and on tmpfs, in the
# same run. For each daxfs run: the daemon's peak RssAnon (its anonymous memory: the
# memfd device's pages are shared memory and not counted), RssAnon at the end, and the
# reclaim counters; ops/s of each phase against tmpfs. RSS is sampled every 0.2 s into a
# CSV, and plotted to images/membench-rss.png when python3-matplotlib is there.
# Figures, not pass/fail.
# Usage: scripts/membench.sh [--files N | --1m] [--mem SIZE]   (default 200000 files, 64M)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh
build_daxfs

nfiles=200000
budget=64M
while [ $# -gt 0 ]; do
    case "$1" in
        --files) nfiles=$2; shift 2 ;;
        --1m) nfiles=1000000; shift ;;
        --mem) budget=$2; shift 2 ;;
        *) echo "usage: scripts/membench.sh [--files N | --1m] [--mem SIZE]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "membench: needs root (drop_caches, tmpfs)" >&2; exit 2; }

work=$(mktemp -d /tmp/daxfs-membench.XXXXXX)
mkdir "$work/mnt"
sampler=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
    unmount_dir "$work/mnt"
    umount "$work/mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The workload: create, drop caches, cold stat walk; prints "phase seconds" lines.
walk() {
    python3 - "$1" "$nfiles" <<'PY'
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
per = 1000
def phase(name, f):
    t = time.perf_counter()
    f()
    print(name, time.perf_counter() - t, flush=True)
def create():
    for d in range((n + per - 1) // per):
        os.mkdir(f"{root}/d{d}")
        for i in range(min(per, n - d * per)):
            os.close(os.open(f"{root}/d{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
def stat():
    for d in range((n + per - 1) // per):
        for i in range(min(per, n - d * per)):
            os.stat(f"{root}/d{d}/f{i}")
phase("create", create)
os.sync()
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("2")
time.sleep(2)  # forgets reach the daemon; the background reclaimer trims
print("mark cold", flush=True)
phase("stat", stat)
PY
}

results="$work/results"
: >"$results"
for run in "daxfs-mem=$budget" "daxfs-mem=1T" tmpfs; do
    csv="$work/$run.csv"
    if [ "$run" = tmpfs ]; then
        mount -t tmpfs -o size=8G tmpfs "$work/mnt"
        pid=""
    else
        "$DAXFS" mount -f -o "noatime,${run#daxfs-}" memfd:8G "$work/mnt" 2>"$work/$run.log" &
        pid=$!
        for _ in $(seq 100); do is_mounted "$work/mnt" && break; sleep 0.1; done
        is_mounted "$work/mnt" || { echo "membench: mount failed:" >&2; cat "$work/$run.log" >&2; exit 1; }
        echo "t_s,rss_anon_kb,phase" >"$csv"
        echo "phase" >"$work/phase"
        (
            t0=$(date +%s.%N)
            while kill -0 "$pid" 2>/dev/null; do
                kb=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
                [ -n "$kb" ] && echo "$(echo "$(date +%s.%N) - $t0" | bc),$kb,$(cat "$work/phase")" >>"$csv"
                sleep 0.2
            done
        ) &
        sampler=$!
    fi
    echo "create" >"$work/phase"
    while read -r what secs; do
        case "$what" in
            mark) echo "stat" >"$work/phase" ;;
            *) echo "$run $what $secs" >>"$results" ;;
        esac
    done < <(walk "$work/mnt")
    if [ -n "$pid" ]; then
        sleep 2
        "$DAXFS" stat "$work/mnt" | grep -E 'cached_inodes|mem_|reclaim_' | sed "s/^/$run: /" >"$work/$run.stat"
        echo "end" >"$work/phase"
        sleep 0.5
        unmount_dir "$work/mnt"
        wait "$pid" || true
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        sampler=""
    else
        umount "$work/mnt"
    fi
done

python3 - "$results" "$work" "$nfiles" "$budget" <<'PY'
import csv, sys, os
res, work, n, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t = {}
for line in open(res):
    run, phase, secs = line.split()
    t[(run, phase)] = float(secs)
runs = [f"daxfs-mem={budget}", "daxfs-mem=1T"]
print(f"{n} files, directories of 1000; ops/s (daxfs/tmpfs); daemon RssAnon in MiB")
print("| run | create ops/s | stat ops/s (cold) | peak RssAnon | RssAnon after walk |")
print("|---|---:|---:|---:|---:|")
for r in runs + ["tmpfs"]:
    c, s = n / t[(r, "create")], n / t[(r, "stat")]
    rc, rs = c / (n / t[("tmpfs", "create")]), s / (n / t[("tmpfs", "stat")])
    peak = last = ""
    p = f"{work}/{r}.csv"
    if os.path.exists(p):
        rows = list(csv.DictReader(open(p)))
        kb = [int(x["rss_anon_kb"]) for x in rows]
        walked = [int(x["rss_anon_kb"]) for x in rows if x["phase"] == "stat"]
        peak = f"{max(kb) / 1024:.1f}"
        last = f"{walked[-1] / 1024:.1f}" if walked else ""
    print(f"| {r} | {c:.0f} ({rc:.2f}) | {s:.0f} ({rs:.2f}) | {peak} | {last} |")
PY
echo
cat "$work"/daxfs-*.stat

mkdir -p images
/usr/bin/python3 - "$work" "$nfiles" "$budget" <<'PY' || echo "(no plot: python3-matplotlib missing)"
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
work, n, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fig, ax = plt.subplots(figsize=(8, 4))
for r in [f"daxfs-mem={budget}", "daxfs-mem=1T"]:
    rows = list(csv.DictReader(open(f"{work}/{r}.csv")))
    ax.plot([float(x["t_s"]) for x in rows], [int(x["rss_anon_kb"]) / 1024 for x in rows], label=r)
ax.set_xlabel("seconds (create, drop caches, cold stat walk)")
ax.set_ylabel("daemon RssAnon (MiB)")
ax.set_title(f"daxfs daemon memory: {n} files created, then stat'd cold")
ax.legend()
fig.tight_layout()
fig.savefig("images/membench-rss.png", dpi=100)
print("plot: images/membench-rss.png")
PY
