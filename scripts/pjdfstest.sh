#!/usr/bin/env bash
# POSIX conformance: pjdfstest (crates.io) on a fresh daxfs mount, as root, with the
# default (multi-user) options. Exclusions and their reasons: docs/pjdfstest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh
export PATH="$HOME/.cargo/bin:$PATH"
command -v pjdfstest >/dev/null || scripts/deps.sh
[ -x "$DAXFS" ] || build_daxfs

tmp=$(mktemp -d "$(test_tmpdir)/daxfs-pjd.XXXXXX")
mkdir "$tmp/mnt" "$tmp/other"
chmod 755 "$tmp"  # the unprivileged test users must reach the mount
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() { unmount_dir "$tmp/mnt"; rm -rf "$tmp"; }
trap cleanup EXIT
"$DAXFS" mkfs "$tmp/img" --size 1G >/dev/null
"$DAXFS" mount "$tmp/img" "$tmp/mnt"
chmod 755 "$tmp/mnt"
status=0
(cd "$tmp/mnt" && pjdfstest -c "$DAXFS_ROOT/scripts/pjdfstest.toml" -p "$tmp/mnt" -s "$tmp/other") >"$tmp/log" 2>&1 || status=$?
grep -E "FAILED|skipped" "$tmp/log" || true
grep -E "^Summary" "$tmp/log" || tail -20 "$tmp/log"
unmount_dir "$tmp/mnt"
if ! "$DAXFS" check "$tmp/img"; then
    echo "pjdfstest: daxfs check failed after the run"
    status=1
fi
exit $status
