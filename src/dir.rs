//! Directories (XFS's "node" directories, simplified).
//!
//! A directory's entries live in data blocks mapped by its data fork like file data (block
//! `n` of the directory is file block `n`). An entry never moves once written, so its
//! address, the *dataptr* (`dir block << 12 | byte offset`), is a stable readdir cookie.
//! A hash index (a B+tree keyed by `name hash << 64 | dataptr`, unique by construction)
//! finds a name in O(log n) however large the directory grows. Deleted entries become free
//! space merged with free neighbours; a block with no entries left is unmapped and freed.
//! Where a new entry goes is decided by an in-core index of each block's largest free
//! run, built on the first insert after the inode is loaded (one header read per block).
//! "." and ".." are not stored: ".." is the inode's `parent` field.
//!
//! Short form (XFS's shortform directories; filesystems with INCOMPAT_SHORTFORM_DIRS): a
//! small directory keeps its entries in the inode's literal area and costs no block. Each
//! entry carries the offset it will have in data block 0, which is its readdir cookie, so
//! cookies survive the move to block form. A directory moves to block form when an entry
//! does not fit the inode, and back to short form when its entries fit the inode again.

use std::collections::BTreeSet;

use crate::btree::{self, BlockIo, Root, Tree, TreeOps};
use crate::error::{FsError, Result};
use crate::format::*;
use crate::inode::{FreeIndex, InodeData};
use crate::log::trans::Trans;

pub static DIRHASH: TreeOps = TreeOps {
    name: "dirhash",
    magic: DIRHASH_MAGIC,
    key_len: 16,
    val_len: 0,
    max_recs: None,
};

const DE_MIN: usize = 16;

pub fn hash_tree(ino: u64) -> Tree {
    Tree {
        ops: &DIRHASH,
        owner: ino,
    }
}

/// The on-media name hash: FNV-1a 64 with a final mix. Part of the format: never change.
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in name {
        h ^= c as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

fn hash_key(h: u64, dataptr: u64) -> u128 {
    ((h as u128) << 64) | dataptr as u128
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub ino: u64,
    pub ftype: u8,
    pub dataptr: u64,
}

/// One entry as found in a data block.
struct RawEntry<'a> {
    off: usize,
    reclen: usize,
    ino: u64,
    ftype: u8,
    name: &'a [u8],
}

/// Write a used entry into a data block (its record length covers any slack after it).
fn put_entry(b: &mut Block, off: usize, reclen: usize, ino: u64, ftype: u8, name: &[u8]) {
    put_u64(&mut b[..], off, ino);
    put_u16(&mut b[..], off + 8, reclen as u16);
    b[off + 10] = name.len() as u8;
    b[off + 11] = ftype;
    b[off + DE_HDR..off + DE_HDR + name.len()].copy_from_slice(name);
}

/// What an entry's type and name must be, in either form: Err names the problem.
fn check_type_and_name(ftype: u8, name: &[u8]) -> std::result::Result<(), String> {
    if crate::inode::kind_of_ftype(ftype).is_none() {
        return Err(format!("unknown file type {ftype}"));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err("name contains '/' or NUL".into());
    }
    Ok(())
}

/// Walk a data block's entries, verifying each. Free entries have `ino == 0`.
fn entries(b: &Block, dblock: u64, dir: u64) -> Result<Vec<RawEntry<'_>>> {
    let mut out = Vec::new();
    let mut off = DD_ENTRIES;
    while off < BLOCK_SIZE {
        let bad = |what: &str| {
            Err(FsError::corrupt(format!(
                "directory {dir} block {dblock}: entry at offset {off}: {what}"
            )))
        };
        if off + DE_MIN > BLOCK_SIZE {
            return bad("runs past the block end");
        }
        let ino = get_u64(&b[..], off);
        let reclen = get_u16(&b[..], off + 8) as usize;
        let namelen = b[off + 10] as usize;
        let ftype = b[off + 11];
        if reclen < DE_MIN || !reclen.is_multiple_of(8) || off + reclen > BLOCK_SIZE {
            return bad(&format!("bad record length {reclen}"));
        }
        if ino != 0 {
            if namelen == 0 || dirent_reclen(namelen) > reclen {
                return bad(&format!(
                    "name length {namelen} does not fit record length {reclen}"
                ));
            }
            let name = &b[off + DE_HDR..off + DE_HDR + namelen];
            if let Err(what) = check_type_and_name(ftype, name) {
                return bad(&what);
            }
            out.push(RawEntry {
                off,
                reclen,
                ino,
                ftype,
                name,
            });
        } else {
            out.push(RawEntry {
                off,
                reclen,
                ino: 0,
                ftype: 0,
                name: &[],
            });
        }
        off += reclen;
    }
    Ok(out)
}

