#!/usr/bin/env bash
# Mount daxfs on the embedded default (a 1 GiB memfd emulating device-DAX) and use it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh
scripts/deps.sh
build_daxfs

mnt=$(mktemp -d /tmp/daxfs-demo.XXXXXX)
cleanup() { unmount_dir "$mnt"; rmdir "$mnt" 2>/dev/null || true; }
trap cleanup EXIT

set -x
"$DAXFS" mount memfd:1G "$mnt"
findmnt "$mnt"
df -h "$mnt"
mkdir "$mnt/docs"
echo "hello from daxfs" > "$mnt/docs/hello.txt"
cat "$mnt/docs/hello.txt"
cp "$DAXFS" "$mnt/daxfs-binary"
cmp "$DAXFS" "$mnt/daxfs-binary"
ln -s docs/hello.txt "$mnt/link"
ls -l "$mnt" "$mnt/docs"
stat "$mnt/docs/hello.txt"
if command -v fio >/dev/null; then
    fio --name=demo --directory="$mnt" --rw=randrw --bs=4k --size=64M --runtime=3 --time_based \
        --ioengine=psync --group_reporting 2>/dev/null | grep -E 'READ:|WRITE:'
else
    dd if=/dev/zero of="$mnt/zeros" bs=1M count=256 conv=fsync
fi
df -h "$mnt"
"$DAXFS" stat "$mnt"
set +x
echo "demo done; unmounting (the memfd and everything on it go away)"
