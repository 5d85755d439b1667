//! Free-space allocation per allocation group (XFS's xfs_alloc.c).
//!
//! Each AG keeps its free extents twice: by block number (bnobt: agbno -> len), to merge a
//! freed extent with its neighbours, and by length (cntbt: (len, agbno)), to find a best
//! fit. Both trees must hold exactly the same extents; `daxfs check` verifies it.
//!
//! The two free-space trees cannot allocate their own nodes from themselves (a split in the
//! middle of taking a record out would recurse). As in XFS, they take nodes from the AG
//! free list (AGFL), a small stack of blocks refilled from the trees *before* each
//! operation (`fix_freelist`) so that one operation's splits always find blocks there.
//!
//! Sparse images: every block is made real in the image file (`Trans::claim_blocks`)
//! before it leaves the free-space trees, whoever gets it (device.rs module doc).
//!
//! Counting: the in-core free-block counter is the sum over AGs of blocks in the trees plus
//! blocks on the AGFL. Moving a block between trees and AGFL does not change it; handing a
//! block to anyone else (data, inode chunk, another tree's node, a free-space tree node)
//! does.

use std::sync::atomic::Ordering::Relaxed;

use crate::btree::{self, BlockIo, Root, Tree, TreeOps};
use crate::error::{FsError, Result, err};
use crate::format::*;
use crate::log::trans::{AgPass, Trans};

pub static BNOBT: TreeOps = TreeOps {
    name: "bnobt",
    magic: BNOBT_MAGIC,
    key_len: 4,
    val_len: 4,
    max_recs: None,
};
pub static CNTBT: TreeOps = TreeOps {
    name: "cntbt",
    magic: CNTBT_MAGIC,
    key_len: 8,
    val_len: 0,
    max_recs: None,
};

/// Kept here for its users; defined beside the set-aside it is part of (log/mp.rs).
pub use crate::log::mp::AGFL_MIN;
/// Give blocks back to the trees above this many.
pub const AGFL_MAX: u32 = 64;

pub fn cnt_key(len: u64, agbno: u64) -> u128 {
    ((len as u128) << 32) | agbno as u128
}

pub fn bno_tree(agno: u32) -> Tree {
    Tree {
        ops: &BNOBT,
        owner: agno as u64,
    }
}
pub fn cnt_tree(agno: u32) -> Tree {
    Tree {
        ops: &CNTBT,
        owner: agno as u64,
    }
}

pub fn read_agf(tx: &mut Trans, agno: u32) -> Result<Agf> {
    tx.lock_ag(agno)?;
    let blk = tx.mp.fsblock(agno, AGF_BLOCK);
    let b = tx.read_meta(blk, AGF_MAGIC, Some(agno as u64), "AGF")?;
    let agf = Agf::decode(&b[..]);
    crate::ensure_sane!(
        agf.agno == agno && agf.length == tx.mp.ag_len(agno),
        "AGF of AG {agno}: says AG {} of length {}, expected length {}",
        agf.agno,
        agf.length,
        tx.mp.ag_len(agno)
    );
    Ok(agf)
}

pub fn write_agf(tx: &mut Trans, agf: &Agf) {
    let blk = tx.mp.fsblock(agf.agno, AGF_BLOCK);
    // Verified when this transaction read it (under the AG lock, so unchanged since):
    // the raw bytes, without a second verified read that could fail half way.
    let mut b = new_block();
    tx.read_raw(blk, 0, &mut b[..]);
    agf.encode(&mut b[..]);
    tx.write_meta(blk, &b);
    tx.mp.ags[agf.agno as usize]
        .free_blocks
        .store(agf.free_blocks, Relaxed);
}

