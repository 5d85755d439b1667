//! daxfs: a persistent-memory filesystem in user space (see README.md and docs/design.md).
//!
//! The layers, bottom up, one folder or file each. A layer names only the layers listed
//! above it here (`scripts/layers.sh` prints the import graph and fails on a cycle); each
//! folder's `mod.rs` says what it owns and what it may call.

pub mod error; // error values and errnos, used by every layer
pub mod mem; // allocation contexts (scopes), memory budget, reclaimer, reclaim lock checker
pub mod format; // every on-media byte, one file per structure (pure: no I/O)
pub mod pmem; // the mapped device: store, flush, fence; tracing backend; error tags
pub mod btree; // the one generic B+tree
pub mod log; // the mount context, transactions, commit, log recovery
pub mod space; // free space and inode allocation per AG
pub mod inode; // in-core inodes, their locks and lock order, extent map and data fork
pub mod dax; // the fault path: file ranges to device blocks; the layout lease table
pub mod dir; // directories: short form, data blocks, hash index
pub mod xattr; // extended attributes
pub mod fs; // the POSIX operations over the core, one file per family
pub mod mkfs; // tool: make a filesystem
pub mod check; // tool: verify a filesystem
pub mod repair; // tool: rebuild a damaged filesystem, offline
pub mod fuse; // the thin FUSE adapter
pub mod daxserver; // the direct-access control socket (clients' layouts), beside fuse
pub mod daemonlog; // where the background daemon logs: syslog, else a file
pub mod mount; // mount options, daemon, mount helper
#[cfg(feature = "testing")]
pub mod testing; // crash simulator/checker and fuzzing entry points (feature "testing")