fn read_dblock<I: BlockIo>(io: &mut I, d: &InodeData, dblock: u64) -> Result<(u64, Box<Block>)> {
    let ino = d.di.ino;
    let Some(e) = d.map.find(dblock) else {
        return Err(FsError::corrupt(format!(
            "directory {ino}: block {dblock} is referenced but not mapped"
        )));
    };
    let blk = e.startblock + (dblock - e.fileoff);
    let b = io.read_meta(blk, DIRDATA_MAGIC, Some(ino), "directory data")?;
    Ok((blk, b))
}

/// Recompute a block's header stats (largest free run, total free, entries).
fn restat(b: &mut Block, dblock: u64, dir: u64) -> Result<(u16, u16)> {
    let (mut best, mut total, mut n) = (0usize, 0usize, 0usize);
    for e in entries(b, dblock, dir)? {
        if e.ino == 0 {
            best = best.max(e.reclen);
            total += e.reclen;
        } else {
            n += 1;
        }
    }
    put_u16(&mut b[..], DD_BEST_FREE, best as u16);
    put_u16(&mut b[..], DD_FREE_TOTAL, total as u16);
    put_u16(&mut b[..], DD_NENTRIES, n as u16);
    Ok((best as u16, n as u16))
}

// ---------------------------------------------------------------------------------------
// Short form.

struct SfEntry {
    off: usize,
    ino: u64,
    ftype: u8,
    name: Vec<u8>,
}

fn is_short(d: &InodeData) -> bool {
    d.di.format == FMT_LOCAL
}

/// The entries of a short-form directory, verified: each whole, named, typed, sorted by
/// offset and not overlapping in block 0's entry area, with no gap under a free entry's
/// size before the first.
fn sf_entries(d: &InodeData) -> Result<Vec<SfEntry>> {
    let dir = d.di.ino;
    let b = &d.di.local;
    let mut out: Vec<SfEntry> = Vec::new();
    let mut p = 0;
    let mut end = DD_ENTRIES;
    while p < b.len() {
        let bad = |what: String| {
            Err(FsError::corrupt(format!(
                "short-form directory {dir}: entry at byte {p}: {what}"
            )))
        };
        if p + SF_HDR > b.len() {
            return bad("runs past the end".into());
        }
        let off = get_u16(b, p) as usize;
        let ino = get_u64(b, p + 2);
        let ftype = b[p + 10];
        let namelen = b[p + 11] as usize;
        if namelen == 0 || p + SF_HDR + namelen > b.len() {
            return bad(format!("name length {namelen}"));
        }
        let name = &b[p + SF_HDR..p + SF_HDR + namelen];
        if ino == 0 {
            return bad("inode 0".into());
        }
        if let Err(what) = check_type_and_name(ftype, name) {
            return bad(what);
        }
        let first_gap = out.is_empty() && off > end && off - end < DE_MIN;
        if !off.is_multiple_of(8)
            || off < end
            || first_gap
            || off + dirent_reclen(namelen) > BLOCK_SIZE
        {
            return bad(format!("offset {off} overlaps or leaves the block"));
        }
        end = off + dirent_reclen(namelen);
        out.push(SfEntry {
            off,
            ino,
            ftype,
            name: name.to_vec(),
        });
        p += SF_HDR + namelen;
    }
    if out.len() as u64 != d.di.dir_entries {
        return Err(FsError::corrupt(format!(
            "short-form directory {dir}: inode counts {} entries, it holds {}",
            d.di.dir_entries,
            out.len()
        )));
    }
    Ok(out)
}

