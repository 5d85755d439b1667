//! `daxfs check`: read-only verification of every structure (XFS's xfs_repair -n).
//!
//! The image is never written. A log record that a crash left unapplied is replayed into an
//! in-memory overlay first, so check sees what the next mount will see. Then, per AG: the
//! headers, both free-space trees (same extents, counts match), the AGFL, the inode trees
//! (inobt and finobt agree, counts match), the unlinked list; per inode: its core, data
//! fork, attributes, directory structure; across everything: each block owned by exactly
//! one thing or free, link counts equal the entries naming each inode, every directory's
//! parent names it, nothing allocated is unreachable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::btree::{self, BlockIo, Root, Tree};
use crate::dir;
use crate::error::{FsError, Result};
use crate::format::*;
use crate::inode::bmap;
use crate::inode::extent_map::{Extent, ExtentMap};
use crate::inode::{DiskInode, InodeData, kind_of_ftype};
use crate::pmem::device::Device;
use crate::space::alloc;
use crate::space::ialloc;
use crate::xattr;

#[derive(Debug, Default)]
pub struct CheckReport {
    /// Each inconsistency, in words. Empty: clean.
    pub problems: Vec<String>,
    /// Counts seen (inodes, directories, blocks used/free), one line.
    pub summary: String,
    owners: Owners,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Owners({} blocks, {} owners)",
            self.owner.len(),
            self.names.len()
        )
    }
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// What check found owning block `blk` ("free space of AG 0", "inode tree of AG 0",
    /// "data of inode 131", ...), None for a block nothing claims.
    pub fn owner_of(&self, blk: u64) -> Option<&str> {
        let o = *self.owners.owner.get(blk as usize)?;
        (o != 0).then(|| self.owners.names[o as usize - 1].as_str())
    }
}

/// Block reads through the replay overlay; never writes.
struct CheckIo<'a> {
    dev: &'a Device,
    uuid: [u8; 16],
    total: u64,
    overlay: HashMap<u64, Box<Block>>,
}

impl CheckIo<'_> {
    fn block(&self, blk: u64) -> Box<Block> {
        if let Some(b) = self.overlay.get(&blk) {
            return b.clone();
        }
        let mut b = new_block();
        self.dev.read(blk * BLOCK_SIZE as u64, &mut b[..]);
        b
    }
}

impl BlockIo for CheckIo<'_> {
    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn read_meta(
        &mut self,
        blk: u64,
        magic: u32,
        owner: Option<u64>,
        what: &'static str,
    ) -> Result<Box<Block>> {
        if blk >= self.total {
            return Err(FsError::Corrupt(format!(
                "{what}: pointer to block {blk} beyond the device"
            )));
        }
        let b = self.block(blk);
        verify_header(&b[..], magic, blk, owner, &self.uuid, what)
            .map_err(|e| FsError::Corrupt(e.to_string()))?;
        Ok(b)
    }
    fn write_meta(&mut self, _blk: u64, _data: &Block) {
        unreachable!("check never writes")
    }
    fn alloc_node(&mut self, _tree: &Tree) -> Result<u64> {
        unreachable!("check never writes")
    }
    fn free_node(&mut self, _tree: &Tree, _blk: u64) -> Result<()> {
        unreachable!("check never writes")
    }
}

pub(crate) fn read_sb(dev: &Device) -> Result<Superblock> {
    if dev.len() < BLOCK_SIZE as u64 {
        // The caller names the device.
        return Err(FsError::Corrupt(
            "too small to hold a daxfs superblock".into(),
        ));
    }
    let mut b = new_block();
    dev.read(0, &mut b[..]);
    Superblock::decode(&b[..], dev.blocks())
}

/// The image as recovery would leave it: the device with the log's records laid over it
/// in memory. Also the newest record's LSN and the frees it lists as pending.
type Recovered<'a> = (CheckIo<'a>, Option<u64>, Vec<(u64, u64)>);