fn agfl_read(tx: &mut Trans, agno: u32) -> Result<(u64, Box<Block>, u32)> {
    tx.lock_ag(agno)?;
    let blk = tx.mp.fsblock(agno, AGFL_BLOCK);
    let b = tx.read_meta(blk, AGFL_MAGIC, Some(agno as u64), "AGFL")?;
    let count = get_u32(&b[..], AGFL_COUNT);
    crate::ensure_sane!(
        count as usize <= AGFL_CAPACITY,
        "AGFL of AG {agno}: count {count} too large"
    );
    Ok((blk, b, count))
}

pub fn agfl_count(tx: &mut Trans, agno: u32) -> Result<u32> {
    Ok(agfl_read(tx, agno)?.2)
}

fn agfl_pop(tx: &mut Trans, agno: u32) -> Result<u64> {
    let (blk, mut b, count) = agfl_read(tx, agno)?;
    if count == 0 {
        return Err(FsError::corrupt(format!(
            "AGFL of AG {agno} ran empty during a free-space tree split"
        )));
    }
    let agbno = get_u32(&b[..], AGFL_ENTRIES + 4 * (count as usize - 1)) as u64;
    let ag_len = tx.mp.ag_len(agno);
    crate::ensure_sane!(
        (AG_FIRST_FREE..ag_len).contains(&agbno),
        "AGFL of AG {agno}: entry {agbno} outside the AG"
    );
    put_u32(&mut b[..], AGFL_ENTRIES + 4 * (count as usize - 1), 0);
    put_u32(&mut b[..], AGFL_COUNT, count - 1);
    tx.write_meta(blk, &b);
    Ok(agbno)
}

fn agfl_push(tx: &mut Trans, agno: u32, agbno: u64) -> Result<()> {
    let (blk, mut b, count) = agfl_read(tx, agno)?;
    if count as usize >= AGFL_CAPACITY {
        return Err(FsError::corrupt(format!("AGFL of AG {agno} is full")));
    }
    put_u32(&mut b[..], AGFL_ENTRIES + 4 * count as usize, agbno as u32);
    put_u32(&mut b[..], AGFL_COUNT, count + 1);
    tx.write_meta(blk, &b);
    Ok(())
}

/// A free extent read from a tree must lie in the AG's allocatable area before any of it
/// is handed out (a corrupt record would otherwise point outside the device).
fn check_free_extent(tx: &Trans, agno: u32, fbno: u64, flen: u64) -> Result<()> {
    crate::ensure_sane!(
        flen > 0 && fbno >= AG_FIRST_FREE && fbno.saturating_add(flen) <= tx.mp.ag_len(agno),
        "free-space record {fbno}+{flen} of AG {agno} lies outside the AG"
    );
    Ok(())
}

/// Take [abno, abno+alen) out of free extent (fbno, flen) of `agf`'s trees.
fn take(tx: &mut Trans, agf: &mut Agf, fbno: u64, flen: u64, abno: u64, alen: u64) -> Result<()> {
    debug_assert!(fbno <= abno && abno + alen <= fbno + flen && alen > 0);
    let (bt, ct) = (bno_tree(agf.agno), cnt_tree(agf.agno));
    let mut broot = Root {
        blk: agf.bno_root,
        level: agf.bno_level,
    };
    let mut croot = Root {
        blk: agf.cnt_root,
        level: agf.cnt_level,
    };
    btree::delete(tx, &bt, &mut broot, fbno as u128)?;
    btree::delete(tx, &ct, &mut croot, cnt_key(flen, fbno))?;
    if abno > fbno {
        btree::insert(tx, &bt, &mut broot, fbno as u128, (abno - fbno) as u128)?;
        btree::insert(tx, &ct, &mut croot, cnt_key(abno - fbno, fbno), 0)?;
    }
    let end = abno + alen;
    if end < fbno + flen {
        btree::insert(
            tx,
            &bt,
            &mut broot,
            end as u128,
            (fbno + flen - end) as u128,
        )?;
        btree::insert(tx, &ct, &mut croot, cnt_key(fbno + flen - end, end), 0)?;
    }
    (agf.bno_root, agf.bno_level) = (broot.blk, broot.level);
    (agf.cnt_root, agf.cnt_level) = (croot.blk, croot.level);
    agf.free_blocks -= alen;
    Ok(())
}

