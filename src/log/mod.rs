//! The log layer: the per-mount context, transactions, commit and log recovery.
//!
//! Owns `Mp` (XFS's xfs_mount: device, geometry, counters, per-AG state and the log
//! state) and `Trans`: block reservation, private copies of metadata blocks, the AG lock
//! order, the commit record and its ordering, checkpoints, busy blocks (`trans.rs`), deferred
//! durability on image files with its log forces (`force.rs`), and replay at mount
//! (`recovery.rs`). `Mp` is here and not lower because it holds the log
//! state and begins transactions (`Mp::trans`): the two are one unit, as in XFS, where
//! every transaction carries its mount.
//!
//! May call: `error`, `pmem`, `mem`, `format`, `btree`. It knows nothing of free-space
//! trees or inodes: deferred frees and B+tree node allocation are done by the space layer
//! through the `SpaceOps` table the mount is given (XFS's deferred-op types), and the
//! lock-order counter the inode locks bump lives here (`lockorder`). Frees that must wait
//! (blocks a revoked direct-access client may still store into) are held on the pending
//! list until released (`holds`).

pub mod force;
pub mod holds;
pub mod lockorder;
pub mod mp;
pub mod recovery;
pub mod trans;