fn open_io<'a>(dev: &'a Device, sb: &Superblock) -> Result<Recovered<'a>> {
    let mut io = CheckIo {
        dev,
        uuid: sb.uuid,
        total: sb.total_blocks,
        overlay: HashMap::new(),
    };
    let log_off = sb.log_start * BLOCK_SIZE as u64;
    let read = |pos: u64, buf: &mut [u8]| dev.read(log_off + pos, buf);
    let recs = crate::log::trans::records_to_replay(
        &read,
        sb.log_blocks * BLOCK_SIZE as u64,
        sb.lsn_base,
        sb.total_blocks,
    )?;
    let lsn = recs.last().map(|r| r.lsn);
    let pending = recs.last().map(|r| r.pending.clone()).unwrap_or_default();
    for rec in recs {
        for (blk, off, data) in rec.regions {
            let mut b = io.block(blk);
            b[off..off + data.len()].copy_from_slice(&data);
            io.overlay.insert(blk, b);
        }
    }
    Ok((io, lsn, pending))
}

/// Who owns each block, to find blocks claimed twice or by nobody.
#[derive(Default)]
struct Owners {
    owner: Vec<u32>,
    names: Vec<String>,
}

impl Owners {
    fn claim(&mut self, problems: &mut Vec<String>, start: u64, len: u64, what: String) {
        let id = self.names.len() as u32 + 1;
        let mut dup = None;
        for b in start..start.saturating_add(len).min(self.owner.len() as u64) {
            let o = &mut self.owner[b as usize];
            if *o != 0 && dup.is_none() {
                dup = Some((b, *o));
            }
            *o = id;
        }
        if start.saturating_add(len) > self.owner.len() as u64 {
            problems.push(format!(
                "{what}: blocks {start}+{len} run past the end of the device"
            ));
        }
        if let Some((b, o)) = dup {
            problems.push(format!(
                "block {b} is claimed by {} and by {what}",
                self.names[o as usize - 1]
            ));
        }
        self.names.push(what);
    }
}

struct InodeSeen {
    di: DiskInode,
    map: ExtentMap,
}

/// Verify the filesystem on `dev` without changing it (a dirty log is replayed in memory).
/// Err: the image cannot be read at all (not daxfs, unreadable superblock).
pub fn check(dev: &Device) -> Result<CheckReport> {
    check_with_progress(dev, &|_, _, _| {})
}

