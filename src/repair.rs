//! `daxfs repair`: rebuild what can be derived (XFS's xfs_repair), offline.
//!
//! The image must be unmounted (the caller opens it read-write, which takes the image
//! lock exactly as check and mount do). Every change is staged in memory first, so `-n`
//! (no_modify) runs the very same code and only skips the final write:
//! 1. the superblock: the primary, else the first AG copy that verifies;
//! 2. the log: replayed into the staged image when it verifies (refused otherwise, unless
//!    `discard_log`, xfs_repair's -L); discarded when the superblock came from a copy,
//!    whose LSN base is older than the log;
//! 3. scan: inode chunks from each AG's inode B+tree (or, when it or the AGI is damaged,
//!    from the inode chunks found in the AG), every inode verified with its forks, every
//!    block claimed once in a bitmap (a second claim clears the later inode);
//! 4. directories: entries read from what survives, entries naming bad or free inodes
//!    dropped, a directory that changed laid out afresh with a new hash index; "..", link
//!    counts from the directory walk; unreachable inodes to `lost+found`;
//! 5. per AG: the inode trees from the chunks, the free-space trees and the AGFL from the
//!    blocks nothing owns, the AGF and AGI; the superblock copies; the log reset clean.
//!    Staged blocks go to the device in place (flush + fence), not through the log: the
//!    replayed records first and the log emptied (what recovery would leave), then the
//!    rest, the primary superblock last, so that a crash leaves an image a rerun repairs.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::btree::{self, BlockIo, Root, Tree};
use crate::check;
use crate::dir::{self, RepairEntry};
use crate::error::{FsError, Result};
use crate::format::*;
use crate::inode::extent_map::ExtentMap;
use crate::inode::{DiskInode, ftype_of, kind_of_ftype};
use crate::pmem::device::Device;
use crate::space::alloc::{self, AGFL_MIN};
use crate::space::ialloc::{self, ALL_FREE};

/// Progress callback: (phase, done, total).
pub type Progress = Box<dyn Fn(&str, u64, u64)>;

#[derive(Default)]
pub struct RepairOptions {
    /// Report what would be done, write nothing (-n).
    pub no_modify: bool,
    /// Discard a log that does not verify instead of refusing (-L).
    pub discard_log: bool,
    /// Progress: (phase, done, total), called now and then.
    pub progress: Option<Progress>,
}

#[derive(Debug, Default)]
pub struct RepairReport {
    /// What was wrong and what was (or, with -n, would be) done about it, one line each.
    pub actions: Vec<String>,
    /// The log held records, replayed (or would be).
    pub log_replayed: bool,
    /// Anything was (or, with -n, would be) written.
    pub changed: bool,
}

/// The repair refused to change anything: the log is dirty and does not verify.
pub const DIRTY_LOG: &str = "the log holds records that do not verify";

/// A bitmap of the blocks something owns.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn get(&self, b: u64) -> bool {
        self.0[(b / 64) as usize] & (1 << (b % 64)) != 0
    }
    fn set(&mut self, b: u64, v: bool) {
        let w = &mut self.0[(b / 64) as usize];
        if v {
            *w |= 1 << (b % 64);
        } else {
            *w &= !(1 << (b % 64));
        }
    }
    fn set_range(&mut self, start: u64, len: u64, v: bool) {
        for b in start..start + len {
            self.set(b, v);
        }
    }
    fn any(&self, start: u64, len: u64) -> bool {
        (start..start + len).any(|b| self.get(b))
    }
}

/// Reads through the staged image; writes and allocations stage.
struct RepairIo<'a> {
    dev: &'a Device,
    sb: Superblock,
    staged: BTreeMap<u64, Box<Block>>,
    used: Bits,
}

impl RepairIo<'_> {
    fn block(&self, blk: u64) -> Box<Block> {
        if let Some(b) = self.staged.get(&blk) {
            return b.clone();
        }
        let mut b = new_block();
        self.dev.read(blk * BLOCK_SIZE as u64, &mut b[..]);
        b
    }
    fn slot(&self, ino: u64) -> Vec<u8> {
        let b = self.block(ino / INODES_PER_BLOCK);
        let off = (ino % INODES_PER_BLOCK) as usize * INODE_SIZE;
        b[off..off + INODE_SIZE].to_vec()
    }
    fn put_slot(&mut self, ino: u64, data: &[u8]) {
        let blk = ino / INODES_PER_BLOCK;
        let mut b = self.block(blk);
        let off = (ino % INODES_PER_BLOCK) as usize * INODE_SIZE;
        b[off..off + INODE_SIZE].copy_from_slice(&data[..INODE_SIZE]);
        self.staged.insert(blk, b);
    }
    fn ag_range(&self, agno: u32) -> (u64, u64) {
        let base = agno as u64 * self.sb.ag_blocks;
        (base + AG_FIRST_FREE, base + self.sb.ag_len(agno))
    }
    /// The lowest `len` free blocks in a row in AG `agno` starting at a multiple of
    /// `align` (of the device block number), taken.
    fn take_in(&mut self, agno: u32, len: u64, align: u64) -> Option<u64> {
        let (lo, hi) = self.ag_range(agno);
        let mut s = lo.next_multiple_of(align);
        while s + len <= hi {
            match (s..s + len).rev().find(|&b| self.used.get(b)) {
                None => {
                    self.used.set_range(s, len, true);
                    return Some(s);
                }
                Some(b) => s = (b + 1).next_multiple_of(align),
            }
        }
        None
    }
    /// `len` free blocks, preferring AG `prefer`.
    fn take(&mut self, prefer: u32, len: u64, align: u64) -> Option<u64> {
        let n = self.sb.ag_count;
        (0..n)
            .map(|i| (prefer + i) % n)
            .find_map(|ag| self.take_in(ag, len, align))
    }
    /// `n` free blocks as at most `max` extents (device block, length), each inside an AG.
    fn take_extents(&mut self, prefer: u32, n: u64, max: usize) -> Option<Vec<(u64, u64)>> {
        if let Some(s) = self.take(prefer, n, 1) {
            return Some(vec![(s, n)]);
        }
        let mut out = Vec::new();
        let mut left = n;
        let mut b = 0;
        while left > 0 && b < self.sb.total_blocks && out.len() < max {
            let (lo, hi) = self.ag_range((b / self.sb.ag_blocks) as u32);
            if b < lo {
                b = lo;
            }
            if b >= hi || self.used.get(b) {
                b += 1;
                continue;
            }
            let mut e = b;
            while e < hi && e - b < left && !self.used.get(e) {
                e += 1;
            }
            out.push((b, e - b));
            left -= e - b;
            b = e;
        }
        if left > 0 {
            return None;
        }
        for &(s, l) in &out {
            self.used.set_range(s, l, true);
        }
        Some(out)
    }
}

