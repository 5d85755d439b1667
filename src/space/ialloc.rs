//! Inode allocation per AG (XFS's xfs_ialloc.c).
//!
//! Inodes live in chunks of 64 (8 contiguous blocks); an inode's number is its block
//! number times 8 plus its slot, so finding an inode needs no lookup. Each AG's inobt maps
//! every chunk's first inode to a mask of its free inodes; the finobt holds the same
//! records for just the chunks that have a free inode, so allocation is one lookup.
//! A chunk whose inodes are all free again is given back to free space.
//!
//! The AG's unlinked tree lists inodes with no links that are still open. They are freed at
//! last close; a crash leaves them listed, and mount frees them.

use std::sync::atomic::Ordering::Relaxed;

use crate::btree::{self, BlockIo, Root, Tree, TreeOps};
use crate::error::{Result, err};
use crate::format::*;
use crate::log::trans::{AgPass, Trans};

pub static INOBT: TreeOps = TreeOps {
    name: "inobt",
    magic: INOBT_MAGIC,
    key_len: 8,
    val_len: 8,
    max_recs: None,
};
pub static FINOBT: TreeOps = TreeOps {
    name: "finobt",
    magic: FINOBT_MAGIC,
    key_len: 8,
    val_len: 8,
    max_recs: None,
};
pub static UNLINKBT: TreeOps = TreeOps {
    name: "unlinked",
    magic: UNLINKBT_MAGIC,
    key_len: 8,
    val_len: 0,
    max_recs: None,
};

pub const ALL_FREE: u64 = u64::MAX;

pub fn ino_tree(agno: u32) -> Tree {
    Tree {
        ops: &INOBT,
        owner: agno as u64,
    }
}
pub fn fino_tree(agno: u32) -> Tree {
    Tree {
        ops: &FINOBT,
        owner: agno as u64,
    }
}
pub fn unlinked_tree(agno: u32) -> Tree {
    Tree {
        ops: &UNLINKBT,
        owner: agno as u64,
    }
}

pub fn read_agi(tx: &mut Trans, agno: u32) -> Result<Agi> {
    tx.lock_ag(agno)?;
    let blk = tx.mp.fsblock(agno, AGI_BLOCK);
    let b = tx.read_meta(blk, AGI_MAGIC, Some(agno as u64), "AGI")?;
    let agi = Agi::decode(&b[..]);
    crate::ensure_sane!(agi.agno == agno, "AGI of AG {agno}: says AG {}", agi.agno);
    crate::ensure_sane!(
        agi.free <= agi.count,
        "AGI of AG {agno}: {} free of {} inodes",
        agi.free,
        agi.count
    );
    Ok(agi)
}

pub fn write_agi(tx: &mut Trans, agi: &Agi) {
    let blk = tx.mp.fsblock(agi.agno, AGI_BLOCK);
    // Verified when this transaction read it (under the AG lock, so unchanged since):
    // the raw bytes, without a second verified read that could fail half way.
    let mut b = new_block();
    tx.read_raw(blk, 0, &mut b[..]);
    agi.encode(&mut b[..]);
    tx.write_meta(blk, &b);
    tx.mp.ags[agi.agno as usize]
        .free_inodes
        .store(agi.free, Relaxed);
}

/// Blocks a transaction must reserve to allocate one inode (a chunk plus tree splits).
pub const IALLOC_RESBLKS: u64 = CHUNK_BLOCKS + 2 * BTREE_LEVELS_MAX as u64;

/// Allocate an inode, preferring AG `hint_ag`. The caller initialises the slot.
///
/// Like XFS's xfs_dialloc: the first AG from the hint on that has a free inode, or room
/// for a new chunk, gets it (so new directories spread over the AGs as the caller's hint
/// rotates). The choice uses the in-core hints and keeps the AG lock order (trans.rs):
/// first AGs held or free to lock that also have room for the rest of the transaction's
/// blocks, then AGs in order, then a bounded wait for any; an AG that turns out unusable
/// is let go again.
pub fn ialloc(tx: &mut Trans, hint_ag: u32) -> Result<u64> {
    let ag_count = tx.mp.sb.ag_count;
    let hint_ag = hint_ag % ag_count;
    let room = tx.blocks_left() + crate::space::alloc::AGFL_MIN as u64;
    for pass in AgPass::ALL {
        for i in 0..ag_count {
            let agno = (hint_ag + i) % ag_count;
            let perag = &tx.mp.ags[agno as usize];
            let free_blocks = perag.free_blocks.load(Relaxed);
            let can_grow = free_blocks >= CHUNK_BLOCKS + room;
            let unusable = perag.free_inodes.load(Relaxed) == 0 && !can_grow
                || pass == AgPass::Try && free_blocks < room;
            if unusable && !tx.holds_ag(agno) || !tx.lock_ag_for(agno, pass) {
                continue;
            }
            let agi = read_agi(tx, agno)?;
            if agi.free > 0 {
                return take_free_inode(tx, agi);
            }
            if can_grow && let Some(ino) = alloc_chunk(tx, agno)? {
                return Ok(ino);
            }
            tx.release_ag_if_clean(agno);
        }
    }
    // The hints may be behind (mkfs runs before they are loaded): ask the AGFs.
    alloc_chunk(tx, hint_ag)?.map_or_else(|| err(libc::ENOSPC), Ok)
}

