#!/usr/bin/env bash
# Install what daxfs's tests, demo and benchmarks need, when it is missing (Debian-like
# systems; as root, or through sudo). Idempotent: with everything present it installs
# nothing and prints one line. `--bench` also installs what only the benchmark's plots
# need (python3-matplotlib); no test needs it.
set -euo pipefail
bench=0
[ "${1:-}" != --bench ] || bench=1
export PATH="$HOME/.cargo/bin:$PATH"

need_apt=()
command -v fusermount3 >/dev/null 2>&1 && command -v mount.fuse3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v setfattr >/dev/null 2>&1 || need_apt+=(attr)
command -v setfacl >/dev/null 2>&1 || need_apt+=(acl)
command -v xfs_io >/dev/null 2>&1 && command -v mkfs.xfs >/dev/null 2>&1 || need_apt+=(xfsprogs)
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v dbench >/dev/null 2>&1 || need_apt+=(dbench)
command -v stress-ng >/dev/null 2>&1 || need_apt+=(stress-ng)
[ "$bench" = 0 ] || python3 -c 'import matplotlib' 2>/dev/null || need_apt+=(python3-matplotlib)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "deps: installing ${need_apt[*]} (apt-get)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "deps: cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }
if ! command -v pjdfstest >/dev/null 2>&1; then
    echo "deps: installing pjdfstest (cargo install, a few minutes)"
    cargo install --quiet --locked pjdfstest || cargo install --quiet pjdfstest
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "deps: installing cargo-nextest (cargo install, a few minutes)"
    cargo install --quiet --locked cargo-nextest
fi
[ -e /dev/fuse ] || { echo "deps: /dev/fuse is missing: daxfs needs FUSE (modprobe fuse)" >&2; exit 1; }
[ ${#need_apt[@]} -gt 0 ] || echo "deps: fuse3, fio, attr, xfsprogs, python3, dbench, stress-ng, pjdfstest, cargo-nextest present"