/// `check`, calling `progress(phase, done, total)` now and then (the CLI's progress bar).
pub fn check_with_progress(dev: &Device, progress: &dyn Fn(&str, u64, u64)) -> Result<CheckReport> {
    let sb = read_sb(dev)?;
    let (mut io, _, pending) = open_io(dev, &sb)?;
    let mut p: Vec<String> = Vec::new();
    let mut own = Owners {
        owner: vec![0; sb.total_blocks as usize],
        names: Vec::new(),
    };
    let mp = MpGeometry { sb: sb.clone() };
    let mut allocated: BTreeSet<u64> = BTreeSet::new();
    let mut unlinked: BTreeSet<u64> = BTreeSet::new();
    let (mut free_total, mut inode_total) = (0u64, 0u64);

    // Frees a crash left pending: recovery puts them into the free-space trees.
    for &(blk, len) in &pending {
        own.claim(
            &mut p,
            blk,
            len,
            format!("pending free {blk}+{len} in the log"),
        );
        free_total += len;
    }
    for agno in 0..sb.ag_count {
        progress("allocation groups", agno as u64, sb.ag_count as u64);
        let base = agno as u64 * sb.ag_blocks;
        own.claim(&mut p, base, AG_FIRST_FREE, format!("AG {agno} headers"));
        if agno == 0 {
            own.claim(&mut p, sb.log_start, sb.log_blocks, "the log".into());
        }
        free_total += check_free_space(&mut io, &sb, agno, &mut own, &mut p);
        inode_total += check_inode_trees(
            &mut io,
            &sb,
            agno,
            &mut own,
            &mut p,
            &mut allocated,
            &mut unlinked,
        );
    }

    // Inodes.
    let mut inodes: BTreeMap<u64, InodeSeen> = BTreeMap::new();
    for (i, &ino) in allocated.iter().enumerate() {
        if i % 1024 == 0 {
            progress("inodes", i as u64, allocated.len() as u64);
        }
        let blk = ino / INODES_PER_BLOCK;
        let b = io.block(blk);
        let off = (ino % INODES_PER_BLOCK) as usize * INODE_SIZE;
        let slot = &b[off..off + INODE_SIZE];
        let (di, inline) = match DiskInode::decode(slot, ino, &sb.uuid) {
            Ok(x) => x,
            Err(e) => {
                p.push(e.to_string());
                continue;
            }
        };
        let (tree_blocks, map) = load_fork(&mut io, &mp.sb, &di, inline, &mut p);
        for b in tree_blocks {
            own.claim(&mut p, b, 1, format!("extent tree of inode {ino}"));
        }
        let Some(map) = map else {
            continue;
        };
        let nblocks = get_u64(slot, DI_NBLOCKS);
        if nblocks != di.nblocks(&map) {
            p.push(format!(
                "inode {ino}: block count {nblocks}, but it maps {}",
                di.nblocks(&map)
            ));
        }
        if di.attr_fmt == AFMT_TREE {
            if sb.incompat & INCOMPAT_ATTR_TREE == 0 {
                p.push(format!(
                    "inode {ino}: attribute tree on a filesystem without the attribute-tree feature"
                ));
            }
            let d = wrap(&di, &map);
            let mut claims = Vec::new();
            p.extend(xattr::check_tree(&mut io, &d, &mut |b, what| {
                claims.push((b, what))
            }));
            for (b, what) in claims {
                own.claim(&mut p, b, 1, format!("{what} of inode {ino}"));
            }
        } else if di.attr_blk != 0 {
            own.claim(&mut p, di.attr_blk, 1, format!("xattrs of inode {ino}"));
            let d = wrap(&di, &map);
            if let Err(e) = xattr::load(&mut io, &d) {
                p.push(format!("inode {ino}: {e}"));
            }
        }
        if di.format == FMT_EXTENTS || di.format == FMT_BTREE {
            for e in map.iter() {
                own.claim(&mut p, e.startblock, e.len, format!("data of inode {ino}"));
            }
        }
        inodes.insert(ino, InodeSeen { di, map });
    }

    // Directories and links.
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for (i, (&ino, seen)) in inodes.iter().enumerate() {
        if i % 1024 == 0 {
            progress("directories", i as u64, inodes.len() as u64);
        }
        if seen.di.flags & DIFLAG_FEATURE != 0 && sb.incompat & INCOMPAT_INODE_FLAGS == 0 {
            p.push(format!(
                "inode {ino}: flags {:#x} on a filesystem without the inode-flags feature",
                seen.di.flags
            ));
        }
        if !seen.di.is_dir() {
            if seen.di.kind() == crate::inode::FileKind::Symlink && seen.di.format != FMT_LOCAL {
                let ok = seen.map.len() == 1 && seen.map.find(0).is_some_and(|e| !e.unwritten);
                if !ok || seen.di.size as usize > SYMLINK_LEN_MAX || seen.di.size == 0 {
                    p.push(format!(
                        "symlink {ino}: remote target is not one written block"
                    ));
                }
            }
            continue;
        }
        if seen.di.format == FMT_LOCAL && sb.incompat & INCOMPAT_SHORTFORM_DIRS == 0 {
            p.push(format!(
                "directory {ino}: short form on a filesystem without the short-form feature"
            ));
        }
        let d = wrap(&seen.di, &seen.map);
        let mut hash_blocks = Vec::new();
        btree::check(
            &mut io,
            &dir::hash_tree(ino),
            &seen.di.dirhash,
            &mut |b| hash_blocks.push(b),
            &mut |_, _| {},
        );
        for b in hash_blocks {
            own.claim(&mut p, b, 1, format!("directory index of {ino}"));
        }
        for (name, target, ft) in dir::check(&mut io, &d, &mut p) {
            let shown = String::from_utf8_lossy(&name);
            let Some(t) = inodes.get(&target) else {
                p.push(format!(
                    "directory {ino}: entry {shown:?} names inode {target}, which is not in use"
                ));
                continue;
            };
            if kind_of_ftype(ft) != Some(t.di.kind()) {
                p.push(format!(
                    "directory {ino}: entry {shown:?} has the wrong file type for inode {target}"
                ));
            }
            *links.entry(target).or_default() += 1;
            if t.di.is_dir() {
                *subdirs.entry(ino).or_default() += 1;
                if t.di.parent != ino {
                    p.push(format!(
                        "directory {target} ({shown:?} in {ino}) says its parent is {}",
                        t.di.parent
                    ));
                }
            }
        }
    }
    let (mut ndirs, mut nfiles) = (0u64, 0u64);
    for (&ino, seen) in &inodes {
        let n = links.get(&ino).copied().unwrap_or(0);
        let on_unlinked = unlinked.contains(&ino);
        if seen.di.is_dir() {
            ndirs += 1;
            let want = if seen.di.nlink == 0 {
                0
            } else {
                2 + subdirs.get(&ino).copied().unwrap_or(0)
            };
            if seen.di.nlink != want {
                p.push(format!(
                    "directory {ino}: link count {}, expected {want}",
                    seen.di.nlink
                ));
            }
            let expected_refs = if ino == sb.root_ino || seen.di.nlink == 0 {
                0
            } else {
                1
            };
            if n != expected_refs {
                p.push(format!(
                    "directory {ino}: named by {n} entries, expected {expected_refs}"
                ));
            }
        } else {
            nfiles += 1;
            if seen.di.nlink != n {
                p.push(format!(
                    "inode {ino}: link count {}, but {n} directory entries name it",
                    seen.di.nlink
                ));
            }
        }
        if seen.di.nlink == 0 && !on_unlinked {
            p.push(format!(
                "inode {ino}: no links and not on the unlinked list (leaked inode)"
            ));
        }
        if seen.di.nlink != 0 && on_unlinked {
            p.push(format!(
                "inode {ino}: on the unlinked list but has {} links",
                seen.di.nlink
            ));
        }
    }
    match inodes.get(&sb.root_ino) {
        Some(r) if r.di.is_dir() && r.di.parent == sb.root_ino => {}
        Some(_) => p.push(format!(
            "root inode {} is not a directory that is its own parent",
            sb.root_ino
        )),
        None => p.push(format!("root inode {} is not allocated", sb.root_ino)),
    }
    for ino in &unlinked {
        if !inodes.contains_key(ino) {
            p.push(format!(
                "unlinked list names inode {ino}, which is not in use"
            ));
        }
    }

    // Every block: owned once or free.
    let mut leaked = Vec::new();
    for (b, &o) in own.owner.iter().enumerate() {
        if o == 0 {
            leaked.push(b as u64);
        }
    }
    if !leaked.is_empty() {
        let shown: Vec<String> = leaked.iter().take(8).map(|b| b.to_string()).collect();
        p.push(format!(
            "{} block(s) are neither free nor in use (leaked), e.g. {}",
            leaked.len(),
            shown.join(", ")
        ));
    }
    // Free extents that overlap, or AGFL entries that were skipped, can add up to more
    // than the device: each was reported above; the summary must not underflow.
    let used = sb.total_blocks.saturating_sub(free_total);
    let summary = format!(
        "{} inodes ({} directories, {} other) in {} allocated slots; {} blocks in use, {} free of {}",
        inodes.len(),
        ndirs,
        nfiles,
        inode_total,
        used,
        free_total,
        sb.total_blocks
    );
    Ok(CheckReport {
        problems: p,
        summary,
        owners: own,
    })
}