fn sf_store(d: &mut InodeData, ents: &[SfEntry]) {
    let mut b = Vec::new();
    for e in ents {
        let mut h = [0u8; SF_HDR];
        put_u16(&mut h, 0, e.off as u16);
        put_u64(&mut h, 2, e.ino);
        h[10] = e.ftype;
        h[11] = e.name.len() as u8;
        b.extend_from_slice(&h);
        b.extend_from_slice(&e.name);
    }
    d.di.size = b.len() as u64;
    d.di.local = b;
    d.di.dir_entries = ents.len() as u64;
}

/// The first offset in block 0 with room for an entry of `need` bytes.
fn sf_place(ents: &[SfEntry], need: usize) -> Option<usize> {
    let mut cursor = DD_ENTRIES;
    for e in ents {
        if e.off >= cursor + need {
            return Some(cursor);
        }
        cursor = e.off + dirent_reclen(e.name.len());
    }
    (BLOCK_SIZE - cursor >= need).then_some(cursor)
}

/// Move a short-form directory to block form: data block 0 with every entry at its
/// offset (a gap too small for a free entry goes to the entry before it), and the hash
/// index over them.
fn sf_to_block(tx: &mut Trans, d: &mut InodeData, ents: &[SfEntry]) -> Result<()> {
    let dir = d.di.ino;
    d.di.format = FMT_EXTENTS;
    d.di.local.clear();
    d.di.size = 0;
    d.dir_free = Some(FreeIndex::default());
    crate::dax::alloc_holes(tx, d, 0, 1, false, &mut |_, _, _, _| {})?;
    let blk = d.map.find(0).expect("just mapped").startblock;
    let mut b = new_block();
    init_header(&mut b[..], DIRDATA_MAGIC, blk, dir, &tx.mp.sb.uuid);
    let mut cursor = DD_ENTRIES;
    for (i, e) in ents.iter().enumerate() {
        if e.off > cursor {
            // Only the first gap can lack an entry before it; sf_entries checked its size.
            b[cursor..cursor + DE_HDR].fill(0);
            put_u16(&mut b[..], cursor + 8, (e.off - cursor) as u16);
        }
        let next = ents.get(i + 1).map_or(BLOCK_SIZE, |n| n.off);
        let mut reclen = dirent_reclen(e.name.len());
        if next - (e.off + reclen) < DE_MIN {
            reclen = next - e.off;
        }
        put_entry(&mut b, e.off, reclen, e.ino, e.ftype, &e.name);
        cursor = e.off + reclen;
    }
    if cursor < BLOCK_SIZE {
        put_u16(&mut b[..], cursor + 8, (BLOCK_SIZE - cursor) as u16);
    }
    let (best, _) = restat(&mut b, 0, dir)?;
    tx.new_meta(blk, &b);
    d.dir_free.as_mut().unwrap().set(0, best);
    d.di.size = BLOCK_SIZE as u64;
    let mut root = d.di.dirhash;
    for e in ents {
        let key = hash_key(name_hash(&e.name), e.off as u64);
        btree::insert(tx, &hash_tree(dir), &mut root, key, 0)?;
    }
    d.di.dirhash = root;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Operations (both forms).

/// Look `name` up.
pub fn lookup<I: BlockIo>(io: &mut I, d: &InodeData, name: &[u8]) -> Result<Option<Found>> {
    if is_short(d) {
        return Ok(sf_entries(d)?
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| Found {
                ino: e.ino,
                ftype: e.ftype,
                dataptr: e.off as u64,
            }));
    }
    let root = d.di.dirhash;
    if root.blk == 0 {
        return Ok(None);
    }
    let h = name_hash(name);
    let mut ptrs = Vec::new();
    btree::walk(
        io,
        &hash_tree(d.di.ino),
        &root,
        hash_key(h, 0),
        &mut |k, _| {
            if (k >> 64) as u64 != h {
                return Ok(false);
            }
            ptrs.push(k as u64);
            Ok(true)
        },
    )?;
    for dataptr in ptrs {
        let (dblock, off) = (dataptr >> BLOCK_SHIFT, (dataptr & 0xfff) as usize);
        let (_, b) = read_dblock(io, d, dblock)?;
        let ents = entries(&b, dblock, d.di.ino)?;
        let Some(e) = ents.iter().find(|e| e.off == off && e.ino != 0) else {
            return Err(FsError::corrupt(format!(
                "directory {}: hash index points at {dataptr:#x}, which holds no entry",
                d.di.ino
            )));
        };
        if e.name == name {
            return Ok(Some(Found {
                ino: e.ino,
                ftype: e.ftype,
                dataptr,
            }));
        }
    }
    Ok(None)
}