/// Put [agbno, agbno+len) into the trees, merged with its neighbours.
fn put(tx: &mut Trans, agno: u32, agbno: u64, len: u64) -> Result<()> {
    let mut agf = read_agf(tx, agno)?;
    let (bt, ct) = (bno_tree(agno), cnt_tree(agno));
    let mut broot = Root {
        blk: agf.bno_root,
        level: agf.bno_level,
    };
    let mut croot = Root {
        blk: agf.cnt_root,
        level: agf.cnt_level,
    };
    let (mut start, mut end) = (agbno, agbno + len);
    if let Some((lk, lv)) = btree::lookup_le(tx, &bt, &broot, agbno as u128)? {
        let (ls, ll) = (lk as u64, lv as u64);
        crate::ensure_sane!(
            ls + ll <= agbno,
            "AG {agno}: freeing {agbno}+{len} overlaps free extent {ls}+{ll}"
        );
        if ls + ll == agbno {
            btree::delete(tx, &bt, &mut broot, ls as u128)?;
            btree::delete(tx, &ct, &mut croot, cnt_key(ll, ls))?;
            start = ls;
        }
    }
    if let Some((rk, rv)) = btree::lookup_ge(tx, &bt, &broot, (agbno + 1) as u128)? {
        let (rs, rl) = (rk as u64, rv as u64);
        crate::ensure_sane!(
            rs >= end,
            "AG {agno}: freeing {agbno}+{len} overlaps free extent {rs}+{rl}"
        );
        if rs == end {
            btree::delete(tx, &bt, &mut broot, rs as u128)?;
            btree::delete(tx, &ct, &mut croot, cnt_key(rl, rs))?;
            end = rs + rl;
        }
    }
    btree::insert(tx, &bt, &mut broot, start as u128, (end - start) as u128)?;
    btree::insert(tx, &ct, &mut croot, cnt_key(end - start, start), 0)?;
    (agf.bno_root, agf.bno_level) = (broot.blk, broot.level);
    (agf.cnt_root, agf.cnt_level) = (croot.blk, croot.level);
    agf.free_blocks += len;
    write_agf(tx, &agf);
    Ok(())
}

/// Keep the AGFL between AGFL_MIN and AGFL_MAX blocks (XFS's xfs_alloc_fix_freelist).
/// `donor`: an extent being freed (AG block, length), not yet in the trees; when the
/// image's backing filesystem is full, the AGFL is refilled from it (its blocks are real),
/// so that a free never fails for want of backing space. What is left of it is returned.
fn fix_freelist(tx: &mut Trans, agno: u32, mut donor: (u64, u64)) -> Result<(u64, u64)> {
    loop {
        let count = agfl_count(tx, agno)?;
        if count >= AGFL_MIN {
            break;
        }
        let mut agf = read_agf(tx, agno)?;
        let croot = Root {
            blk: agf.cnt_root,
            level: agf.cnt_level,
        };
        let Some((k, _)) = btree::lookup_ge(tx, &cnt_tree(agno), &croot, cnt_key(1, 0))? else {
            return err(libc::ENOSPC);
        };
        let (flen, fbno) = ((k >> 32) as u64, (k & 0xffff_ffff) as u64);
        check_free_extent(tx, agno, fbno, flen)?;
        // AGFL blocks become free-space tree nodes without another allocation, so they
        // are made real now.
        let (fbno, flen, abno) = if tx.claim_blocks(tx.mp.fsblock(agno, fbno), 1)? {
            (fbno, flen, fbno)
        } else if donor.1 > 0 {
            crate::log::trans::unbusy(tx.mp, tx.mp.fsblock(agno, donor.0), 1)?;
            agfl_push(tx, agno, donor.0)?;
            donor = (donor.0 + 1, donor.1 - 1);
            continue;
        } else if let Some((f, fl, a, _)) = real_free_run(tx, agno, 1, 1)? {
            (f, fl, a)
        } else {
            return err(libc::ENOSPC);
        };
        take(tx, &mut agf, fbno, flen, abno, 1)?;
        write_agf(tx, &agf);
        agfl_push(tx, agno, abno)?;
    }
    // Give surplus blocks back to the trees: above AGFL_MAX, or above AGFL_MIN when the
    // AG is short of space (blocks on the AGFL cannot be handed out).
    let agf = read_agf(tx, agno)?;
    let max = if agf.free_blocks < 2 * AGFL_MAX as u64 {
        AGFL_MIN
    } else {
        AGFL_MAX
    };
    while agfl_count(tx, agno)? > max {
        let agbno = agfl_pop(tx, agno)?;
        put(tx, agno, agbno, 1)?;
    }
    Ok(donor)
}