/// The geometry bits `bmap::extent_valid` needs, without a live mount.
struct MpGeometry {
    sb: Superblock,
}

fn extent_ok(g: &MpGeometry, e: &Extent) -> bool {
    let ag = |b: u64| b / g.sb.ag_blocks;
    e.len > 0
        && e.len <= crate::inode::extent_map::EXTENT_LEN_MAX
        && e.startblock
            .checked_add(e.len)
            .is_some_and(|end| end <= g.sb.total_blocks)
        && ag(e.startblock) == ag(e.startblock + e.len - 1)
        && e.startblock % g.sb.ag_blocks >= AG_FIRST_FREE
        && e.fileoff.checked_add(e.len).is_some()
}

/// The incompatible features by name, for `daxfs info` (": a, b", or "" for none).
fn feature_names(incompat: u64) -> String {
    let names: Vec<&str> = [
        (INCOMPAT_SHORTFORM_DIRS, "short-form directories"),
        (INCOMPAT_ATTR_TREE, "attribute trees"),
        (INCOMPAT_INODE_FLAGS, "inode flags"),
    ]
    .iter()
    .filter(|(bit, _)| incompat & bit != 0)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}

pub(crate) fn wrap(di: &DiskInode, map: &ExtentMap) -> InodeData {
    InodeData {
        di: di.clone(),
        map: map.clone(),
        dir_free: None,
        times_dirty: false,
        freed: false,
        charge: Default::default(),
    }
}