/// A new inode chunk, near AG `hint_ag`, and an inode from it.
fn alloc_chunk(tx: &mut Trans, hint_ag: u32) -> Result<Option<u64>> {
    let ag_count = tx.mp.sb.ag_count;
    let hint = tx.mp.fsblock(hint_ag % ag_count, AG_FIRST_FREE);
    let Some((blk, _)) = crate::space::alloc::alloc_extent(tx, hint, CHUNK_BLOCKS, CHUNK_BLOCKS)?
    else {
        return Ok(None);
    };
    // Free slots are all-zero. The chunk is not referenced until this transaction commits,
    // so it can be zeroed in place now; the zeros are made durable before the commit
    // record can be (a fence, or on an image file the log force's data msync, which
    // holds the record back until then: log/force.rs). Without it, a crash could keep the
    // record and lose zeros.
    let dev = &tx.mp.dev;
    dev.zero(blk * BLOCK_SIZE as u64, CHUNK_BLOCKS * BLOCK_SIZE as u64);
    dev.flush(blk * BLOCK_SIZE as u64, CHUNK_BLOCKS * BLOCK_SIZE as u64);
    tx.mp.order_before_commit();
    let agno = tx.mp.ag_of(blk);
    let startino = blk * INODES_PER_BLOCK;
    let mut agi = read_agi(tx, agno)?;
    let mut iroot = Root {
        blk: agi.ino_root,
        level: agi.ino_level,
    };
    let mut froot = Root {
        blk: agi.fino_root,
        level: agi.fino_level,
    };
    btree::insert(
        tx,
        &ino_tree(agno),
        &mut iroot,
        startino as u128,
        ALL_FREE as u128,
    )?;
    btree::insert(
        tx,
        &fino_tree(agno),
        &mut froot,
        startino as u128,
        ALL_FREE as u128,
    )?;
    (agi.ino_root, agi.ino_level) = (iroot.blk, iroot.level);
    (agi.fino_root, agi.fino_level) = (froot.blk, froot.level);
    agi.count += INODES_PER_CHUNK;
    agi.free += INODES_PER_CHUNK;
    tx.inodes_delta += INODES_PER_CHUNK as i64;
    tx.ifree_delta += INODES_PER_CHUNK as i64;
    write_agi(tx, &agi);
    take_free_inode(tx, agi).map(Some)
}

fn take_free_inode(tx: &mut Trans, mut agi: Agi) -> Result<u64> {
    let agno = agi.agno;
    let iroot = Root {
        blk: agi.ino_root,
        level: agi.ino_level,
    };
    let mut froot = Root {
        blk: agi.fino_root,
        level: agi.fino_level,
    };
    let Some((start, mask)) = btree::lookup_ge(tx, &fino_tree(agno), &froot, 0)? else {
        return Err(crate::error::FsError::corrupt(format!(
            "AG {agno}: AGI counts {} free inodes but the finobt is empty",
            agi.free
        )));
    };
    let (start, mask) = (start as u64, mask as u64);
    crate::ensure_sane!(
        mask != 0,
        "finobt of AG {agno}: chunk {start} listed with no free inode"
    );
    let bit = mask.trailing_zeros() as u64;
    let ino = start + bit;
    crate::ensure_sane!(
        tx.mp.ino_valid(ino),
        "finobt of AG {agno}: chunk {start} outside the AG"
    );
    let newmask = mask & !(1u64 << bit);
    btree::update(tx, &ino_tree(agno), &iroot, start as u128, newmask as u128)?;
    if newmask == 0 {
        btree::delete(tx, &fino_tree(agno), &mut froot, start as u128)?;
    } else {
        btree::update(tx, &fino_tree(agno), &froot, start as u128, newmask as u128)?;
    }
    (agi.ino_root, agi.ino_level) = (iroot.blk, iroot.level);
    (agi.fino_root, agi.fino_level) = (froot.blk, froot.level);
    agi.free -= 1;
    tx.ifree_delta -= 1;
    write_agi(tx, &agi);
    Ok(ino)
}