fn build_free_index(tx: &mut Trans, d: &mut InodeData) -> Result<()> {
    if d.dir_free.is_some() {
        return Ok(());
    }
    // The index is an allocation made with this directory's ILOCK held (the pattern of
    // reference/000): reclaim for it, in the directory's mapping mask and the thread's
    // scope (NOFS here: we are in a transaction), touches only unreferenced inodes.
    let bytes = d.map.mapped_blocks() * crate::inode::FREE_INDEX_BLOCK_BYTES;
    tx.mp.mem.allocating(bytes, crate::mem::AllocContext::Full);
    let mut idx = FreeIndex::default();
    let blocks: Vec<(u64, u64)> = d
        .map
        .iter()
        .flat_map(|e| (0..e.len).map(move |i| (e.fileoff + i, e.startblock + i)))
        .collect();
    for (dblock, blk) in blocks {
        let b = tx.read_meta(blk, DIRDATA_MAGIC, Some(d.di.ino), "directory data")?;
        idx.set(dblock, get_u16(&b[..], DD_BEST_FREE));
    }
    d.dir_free = Some(idx);
    Ok(())
}

/// Blocks to reserve for adding one entry (a data block, hash and bmbt splits).
pub const ADD_RESBLKS: u64 = 1 + 2 * BTREE_LEVELS_MAX as u64;

/// Add `name -> ino` (the caller checked it is absent). Caller syncs the inode.
pub fn add(tx: &mut Trans, d: &mut InodeData, name: &[u8], ino: u64, ftype: u8) -> Result<()> {
    assert!(!name.is_empty() && name.len() <= NAME_LEN_MAX);
    let need = dirent_reclen(name.len());
    if d.di.format == FMT_EXTENTS
        && d.map.is_empty()
        && tx.mp.sb.incompat & INCOMPAT_SHORTFORM_DIRS != 0
    {
        // An empty block directory (the root after mkfs, or one that emptied) starts over
        // in short form.
        to_empty_short(d);
    }
    if is_short(d) {
        let mut ents = sf_entries(d)?;
        let fits = d.di.local.len() + SF_HDR + name.len() <= INODE_LITERAL_LEN;
        if let Some(off) = sf_place(&ents, need).filter(|_| fits) {
            let at = ents.partition_point(|e| e.off < off);
            ents.insert(
                at,
                SfEntry {
                    off,
                    ino,
                    ftype,
                    name: name.to_vec(),
                },
            );
            sf_store(d, &ents);
            return Ok(());
        }
        sf_to_block(tx, d, &ents)?;
    }
    build_free_index(tx, d)?;
    let dblock = match d.dir_free.as_ref().unwrap().find(need) {
        Some(b) => b,
        None => new_dblock(tx, d)?,
    };
    let (blk, mut b) = read_dblock(tx, d, dblock)?;
    let dir = d.di.ino;
    let Some(slot) = entries(&b, dblock, dir)?
        .into_iter()
        .find(|e| e.ino == 0 && e.reclen >= need)
        .map(|e| (e.off, e.reclen))
    else {
        return Err(FsError::corrupt(format!(
            "directory {dir} block {dblock}: header promises free space it lacks"
        )));
    };
    let (off, free_len) = slot;
    let used = if free_len - need >= DE_MIN {
        need
    } else {
        free_len
    };
    if used < free_len {
        let rest = off + used;
        b[rest..rest + DE_HDR].fill(0);
        put_u16(&mut b[..], rest + 8, (free_len - used) as u16);
    }
    b[off..off + used].fill(0);
    put_entry(&mut b, off, used, ino, ftype, name);
    let (best, _) = restat(&mut b, dblock, dir)?;
    tx.write_meta(blk, &b);
    d.dir_free.as_mut().unwrap().set(dblock, best);
    let dataptr = (dblock << BLOCK_SHIFT) | off as u64;
    let mut root = d.di.dirhash;
    btree::insert(
        tx,
        &hash_tree(dir),
        &mut root,
        hash_key(name_hash(name), dataptr),
        0,
    )?;
    d.di.dirhash = root;
    d.di.dir_entries += 1;
    Ok(())
}