/// An inode's data fork, verified (`daxfs check` and `daxfs repair` share it): the
/// extent tree's node blocks (for the caller to claim, also when the tree is damaged) and
/// the extent map, None when the fork cannot be trusted (problems pushed to `p`).
pub(crate) fn load_fork<I: BlockIo>(
    io: &mut I,
    sb: &Superblock,
    di: &DiskInode,
    inline: Vec<Extent>,
    p: &mut Vec<String>,
) -> (Vec<u64>, Option<ExtentMap>) {
    let g = &MpGeometry { sb: sb.clone() };
    let ino = di.ino;
    let mut blocks = Vec::new();
    let exts = if di.format == FMT_BTREE {
        let mut recs = Vec::new();
        let probs = btree::check(
            io,
            &bmap::bmbt_tree(ino),
            &di.bmbt,
            &mut |b| blocks.push(b),
            &mut |k, v| {
                recs.push(Extent {
                    fileoff: k as u64,
                    startblock: v as u64,
                    len: ((v >> 64) & 0xffff_ffff) as u64,
                    unwritten: (v >> 96) & 1 != 0,
                })
            },
        );
        if !probs.is_empty() {
            p.extend(probs.into_iter().map(|x| format!("inode {ino}: {x}")));
            return (blocks, None);
        }
        if recs.len() <= INLINE_EXTENTS_MAX {
            p.push(format!(
                "inode {ino}: extent tree holds {} extents, which fit inline",
                recs.len()
            ));
        }
        recs
    } else {
        inline
    };
    for e in &exts {
        if !extent_ok(g, e) {
            p.push(format!(
                "inode {ino}: extent (file block {}, device block {}, {} blocks) outside the filesystem",
                e.fileoff, e.startblock, e.len
            ));
            return (blocks, None);
        }
    }
    match ExtentMap::from_extents(exts) {
        Ok(m) => (blocks, Some(m)),
        Err(e) => {
            p.push(format!("inode {ino}: {e}"));
            (blocks, None)
        }
    }
}

/// Verify an AG's free space; returns the free blocks it counts (trees plus AGFL).
fn check_free_space(
    io: &mut CheckIo,
    sb: &Superblock,
    agno: u32,
    own: &mut Owners,
    p: &mut Vec<String>,
) -> u64 {
    let base = agno as u64 * sb.ag_blocks;
    let ag_len = sb.ag_len(agno);
    let agf = match io.read_meta(base + AGF_BLOCK, AGF_MAGIC, Some(agno as u64), "AGF") {
        Ok(b) => Agf::decode(&b[..]),
        Err(e) => {
            p.push(e.to_string());
            return 0;
        }
    };
    if agf.agno != agno || agf.length != ag_len {
        p.push(format!(
            "AGF {agno}: says AG {} of {} blocks, expected {ag_len}",
            agf.agno, agf.length
        ));
    }
    let mut bno = Vec::new();
    let mut nodes = Vec::new();
    let broot = Root {
        blk: agf.bno_root,
        level: agf.bno_level,
    };
    p.extend(btree::check(
        io,
        &alloc::bno_tree(agno),
        &broot,
        &mut |b| nodes.push(b),
        &mut |k, v| bno.push((k as u64, v as u64)),
    ));
    let mut cnt = BTreeSet::new();
    let croot = Root {
        blk: agf.cnt_root,
        level: agf.cnt_level,
    };
    p.extend(btree::check(
        io,
        &alloc::cnt_tree(agno),
        &croot,
        &mut |b| nodes.push(b),
        &mut |k, _| {
            cnt.insert(((k >> 32) as u64, (k & 0xffff_ffff) as u64));
        },
    ));
    for b in nodes {
        own.claim(p, b, 1, format!("free-space tree of AG {agno}"));
    }
    let mut sum = 0u64;
    let mut prev_end = 0u64;
    for &(s, l) in &bno {
        if l == 0 || s < AG_FIRST_FREE || s + l > ag_len {
            p.push(format!(
                "AG {agno}: free extent {s}+{l} outside the AG's free area"
            ));
            continue;
        }
        if s < prev_end {
            p.push(format!(
                "AG {agno}: free extent {s}+{l} overlaps the previous one"
            ));
        } else if s == prev_end && prev_end != 0 {
            p.push(format!(
                "AG {agno}: free extents meet at {s} but were not merged"
            ));
        }
        prev_end = s + l;
        sum += l;
        own.claim(p, base + s, l, format!("free space of AG {agno}"));
    }
    let by_bno: BTreeSet<(u64, u64)> = bno.iter().map(|&(s, l)| (l, s)).collect();
    if by_bno != cnt {
        p.push(format!(
            "AG {agno}: the by-block and by-size free-space trees hold different extents"
        ));
    }
    if sum != agf.free_blocks {
        p.push(format!(
            "AGF {agno}: counts {} free blocks, the trees hold {sum}",
            agf.free_blocks
        ));
    }
    let mut flcount = 0u64;
    match io.read_meta(base + AGFL_BLOCK, AGFL_MAGIC, Some(agno as u64), "AGFL") {
        Ok(b) => {
            let count = get_u32(&b[..], AGFL_COUNT) as usize;
            if count > AGFL_CAPACITY {
                p.push(format!("AGFL {agno}: count {count} beyond capacity"));
            } else {
                for i in 0..count {
                    let e = get_u32(&b[..], AGFL_ENTRIES + 4 * i) as u64;
                    if !(AG_FIRST_FREE..ag_len).contains(&e) {
                        p.push(format!("AGFL {agno}: entry {e} outside the AG"));
                        continue;
                    }
                    own.claim(p, base + e, 1, format!("AGFL of AG {agno}"));
                }
                flcount = count as u64;
            }
        }
        Err(e) => p.push(e.to_string()),
    }
    sum + flcount
}

