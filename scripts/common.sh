# shellcheck shell=bash
# Shared helpers for daxfs scripts (sourced). Mounts made here are always unmounted.
DAXFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAXFS=${DAXFS:-$DAXFS_ROOT/target/release/daxfs}
export PATH="$HOME/.cargo/bin:$PATH"

build_daxfs() {
    (cd "$DAXFS_ROOT" && cargo build --release --quiet)
}

# is_mounted DIR: DIR is in the mount table. Reads the table rather than stat()ing DIR,
# so a dead FUSE mount (daemon gone, ENOTCONN, where `mountpoint` fails) counts too.
is_mounted() {
    findmnt -rn --mountpoint "$1" >/dev/null 2>&1
}

# unmount_dir DIR: unmount (lazily if busy) and wait for the daxfs daemon to commit and
# exit. Never leaves the mount behind; a no-op when DIR is not mounted.
unmount_dir() {
    local dir=$1 _
    is_mounted "$dir" || return 0
    umount "$dir" 2>/dev/null || fusermount3 -u "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true
    for _ in $(seq 300); do
        pgrep -f "daxfs.* $dir( |\$)" >/dev/null || return 0
        sleep 0.1
    done
    echo "warning: the daxfs daemon serving $dir is still running 30 s after unmount" >&2
}

# unmount_under DIR: unmount every mount at or below DIR, deepest first (a sweep after a
# test that may have mounted things of its own and died before unmounting them).
unmount_under() {
    local base=$1 m
    findmnt -rn -o TARGET | awk -v b="$base" '$0 == b || index($0, b "/") == 1' | sort -r |
        while read -r m; do unmount_dir "$m"; done
}

# Where test images go: tmpfs when there is one, so that msync (which makes a page-cache
# image durable) costs memory bandwidth instead of disk writes; the persistence path is
# the same. DAXFS_TMP overrides.
test_tmpdir() {
    if [ -n "${DAXFS_TMP:-}" ]; then echo "$DAXFS_TMP"
    elif [ -d /dev/shm ] && [ -w /dev/shm ]; then echo /dev/shm
    else echo /tmp
    fi
}
