//! One generic B+tree for every tree of daxfs, driven by a small per-tree table (`TreeOps`),
//! as libxfs's xfs_btree.c: free space by block and by length (bnobt, cntbt), inode chunks
//! (inobt, finobt), unlinked inodes, file extents (bmbt) and directory hash indexes.
//!
//! Keys and values are fixed-size unsigned integers (up to 16 bytes each), carried as
//! `u128` in memory and stored little-endian with the tree's own widths. Keys are unique;
//! trees that need duplicates fold a tiebreaker into the key (see dir.rs).
//!
//! Node layout (format.rs): block header, level u16, numrecs u16, then records. A leaf
//! (level 0) holds (key, value) pairs; an interior node holds (key, child block) pairs where
//! key[i] <= every key under child i < key[i+1]. There are no sibling pointers: iteration
//! climbs the cursor path. Deletion frees nodes that become empty and collapses a root with
//! a single child; underfull nodes are not merged (lookups stay O(height)).
//!
//! No recursion over on-media data: every walk is a loop bounded by BTREE_LEVELS_MAX.

use crate::error::Result;
use crate::format::Block;

/// What a tree is: its name (for messages), block magic and record widths.
#[derive(Debug)]
pub struct TreeOps {
    pub name: &'static str,
    pub magic: u32,
    pub key_len: usize,
    pub val_len: usize,
    /// Records per node, for tests that want deep trees from few records. `None`: as many
    /// as fit in a block.
    pub max_recs: Option<usize>,
}

/// One tree instance: its table and its owner (AG number for AG trees, inode number for
/// inode trees). The owner is stamped in every node header and checked on read.
#[derive(Debug, Clone, Copy)]
pub struct Tree {
    pub ops: &'static TreeOps,
    pub owner: u64,
}

/// Where a tree starts. `blk == 0` is the empty tree. `level` is the root's level (0 = the
/// root is a leaf). The owner stores it (AGF, AGI, inode) and writes it back when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Root {
    pub blk: u64,
    pub level: u8,
}

/// Access to metadata blocks, implemented by the transaction (and by tests in memory).
pub trait BlockIo {
    fn uuid(&self) -> [u8; 16];
    /// A verified copy of metadata block `blk` (CRC, magic, block number and uuid checked,
    /// and the owner when given).
    fn read_meta(
        &mut self,
        blk: u64,
        magic: u32,
        owner: Option<u64>,
        what: &'static str,
    ) -> Result<Box<Block>>;
    /// Stage a new image of metadata block `blk`; LSN and CRC are stamped at commit.
    fn write_meta(&mut self, blk: u64, data: &Block);
    /// A block for a new node of `tree`.
    fn alloc_node(&mut self, tree: &Tree) -> Result<u64>;
    /// Give back a node of `tree` that no longer holds records.
    fn free_node(&mut self, tree: &Tree, blk: u64) -> Result<()>;
}