/// Verify an AG's inode trees; collects allocated and unlinked inodes; returns the
/// number of inode slots in chunks.
fn check_inode_trees(
    io: &mut CheckIo,
    sb: &Superblock,
    agno: u32,
    own: &mut Owners,
    p: &mut Vec<String>,
    allocated: &mut BTreeSet<u64>,
    unlinked: &mut BTreeSet<u64>,
) -> u64 {
    let base = agno as u64 * sb.ag_blocks;
    let agi = match io.read_meta(base + AGI_BLOCK, AGI_MAGIC, Some(agno as u64), "AGI") {
        Ok(b) => Agi::decode(&b[..]),
        Err(e) => {
            p.push(e.to_string());
            return 0;
        }
    };
    let mut nodes = Vec::new();
    let mut chunks = Vec::new();
    let iroot = Root {
        blk: agi.ino_root,
        level: agi.ino_level,
    };
    p.extend(btree::check(
        io,
        &ialloc::ino_tree(agno),
        &iroot,
        &mut |b| nodes.push(b),
        &mut |k, v| chunks.push((k as u64, v as u64)),
    ));
    let mut fchunks = Vec::new();
    let froot = Root {
        blk: agi.fino_root,
        level: agi.fino_level,
    };
    p.extend(btree::check(
        io,
        &ialloc::fino_tree(agno),
        &froot,
        &mut |b| nodes.push(b),
        &mut |k, v| fchunks.push((k as u64, v as u64)),
    ));
    let uroot = Root {
        blk: agi.unlinked_root,
        level: agi.unlinked_level,
    };
    p.extend(btree::check(
        io,
        &ialloc::unlinked_tree(agno),
        &uroot,
        &mut |b| nodes.push(b),
        &mut |k, _| {
            unlinked.insert(k as u64);
        },
    ));
    for b in nodes {
        own.claim(p, b, 1, format!("inode tree of AG {agno}"));
    }
    let (mut count, mut free) = (0u64, 0u64);
    for &(start, mask) in &chunks {
        let blk = start / INODES_PER_BLOCK;
        let in_ag = start % INODES_PER_BLOCK == 0
            && blk / sb.ag_blocks == agno as u64
            && blk % sb.ag_blocks >= AG_FIRST_FREE
            && blk + CHUNK_BLOCKS <= base + sb.ag_len(agno);
        if !in_ag {
            p.push(format!(
                "inobt {agno}: chunk at inode {start} is not inside AG {agno}"
            ));
            continue;
        }
        own.claim(p, blk, CHUNK_BLOCKS, format!("inode chunk {start}"));
        count += INODES_PER_CHUNK;
        free += mask.count_ones() as u64;
        for i in 0..INODES_PER_CHUNK {
            let ino = start + i;
            let b = io.block(ino / INODES_PER_BLOCK);
            let off = (ino % INODES_PER_BLOCK) as usize * INODE_SIZE;
            let slot_free = DiskInode::slot_is_free(&b[off..off + INODE_SIZE]);
            if mask & (1 << i) == 0 {
                allocated.insert(ino);
            } else if !slot_free {
                p.push(format!(
                    "inode {ino}: marked free in the inobt but its slot holds an inode"
                ));
            }
        }
    }
    let want_f: Vec<(u64, u64)> = chunks.iter().copied().filter(|&(_, m)| m != 0).collect();
    if want_f != fchunks {
        p.push(format!(
            "AG {agno}: the finobt does not list exactly the chunks with free inodes"
        ));
    }
    if count != agi.count || free != agi.free {
        p.push(format!(
            "AGI {agno}: counts {} inodes ({} free), the inobt holds {count} ({free} free)",
            agi.count, agi.free
        ));
    }
    count
}