/// For when the image's backing filesystem is full: a run of free blocks of AG `agno`
/// that is real in the image, at least `minlen` and at most `want` long, as (free extent
/// start, its length, run start, run length), all AG block numbers. Walks the whole bnobt
/// (only on this rare path); None when no free extent has such a run.
fn real_free_run(
    tx: &mut Trans,
    agno: u32,
    want: u64,
    minlen: u64,
) -> Result<Option<(u64, u64, u64, u64)>> {
    let agf = read_agf(tx, agno)?;
    let broot = Root {
        blk: agf.bno_root,
        level: agf.bno_level,
    };
    let bs = BLOCK_SIZE as u64;
    let mut key = 0u64;
    while let Some((k, v)) = btree::lookup_ge(tx, &bno_tree(agno), &broot, key as u128)? {
        let (fbno, flen) = (k as u64, v as u64);
        check_free_extent(tx, agno, fbno, flen)?;
        let start = tx.mp.fsblock(agno, fbno) * bs;
        let end = start + flen * bs;
        let mut at = start;
        while let Some((s, l)) = tx.mp.dev.real_run(at, end) {
            let (first, last) = (s.div_ceil(bs), (s + l) / bs);
            if last >= first + minlen {
                let run = tx.mp.agbno(first);
                return Ok(Some((fbno, flen, run, (last - first).min(want))));
            }
            if l == 0 {
                break;
            }
            at = s + l;
        }
        key = fbno + flen;
    }
    Ok(None)
}

/// Every free extent of AG `agno` in its bnobt, as (device block, length) (trim).
pub fn free_extents(tx: &mut Trans, agno: u32) -> Result<Vec<(u64, u64)>> {
    let agf = read_agf(tx, agno)?;
    let broot = Root {
        blk: agf.bno_root,
        level: agf.bno_level,
    };
    let mut out = Vec::new();
    let mut key = 0u64;
    while let Some((k, v)) = btree::lookup_ge(tx, &bno_tree(agno), &broot, key as u128)? {
        let (fbno, flen) = (k as u64, v as u64);
        check_free_extent(tx, agno, fbno, flen)?;
        out.push((tx.mp.fsblock(agno, fbno), flen));
        key = fbno + flen;
    }
    Ok(out)
}

/// `alloc_in_ag` when the extent it chose cannot be made real (the backing filesystem is
/// full): free blocks that are real already, if the AG has a run of `minlen`.
fn alloc_real_in_ag(
    tx: &mut Trans,
    agno: u32,
    want: u64,
    minlen: u64,
) -> Result<Option<(u64, u64)>> {
    let Some((fbno, flen, abno, alen)) = real_free_run(tx, agno, want, minlen)? else {
        return Ok(None);
    };
    if !tx.claim_blocks(tx.mp.fsblock(agno, abno), alen)? {
        return Ok(None);
    }
    let mut agf = read_agf(tx, agno)?;
    take(tx, &mut agf, fbno, flen, abno, alen)?;
    write_agf(tx, &agf);
    Ok(Some((tx.mp.fsblock(agno, abno), alen)))
}