fn new_dblock(tx: &mut Trans, d: &mut InodeData) -> Result<u64> {
    let dblock = d.map.first_hole();
    crate::dax::alloc_holes(tx, d, dblock, 1, false, &mut |_, _, _, _| {})?;
    let e = d.map.find(dblock).expect("just mapped");
    let blk = e.startblock + (dblock - e.fileoff);
    let mut b = new_block();
    init_header(&mut b[..], DIRDATA_MAGIC, blk, d.di.ino, &tx.mp.sb.uuid);
    put_u16(&mut b[..], DD_ENTRIES + 8, (BLOCK_SIZE - DD_ENTRIES) as u16);
    let (best, _) = restat(&mut b, dblock, d.di.ino)?;
    tx.new_meta(blk, &b);
    d.dir_free.as_mut().unwrap().set(dblock, best);
    d.di.size = d.map.mapped_blocks() * BLOCK_SIZE as u64;
    Ok(dblock)
}

fn to_empty_short(d: &mut InodeData) {
    debug_assert!(d.map.is_empty() && d.di.dirhash.blk == 0 && d.di.dir_entries == 0);
    d.di.format = FMT_LOCAL;
    d.di.local.clear();
    d.di.size = 0;
    d.dir_free = None;
}

/// Remove the entry `f` (found by `lookup` under the same ILOCK) named `name`.
pub fn remove(tx: &mut Trans, d: &mut InodeData, name: &[u8], f: Found) -> Result<()> {
    if is_short(d) {
        let mut ents = sf_entries(d)?;
        let Some(i) = ents
            .iter()
            .position(|e| e.off as u64 == f.dataptr && e.name == name)
        else {
            return Err(FsError::corrupt(format!(
                "short-form directory {}: no entry {:?} at {}",
                d.di.ino,
                String::from_utf8_lossy(name),
                f.dataptr
            )));
        };
        ents.remove(i);
        sf_store(d, &ents);
        return Ok(());
    }
    build_free_index(tx, d)?;
    let dir = d.di.ino;
    let (dblock, off) = (f.dataptr >> BLOCK_SHIFT, (f.dataptr & 0xfff) as usize);
    let (blk, mut b) = read_dblock(tx, d, dblock)?;
    // Free the entry, then merge runs of free entries (each run becomes its first entry).
    let reclen = get_u16(&b[..], off + 8) as usize;
    b[off..off + reclen].fill(0);
    put_u16(&mut b[..], off + 8, reclen as u16);
    let ents: Vec<(usize, usize, u64)> = entries(&b, dblock, dir)?
        .iter()
        .map(|e| (e.off, e.reclen, e.ino))
        .collect();
    let mut i = 0;
    while i < ents.len() {
        let (start, mut len, ino) = ents[i];
        i += 1;
        if ino != 0 {
            continue;
        }
        while i < ents.len() && ents[i].2 == 0 {
            len += ents[i].1;
            b[ents[i].0..ents[i].0 + DE_HDR].fill(0);
            i += 1;
        }
        put_u16(&mut b[..], start + 8, len as u16);
    }
    let (best, n) = restat(&mut b, dblock, dir)?;
    let mut root = d.di.dirhash;
    btree::delete(
        tx,
        &hash_tree(dir),
        &mut root,
        hash_key(name_hash(name), f.dataptr),
    )?;
    d.di.dirhash = root;
    d.di.dir_entries = d.di.dir_entries.saturating_sub(1);
    if n == 0 {
        tx.forget_block(blk);
        crate::inode::bmap::free_range(tx, d, dblock, 1);
        d.dir_free.as_mut().unwrap().remove(dblock);
        d.di.size = d.map.mapped_blocks() * BLOCK_SIZE as u64;
        if d.map.is_empty()
            && d.di.format == FMT_EXTENTS
            && tx.mp.sb.incompat & INCOMPAT_SHORTFORM_DIRS != 0
        {
            to_empty_short(d);
        }
    } else {
        tx.write_meta(blk, &b);
        d.dir_free.as_mut().unwrap().set(dblock, best);
    }
    if let Some(ents) = fits_short(tx, d)? {
        // One block whose entries fit the inode: short form again, each entry keeping
        // its offset, so cookies stay valid (XFS's xfs_dir2_block_to_sf).
        let blk = d.map.find(0).expect("checked by fits_short").startblock;
        btree::destroy(tx, &hash_tree(dir), &mut d.di.dirhash)?;
        tx.forget_block(blk);
        crate::inode::bmap::free_range(tx, d, 0, 1);
        d.di.format = FMT_LOCAL;
        d.dir_free = None;
        sf_store(d, &ents);
    }
    Ok(())
}

