//! daxfs: a persistent-memory filesystem in user space (see README.md and docs/design.md).
//!
//! Layers, bottom up: `device` (the mapped pmem and its persistence primitives), `format`
//! (every on-media byte), `btree` (one generic B+tree), `trans` (transactions and the
//! metadata log), `alloc`/`ialloc` (free space and inodes per AG), `extent_map`/`bmap`
//! (file block mapping, the fault path), `dir`, `xattr`, `inode` (in-core inodes, locks),
//! `fs` (POSIX operations), then `mkfs`, `check`, and the `fuse` adapter and CLI on top.
//! `crashsim` and `crashcheck` are the crash-consistency checker (tests and tooling).

pub mod alloc;
pub mod bmap;
pub mod btree;
pub mod check;
pub mod crashcheck;
pub mod crashsim;
pub mod dax;
pub mod device;
pub mod dir;
pub mod error;
pub mod errtag;
pub mod extent_map;
pub mod format;
pub mod fs;
pub mod fuse;
/// Fuzzing entry points: one function per on-media parser, for `fuzz/` and the smoke test.
pub mod fuzzing;
pub mod ialloc;
pub mod inode;
pub mod mem;
pub mod mkfs;
pub mod mount;
pub mod mp;
pub mod trans;
pub mod xattr;
