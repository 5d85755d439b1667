#!/usr/bin/env bash
# Make images/daxfs-v1-golden.img.gz: a small image of the current format with known
# contents, kept in git so that later versions prove they still mount it
# (tests/golden.rs). Run only when a new format version is introduced; never rewrite an
# existing golden image.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
build_daxfs
out=$PWD/images/daxfs-v1-golden.img.gz
[ -e "$out" ] && { echo "$out exists: golden images are never rewritten" >&2; exit 1; }
tmp=$(mktemp -d /tmp/daxfs-golden.XXXXXX)
mkdir "$tmp/mnt"
cleanup() { unmount_dir "$tmp/mnt"; rm -rf "$tmp"; }
trap cleanup EXIT
"$DAXFS" mkfs "$tmp/img" --size 16M --label golden-v1 >/dev/null
"$DAXFS" mount "$tmp/img" "$tmp/mnt"
cd "$tmp/mnt"
mkdir -p dir/sub
printf 'golden file\n' > dir/file
for i in $(seq 1 40); do printf 'entry %s\n' "$i" > "dir/sub/e$i"; done
head -c 200000 /dev/zero | tr '\0' 'g' > big
for i in $(seq 0 2 30); do printf 'frag' | dd of=frag bs=4096 seek="$i" conv=notrunc status=none; done
ln -s dir/file short-link
ln -s "$(printf 'l%.0s' $(seq 300))" long-link
ln dir/file hard
mkfifo fifo
setfattr -n user.golden -v yes dir/file
chmod 640 dir/file
touch -d '2020-01-02 03:04:05.123456789' dir/file
cd /
unmount_dir "$tmp/mnt"
"$DAXFS" check "$tmp/img"
gzip -9 -c "$tmp/img" > "$out"
ls -l "$out"