/// The entries of a block directory whose only block is block 0, as short-form entries,
/// if they fit the inode.
fn fits_short(tx: &mut Trans, d: &InodeData) -> Result<Option<Vec<SfEntry>>> {
    let one_block = d.map.len() == 1 && d.map.mapped_blocks() == 1 && d.map.find(0).is_some();
    if tx.mp.sb.incompat & INCOMPAT_SHORTFORM_DIRS == 0
        || d.di.format != FMT_EXTENTS
        || !one_block
        || d.di.dir_entries as usize > INODE_LITERAL_LEN / (SF_HDR + 1)
    {
        return Ok(None);
    }
    let (_, b) = read_dblock(tx, d, 0)?;
    let ents: Vec<SfEntry> = entries(&b, 0, d.di.ino)?
        .into_iter()
        .filter(|e| e.ino != 0)
        .map(|e| SfEntry {
            off: e.off,
            ino: e.ino,
            ftype: e.ftype,
            name: e.name.to_vec(),
        })
        .collect();
    let size: usize = ents.iter().map(|e| SF_HDR + e.name.len()).sum();
    Ok((size <= INODE_LITERAL_LEN).then_some(ents))
}

/// Point an existing entry at another inode (rename over an existing name).
pub fn retarget(tx: &mut Trans, d: &mut InodeData, f: Found, ino: u64, ftype: u8) -> Result<()> {
    if is_short(d) {
        let mut ents = sf_entries(d)?;
        let Some(e) = ents.iter_mut().find(|e| e.off as u64 == f.dataptr) else {
            return Err(FsError::corrupt(format!(
                "short-form directory {}: no entry at {}",
                d.di.ino, f.dataptr
            )));
        };
        (e.ino, e.ftype) = (ino, ftype);
        sf_store(d, &ents);
        return Ok(());
    }
    let (dblock, off) = (f.dataptr >> BLOCK_SHIFT, (f.dataptr & 0xfff) as usize);
    let (blk, mut b) = read_dblock(tx, d, dblock)?;
    put_u64(&mut b[..], off, ino);
    b[off + 11] = ftype;
    tx.write_meta(blk, &b);
    Ok(())
}