/// Free inode `ino`: zero its slot and mark it free; give the chunk back when all free.
pub fn ifree(tx: &mut Trans, ino: u64) -> Result<()> {
    let agno = tx.mp.ag_of(tx.mp.ino_block(ino));
    let mut agi = read_agi(tx, agno)?;
    let mut iroot = Root {
        blk: agi.ino_root,
        level: agi.ino_level,
    };
    let mut froot = Root {
        blk: agi.fino_root,
        level: agi.fino_level,
    };
    let Some((start, mask)) = btree::lookup_le(tx, &ino_tree(agno), &iroot, ino as u128)? else {
        return Err(crate::error::FsError::corrupt(format!(
            "freeing inode {ino}: no inode chunk holds it"
        )));
    };
    let (start, mask) = (start as u64, mask as u64);
    crate::ensure_sane!(
        ino < start + INODES_PER_CHUNK,
        "freeing inode {ino}: no inode chunk holds it (nearest starts at {start})"
    );
    let bit = ino - start;
    crate::ensure_sane!(mask & (1 << bit) == 0, "freeing inode {ino}: already free");
    let newmask = mask | (1 << bit);
    if newmask == ALL_FREE {
        btree::delete(tx, &ino_tree(agno), &mut iroot, start as u128)?;
        if mask != 0 {
            btree::delete(tx, &fino_tree(agno), &mut froot, start as u128)?;
        }
        let chunk_blk = start / INODES_PER_BLOCK;
        for b in chunk_blk..chunk_blk + CHUNK_BLOCKS {
            tx.forget_block(b);
        }
        tx.defer_free(chunk_blk, CHUNK_BLOCKS);
        agi.count -= INODES_PER_CHUNK;
        agi.free -= INODES_PER_CHUNK - 1;
        tx.inodes_delta -= INODES_PER_CHUNK as i64;
        tx.ifree_delta -= INODES_PER_CHUNK as i64 - 1;
    } else {
        let zero = [0u8; INODE_SIZE];
        tx.write_raw(tx.mp.ino_block(ino), tx.mp.ino_offset(ino), &zero);
        btree::update(tx, &ino_tree(agno), &iroot, start as u128, newmask as u128)?;
        if mask == 0 {
            btree::insert(
                tx,
                &fino_tree(agno),
                &mut froot,
                start as u128,
                newmask as u128,
            )?;
        } else {
            btree::update(tx, &fino_tree(agno), &froot, start as u128, newmask as u128)?;
        }
        agi.free += 1;
        tx.ifree_delta += 1;
    }
    (agi.ino_root, agi.ino_level) = (iroot.blk, iroot.level);
    (agi.fino_root, agi.fino_level) = (froot.blk, froot.level);
    write_agi(tx, &agi);
    Ok(())
}

/// Whether `ino` is an allocated inode, by its AG's inobt. A number that comes from
/// outside (a file handle) is checked so before its slot is read: a chunk given back to
/// free space may hold anything by now, file data that looks like an inode included.
/// The caller holds the AG's lock (`Mp::ags[agno].lock`), so the tree is not mid-change.
pub fn is_allocated<I: BlockIo>(io: &mut I, agi: &Agi, ino: u64) -> Result<bool> {
    let root = Root {
        blk: agi.ino_root,
        level: agi.ino_level,
    };
    let Some((start, mask)) = btree::lookup_le(io, &ino_tree(agi.agno), &root, ino as u128)? else {
        return Ok(false);
    };
    let (start, mask) = (start as u64, mask as u64);
    Ok(ino < start + INODES_PER_CHUNK && mask & (1 << (ino - start)) == 0)
}

/// Record that `ino` has no links but is still in use.
pub fn unlinked_add(tx: &mut Trans, ino: u64) -> Result<()> {
    let agno = tx.mp.ag_of(tx.mp.ino_block(ino));
    let mut agi = read_agi(tx, agno)?;
    let mut root = Root {
        blk: agi.unlinked_root,
        level: agi.unlinked_level,
    };
    btree::insert(tx, &unlinked_tree(agno), &mut root, ino as u128, 0)?;
    (agi.unlinked_root, agi.unlinked_level) = (root.blk, root.level);
    write_agi(tx, &agi);
    Ok(())
}

pub fn unlinked_remove(tx: &mut Trans, ino: u64) -> Result<()> {
    let agno = tx.mp.ag_of(tx.mp.ino_block(ino));
    let mut agi = read_agi(tx, agno)?;
    let mut root = Root {
        blk: agi.unlinked_root,
        level: agi.unlinked_level,
    };
    btree::delete(tx, &unlinked_tree(agno), &mut root, ino as u128)?;
    (agi.unlinked_root, agi.unlinked_level) = (root.blk, root.level);
    write_agi(tx, &agi);
    Ok(())
}

/// Every inode on AG `agno`'s unlinked list (at mount, to free them).
pub fn unlinked_list<I: BlockIo>(io: &mut I, agi: &Agi) -> Result<Vec<u64>> {
    let root = Root {
        blk: agi.unlinked_root,
        level: agi.unlinked_level,
    };
    let mut out = Vec::new();
    btree::walk(io, &unlinked_tree(agi.agno), &root, 0, &mut |k, _| {
        out.push(k as u64);
        Ok(true)
    })?;
    Ok(out)
}
