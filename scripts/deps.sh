#!/usr/bin/env bash
# Install what daxfs's tests, demo and benchmarks need, when it is missing (Debian, root).
set -euo pipefail

need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v setfattr >/dev/null 2>&1 || need_apt+=(attr)
command -v xfs_io >/dev/null 2>&1 || need_apt+=(xfsprogs)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "deps: installing ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v pjdfstest >/dev/null 2>&1; then
    echo "deps: installing pjdfstest (cargo install, a few minutes)"
    cargo install --quiet pjdfstest
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "deps: installing cargo-nextest"
    cargo install --quiet --locked cargo-nextest
fi
[ -e /dev/fuse ] || { echo "deps: /dev/fuse is missing: daxfs needs FUSE" >&2; exit 1; }
