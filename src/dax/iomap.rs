//! The fault path (XFS's iomap_begin): a file block to its device offset, and the holes
//! of a file range allocated, filled by the caller, and mapped. Every path that maps file
//! blocks to write them comes here: write, fallocate, a long symlink, directory growth,
//! and next the DAX fault of a client mapping.
//!
//! A block is never visible in a file before it was written or zeroed: `fill` initialises
//! new blocks before the mapping is inserted, and the caller flushes them before the
//! transaction that maps them commits.

use crate::error::{Result, err};
use crate::format::*;
use crate::inode::InodeData;
use crate::inode::extent_map::Extent;
use crate::log::mp::Mp;
use crate::log::trans::Trans;

/// Blocks to reserve for mapping `nblocks` new blocks into a file: the blocks, plus bmbt
/// growth (a split per level, per extent in the worst case of fragmented free space).
pub fn write_resblks(nblocks: u64) -> u64 {
    nblocks + (nblocks / 64 + 2) * BTREE_LEVELS_MAX as u64
}

/// Allocate every hole in file blocks [start, start+len), as written (after `fill` has
/// initialised the blocks) or unwritten. `fill(device block, file block, len)` runs before
/// the mapping is inserted, so it can write data or zeros in place.
pub fn alloc_holes(
    tx: &mut Trans,
    d: &mut InodeData,
    start: u64,
    len: u64,
    unwritten: bool,
    fill: &mut dyn FnMut(&Mp, u64, u64, u64),
) -> Result<()> {
    let end = start + len;
    let mut pos = start;
    while pos < end {
        if let Some(e) = d.map.find(pos) {
            pos = e.end().min(end);
            continue;
        }
        let hole_end = d.map.next_mapped(pos).map_or(end, |n| n.min(end));
        // Allocate next to the previous block of the file, else near the inode.
        let hint = match pos.checked_sub(1).and_then(|p| d.map.find(p)) {
            Some(prev) => prev.startblock + prev.len,
            None => tx.mp.ino_block(d.di.ino),
        };
        let Some((blk, got)) = crate::space::alloc::alloc_extent(tx, hint, hole_end - pos, 1)?
        else {
            return err(libc::ENOSPC);
        };
        fill(tx.mp, blk, pos, got);
        d.map.insert(Extent {
            fileoff: pos,
            startblock: blk,
            len: got,
            unwritten,
        });
        pos += got;
    }
    Ok(())
}

/// Device byte offset of file block `fblk` within extent `e`.
pub fn dev_off(e: &Extent, fblk: u64) -> u64 {
    debug_assert!(fblk >= e.fileoff && fblk < e.end());
    (e.startblock + (fblk - e.fileoff)) * BLOCK_SIZE as u64
}