/// Entries from dataptr `start` on, in dataptr order. `f(dataptr, ino, ftype, name)`
/// returns true to stop.
pub fn list<I: BlockIo>(
    io: &mut I,
    d: &InodeData,
    start: u64,
    f: &mut dyn FnMut(u64, u64, u8, &[u8]) -> bool,
) -> Result<()> {
    if is_short(d) {
        for e in sf_entries(d)? {
            if e.off as u64 >= start && f(e.off as u64, e.ino, e.ftype, &e.name) {
                break;
            }
        }
        return Ok(());
    }
    let first = start >> BLOCK_SHIFT;
    // From the block holding the cookie on: a readdir call costs what it returns, not
    // the size of the directory.
    for e in d.map.iter_from(first) {
        for dblock in e.fileoff.max(first)..e.end() {
            let (_, b) = read_dblock(io, d, dblock)?;
            for ent in entries(&b, dblock, d.di.ino)? {
                let dataptr = (dblock << BLOCK_SHIFT) | ent.off as u64;
                if ent.ino == 0 || dataptr < start {
                    continue;
                }
                if f(dataptr, ent.ino, ent.ftype, ent.name) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Verify a whole directory for `daxfs check`: every used entry is in the hash index and
/// every index key points at a used entry with that name's hash. Returns problems and the
/// entries (name, ino, ftype).
pub fn check<I: BlockIo>(
    io: &mut I,
    d: &InodeData,
    problems: &mut Vec<String>,
) -> Vec<(Vec<u8>, u64, u8)> {
    let dir = d.di.ino;
    let mut found = Vec::new();
    let mut keys = BTreeSet::new();
    let r = list(io, d, 0, &mut |dataptr, ino, ft, name| {
        keys.insert(hash_key(name_hash(name), dataptr));
        found.push((name.to_vec(), ino, ft));
        false
    });
    if let Err(e) = r {
        problems.push(format!("directory {dir}: {e}"));
        return found;
    }
    if is_short(d) {
        // sf_entries (through list) checked the entries, their offsets and their count;
        // the inode decoder that there is no hash index.
        return found;
    }
    let mut index = BTreeSet::new();
    let mut blocks = |_b: u64| {};
    let mut recs = |k: u128, _v: u128| {
        index.insert(k);
    };
    problems.extend(btree::check(
        io,
        &hash_tree(dir),
        &d.di.dirhash,
        &mut blocks,
        &mut recs,
    ));
    if keys != index {
        let missing = keys.difference(&index).count();
        let extra = index.difference(&keys).count();
        problems.push(format!(
            "directory {dir}: hash index disagrees with entries ({missing} entries unindexed, {extra} stale index keys)"
        ));
    }
    if found.len() as u64 != d.di.dir_entries {
        problems.push(format!(
            "directory {dir}: inode counts {} entries, blocks hold {}",
            d.di.dir_entries,
            found.len()
        ));
    }
    let mut names = BTreeSet::new();
    for (n, _, _) in &found {
        if !names.insert(n.clone()) {
            problems.push(format!(
                "directory {dir}: name {:?} appears twice",
                String::from_utf8_lossy(n)
            ));
        }
    }
    found
}

/// Is `root` the hash root of an empty directory?
pub fn is_empty_root(root: &Root) -> bool {
    root.blk == 0
}

// ---------------------------------------------------------------------------------------
// Repair (`daxfs repair`): read what survives, lay a directory out afresh.

/// One directory entry as repair carries it: name, inode, file type.
pub type RepairEntry = (Vec<u8>, u64, u8);

/// Every used entry that can still be read, and one line per part that cannot (an
/// unreadable data block, a damaged short form). Never fails: repair keeps what it can.
pub fn salvage<I: BlockIo>(io: &mut I, d: &InodeData) -> (Vec<RepairEntry>, Vec<String>) {
    let dir = d.di.ino;
    let (mut out, mut lost) = (Vec::new(), Vec::new());
    if is_short(d) {
        match sf_entries(d) {
            Ok(es) => out.extend(es.into_iter().map(|e| (e.name, e.ino, e.ftype))),
            Err(e) => lost.push(e.to_string()),
        }
        return (out, lost);
    }
    for e in d.map.iter() {
        for dblock in e.fileoff..e.end() {
            let got = read_dblock(io, d, dblock).and_then(|(_, b)| {
                Ok(entries(&b, dblock, dir)?
                    .into_iter()
                    .filter(|x| x.ino != 0)
                    .map(|x| (x.name.to_vec(), x.ino, x.ftype))
                    .collect::<Vec<_>>())
            });
            match got {
                Ok(v) => out.extend(v),
                Err(e) => lost.push(e.to_string()),
            }
        }
    }
    (out, lost)
}

/// Where `ents` go when laid out afresh: (data block, offset) each, entries packed in
/// order from the start of block 0.
fn packed(ents: &[RepairEntry]) -> Vec<(u64, usize)> {
    let (mut dblock, mut off) = (0u64, DD_ENTRIES);
    let mut out = Vec::with_capacity(ents.len());
    for (name, _, _) in ents {
        let need = dirent_reclen(name.len());
        if off + need > BLOCK_SIZE {
            (dblock, off) = (dblock + 1, DD_ENTRIES);
        }
        out.push((dblock, off));
        off += need;
    }
    out
}

/// The data blocks a directory of `ents` needs when laid out afresh: 0 when it lives in
/// the inode (`short`: the filesystem has short-form directories).
pub fn blocks_for(ents: &[RepairEntry], short: bool) -> u64 {
    let at = packed(ents);
    let Some(&(last, _)) = at.last() else {
        return 0;
    };
    let sf_bytes: usize = ents.iter().map(|(n, _, _)| SF_HDR + n.len()).sum();
    if short && last == 0 && sf_bytes <= INODE_LITERAL_LEN {
        return 0;
    }
    last + 1
}

/// Lay directory `d` out afresh from `ents` (names unique, checked by the caller): in the
/// inode when `blocks_for` says 0, else in the data blocks of `extents` (device block,
/// length; `blocks_for` blocks in all, each extent inside one AG) with a new hash index
/// through `io`. The caller has released the old blocks; it writes the inode.
pub fn rebuild<I: BlockIo>(
    io: &mut I,
    d: &mut InodeData,
    ents: &[RepairEntry],
    short: bool,
    extents: &[(u64, u64)],
) -> Result<()> {
    let dir = d.di.ino;
    d.di.dirhash = Root::default();
    d.di.bmbt = Root::default();
    d.di.local.clear();
    d.dir_free = None;
    d.map = crate::inode::extent_map::ExtentMap::new();
    let at = packed(ents);
    let n = blocks_for(ents, short);
    if n == 0 {
        let sf: Vec<SfEntry> = ents
            .iter()
            .zip(&at)
            .map(|((name, ino, ftype), &(_, off))| SfEntry {
                off,
                ino: *ino,
                ftype: *ftype,
                name: name.clone(),
            })
            .collect();
        d.di.format = if short { FMT_LOCAL } else { FMT_EXTENTS };
        sf_store(d, &sf);
        if !short {
            d.di.local.clear();
            d.di.size = 0;
        }
        return Ok(());
    }
    let mut fileoff = 0;
    let mut exts = Vec::new();
    for &(start, len) in extents {
        exts.push(crate::inode::extent_map::Extent {
            fileoff,
            startblock: start,
            len,
            unwritten: false,
        });
        fileoff += len;
    }
    if fileoff != n {
        return Err(FsError::Invalid(format!(
            "directory {dir}: {fileoff} blocks given for a layout of {n}"
        )));
    }
    d.map = crate::inode::extent_map::ExtentMap::from_extents(exts).map_err(FsError::Invalid)?;
    let uuid = io.uuid();
    let mut root = Root::default();
    let mut i = 0;
    for dblock in 0..n {
        let e = d.map.find(dblock).expect("mapped above");
        let blk = e.startblock + (dblock - e.fileoff);
        let mut b = new_block();
        init_header(&mut b[..], DIRDATA_MAGIC, blk, dir, &uuid);
        let mut end = DD_ENTRIES;
        while i < ents.len() && at[i].0 == dblock {
            let (name, ino, ftype) = &ents[i];
            let off = at[i].1;
            let last = i + 1 == ents.len() || at[i + 1].0 != dblock;
            let mut reclen = dirent_reclen(name.len());
            if last && BLOCK_SIZE - (off + reclen) < DE_MIN {
                reclen = BLOCK_SIZE - off;
            }
            put_entry(&mut b, off, reclen, *ino, *ftype, name);
            end = off + reclen;
            i += 1;
        }
        if end < BLOCK_SIZE {
            put_u16(&mut b[..], end + 8, (BLOCK_SIZE - end) as u16);
        }
        restat(&mut b, dblock, dir)?;
        io.write_meta(blk, &b);
    }
    for ((name, _, _), &(dblock, off)) in ents.iter().zip(&at) {
        let dataptr = (dblock << BLOCK_SHIFT) | off as u64;
        btree::insert(
            io,
            &hash_tree(dir),
            &mut root,
            hash_key(name_hash(name), dataptr),
            0,
        )?;
    }
    d.di.dirhash = root;
    d.di.format = FMT_EXTENTS;
    d.di.size = n * BLOCK_SIZE as u64;
    d.di.dir_entries = ents.len() as u64;
    Ok(())
}