/// Allocate up to `want` contiguous blocks (at least `minlen`), at `hint` if it is free,
/// else a best fit in the hint's AG, else in the other AGs. None: no AG has `minlen`.
///
/// Choosing the AG keeps the AG lock order (trans.rs `AgPass`): the first pass takes only
/// AGs held already or free to lock, and prefers one with room for the rest of the
/// transaction's reservation too (XFS's minleft), so that later allocations of the same
/// transaction find space in an AG it holds. The second pass may wait for AGs above
/// those held. The last waits a while even for lower ones before giving up, since ENOSPC
/// half way through a transaction shuts the filesystem down.
pub fn alloc_extent(
    tx: &mut Trans,
    hint: u64,
    want: u64,
    minlen: u64,
) -> Result<Option<(u64, u64)>> {
    assert!(minlen >= 1 && want >= minlen);
    if tx
        .mp
        .dev
        .errtags
        .should_fail(crate::pmem::errtag::ErrorTag::Alloc)
    {
        return Ok(None);
    }
    // Stay inside the reservation; `minlen` is always attempted, since failing half way
    // through a transaction would shut the filesystem down (the set-aside covers it).
    let want = want.min(tx.blocks_left().max(minlen)).min(EXTENT_LEN_MAX);
    let ag_count = tx.mp.sb.ag_count;
    let hint = if hint < tx.mp.sb.total_blocks {
        hint
    } else {
        0
    };
    let first = tx.mp.ag_of(hint);
    let need = minlen + AGFL_MIN as u64;
    let minleft = need + tx.blocks_left().saturating_sub(minlen);
    for pass in AgPass::ALL {
        for i in 0..ag_count {
            let agno = (first + i) % ag_count;
            let hinted = tx.mp.ags[agno as usize].free_blocks.load(Relaxed);
            let short = match pass {
                AgPass::Try => hinted < minleft,
                AgPass::InOrder => false,
                AgPass::Last => hinted < need,
            };
            if short && !tx.holds_ag(agno) || !tx.lock_ag_for(agno, pass) {
                continue;
            }
            if let Some(got) = alloc_in_locked_ag(tx, agno, first, hint, want, minlen, need)? {
                return Ok(Some(got));
            }
            tx.release_ag_if_clean(agno);
        }
    }
    Ok(None)
}

/// `alloc_extent` in one AG whose lock is held.
fn alloc_in_locked_ag(
    tx: &mut Trans,
    agno: u32,
    first: u32,
    hint: u64,
    want: u64,
    minlen: u64,
    need: u64,
) -> Result<Option<(u64, u64)>> {
    // Blocks on the AGFL beyond the AGFL_MIN it keeps come back to the trees when the
    // AG is short (fix_freelist), so they count.
    let agf = read_agf(tx, agno)?;
    let agfl = agfl_count(tx, agno)? as u64;
    if agf.free_blocks + agfl.min(AGFL_MIN as u64) < need {
        return Ok(None);
    }
    fix_freelist(tx, agno, (0, 0))?;
    let hint_agbno = (agno == first).then(|| tx.mp.agbno(hint));
    let Some(got) = alloc_in_ag(tx, agno, hint_agbno, want, minlen)? else {
        return Ok(None);
    };
    tx.blocks_allocated += got.1;
    crate::log::trans::unbusy(tx.mp, got.0, got.1)?;
    Ok(Some(got))
}

