# Shared helpers for daxfs scripts (sourced). Mounts made here are always unmounted.
DAXFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAXFS=${DAXFS:-$DAXFS_ROOT/target/release/daxfs}

build_daxfs() {
    (cd "$DAXFS_ROOT" && cargo build --release --quiet)
}

# unmount DIR: lazily if busy; never leaves the mount behind.
unmount_dir() {
    local dir=$1
    if mountpoint -q "$dir" 2>/dev/null; then
        umount "$dir" 2>/dev/null || fusermount3 -u "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true
        # Wait for the daemon to commit and exit.
        for _ in $(seq 50); do
            pgrep -f "daxfs.* $dir( |$)" >/dev/null || break
            sleep 0.1
        done
    fi
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
