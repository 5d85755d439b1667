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

use crate::btree::Tree;
use crate::error::Result;
use crate::log::mp::Mp;
use crate::log::trans::{SpaceOps, Trans};

/// This layer's side of the log's `SpaceOps`: give it to `Mp::new`.
pub static SPACE: Space = Space;

pub struct Space;

impl SpaceOps for Space {
    fn free_extent_now(&self, tx: &mut Trans<'_>, fsblock: u64, len: u64) -> Result<()> {
        alloc::free_extent_now(tx, fsblock, len)
    }
    fn check_free_range(&self, mp: &Mp, fsblock: u64, len: u64) -> Result<()> {
        alloc::check_free_range(mp, fsblock, len)
    }
    fn alloc_node(&self, tx: &mut Trans<'_>, tree: &Tree) -> Result<u64> {
        alloc::alloc_node(tx, tree)
    }
    fn free_node(&self, tx: &mut Trans<'_>, tree: &Tree, blk: u64) -> Result<()> {
        alloc::free_node(tx, tree, blk)
    }
}
