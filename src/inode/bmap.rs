//! File block mapping: the data fork on media (inline extent list, then a bmbt B+tree)
//! (XFS's xfs_bmap.c). The fault path that maps or allocates file blocks over it
//! (iomap_begin) is `dax/`.
//!
//! In memory every inode's mapping is an `ExtentMap`; the media form follows it at each
//! transaction (`sync_fork`): up to INLINE_EXTENTS_MAX extents live in the inode, more
//! in a bmbt keyed by file block offset. Extents read from media are verified to lie inside
//! one AG's free area before anything trusts them.
//!
//! A block is never visible in a file before it was written or zeroed: newly allocated
//! blocks are filled by the caller (`fill`) and flushed before the transaction that maps
//! them commits; unwritten extents read as zeros and have the unwritten bytes of a block
//! zeroed when they are first written.

use crate::btree::{self, BlockIo, Root, Tree, TreeOps};
use crate::error::{FsError, Result};
use crate::format::*;
use crate::inode::extent_map::{Change, Extent, ExtentMap};
use crate::inode::{DiskInode, InodeData};
use crate::log::mp::Mp;
use crate::log::trans::Trans;

pub static BMBT: TreeOps = TreeOps {
    name: "bmbt",
    magic: BMBT_MAGIC,
    key_len: 8,
    val_len: 16,
    max_recs: None,
};

pub fn bmbt_tree(ino: u64) -> Tree {
    Tree {
        ops: &BMBT,
        owner: ino,
    }
}

fn ext_val(e: &Extent) -> u128 {
    e.startblock as u128 | ((e.len as u128) << 64) | ((e.unwritten as u128) << 96)
}

fn ext_from(k: u128, v: u128) -> Extent {
    Extent {
        fileoff: k as u64,
        startblock: v as u64,
        len: ((v >> 64) & 0xffff_ffff) as u64,
        unwritten: (v >> 96) & 1 != 0,
    }
}

/// Is `e` a plausible extent of this filesystem? (inside one AG, past its headers)
pub fn extent_valid(mp: &Mp, e: &Extent) -> bool {
    e.len > 0
        && e.len <= crate::inode::extent_map::EXTENT_LEN_MAX
        && e.fileoff
            .checked_add(e.len)
            .is_some_and(|end| end <= FILE_SIZE_MAX.div_ceil(BLOCK_SIZE as u64))
        && e.startblock
            .checked_add(e.len)
            .is_some_and(|end| end <= mp.sb.total_blocks)
        && mp.ag_of(e.startblock) == mp.ag_of(e.startblock + e.len - 1)
        && mp.agbno(e.startblock) >= AG_FIRST_FREE
}

/// Build the in-core map of an inode just decoded.
pub fn load_map<I: BlockIo>(
    io: &mut I,
    mp: &Mp,
    di: &DiskInode,
    inline: Vec<Extent>,
) -> Result<ExtentMap> {
    let exts = if di.format == FMT_BTREE {
        let mut v = Vec::new();
        let mut bad = None;
        btree::walk(io, &bmbt_tree(di.ino), &di.bmbt, 0, &mut |k, val| {
            let e = ext_from(k, val);
            if val >> 97 != 0 {
                bad = Some(format!(
                    "bmbt record at {} has unknown flag bits",
                    e.fileoff
                ));
                return Ok(false);
            }
            v.push(e);
            Ok(true)
        })?;
        if let Some(b) = bad {
            return Err(FsError::corrupt(format!("inode {}: {b}", di.ino)));
        }
        v
    } else {
        inline
    };
    for e in &exts {
        if !extent_valid(mp, e) {
            return Err(FsError::corrupt(format!(
                "inode {}: extent (file block {}, device block {}, {} blocks) outside the filesystem",
                di.ino, e.fileoff, e.startblock, e.len
            )));
        }
    }
    ExtentMap::from_extents(exts).map_err(|e| FsError::corrupt(format!("inode {}: {e}", di.ino)))
}

/// Bring the media form of the data fork in line with the in-core map, then write the
/// inode. Every transaction that changes an inode ends with this.
pub fn sync_inode(tx: &mut Trans, d: &mut InodeData) -> Result<()> {
    if d.di.format != FMT_LOCAL {
        sync_fork(tx, d)?;
    }
    write_inode(tx, d);
    d.times_dirty = false;
    Ok(())
}

fn sync_fork(tx: &mut Trans, d: &mut InodeData) -> Result<()> {
    let tree = bmbt_tree(d.di.ino);
    let n = d.map.len();
    if n <= INLINE_EXTENTS_MAX {
        if d.di.format == FMT_BTREE {
            btree::destroy(tx, &tree, &mut d.di.bmbt)?;
        }
        d.di.format = FMT_EXTENTS;
        d.map.clear_changes();
        return Ok(());
    }
    let changes = d.map.take_changes();
    if d.di.format != FMT_BTREE || changes.len() > 64 && changes.len() > n / 2 {
        // Rebuild from scratch: cheaper than many single-record changes, and the way
        // from inline to a tree.
        if d.di.format == FMT_BTREE {
            btree::destroy(tx, &tree, &mut d.di.bmbt)?;
        }
        let mut root = Root::default();
        for e in d.map.iter() {
            btree::insert(tx, &tree, &mut root, e.fileoff as u128, ext_val(e))?;
        }
        d.di.bmbt = root;
        d.di.format = FMT_BTREE;
        return Ok(());
    }
    let mut root = d.di.bmbt;
    for c in changes {
        match c {
            Change::Remove(k) => {
                btree::delete(tx, &tree, &mut root, k as u128)?;
            }
            Change::Update(e) => btree::update(tx, &tree, &root, e.fileoff as u128, ext_val(&e))?,
            Change::Insert(e) => {
                btree::insert(tx, &tree, &mut root, e.fileoff as u128, ext_val(&e))?
            }
        }
    }
    d.di.bmbt = root;
    Ok(())
}

/// Encode the inode into its slot in this transaction.
pub fn write_inode(tx: &mut Trans, d: &InodeData) {
    let mut slot = [0u8; INODE_SIZE];
    d.di.encode(&d.map, &tx.mp.sb.uuid, &mut slot);
    let ino = d.di.ino;
    tx.write_raw(tx.mp.ino_block(ino), tx.mp.ino_offset(ino), &slot);
}

/// Free every block mapped in file blocks [start, start+len) (at commit).
pub fn free_range(tx: &mut Trans, d: &mut InodeData, start: u64, len: u64) {
    for (blk, n) in d.map.remove_range(start, len) {
        tx.defer_free(blk, n);
    }
}

/// Worst-case number of extents a transaction may remove before it must commit (bounds
/// the log record of truncate and inactivation).
pub const REMOVE_EXTENTS_PER_TX: usize = 128;

/// The end (exclusive, in blocks) of a range starting at `start` that holds at most
/// REMOVE_EXTENTS_PER_TX extents, so one transaction can remove it.
pub fn bounded_remove_end(map: &ExtentMap, start: u64, end: u64) -> u64 {
    let mut n = 0;
    for e in map.iter_from(start) {
        if e.fileoff >= end {
            break;
        }
        n += 1;
        if n > REMOVE_EXTENTS_PER_TX {
            return e.fileoff.max(start + 1);
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_roundtrip() {
        let e = Extent {
            fileoff: 7,
            startblock: 123456789,
            len: 2000,
            unwritten: true,
        };
        assert_eq!(ext_from(7, ext_val(&e)), e);
        let e = Extent {
            unwritten: false,
            ..e
        };
        assert_eq!(ext_from(7, ext_val(&e)), e);
    }
}
