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

/// The most new blocks, at most `want`, whose `write_resblks` fits in `avail` blocks: how
/// big a piece an allocation that may be split (fallocate) can take now. Each piece still
/// reserves its worst case; what it did not use comes back at its commit, so the next
/// piece sees the space that is really left, and a request for all the free space that
/// statfs shows ends in smaller and smaller pieces instead of ENOSPC.
pub fn blocks_fitting(avail: u64, want: u64) -> u64 {
    let (mut lo, mut hi) = (0, want);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if write_resblks(mid) <= avail {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fitting_is_the_largest_that_fits() {
        for avail in [0u64, 1, 10, 11, 12, 100, 1290, 17674, 17675, 1 << 20] {
            for want in [0u64, 1, 100, 16384, 1 << 30] {
                let n = blocks_fitting(avail, want);
                assert!(n <= want);
                if n > 0 {
                    assert!(write_resblks(n) <= avail, "{avail} {want} {n}");
                }
                if n < want {
                    assert!(write_resblks(n + 1) > avail, "{avail} {want} {n}");
                }
            }
        }
    }
}
