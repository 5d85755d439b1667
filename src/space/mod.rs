//! The space layer: free space and inodes, per allocation group.
//!
//! Owns the free-space B+trees (by block and by length) and the AGFL (`alloc`), and the
//! inode chunks with their inobt, finobt and unlinked tree (`ialloc`): what the AGF and
//! AGI describe. Every change runs inside a transaction of the log layer, under the AG
//! locks `Trans` hands out in order.
//!
//! May call: `error`, `pmem`, `format`, `btree`, `log`. Never inodes or files: callers
//! pass block numbers and hints.

pub mod alloc;
pub mod ialloc;