fn alloc_in_ag(
    tx: &mut Trans,
    agno: u32,
    hint: Option<u64>,
    want: u64,
    minlen: u64,
) -> Result<Option<(u64, u64)>> {
    let mut agf = read_agf(tx, agno)?;
    let broot = Root {
        blk: agf.bno_root,
        level: agf.bno_level,
    };
    let croot = Root {
        blk: agf.cnt_root,
        level: agf.cnt_level,
    };
    // Exactly at the hint: files grow contiguously and their extents merge.
    if let Some(h) = hint
        && let Some((k, v)) = btree::lookup_le(tx, &bno_tree(agno), &broot, h as u128)?
    {
        let (fbno, flen) = (k as u64, v as u64);
        check_free_extent(tx, agno, fbno, flen)?;
        if h < fbno + flen && fbno + flen - h >= minlen {
            let alen = want.min(fbno + flen - h);
            if !tx.claim_blocks(tx.mp.fsblock(agno, h), alen)? {
                return alloc_real_in_ag(tx, agno, want, minlen);
            }
            take(tx, &mut agf, fbno, flen, h, alen)?;
            write_agf(tx, &agf);
            return Ok(Some((tx.mp.fsblock(agno, h), alen)));
        }
    }
    // Best fit by size, else the largest extent if it has at least minlen.
    let found = match btree::lookup_ge(tx, &cnt_tree(agno), &croot, cnt_key(want, 0))? {
        Some(k) => Some(k.0),
        None => btree::lookup_le(tx, &cnt_tree(agno), &croot, u128::MAX)?.map(|k| k.0),
    };
    let Some(k) = found else { return Ok(None) };
    let (flen, fbno) = ((k >> 32) as u64, (k & 0xffff_ffff) as u64);
    check_free_extent(tx, agno, fbno, flen)?;
    if flen < minlen {
        return Ok(None);
    }
    let alen = want.min(flen);
    if !tx.claim_blocks(tx.mp.fsblock(agno, fbno), alen)? {
        return alloc_real_in_ag(tx, agno, want, minlen);
    }
    take(tx, &mut agf, fbno, flen, fbno, alen)?;
    write_agf(tx, &agf);
    Ok(Some((tx.mp.fsblock(agno, fbno), alen)))
}

/// Allocate exactly `len` contiguous blocks or fail with ENOSPC.
pub fn alloc_exact_len(tx: &mut Trans, hint: u64, len: u64) -> Result<u64> {
    match alloc_extent(tx, hint, len, len)? {
        Some((blk, got)) if got == len => Ok(blk),
        Some(_) => unreachable!("alloc_extent returned less than minlen"),
        None => err(libc::ENOSPC),
    }
}

/// An extent about to be freed must lie inside one AG's free area.
pub fn check_free_range(mp: &crate::log::mp::Mp, fsblock: u64, len: u64) -> Result<()> {
    let agno = mp.ag_of(fsblock);
    let agbno = mp.agbno(fsblock);
    crate::ensure_sane!(
        len > 0
            && agno < mp.sb.ag_count
            && agbno >= AG_FIRST_FREE
            && agbno.saturating_add(len) <= mp.ag_len(agno),
        "freeing {fsblock}+{len}: not inside the free area of AG {agno}"
    );
    Ok(())
}

/// Free an extent now (called at commit for deferred frees).
pub fn free_extent_now(tx: &mut Trans, fsblock: u64, len: u64) -> Result<()> {
    check_free_range(tx.mp, fsblock, len)?;
    let agno = tx.mp.ag_of(fsblock);
    let agbno = tx.mp.agbno(fsblock);
    // Blocks the AGFL takes from the extent stay counted free (module doc).
    let (agbno, rest) = fix_freelist(tx, agno, (agbno, len))?;
    if rest > 0 {
        put(tx, agno, agbno, rest)?;
        // Punched with -o discard; busy until the force where commits are deferred.
        if tx.mp.discard.load(Relaxed) || tx.mp.defers_durability() {
            tx.freed.push((tx.mp.fsblock(agno, agbno), rest));
        }
    }
    tx.blocks_freed += len;
    Ok(())
}