/// `daxfs info`: geometry, usage, features, log state, as text.
pub fn info(dev: &Device) -> Result<String> {
    let sb = read_sb(dev)?;
    let (mut io, replay_to, _) = open_io(dev, &sb)?;
    let mut free = 0u64;
    let (mut icount, mut ifree) = (0u64, 0u64);
    for agno in 0..sb.ag_count {
        let base = agno as u64 * sb.ag_blocks;
        if let Ok(b) = io.read_meta(base + AGF_BLOCK, AGF_MAGIC, Some(agno as u64), "AGF") {
            free += Agf::decode(&b[..]).free_blocks;
        }
        if let Ok(b) = io.read_meta(base + AGFL_BLOCK, AGFL_MAGIC, Some(agno as u64), "AGFL") {
            free += get_u32(&b[..], AGFL_COUNT) as u64;
        }
        if let Ok(b) = io.read_meta(base + AGI_BLOCK, AGI_MAGIC, Some(agno as u64), "AGI") {
            let agi = Agi::decode(&b[..]);
            icount += agi.count;
            ifree += agi.free;
        }
    }
    let label = String::from_utf8_lossy(&sb.label)
        .trim_end_matches('\0')
        .to_string();
    let mib = |b: u64| (b * BLOCK_SIZE as u64) >> 20;
    Ok(format!(
        "source:        {}\n\
         format:        daxfs version {} (features compat {:#x}, ro_compat {:#x}, incompat {:#x}{})\n\
         uuid:          {}\n\
         label:         {}\n\
         block size:    {} bytes\n\
         blocks:        {} ({} MiB)\n\
         AGs:           {} of {} blocks\n\
         log:           {} blocks at block {}; LSN base {}; {}\n\
         state:         {}\n\
         free blocks:   {} ({} MiB)\n\
         used blocks:   {} ({} MiB)\n\
         inodes:        {} allocated in chunks, {} in use\n\
         root inode:    {}\n\
         persistence:   {}",
        dev.source(),
        sb.version,
        sb.compat,
        sb.ro_compat,
        sb.incompat,
        feature_names(sb.incompat),
        crate::mkfs::uuid_string(&sb.uuid),
        if label.is_empty() { "(none)" } else { &label },
        BLOCK_SIZE,
        sb.total_blocks,
        mib(sb.total_blocks),
        sb.ag_count,
        sb.ag_blocks,
        sb.log_blocks,
        sb.log_start,
        sb.lsn_base,
        match replay_to {
            Some(l) => format!("record {l} awaits replay at the next mount"),
            None => "nothing to replay".into(),
        },
        if sb.clean != 0 {
            "cleanly unmounted"
        } else {
            "not cleanly unmounted (or mounted now)"
        },
        free,
        mib(free),
        sb.total_blocks - free,
        mib(sb.total_blocks - free),
        icount,
        icount - ifree,
        sb.root_ino,
        dev.persistence().describe(),
    ))
}