fn no_space(what: &str) -> FsError {
    FsError::Io(format!("no free block left for {what}"))
}

impl BlockIo for RepairIo<'_> {
    fn uuid(&self) -> [u8; 16] {
        self.sb.uuid
    }
    fn read_meta(
        &mut self,
        blk: u64,
        magic: u32,
        owner: Option<u64>,
        what: &'static str,
    ) -> Result<Box<Block>> {
        if blk >= self.sb.total_blocks {
            return Err(FsError::Corrupt(format!(
                "{what}: pointer to block {blk} beyond the device"
            )));
        }
        let b = self.block(blk);
        verify_header(&b[..], magic, blk, owner, &self.sb.uuid, what)
            .map_err(|e| FsError::Corrupt(e.to_string()))?;
        Ok(b)
    }
    fn write_meta(&mut self, blk: u64, data: &Block) {
        let mut b = Box::new(*data);
        seal_block(&mut b[..], 0);
        self.staged.insert(blk, b);
    }
    fn alloc_node(&mut self, tree: &Tree) -> Result<u64> {
        // AG trees are owned by their AG number, inode trees by their inode.
        let agno = if tree.owner < self.sb.ag_count as u64 && tree.ops.name != dir::DIRHASH.name {
            tree.owner as u32
        } else {
            ((tree.owner / INODES_PER_BLOCK) / self.sb.ag_blocks) as u32
        };
        self.take(agno.min(self.sb.ag_count - 1), 1, 1)
            .ok_or_else(|| no_space(tree.ops.name))
    }
    fn free_node(&mut self, _tree: &Tree, blk: u64) -> Result<()> {
        self.used.set(blk, false);
        Ok(())
    }
}

/// Builds B+trees into memory with nodes from a pool: sizing and building the AG trees.
struct PoolIo {
    uuid: [u8; 16],
    blocks: HashMap<u64, Box<Block>>,
    pool: VecDeque<u64>,
    /// Counting only: hand out fake block numbers beyond every real one.
    fake: Option<u64>,
}

impl BlockIo for PoolIo {
    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn read_meta(
        &mut self,
        blk: u64,
        _m: u32,
        _o: Option<u64>,
        w: &'static str,
    ) -> Result<Box<Block>> {
        self.blocks
            .get(&blk)
            .cloned()
            .ok_or_else(|| FsError::Corrupt(format!("{w}: node {blk} not built")))
    }
    fn write_meta(&mut self, blk: u64, data: &Block) {
        let mut b = Box::new(*data);
        seal_block(&mut b[..], 0);
        self.blocks.insert(blk, b);
    }
    fn alloc_node(&mut self, tree: &Tree) -> Result<u64> {
        if let Some(f) = &mut self.fake {
            *f += 1;
            return Ok(*f);
        }
        self.pool.pop_front().ok_or_else(|| no_space(tree.ops.name))
    }
    fn free_node(&mut self, _tree: &Tree, blk: u64) -> Result<()> {
        self.pool.push_back(blk);
        Ok(())
    }
}

/// Build a tree of `recs` (sorted keys); returns its root.
fn build_tree<I: BlockIo>(io: &mut I, tree: &Tree, recs: &[(u128, u128)]) -> Result<Root> {
    let mut root = Root::default();
    for &(k, v) in recs {
        btree::insert(io, tree, &mut root, k, v)?;
    }
    Ok(root)
}

/// An inode that survived the scan.
struct Live {
    di: DiskInode,
    map: ExtentMap,
    /// Blocks it owns in the bitmap (data, extent tree, xattrs), to release it.
    owns: Vec<(u64, u64)>,
    /// Those of `owns` that hold its attribute fork (kept when a directory is laid out
    /// afresh).
    attr_owns: Vec<(u64, u64)>,
    /// Extent tree node blocks (released when a directory is laid out afresh).
    tree_blocks: Vec<u64>,
    dirty: bool,
}

struct Repair<'a> {
    io: RepairIo<'a>,
    acts: Vec<String>,
    /// Inode chunks: first inode -> free mask (bit set: free), all AGs.
    chunks: BTreeMap<u64, u64>,
    live: BTreeMap<u64, Live>,
    progress: &'a dyn Fn(&str, u64, u64),
    /// The superblock changed (feature bits): rewrite it and every copy.
    sb_dirty: bool,
    /// The log's regions as replayed (block, offset, bytes), written first.
    replayed: Vec<(u64, usize, Vec<u8>)>,
}

/// Repair the filesystem on `dev` (opened read-write, hence locked: never a mounted
/// image). Err: nothing could be done (no superblock anywhere, a dirty log that does not
/// verify without `discard_log`, the root directory lost, no space to rebuild).
pub fn repair(dev: &Device, opts: &RepairOptions) -> Result<RepairReport> {
    let quiet = |_: &str, _: u64, _: u64| {};
    let progress: &dyn Fn(&str, u64, u64) = match &opts.progress {
        Some(p) => p.as_ref(),
        None => &quiet,
    };
    let mut acts = Vec::new();
    let (sb, from_copy) = find_superblock(dev, &mut acts)?;
    let used = Bits::new(sb.total_blocks);
    let mut r = Repair {
        io: RepairIo {
            dev,
            sb: sb.clone(),
            staged: BTreeMap::new(),
            used,
        },
        acts,
        chunks: BTreeMap::new(),
        live: BTreeMap::new(),
        progress,
        sb_dirty: false,
        replayed: Vec::new(),
    };
    let (log_replayed, lsn_base) = r.replay_log(from_copy, opts.discard_log)?;
    // A clean filesystem with nothing to replay is left exactly as it is. Otherwise what
    // check finds comes first in the report.
    if !from_copy {
        match check::check(dev) {
            Ok(c) if c.is_clean() && !log_replayed => return Ok(RepairReport::default()),
            Ok(c) => r
                .acts
                .extend(c.problems.into_iter().map(|p| format!("found: {p}"))),
            Err(e) => r.act(format!("found: {e}")),
        }
    }
    r.scan()?;
    r.directories()?;
    r.rebuild_ags()?;
    r.superblock_copies(from_copy);
    let changed = true;
    if !opts.no_modify {
        r.write_out(lsn_base)?;
    }
    Ok(RepairReport {
        actions: r.acts,
        log_replayed,
        changed,
    })
}

