#!/usr/bin/env bash
# Concurrency stress on a real mount: dbench clients and stress-ng filesystem stressors
# run at the same time on a fresh 4 GiB image (4 AGs); then everything is deleted, the
# mount is unmounted, and `daxfs check` must be clean with every block free again. Prints
# the mount's pending-free and out-of-order AG wait counters (src/trans.rs). Fails on any
# dbench or stress-ng error, a shutdown, or a check problem.
#
# --full runs the same on a 1 GiB image, which the workload fills: ENOSPC is then
# expected, but the filesystem must not shut down, deleting must work, and all space must
# come back.
#
# --mem SIZE mounts with -o mem=SIZE (a memory budget far below what the workload's inodes
# take, so reclaim runs all the time beside it) and prints the reclaim counters.
#
#   scripts/stress.sh [--full] [--mem SIZE] [SECONDS]     (default 30 s; scripts/test.sh
#   runs it plain and with --full; --mem 1M is not in it yet: see docs/testing.md)
set -euo pipefail
. "$(dirname "$0")/common.sh"
full=0
mem=""
while [ $# -gt 0 ]; do
    case "$1" in
        --full) full=1; shift ;;
        --mem) mem=$2; shift 2 ;;
        *) break ;;
    esac
done
secs=${1:-30}
size=4G
[ "$full" = 1 ] && size=1G
[ "$(id -u)" = 0 ] || { echo "stress: needs root (FUSE mounts with allow_other)" >&2; exit 1; }
need=()
command -v dbench >/dev/null 2>&1 || need+=(dbench)
command -v stress-ng >/dev/null 2>&1 || need+=(stress-ng)
if [ ${#need[@]} -gt 0 ]; then
    echo "stress: installing ${need[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
build_daxfs
tmp=$(mktemp -d "$(test_tmpdir)/daxfs-stress.XXXXXX")
mnt="$tmp/mnt"
mkdir -p "$mnt"
cleanup() {
    unmount_dir "$mnt"
    rm -rf "$tmp"
}
trap cleanup EXIT
"$DAXFS" mkfs "$tmp/img" --size "$size" --sparse >/dev/null
"$DAXFS" mount "$tmp/img" "$mnt" ${mem:+-o "mem=$mem"}
free0=$(stat -f -c '%f' "$mnt")
mkdir "$mnt/dbench" "$mnt/ng"
fail=0
problem() { echo "stress: $*"; fail=1; }
loadfile=$(ls /usr/share/dbench/client.txt* 2>/dev/null | head -1 || true)
dbench_args=(-D "$mnt/dbench" -t "$secs" 6)
[ -n "$loadfile" ] && dbench_args=(-c "$loadfile" "${dbench_args[@]}")
dbench "${dbench_args[@]}" > "$tmp/dbench.log" 2>&1 &
dpid=$!
ng_ok=1
stress-ng --temp-path "$mnt/ng" --timeout "${secs}s" --verify \
    --dir 2 --dentry 2 --link 1 --rename 2 --fallocate 1 --hdd 2 --hdd-bytes 16M \
    --xattr 1 --dirmany 1 --filename 1 > "$tmp/ng.log" 2>&1 || ng_ok=0
dbench_ok=1
wait "$dpid" || dbench_ok=0
grep -E "Throughput" "$tmp/dbench.log" || true
grep -E "successful run" "$tmp/ng.log" || true
if [ "$full" = 0 ]; then
    [ "$ng_ok" = 1 ] || problem "stress-ng failed"
    [ "$dbench_ok" = 1 ] || problem "dbench failed"
else
    grep -c "No space left on device" "$tmp/dbench.log" "$tmp/ng.log" | sed 's/^/ENOSPC lines: /' || true
fi
stats=$(getfattr --absolute-names --only-values -n trusted.daxfs.stats "$mnt")
grep -E '^(commits|pending_frees|ag_waits_out_of_order|shutdown) ' <<<"$stats"
grep -q '^shutdown false' <<<"$stats" || problem "the filesystem shut down"
if [ -n "$mem" ]; then
    grep -E '^(mem_budget|mem_peak|mem_budget_exceeded_by|cached_inodes|reclaim_[a-z_]+) ' <<<"$stats"
fi
rm -rf "$mnt/dbench" "$mnt/ng" || problem "deleting everything failed"
sync
# An unlinked file's blocks are freed at its last reference, which the kernel drops with a
# FORGET it sends when it gets round to it, and freed blocks count as free once the log
# force after their free (on an image file, at most the commit interval, 5 s): give it 20 s.
waited=0
for _ in $(seq 200); do
    free1=$(stat -f -c '%f' "$mnt")
    [ "$free0" = "$free1" ] && break
    sleep 0.1
    waited=$((waited + 1))
done
[ "$waited" = 0 ] || echo "stress: all free space back after $((waited / 10)).$((waited % 10)) s"
[ "$free0" = "$free1" ] || problem "free blocks $free0 before, $free1 after deleting everything"
unmount_dir "$mnt"
"$DAXFS" check "$tmp/img" || problem "check found problems"
if [ "$fail" != 0 ]; then
    tail -n 20 "$tmp/dbench.log" "$tmp/ng.log" >&2 || true
    exit 1
fi
echo "stress: passed"