/// Node allocation for every tree (the `BlockIo::alloc_node` policy).
pub fn alloc_node(tx: &mut Trans, tree: &Tree) -> Result<u64> {
    let magic = tree.ops.magic;
    if magic == BNOBT_MAGIC || magic == CNTBT_MAGIC {
        let agno = tree.owner as u32;
        let agbno = agfl_pop(tx, agno)?;
        tx.blocks_allocated += 1;
        return Ok(tx.mp.fsblock(agno, agbno));
    }
    // AG trees live in their AG; inode trees near their inode.
    let hint = if magic == BMBT_MAGIC || magic == DIRHASH_MAGIC || magic == ATTRBT_MAGIC {
        tx.mp.ino_block(tree.owner)
    } else {
        tx.mp.fsblock(tree.owner as u32, AG_FIRST_FREE)
    };
    alloc_exact_len(tx, hint, 1)
}

pub fn free_node(tx: &mut Trans, tree: &Tree, blk: u64) -> Result<()> {
    let magic = tree.ops.magic;
    if magic == BNOBT_MAGIC || magic == CNTBT_MAGIC {
        let agno = tree.owner as u32;
        crate::ensure_sane!(
            tx.mp.ag_of(blk) == agno,
            "{} node {blk} outside AG {agno}",
            tree.ops.name
        );
        agfl_push(tx, agno, tx.mp.agbno(blk))?;
        tx.blocks_freed += 1;
        return Ok(());
    }
    tx.defer_free(blk, 1);
    Ok(())
}

/// Make the blocks at fixed places real in a sparse image: each AG's headers, the free
/// space tree roots and AGFL blocks mkfs placed, and the log, all written without an
/// allocation (mkfs, and mount before recovery, for images made before this was done).
/// Everything else that is stored to was allocated, and the allocator makes what it hands
/// out real (`Trans::claim_blocks`).
pub fn make_fixed_real(mp: &crate::log::mp::Mp) -> Result<()> {
    let dev = &mp.dev;
    if !dev.is_sparse() {
        return Ok(());
    }
    let bs = BLOCK_SIZE as u64;
    let fixed = AG_FIRST_FREE + 2 + AGFL_MIN as u64;
    let full = |e| crate::log::recovery::backing_error(mp, e);
    for agno in 0..mp.sb.ag_count {
        let len = fixed.min(mp.ag_len(agno));
        dev.make_real(mp.fsblock(agno, 0) * bs, len * bs)
            .map_err(full)?;
    }
    dev.make_real(mp.sb.log_start * bs, mp.sb.log_blocks * bs)
        .map_err(full)
}

/// `daxfs trim` / FITRIM: punch every free extent of at least `minlen` blocks that
/// overlaps blocks [start, end) out of the image file, one AG at a time under its lock
/// (so that nothing is allocated from it meanwhile), leaving out blocks the log may
/// still replay into. Returns the blocks punched.
pub fn trim(mp: &crate::log::mp::Mp, start: u64, end: u64, minlen: u64) -> Result<u64> {
    if !mp.dev.can_discard() {
        return err(libc::EOPNOTSUPP);
    }
    mp.check_writable()?;
    let end = end.min(mp.sb.total_blocks);
    let mut done = 0;
    for agno in 0..mp.sb.ag_count {
        let ag_start = mp.fsblock(agno, 0);
        if ag_start >= end || ag_start + mp.ag_len(agno) <= start {
            continue;
        }
        let mut tx = mp.trans(0)?;
        let mut punch = Vec::new();
        for (blk, len) in free_extents(&mut tx, agno)? {
            let (s, e) = (blk.max(start), (blk + len).min(end));
            if len >= minlen.max(1) && s < e {
                punch.push((s, e - s));
            }
        }
        done += crate::log::trans::discard_free(mp, &punch);
        drop(tx); // clean: it only read, and held the AG lock while the holes were punched
    }
    Ok(done)
}