/// The primary superblock, else the first AG copy that verifies (the bool: from a copy).
fn find_superblock(dev: &Device, acts: &mut Vec<String>) -> Result<(Superblock, bool)> {
    let primary = match check::read_sb(dev) {
        Ok(sb) => return Ok((sb, false)),
        Err(e) => e,
    };
    // A copy sits at block agno * ag_blocks with agno at byte 124; AGs are at most
    // AG_MAX_BLOCKS, so the first copy is within that many blocks.
    let blocks = dev.blocks();
    let mut b = new_block();
    for blk in AG_MIN_BLOCKS..blocks.min(AG_MAX_BLOCKS + 1) {
        let mut m = [0u8; 4];
        dev.read(blk * BLOCK_SIZE as u64, &mut m);
        if u32::from_le_bytes(m) != SB_MAGIC {
            continue;
        }
        dev.read(blk * BLOCK_SIZE as u64, &mut b[..]);
        let agno = get_u32(&b[..], 124) as u64;
        if agno == 0 || blk % agno != 0 {
            continue;
        }
        if let Ok(sb) = Superblock::decode(&b[..], blocks)
            && sb.ag_blocks * agno == blk
        {
            acts.push(format!(
                "primary superblock unusable ({primary}); rebuilt from the copy in AG {agno}"
            ));
            return Ok((sb, true));
        }
    }
    Err(FsError::Corrupt(format!(
        "{primary}; no superblock copy in any AG verifies either"
    )))
}

impl Repair<'_> {
    fn act(&mut self, s: String) {
        self.acts.push(s);
    }

    /// Stage the log's records; returns (any replayed, the LSN base to write).
    fn replay_log(&mut self, from_copy: bool, discard: bool) -> Result<(bool, u64)> {
        let sb = self.io.sb.clone();
        let log_off = sb.log_start * BLOCK_SIZE as u64;
        let dev = self.io.dev;
        let read = |pos: u64, buf: &mut [u8]| dev.read(log_off + pos, buf);
        let log_bytes = sb.log_blocks * BLOCK_SIZE as u64;
        // The largest LSN of any record in the log: the new base goes past it.
        let newest_any = crate::log::trans::records_to_replay(&read, log_bytes, 0, sb.total_blocks)
            .ok()
            .and_then(|r| r.last().map(|r| r.lsn + 1))
            .unwrap_or(0);
        if from_copy {
            self.act("log discarded: the superblock copy cannot say which records are new".into());
            return Ok((false, sb.lsn_base.max(newest_any).max(1)));
        }
        let recs = match crate::log::trans::records_to_replay(
            &read,
            log_bytes,
            sb.lsn_base,
            sb.total_blocks,
        ) {
            Ok(r) => r,
            Err(e) if discard => {
                self.act(format!("log discarded (-L): {e}"));
                return Ok((false, sb.lsn_base.max(newest_any)));
            }
            Err(e) => {
                return Err(FsError::Corrupt(format!(
                    "{DIRTY_LOG} ({e}); mount to replay it, or repair -L to discard it"
                )));
            }
        };
        let mut base = sb.lsn_base;
        for rec in &recs {
            for (blk, off, data) in &rec.regions {
                let mut b = self.io.block(*blk);
                b[*off..off + data.len()].copy_from_slice(data);
                self.io.staged.insert(*blk, b);
                self.replayed.push((*blk, *off, data.clone()));
            }
            base = base.max(rec.lsn + 1);
        }
        if let Some(last) = recs.last() {
            self.act(format!(
                "log: {} record(s) replayed (through LSN {}); {} pending free(s) go to free space",
                recs.len(),
                last.lsn,
                last.pending.len()
            ));
        }
        Ok((!recs.is_empty(), base))
    }

    /// Phase 1: chunks, inodes, their blocks.
    fn scan(&mut self) -> Result<()> {
        let sb = self.io.sb.clone();
        for agno in 0..sb.ag_count {
            let base = agno as u64 * sb.ag_blocks;
            self.io.used.set_range(base, AG_FIRST_FREE, true);
            if agno == 0 {
                self.io.used.set_range(sb.log_start, sb.log_blocks, true);
            }
        }
        for agno in 0..sb.ag_count {
            (self.progress)("inode chunks", agno as u64, sb.ag_count as u64);
            let found = match self.chunks_from_inobt(agno) {
                Ok(c) => c,
                Err(e) => {
                    let c = self.chunks_by_scan(agno);
                    self.act(format!(
                        "AG {agno}: inode B+tree unusable ({e}); {} inode chunk(s) found by scanning the AG",
                        c.len()
                    ));
                    c
                }
            };
            for (start, mask) in found {
                let blk = start / INODES_PER_BLOCK;
                if self.io.used.any(blk, CHUNK_BLOCKS) {
                    self.act(format!(
                        "inode chunk {start}: its blocks are owned by something else; dropped"
                    ));
                    continue;
                }
                self.io.used.set_range(blk, CHUNK_BLOCKS, true);
                self.chunks.insert(start, mask);
            }
        }
        let starts: Vec<(u64, u64)> = self.chunks.iter().map(|(&s, &m)| (s, m)).collect();
        let total = starts.len() as u64;
        for (i, (start, mask)) in starts.into_iter().enumerate() {
            (self.progress)("inodes", i as u64, total);
            for slot in 0..INODES_PER_CHUNK {
                let ino = start + slot;
                let raw = self.io.slot(ino);
                if DiskInode::slot_is_free(&raw) {
                    if mask & (1 << slot) == 0 {
                        self.act(format!(
                            "inode {ino}: in use by the inode tree, but its slot is empty; freed"
                        ));
                        self.free_slot(ino, false);
                    }
                    continue;
                }
                if mask & (1 << slot) != 0 {
                    self.act(format!(
                        "inode {ino}: free in the inode tree, but its slot holds an inode; cleared"
                    ));
                    self.free_slot(ino, true);
                    continue;
                }
                self.load_inode(ino, &raw);
            }
        }
        Ok(())
    }

    fn chunks_from_inobt(&mut self, agno: u32) -> Result<Vec<(u64, u64)>> {
        let sb = &self.io.sb;
        let base = agno as u64 * sb.ag_blocks;
        let ag_len = sb.ag_len(agno);
        let b = self
            .io
            .read_meta(base + AGI_BLOCK, AGI_MAGIC, Some(agno as u64), "AGI")?;
        let agi = Agi::decode(&b[..]);
        let root = Root {
            blk: agi.ino_root,
            level: agi.ino_level,
        };
        let mut recs = Vec::new();
        let probs = btree::check(
            &mut self.io,
            &ialloc::ino_tree(agno),
            &root,
            &mut |_| {},
            &mut |k, v| recs.push((k as u64, v as u64)),
        );
        if let Some(p) = probs.first() {
            return Err(FsError::Corrupt(p.clone()));
        }
        let mut out = Vec::new();
        for (start, mask) in recs {
            let blk = start / INODES_PER_BLOCK;
            let inside = start % INODES_PER_BLOCK == 0
                && blk / self.io.sb.ag_blocks == agno as u64
                && blk % self.io.sb.ag_blocks >= AG_FIRST_FREE
                && blk + CHUNK_BLOCKS <= base + ag_len;
            if inside {
                out.push((start, mask));
            } else {
                self.act(format!(
                    "inode tree of AG {agno}: chunk at inode {start} lies outside the AG; dropped"
                ));
            }
        }
        Ok(out)
    }

    /// Inode chunks of AG `agno` found by their inodes: a chunk is taken to start at the
    /// first block nothing owns that holds an inode verifying in its own slot (chunks are
    /// not aligned, and inodes are handed out lowest slot first). The mask marks every slot
    /// that does not verify as free.
    fn chunks_by_scan(&mut self, agno: u32) -> Vec<(u64, u64)> {
        let (lo, hi) = self.io.ag_range(agno);
        let uuid = self.io.sb.uuid;
        let holds_inode = |io: &RepairIo, ino: u64| {
            let raw = io.slot(ino);
            get_u32(&raw, DI_MAGIC) == INODE_MAGIC && DiskInode::decode(&raw, ino, &uuid).is_ok()
        };
        let mut out = Vec::new();
        let mut blk = lo;
        while blk + CHUNK_BLOCKS <= hi {
            let start = blk * INODES_PER_BLOCK;
            let first = !self.io.used.any(blk, CHUNK_BLOCKS)
                && (0..INODES_PER_BLOCK).any(|s| holds_inode(&self.io, start + s));
            if !first {
                blk += 1;
                continue;
            }
            let mut mask = 0u64;
            for slot in 0..INODES_PER_CHUNK {
                if !holds_inode(&self.io, start + slot) {
                    mask |= 1 << slot;
                }
            }
            out.push((start, mask));
            blk += CHUNK_BLOCKS;
        }
        out
    }

    /// Mark `ino` free in its chunk; `zero`: empty its slot too.
    fn free_slot(&mut self, ino: u64, zero: bool) {
        if let Some((&start, m)) = self.chunks.range_mut(..=ino).next_back()
            && ino < start + INODES_PER_CHUNK
        {
            *m |= 1 << (ino - start);
        }
        if zero {
            self.io.put_slot(ino, &[0u8; INODE_SIZE]);
        }
    }

    /// Clear a live inode: its blocks go back to free space, its slot is emptied.
    fn clear(&mut self, ino: u64, why: String) {
        if let Some(l) = self.live.remove(&ino) {
            for (s, n) in l.owns {
                self.io.used.set_range(s, n, false);
            }
        }
        self.act(format!("inode {ino}: {why}; cleared"));
        self.free_slot(ino, true);
    }

    fn load_inode(&mut self, ino: u64, raw: &[u8]) {
        let sb = self.io.sb.clone();
        let (mut di, inline) = match DiskInode::decode(raw, ino, &sb.uuid) {
            Ok(x) => x,
            Err(e) => {
                self.act(format!("{e}; cleared"));
                self.free_slot(ino, true);
                return;
            }
        };
        let mut probs = Vec::new();
        let (tree_blocks, map) = check::load_fork(&mut self.io, &sb, &di, inline, &mut probs);
        let Some(map) = map else {
            self.act(format!(
                "inode {ino}: data fork unusable ({}); cleared",
                probs.join("; ")
            ));
            self.free_slot(ino, true);
            return;
        };
        let mut dirty = false;
        let mut tree_blocks = tree_blocks;
        if di.format == FMT_BTREE && map.len() <= INLINE_EXTENTS_MAX {
            di.format = FMT_EXTENTS;
            di.bmbt = Root::default();
            tree_blocks.clear();
            dirty = true;
            self.act(format!(
                "inode {ino}: extent tree of {} extents moved inline",
                map.len()
            ));
        }
        if di.kind() == crate::inode::FileKind::Symlink && di.format != FMT_LOCAL {
            let ok = map.len() == 1 && map.find(0).is_some_and(|e| !e.unwritten);
            if !ok || di.size as usize > SYMLINK_LEN_MAX || di.size == 0 {
                self.act(format!(
                    "symlink {ino}: remote target is not one written block; cleared"
                ));
                self.free_slot(ino, true);
                return;
            }
        }
        let mut owns: Vec<(u64, u64)> = tree_blocks.iter().map(|&b| (b, 1)).collect();
        if di.format != FMT_LOCAL {
            owns.extend(map.iter().map(|e| (e.startblock, e.len)));
        }
        if let Some(&(s, n)) = owns.iter().find(|&&(s, n)| self.io.used.any(s, n)) {
            self.act(format!(
                "inode {ino}: blocks {s}+{n} are owned by something scanned before it; cleared"
            ));
            self.free_slot(ino, true);
            return;
        }
        // Its own claims may overlap each other (a damaged map): claim one by one.
        for (i, &(s, n)) in owns.iter().enumerate() {
            if self.io.used.any(s, n) {
                self.act(format!("inode {ino}: claims blocks {s}+{n} twice; cleared"));
                for &(s2, n2) in &owns[..i] {
                    self.io.used.set_range(s2, n2, false);
                }
                self.free_slot(ino, true);
                return;
            }
            self.io.used.set_range(s, n, true);
        }
        let mut attr_owns = Vec::new();
        if di.attr_fmt == AFMT_TREE {
            // An attribute tree: every index node, leaf and remote value block is claimed
            // if the whole tree checks (check's walk), else the attributes are dropped.
            let mut claims = Vec::new();
            let problems =
                crate::xattr::check_tree(&mut self.io, &check::wrap(&di, &map), &mut |b, _| {
                    claims.push(b)
                });
            let mut sorted = claims.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let ok = problems.is_empty()
                && sorted.len() == claims.len()
                && claims.iter().all(|&b| {
                    b < sb.total_blocks && b % sb.ag_blocks >= AG_FIRST_FREE && !self.io.used.get(b)
                });
            if ok {
                for b in claims {
                    self.io.used.set(b, true);
                    attr_owns.push((b, 1));
                }
            } else {
                let why = problems
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "blocks claimed twice or outside the data area".into());
                self.act(format!(
                    "inode {ino}: attribute tree unusable ({why}); its xattrs are dropped"
                ));
                di.attr_blk = 0;
                di.attr_fmt = AFMT_BLOCK;
                di.attr_level = 0;
                di.attr_blocks = 0;
                dirty = true;
            }
        } else if di.attr_blk != 0 {
            let a = di.attr_blk;
            let ok = a < sb.total_blocks
                && a % sb.ag_blocks >= AG_FIRST_FREE
                && !self.io.used.get(a)
                && crate::xattr::load(&mut self.io, &check::wrap(&di, &map)).is_ok();
            if ok {
                self.io.used.set(a, true);
                attr_owns.push((a, 1));
            } else {
                self.act(format!(
                    "inode {ino}: xattr block {a} unusable; its xattrs are dropped"
                ));
                di.attr_blk = 0;
                dirty = true;
            }
        }
        if get_u64(raw, DI_NBLOCKS) != di.nblocks(&map) {
            self.act(format!(
                "inode {ino}: block count corrected to {}",
                di.nblocks(&map)
            ));
            dirty = true;
        }
        owns.extend_from_slice(&attr_owns);
        self.live.insert(
            ino,
            Live {
                di,
                map,
                owns,
                attr_owns,
                tree_blocks,
                dirty,
            },
        );
    }

    /// Phases 2-4: directory entries, connectivity, lost+found, link counts, and every
    /// changed directory laid out afresh.
    fn directories(&mut self) -> Result<()> {
        let sb = self.io.sb.clone();
        let root = sb.root_ino;
        if !self.live.get(&root).is_some_and(|l| l.di.is_dir()) {
            self.new_root()?;
        }
        let mut short = sb.incompat & INCOMPAT_SHORTFORM_DIRS != 0;
        if !short
            && self
                .live
                .values()
                .any(|l| l.di.is_dir() && l.di.format == FMT_LOCAL)
        {
            // Short-form directories say the feature is on: the bit was lost.
            short = true;
            self.io.sb.incompat |= INCOMPAT_SHORTFORM_DIRS;
            self.sb_dirty = true;
            self.act(
                "superblock: short-form directories found without the short-form feature; feature set"
                    .into(),
            );
        }
        // Likewise attribute trees and inode flags in use: their bits were lost.
        let trees = self.live.values().any(|l| l.di.attr_fmt == AFMT_TREE);
        let flags = self.live.values().any(|l| l.di.flags & DIFLAG_FEATURE != 0);
        for (bit, used, what) in [
            (INCOMPAT_ATTR_TREE, trees, "attribute trees"),
            (INCOMPAT_INODE_FLAGS, flags, "inode flags"),
        ] {
            if used && self.io.sb.incompat & bit == 0 {
                self.io.sb.incompat |= bit;
                self.sb_dirty = true;
                self.act(format!(
                    "superblock: {what} found without their feature; feature set"
                ));
            }
        }
        let dirs: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, l)| l.di.is_dir())
            .map(|(&i, _)| i)
            .collect();
        // 2a: what each directory still holds, and whether it must be laid out afresh.
        let mut ents: BTreeMap<u64, Vec<RepairEntry>> = BTreeMap::new();
        let mut redo: BTreeSet<u64> = BTreeSet::new();
        for (i, &d) in dirs.iter().enumerate() {
            (self.progress)("directories", i as u64, dirs.len() as u64);
            let l = &self.live[&d];
            let data = check::wrap(&l.di, &l.map);
            let (found, lost) = dir::salvage(&mut self.io, &data);
            let mut bad = !lost.is_empty();
            for why in lost {
                self.act(format!("directory {d}: {why}; its entries there are lost"));
            }
            if !bad && data.di.format != FMT_LOCAL {
                let mut probs = Vec::new();
                let mut blocks = Vec::new();
                probs.extend(btree::check(
                    &mut self.io,
                    &dir::hash_tree(d),
                    &data.di.dirhash,
                    &mut |b| blocks.push(b),
                    &mut |_, _| {},
                ));
                dir::check(&mut self.io, &data, &mut probs);
                if blocks.iter().any(|&b| self.io.used.get(b)) {
                    probs.push("its hash index shares blocks with other owners".into());
                }
                if let Some(p) = probs.first() {
                    self.act(format!("directory {d}: {p}; index rebuilt"));
                    bad = true;
                } else {
                    for &b in &blocks {
                        self.io.used.set(b, true);
                    }
                    let l = self.live.get_mut(&d).unwrap();
                    l.owns.extend(blocks.iter().map(|&b| (b, 1)));
                }
            }
            if bad {
                redo.insert(d);
            }
            ents.insert(d, found);
        }
        // Entries naming free or cleared inodes, the root, themselves; wrong types; names
        // twice; a directory named twice (the entry its ".." agrees with wins).
        let mut named_dir: HashMap<u64, u64> = HashMap::new();
        for (&d, list) in &ents {
            for (_, t, _) in list {
                if let Some(l) = self.live.get(t)
                    && l.di.is_dir()
                    && l.di.parent == d
                {
                    named_dir.entry(*t).or_insert(d);
                }
            }
        }
        let mut fixes = Vec::new();
        for (&d, list) in ents.iter_mut() {
            let mut names = BTreeSet::new();
            let before = fixes.len();
            let mut kept = Vec::with_capacity(list.len());
            for (name, t, ft) in std::mem::take(list) {
                let shown = String::from_utf8_lossy(&name).into_owned();
                let Some(tl) = self.live.get(&t) else {
                    fixes.push(format!("directory {d}: entry {shown:?} names inode {t}, which is not in use; removed"));
                    continue;
                };
                if t == root || t == d || !names.insert(name.clone()) {
                    fixes.push(format!("directory {d}: entry {shown:?} (inode {t}) is a duplicate, the root or itself; removed"));
                    continue;
                }
                if tl.di.is_dir() && *named_dir.entry(t).or_insert(d) != d {
                    fixes.push(format!("directory {d}: entry {shown:?} names directory {t}, which another entry names; removed"));
                    continue;
                }
                let want = ftype_of(tl.di.kind());
                if kind_of_ftype(ft) != Some(tl.di.kind()) {
                    fixes.push(format!(
                        "directory {d}: entry {shown:?} had the wrong file type; corrected"
                    ));
                }
                kept.push((name, t, want));
            }
            if fixes.len() != before {
                redo.insert(d);
            }
            *list = kept;
        }
        self.acts.extend(fixes);

        // 3: connectivity from the root.
        let mut reached: BTreeSet<u64> = BTreeSet::new();
        let mut parent: HashMap<u64, u64> = HashMap::new();
        walk_from(root, &ents, &mut reached, &mut parent);
        // Unlinked inodes (no links, named by nothing) are freed, as the next mount would.
        let lost_ones: Vec<u64> = self
            .live
            .keys()
            .copied()
            .filter(|i| !reached.contains(i))
            .collect();
        for &i in &lost_ones {
            if self.live[&i].di.nlink == 0 {
                self.clear(i, "unlinked and named by no directory".into());
                ents.remove(&i);
                redo.remove(&i);
            }
        }
        let mut orphans: Vec<u64> = self
            .live
            .keys()
            .copied()
            .filter(|i| !reached.contains(i))
            .collect();
        if !orphans.is_empty() {
            let lf = self.lost_found(&mut ents, &mut redo, &mut reached)?;
            // Tops of orphaned trees first: those no other orphan directory names.
            let named: BTreeSet<u64> = orphans
                .iter()
                .filter_map(|o| ents.get(o))
                .flatten()
                .map(|(_, t, _)| *t)
                .collect();
            orphans.sort_by_key(|o| (named.contains(o), *o));
            for o in orphans {
                if reached.contains(&o) {
                    continue;
                }
                let kind = self.live[&o].di.kind();
                let list = ents.get_mut(&lf).unwrap();
                let mut name = o.to_string().into_bytes();
                while list.iter().any(|(n, _, _)| *n == name) {
                    name.push(b'+');
                }
                list.push((name, o, ftype_of(kind)));
                redo.insert(lf);
                self.act(format!(
                    "inode {o}: named by no directory; moved to lost+found as {o}"
                ));
                parent.insert(o, lf);
                walk_from(o, &ents, &mut reached, &mut parent);
            }
        }

        // 4: link counts, ".." and the directories laid out afresh.
        let mut links: HashMap<u64, u32> = HashMap::new();
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        for (&d, list) in &ents {
            for (_, t, ft) in list {
                *links.entry(*t).or_default() += 1;
                if *ft == FT_DIR {
                    *subdirs.entry(d).or_default() += 1;
                }
            }
        }
        let inos: Vec<u64> = self.live.keys().copied().collect();
        for ino in inos {
            let l = self.live.get_mut(&ino).unwrap();
            let want = if l.di.is_dir() {
                2 + subdirs.get(&ino).copied().unwrap_or(0)
            } else {
                links.get(&ino).copied().unwrap_or(0)
            };
            if l.di.nlink != want {
                let was = l.di.nlink;
                l.di.nlink = want;
                l.dirty = true;
                self.acts.push(format!(
                    "inode {ino}: link count {was}, corrected to {want}"
                ));
            }
            let l = self.live.get_mut(&ino).unwrap();
            if l.di.is_dir() {
                let p = if ino == root {
                    root
                } else {
                    parent.get(&ino).copied().unwrap_or(root)
                };
                if l.di.parent != p {
                    let was = l.di.parent;
                    l.di.parent = p;
                    l.dirty = true;
                    self.acts.push(format!(
                        "directory {ino}: \"..\" was {was}, corrected to {p}"
                    ));
                }
            }
        }
        let total = redo.len() as u64;
        for (i, d) in redo.into_iter().enumerate() {
            (self.progress)("rebuilding directories", i as u64, total);
            self.relayout(d, &ents[&d], short)?;
        }
        // Write every changed inode.
        let dirty: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, l)| l.dirty)
            .map(|(&i, _)| i)
            .collect();
        for ino in dirty {
            let l = &self.live[&ino];
            let mut slot = vec![0u8; INODE_SIZE];
            l.di.encode(&l.map, &sb.uuid, &mut slot);
            self.io.put_slot(ino, &slot);
        }
        Ok(())
    }

    /// Lay directory `d` out afresh from `list`.
    fn relayout(&mut self, d: u64, list: &[RepairEntry], short: bool) -> Result<()> {
        let l = self.live.get_mut(&d).unwrap();
        // Its old data and extent tree blocks go back (its hash blocks were never claimed);
        // its attribute fork stays.
        for (s, n) in std::mem::take(&mut l.owns) {
            if !l.attr_owns.contains(&(s, n)) {
                self.io.used.set_range(s, n, false);
            }
        }
        let n = dir::blocks_for(list, short);
        let prefer = ((d / INODES_PER_BLOCK) / self.io.sb.ag_blocks) as u32;
        let exts = if n == 0 {
            Vec::new()
        } else {
            self.io
                .take_extents(prefer, n, INLINE_EXTENTS_MAX)
                .ok_or_else(|| no_space(&format!("directory {d}")))?
        };
        let l = self.live.get_mut(&d).unwrap();
        let mut data = check::wrap(&l.di, &l.map);
        dir::rebuild(&mut self.io, &mut data, list, short, &exts)?;
        let l = self.live.get_mut(&d).unwrap();
        l.di = data.di;
        l.map = data.map;
        l.tree_blocks.clear();
        l.owns = exts.clone();
        l.owns.extend_from_slice(&l.attr_owns);
        l.dirty = true;
        Ok(())
    }

    /// A new, empty root directory in the root inode's slot (what it held goes to
    /// lost+found as orphans). Err when no inode chunk holds that slot any more.
    fn new_root(&mut self) -> Result<()> {
        let root = self.io.sb.root_ino;
        if self.live.contains_key(&root) {
            self.clear(root, "the root is not a directory".into());
        }
        let Some((&start, m)) = self.chunks.range_mut(..=root).next_back() else {
            return Err(FsError::Corrupt(format!(
                "the root directory (inode {root}) is lost with its inode chunk; repair cannot rebuild it"
            )));
        };
        if root >= start + INODES_PER_CHUNK {
            return Err(FsError::Corrupt(format!(
                "the root directory (inode {root}) is lost with its inode chunk; repair cannot rebuild it"
            )));
        }
        *m &= !(1 << (root - start));
        let now = crate::inode::now();
        let di = DiskInode {
            ino: root,
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            parent: root,
            format: FMT_EXTENTS,
            ..Default::default()
        };
        self.live.insert(
            root,
            Live {
                di,
                map: ExtentMap::new(),
                owns: Vec::new(),
                attr_owns: Vec::new(),
                tree_blocks: Vec::new(),
                dirty: true,
            },
        );
        self.act(format!(
            "root directory (inode {root}) lost; made anew (mode 0755, owner 0): what it held goes to lost+found"
        ));
        Ok(())
    }

    /// The root's lost+found directory, made when missing.
    fn lost_found(
        &mut self,
        ents: &mut BTreeMap<u64, Vec<RepairEntry>>,
        redo: &mut BTreeSet<u64>,
        reached: &mut BTreeSet<u64>,
    ) -> Result<u64> {
        let root = self.io.sb.root_ino;
        if let Some((_, t, _)) = ents[&root].iter().find(|(n, _, _)| n == b"lost+found")
            && self.live.get(t).is_some_and(|l| l.di.is_dir())
        {
            return Ok(*t);
        }
        // A name "lost+found" taken by something else: the next free "lost+found.N".
        let taken = |n: &[u8]| ents[&root].iter().any(|(e, _, _)| e == n);
        let mut name = b"lost+found".to_vec();
        let mut k = 0;
        while taken(&name) {
            k += 1;
            name = format!("lost+found.{k}").into_bytes();
        }
        let ino = self.new_inode()?;
        let r = &self.live[&root].di;
        let now = crate::inode::now();
        let di = DiskInode {
            ino,
            mode: libc::S_IFDIR | 0o700,
            uid: r.uid,
            gid: r.gid,
            nlink: 2,
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            parent: root,
            format: FMT_EXTENTS,
            generation: 0,
            ..Default::default()
        };
        self.live.insert(
            ino,
            Live {
                di,
                map: ExtentMap::new(),
                owns: Vec::new(),
                attr_owns: Vec::new(),
                tree_blocks: Vec::new(),
                dirty: true,
            },
        );
        let shown = String::from_utf8_lossy(&name).into_owned();
        ents.get_mut(&root).unwrap().push((name, ino, FT_DIR));
        ents.insert(ino, Vec::new());
        redo.insert(root);
        redo.insert(ino);
        reached.insert(ino);
        self.act(format!("lost+found created as /{shown} (inode {ino})"));
        Ok(ino)
    }

    /// A free inode number: a free slot in a chunk, else a new chunk.
    fn new_inode(&mut self) -> Result<u64> {
        if let Some((&start, m)) = self.chunks.iter_mut().find(|(_, m)| **m != 0) {
            let slot = m.trailing_zeros() as u64;
            *m &= !(1 << slot);
            return Ok(start + slot);
        }
        let blk = self
            .io
            .take(0, CHUNK_BLOCKS, 1)
            .ok_or_else(|| no_space("an inode chunk"))?;
        for b in blk..blk + CHUNK_BLOCKS {
            self.io.staged.insert(b, new_block());
        }
        let start = blk * INODES_PER_BLOCK;
        self.chunks.insert(start, ALL_FREE & !1);
        Ok(start)
    }

    /// Phase 5: every AG's inode trees, free-space trees, AGFL, AGF and AGI.
    fn rebuild_ags(&mut self) -> Result<()> {
        let sb = self.io.sb.clone();
        // Chunks with no inode left are freed, as ifree does.
        let empty: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, m)| **m == ALL_FREE)
            .map(|(&s, _)| s)
            .collect();
        for s in empty {
            self.chunks.remove(&s);
            self.io
                .used
                .set_range(s / INODES_PER_BLOCK, CHUNK_BLOCKS, false);
        }
        for agno in 0..sb.ag_count {
            (self.progress)("allocation groups", agno as u64, sb.ag_count as u64);
            self.rebuild_ag(agno)?;
        }
        self.act(format!(
            "rebuilt in all {} AGs: free-space and inode B+trees, AGF, AGI, AGFL",
            sb.ag_count
        ));
        Ok(())
    }

    fn rebuild_ag(&mut self, agno: u32) -> Result<()> {
        let sb = self.io.sb.clone();
        let base = agno as u64 * sb.ag_blocks;
        let ag_len = sb.ag_len(agno);
        let (lo, hi) = (base * INODES_PER_BLOCK, (base + ag_len) * INODES_PER_BLOCK);
        let chunks: Vec<(u128, u128)> = self
            .chunks
            .range(lo..hi)
            .map(|(&s, &m)| (s as u128, m as u128))
            .collect();
        let fchunks: Vec<(u128, u128)> = chunks.iter().copied().filter(|&(_, m)| m != 0).collect();
        let iroot = build_tree(&mut self.io, &ialloc::ino_tree(agno), &chunks)?;
        let froot = build_tree(&mut self.io, &ialloc::fino_tree(agno), &fchunks)?;
        let count = chunks.len() as u64 * INODES_PER_CHUNK;
        let free: u64 = chunks
            .iter()
            .map(|&(_, m)| (m as u64).count_ones() as u64)
            .sum();

        // Free space: size the trees on the extents as they are, take that many blocks
        // (and the AGFL's) from the lowest free ones, then build on what is left.
        let mut need = {
            let ext = self.free_extents(agno);
            let mut p = PoolIo {
                uuid: sb.uuid,
                blocks: HashMap::new(),
                pool: VecDeque::new(),
                fake: Some(sb.total_blocks),
            };
            build_free_trees(&mut p, agno, &ext)?;
            p.fake.unwrap() - sb.total_blocks
        };
        let (agf, agfl, blocks) = loop {
            let mut taken = Vec::new();
            for _ in 0..need + AGFL_MIN as u64 {
                match self.io.take_in(agno, 1, 1) {
                    Some(b) => taken.push(b),
                    None => break,
                }
            }
            let ext = self.free_extents(agno);
            let mut p = PoolIo {
                uuid: sb.uuid,
                blocks: HashMap::new(),
                pool: taken.iter().copied().collect(),
                fake: None,
            };
            match build_free_trees(&mut p, agno, &ext) {
                Ok((broot, croot)) => {
                    let used_nodes = taken.len() as u64 - p.pool.len() as u64;
                    let agf = Agf {
                        agno,
                        length: ag_len,
                        bno_root: broot.blk,
                        bno_level: broot.level,
                        cnt_root: croot.blk,
                        cnt_level: croot.level,
                        free_blocks: ext.iter().map(|e| e.1).sum(),
                        btree_blocks: used_nodes,
                    };
                    let agfl: Vec<u64> = p.pool.iter().copied().collect();
                    break (agf, agfl, p.blocks);
                }
                Err(_) if (taken.len() as u64) == need + AGFL_MIN as u64 => {
                    for b in taken {
                        self.io.used.set(b, false);
                    }
                    need += 4;
                }
                Err(e) => return Err(e),
            }
        };
        for (blk, b) in blocks {
            self.io.staged.insert(blk, b);
        }
        let mut b = new_block();
        init_header(
            &mut b[..],
            AGF_MAGIC,
            base + AGF_BLOCK,
            agno as u64,
            &sb.uuid,
        );
        agf.encode(&mut b[..]);
        self.stage_if_changed(base + AGF_BLOCK, &b, AGF_MAGIC, &format!("AGF {agno}"));
        let mut b = new_block();
        init_header(
            &mut b[..],
            AGI_MAGIC,
            base + AGI_BLOCK,
            agno as u64,
            &sb.uuid,
        );
        Agi {
            agno,
            count,
            free,
            ino_root: iroot.blk,
            ino_level: iroot.level,
            fino_root: froot.blk,
            fino_level: froot.level,
            unlinked_root: 0,
            unlinked_level: 0,
        }
        .encode(&mut b[..]);
        self.stage_if_changed(base + AGI_BLOCK, &b, AGI_MAGIC, &format!("AGI {agno}"));
        let mut b = new_block();
        init_header(
            &mut b[..],
            AGFL_MAGIC,
            base + AGFL_BLOCK,
            agno as u64,
            &sb.uuid,
        );
        let agfl = &agfl[..agfl.len().min(AGFL_CAPACITY)];
        for (i, &e) in agfl.iter().enumerate() {
            put_u32(&mut b[..], AGFL_ENTRIES + 4 * i, (e - base) as u32);
        }
        put_u32(&mut b[..], AGFL_COUNT, agfl.len() as u32);
        self.stage_if_changed(base + AGFL_BLOCK, &b, AGFL_MAGIC, &format!("AGFL {agno}"));
        Ok(())
    }

    /// Stage an AG header; say so when it differs from what the image held.
    fn stage_if_changed(&mut self, blk: u64, b: &Block, magic: u32, what: &str) {
        let old = self.io.block(blk);
        let ok = verify_header(&old[..], magic, blk, None, &self.io.sb.uuid, what).is_ok();
        if !ok {
            self.acts.push(format!("{what}: damaged; rebuilt"));
        }
        self.io.write_meta(blk, b);
    }

    /// The free extents of AG `agno` (AG block, length) from the bitmap.
    fn free_extents(&self, agno: u32) -> Vec<(u64, u64)> {
        let base = agno as u64 * self.io.sb.ag_blocks;
        let (lo, hi) = self.io.ag_range(agno);
        let mut out = Vec::new();
        let mut b = lo;
        while b < hi {
            if self.io.used.get(b) {
                b += 1;
                continue;
            }
            let s = b;
            while b < hi && !self.io.used.get(b) {
                b += 1;
            }
            out.push((s - base, b - s));
        }
        out
    }

    fn superblock_copies(&mut self, from_copy: bool) {
        let sb = self.io.sb.clone();
        for agno in 0..sb.ag_count {
            let blk = agno as u64 * sb.ag_blocks;
            let b = self.io.block(blk);
            let good = Superblock::decode(&b[..], self.io.dev.blocks())
                .is_ok_and(|s| s.uuid == sb.uuid && get_u32(&b[..], 124) == agno);
            if !good || (agno == 0 && from_copy) || self.sb_dirty {
                let mut nb = new_block();
                sb.encode(agno, &mut nb[..]);
                if agno != 0 && !good {
                    self.acts
                        .push(format!("superblock copy in AG {agno}: damaged; rewritten"));
                }
                self.io.staged.insert(blk, nb);
            }
        }
    }

    /// Write everything in place, in an order a crash cannot hurt (a rerun of repair
    /// finishes the job): the replayed log records first, as recovery writes them, then
    /// the log emptied with the LSN base past it; then every staged block; the primary
    /// superblock last; then its state word clean.
    fn write_out(&mut self, lsn_base: u64) -> Result<()> {
        let dev = self.io.dev;
        let bs = BLOCK_SIZE as u64;
        let real = |blk: u64| {
            dev.make_real(blk * bs, bs).map_err(|e| {
                FsError::Io(format!(
                    "{}: cannot allocate space in the image ({}); repair stopped before \
                     writing block {blk}: run it again when there is room",
                    dev.source(),
                    std::io::Error::from_raw_os_error(e.0)
                ))
            })
        };
        for (blk, off, data) in std::mem::take(&mut self.replayed) {
            real(blk)?;
            let at = blk * bs + off as u64;
            dev.write(at, &data);
            dev.flush(at, data.len() as u64);
        }
        dev.fence();
        let log_off = self.io.sb.log_start * bs;
        let log_bytes = self.io.sb.log_blocks * bs;
        dev.zero(log_off, log_bytes);
        dev.flush(log_off, log_bytes);
        dev.fence();
        dev.store_u64(SB_STATE as u64, sb_state_word(lsn_base, false));
        dev.flush(SB_STATE as u64, 8);
        dev.fence();
        let staged = std::mem::take(&mut self.io.staged);
        let total = staged.len() as u64;
        for (i, (blk, b)) in staged.iter().enumerate() {
            if *blk == 0 {
                continue;
            }
            if i % 256 == 0 {
                (self.progress)("writing", i as u64, total);
            }
            real(*blk)?;
            dev.write(blk * bs, &b[..]);
            dev.flush(blk * bs, bs);
        }
        dev.fence();
        if let Some(b) = staged.get(&0) {
            dev.write(0, &b[..]);
            dev.flush(0, bs);
            dev.fence();
        }
        dev.store_u64(SB_STATE as u64, sb_state_word(lsn_base, true));
        dev.flush(SB_STATE as u64, 8);
        dev.fence();
        dev.persist_all();
        Ok(())
    }
}

/// The bno and cnt trees of `ext` (AG block, length), built through `io`.
fn build_free_trees<I: BlockIo>(io: &mut I, agno: u32, ext: &[(u64, u64)]) -> Result<(Root, Root)> {
    let bno: Vec<(u128, u128)> = ext.iter().map(|&(s, l)| (s as u128, l as u128)).collect();
    let mut cnt: Vec<(u128, u128)> = ext
        .iter()
        .map(|&(s, l)| (alloc::cnt_key(l, s), 0))
        .collect();
    cnt.sort();
    let b = build_tree(io, &alloc::bno_tree(agno), &bno)?;
    let c = build_tree(io, &alloc::cnt_tree(agno), &cnt)?;
    Ok((b, c))
}

/// Mark everything reachable from directory `from` through `ents`, noting each
/// directory's parent.
fn walk_from(
    from: u64,
    ents: &BTreeMap<u64, Vec<RepairEntry>>,
    reached: &mut BTreeSet<u64>,
    parent: &mut HashMap<u64, u64>,
) {
    let mut stack = vec![from];
    reached.insert(from);
    while let Some(d) = stack.pop() {
        for (_, t, ft) in ents.get(&d).into_iter().flatten() {
            if reached.insert(*t) && *ft == FT_DIR {
                parent.insert(*t, d);
                stack.push(*t);
            }
        }
    }
}
