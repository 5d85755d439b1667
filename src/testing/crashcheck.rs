//! The crash checker (issue 3): runs workloads on the tracing device through the same
//! `Fs` operations the FUSE layer calls, and for every crash image the trace allows
//! (src/crashsim.rs) mounts it (log recovery), checks it, and holds it to these oracles:
//!
//! - prefix: every metadata change goes through one ordered log whose commit fence comes
//!   before the operation returns, so the recovered namespace (names, types, inode numbers,
//!   link counts, symlink targets, xattrs) is exactly the one after the last completed
//!   operation or after the one in progress. In page-cache mode a commit is durable only
//!   at the next log force (log/force.rs), so the namespace and sizes are those after some
//!   prefix of the completed operations (or the one in progress after it), and that
//!   prefix holds at least every operation before the last completed fsync, fdatasync,
//!   directory fsync or sync. This gives rename atomicity (old or new name,
//!   never both or neither) and "what completed before an fsync, fsync of the directory or
//!   sync is there" for metadata;
//! - sizes are those before or after the operation in progress;
//! - contents: every 8-byte word of every file is what that file held at some state since
//!   its data was last made durable (fsync, fdatasync, sync), so fsync'd data is never
//!   lost, and a word no state held (stale data of another file, never-written blocks that
//!   do not read as zeros) fails: the device is filled with a 0xEE pattern before mkfs;
//! - `check` is clean after recovery and unmount;
//! - recovery is idempotent: for a sample of images the recovery itself is traced and
//!   crashed at its own fences, and recovering again gives the same filesystem.
//!
//! Workloads: every sequence of one and two operations from a catalogue over a small
//! starting tree, each followed by each fsync variant (ACE, OSDI'18), and seeded random
//! sequences.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::check;
use crate::error::{FsError, Result};
use crate::format::BLOCK_SIZE;
use crate::fs::{AtimeMode, Cred, FileKind, Fs, FsOptions, RenameFlags, SetAttr, XattrFlags};
use crate::mkfs::{self, MkfsOptions};
use crate::pmem::device::{Device, Persistence};
use crate::pmem::errtag::ErrorTag;
use crate::testing::crashsim::{self, Limits, Rng};

/// The device size: the smallest the format allows, so images are cheap to rebuild.
pub const DEV_SIZE: u64 = 16 << 20;
/// What free space holds before mkfs: reading it back from a file is stale data.
const GARBAGE: u8 = 0xEE;

use libc::{
    FALLOC_FL_COLLAPSE_RANGE as COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE as INSERT_RANGE,
    FALLOC_FL_KEEP_SIZE as KEEP_SIZE, FALLOC_FL_PUNCH_HOLE as PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE as ZERO_RANGE,
};

#[derive(Debug, Clone)]
pub enum Op {
    Create(&'static str),
    Mkdir(&'static str),
    /// Write `len` bytes of pattern `pat` at `off`.
    Write(&'static str, u64, usize, u8),
    Append(&'static str, usize, u8),
    /// A direct-access client appends `len` bytes of pattern `pat`: write lease past EOF,
    /// stores through the mapping (the device API, traced), persist (flush + fence),
    /// size commit, return.
    DaxAppend(&'static str, usize, u8),
    /// A client overwrites `len` bytes at `off` through a write lease and persists them.
    DaxWrite(&'static str, u64, usize, u8),
    Truncate(&'static str, u64),
    Fallocate(&'static str, i32, u64, u64),
    Link(&'static str, &'static str),
    Unlink(&'static str),
    Rmdir(&'static str),
    Rename(&'static str, &'static str),
    Exchange(&'static str, &'static str),
    /// RENAME_WHITEOUT: the source name becomes a whiteout in the same transaction.
    Whiteout(&'static str, &'static str),
    Symlink(&'static str, &'static str),
    SetXattr(&'static str, &'static str, usize),
    RemoveXattr(&'static str, &'static str),
    Fsync(&'static str),
    Fdatasync(&'static str),
    /// fsync of the directory holding the path.
    FsyncDir(&'static str),
    Sync,
}

impl Op {
    /// The path an fsync variant after this operation applies to.
    fn target(&self) -> &'static str {
        match self {
            Op::Create(p)
            | Op::Mkdir(p)
            | Op::Write(p, ..)
            | Op::Append(p, ..)
            | Op::DaxAppend(p, ..)
            | Op::DaxWrite(p, ..)
            | Op::Truncate(p, _)
            | Op::Fallocate(p, ..)
            | Op::Unlink(p)
            | Op::Rmdir(p)
            | Op::Symlink(p, _)
            | Op::SetXattr(p, ..)
            | Op::RemoveXattr(p, _)
            | Op::Fsync(p)
            | Op::Fdatasync(p)
            | Op::FsyncDir(p) => p,
            Op::Link(_, p) | Op::Rename(_, p) | Op::Exchange(_, p) | Op::Whiteout(_, p) => p,
            Op::Sync => "",
        }
    }
}

/// The one- and two-operation catalogue (ACE's operations over the starting tree).
/// A symlink target too long for the inode: it goes to a block of its own.
const LONG_TARGET: &str = "segment00/segment01/segment02/segment03/segment04/segment05/segment06/segment07/segment08/segment09/segment10/segment11/segment12/segment13/segment14/segment15/segment16/segment17/segment18/segment19/segment20/segment21/segment22/segment23/segment24/segment25/segment26/segment27/segment28/segment29/segment30/segment31/segment32/segment33/segment34/segment35/segment36/segment37/segment38/segment39/segment40/segment41/segment42/segment43/segment44/segment45/segment46/segment47/segment48/segment49";

pub fn catalogue() -> Vec<Op> {
    use Op::*;
    vec![
        Create("A/new"),
        Mkdir("B/sub"),
        Write("A/foo", 4096, 4096, 11),
        Write("A/bar", 20000, 3000, 12),
        Write("A/foo", 100, 50, 13),
        Write("A/bar", 8192, 8192, 15),
        // Large enough to allocate in a transaction of its own before copying.
        Write("A/foo", 16384, 20 * 4096, 16),
        Append("A/bar", 3000, 14),
        Truncate("A/foo", 1000),
        Truncate("A/bar", 30000),
        Fallocate("A/foo", 0, 16384, 8192),
        Fallocate("A/bar", KEEP_SIZE, 8192, 8192),
        Fallocate("A/foo", PUNCH_HOLE | KEEP_SIZE, 4096, 4096),
        Fallocate("A/foo", ZERO_RANGE, 1000, 6000),
        Fallocate("A/foo", COLLAPSE_RANGE, 4096, 4096),
        Fallocate("A/foo", INSERT_RANGE, 4096, 4096),
        Link("A/foo", "B/foo2"),
        Unlink("A/bar"),
        Rename("A/foo", "B/foo"),
        Rename("A/foo", "A/bar"),
        Rename("D", "B/D"),
        Exchange("A/foo", "C"),
        Whiteout("A/foo", "B/foo"),
        Symlink("B/sym", "../A/foo"),
        Symlink("B/longsym", LONG_TARGET),
        SetXattr("A/foo", "user.x", 100),
        RemoveXattr("C", "user.a"),
        Rmdir("B"),
        // Structure changes: E's hash index is one full leaf, F has the most extents an
        // inode holds inline (G and H below).
        Create("E/new"),
        Unlink("E/e100"),
        Rename("E/e5", "B/e5"),
        Write("F", 20 * 4096, 4096, 21),
        Fallocate("F", PUNCH_HOLE | KEEP_SIZE, 2 * 4096, 4096),
        Truncate("F", 0),
        // G is a short-form directory its inode cannot grow: the create moves it to block
        // form. H is a block directory one entry over what its inode holds: the unlink
        // moves it back to short form.
        Create("G/new"),
        Unlink("H/h00"),
        // Attribute forks: a 64 KiB value (a chain of remote value blocks), a small
        // value replaced by a remote one; I's attributes fill three leaves and one
        // remote value: replace in a leaf, add a remote one, remove one, free it all.
        SetXattr("A/foo", "user.big", 65536),
        SetXattr("C", "user.a", 20000),
        SetXattr("I", "user.i000", 5),
        SetXattr("I", "user.new", 3000),
        RemoveXattr("I", "user.iremote"),
        Unlink("I"),
    ]
}

/// Direct-access client workloads (issue 9): a client's append and overwrite, alone,
/// after an ordinary append and before a truncate, each followed by each sync variant.
pub fn dax_workloads() -> Vec<Workload> {
    use Op::*;
    let seqs: Vec<Vec<Op>> = vec![
        vec![DaxAppend("A/bar", 5000, 31)],
        vec![DaxAppend("A/foo", 3 * 4096, 32)],
        vec![DaxWrite("A/bar", 1000, 6000, 33)],
        vec![Append("A/bar", 3000, 14), DaxAppend("A/bar", 3000, 34)],
        vec![DaxAppend("A/bar", 9000, 35), Truncate("A/bar", 100)],
        vec![DaxAppend("A/new0", 4096, 36)],
    ];
    let mut out = Vec::new();
    for seq in seqs {
        for v in 0..sync_variants("").len() {
            let mut ops = seq.clone();
            if let Some(s) = sync_variants(seq[0].target()).swap_remove(v) {
                ops.push(s);
            }
            if ops.iter().any(|o| o.target() == "A/new0") {
                ops.insert(0, Create("A/new0"));
            }
            let name = ops
                .iter()
                .map(|o| format!("{o:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(Workload { name, ops });
        }
    }
    out
}

/// The fsync variants that follow an operation (None: no sync at all).
fn sync_variants(target: &'static str) -> Vec<Option<Op>> {
    vec![
        None,
        Some(Op::Fsync(target)),
        Some(Op::Fdatasync(target)),
        Some(Op::FsyncDir(target)),
        Some(Op::Sync),
    ]
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub ops: Vec<Op>,
}

impl Workload {
    /// Does it use E or F (the big directory and the many-extent file of the setup)?
    fn names_big_tree(&self) -> bool {
        let big = |p: &str| {
            ["E", "F", "G", "H", "I"].contains(&p)
                || ["E/", "G/", "H/"].iter().any(|d| p.starts_with(d))
        };
        self.ops.iter().any(|op| match op {
            Op::Link(a, b) | Op::Rename(a, b) | Op::Exchange(a, b) | Op::Whiteout(a, b) => {
                big(a) || big(b)
            }
            Op::Sync => false,
            op => big(op.target()),
        })
    }
}

/// Every sequence of `depth` (1 or 2) catalogue operations, each followed by a sync
/// variant. With `all_variants` every combination of variants; else for two operations
/// each pair gets one combination, rotating so that every combination occurs.
pub fn ace_workloads(depth: usize, all_variants: bool) -> Vec<Workload> {
    let cat = catalogue();
    let mut out = Vec::new();
    let nv = sync_variants("").len();
    let mut rot = 0usize;
    let mut seqs: Vec<Vec<usize>> = (0..cat.len()).map(|i| vec![i]).collect();
    for _ in 1..depth {
        seqs = seqs
            .iter()
            .flat_map(|s| (0..cat.len()).map(move |i| [s.clone(), vec![i]].concat()))
            .collect();
    }
    for seq in seqs {
        let combos: Vec<Vec<usize>> = if depth == 1 || all_variants {
            let mut c: Vec<Vec<usize>> = vec![vec![]];
            for _ in 0..depth {
                c = c
                    .iter()
                    .flat_map(|v| (0..nv).map(move |x| [v.clone(), vec![x]].concat()))
                    .collect();
            }
            c
        } else {
            rot += 1;
            vec![(0..depth).map(|d| (rot / nv.pow(d as u32)) % nv).collect()]
        };
        for combo in combos {
            let mut ops = Vec::new();
            let mut name = Vec::new();
            for (&i, &v) in seq.iter().zip(&combo) {
                let op = cat[i].clone();
                let sync = sync_variants(op.target()).swap_remove(v);
                name.push(format!("{op:?}"));
                if let Some(s) = &sync {
                    name.push(format!("{s:?}"));
                }
                ops.push(op);
                ops.extend(sync);
            }
            out.push(Workload {
                name: name.join(", "),
                ops,
            });
        }
    }
    out
}

/// `n` seeded random sequences of `len` operations over the starting tree's names.
pub fn random_workloads(n: usize, len: usize, seed: u64) -> Vec<Workload> {
    const FILES: [&str; 8] = ["A/foo", "A/bar", "C", "A/new", "B/x", "D/e", "F", "E/e9"];
    const DIRS: [&str; 5] = ["B/sub", "D", "A/d2", "B", "E"];
    let mut rng = Rng::new(seed);
    let pick = |xs: &[&'static str], r: &mut Rng| xs[r.below(xs.len() as u64) as usize];
    (0..n)
        .map(|w| {
            let mut ops = Vec::new();
            for _ in 0..len {
                let f = pick(&FILES, &mut rng);
                let g = pick(&FILES, &mut rng);
                let off = rng.below(40_000);
                let big = rng.below(8) == 0;
                let l = 1 + rng.below(if big { 100_000 } else { 9000 }) as usize;
                let pat = (rng.below(200) + 20) as u8;
                let op = match rng.below(19) {
                    0 => Op::Create(f),
                    1 => Op::Mkdir(pick(&DIRS, &mut rng)),
                    2 | 3 => Op::Write(f, off, l, pat),
                    4 => Op::Append(f, l, pat),
                    5 => Op::Truncate(f, off),
                    6 => {
                        let modes = [
                            0,
                            KEEP_SIZE,
                            PUNCH_HOLE | KEEP_SIZE,
                            ZERO_RANGE,
                            COLLAPSE_RANGE,
                            INSERT_RANGE,
                        ];
                        let m = modes[rng.below(6) as usize];
                        let (o, l) = if m & (COLLAPSE_RANGE | INSERT_RANGE) != 0 {
                            (off & !4095, 4096 * (1 + rng.below(3)))
                        } else {
                            (off, l as u64)
                        };
                        Op::Fallocate(f, m, o, l)
                    }
                    7 => Op::Link(f, g),
                    8 => Op::Unlink(f),
                    9 => Op::Rmdir(pick(&DIRS, &mut rng)),
                    10 => Op::Rename(f, g),
                    11 => Op::Rename(pick(&DIRS, &mut rng), pick(&DIRS, &mut rng)),
                    12 => Op::Exchange(f, g),
                    13 => Op::Symlink(g, "target"),
                    14 => {
                        let len = if big { 65536 } else { 300 };
                        Op::SetXattr(f, "user.r", 1 + rng.below(len) as usize)
                    }
                    15 => Op::RemoveXattr(f, "user.r"),
                    16 => Op::Fsync(f),
                    17 => Op::FsyncDir(f),
                    _ => Op::Sync,
                };
                ops.push(op);
            }
            Workload {
                name: format!("random #{w} (seed {seed})"),
                ops,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub persistence: Persistence,
    pub limits: Limits,
    /// Crash points per workload whose recovery is itself crashed (idempotence).
    pub recovery_crashes: usize,
    pub seed: u64,
    /// Every free at commit goes the pending-free way (logged, then done by a follow-up
    /// transaction), as when its AG lock is taken out of order (trans.rs).
    pub pending_frees: bool,
    /// The workload's mount runs with this memory budget (`mem=`): a tiny one makes every
    /// inode load, create and allocating write run direct reclaim, and the background
    /// reclaimer write back timestamps, while the trace is taken. Recovery is unbounded.
    pub mem_limit: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub workloads: u64,
    pub crash_points: u64,
    pub images: u64,
    pub recovery_images: u64,
    pub failures: u64,
    /// Direct reclaim passes and inodes reclaim evicted during the traced workloads (a
    /// run with `mem_limit`).
    pub reclaim_direct: u64,
    pub reclaim_freed: u64,
    /// The first failures, described.
    pub reports: Vec<String>,
}

impl Summary {
    pub fn merge(&mut self, o: Summary) {
        self.workloads += o.workloads;
        self.crash_points += o.crash_points;
        self.images += o.images;
        self.recovery_images += o.recovery_images;
        self.failures += o.failures;
        self.reclaim_direct += o.reclaim_direct;
        self.reclaim_freed += o.reclaim_freed;
        for r in o.reports {
            if self.reports.len() < 20 {
                self.reports.push(r);
            }
        }
    }

    fn fail(&mut self, msg: String) {
        self.failures += 1;
        if self.reports.len() < 20 {
            self.reports.push(msg);
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} workloads, {} crash points, {} crash images checked, {} recovery-crash images, {} failures",
            self.workloads, self.crash_points, self.images, self.recovery_images, self.failures
        )?;
        if self.reclaim_direct > 0 {
            write!(
                f,
                "; reclaim: {} direct passes, {} inodes evicted",
                self.reclaim_direct, self.reclaim_freed
            )?;
        }
        Ok(())
    }
}

fn cred() -> Cred {
    Cred::default()
}

fn opts() -> FsOptions {
    FsOptions {
        atime: AtimeMode::Noatime,
        // Every file can be granted to a client (DaxAppend, DaxWrite).
        dax: crate::fs::DaxMode::Always,
        // No timed log force: the trace holds only what the operations do.
        force_interval_ms: 0,
        ..Default::default()
    }
}

/// A layout error as the core's error (the workload only needs the errno).
fn lay<T>(r: std::result::Result<T, crate::dax::LayoutError>) -> Result<T> {
    r.map_err(|e| FsError::Errno(e.errno))
}

/// What a client does: grant a write lease over [off, off+data.len()), store `data`
/// through the mapping with the device's traced primitives, persist it (flush + fence),
/// commit the size when it grows the file, return the lease.
fn client_store(fs: &Fs, ino: u64, off: u64, data: &[u8]) -> Result<()> {
    let c = fs.layout_client_new(1, 0);
    let r = (|| {
        let g = lay(fs.layout_grant(ino, c, off, data.len() as u64, true))?;
        let end = off + data.len() as u64;
        let dev = &fs.mp().dev;
        for m in &g.ranges {
            let (s, e) = (m.file_off.max(off), (m.file_off + m.len).min(end));
            if s >= e {
                continue;
            }
            let at = m.dev_off.expect("a write grant maps every block") + (s - m.file_off);
            dev.write(at, &data[(s - off) as usize..(e - off) as usize]);
            dev.flush(at, e - s);
        }
        dev.fence();
        if end > g.size {
            lay(fs.layout_commit_size(c, g.lease, end))?;
        }
        lay(fs.layout_return(c, g.lease))
    })();
    fs.layout_client_gone(c);
    r
}

/// File bytes for pattern `pat`: position-dependent, never 0 or the garbage byte.
fn pattern(pat: u8, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((pat as u64 * 97 + off + i) % 200 + 20) as u8)
        .collect()
}

fn resolve(fs: &Fs, path: &str) -> Result<u64> {
    let mut ino = fs.root_ino();
    if path.is_empty() {
        return Ok(ino);
    }
    for c in path.split('/') {
        ino = fs.lookup(ino, c.as_bytes())?.ino;
    }
    Ok(ino)
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn parent<'p>(fs: &Fs, path: &'p str) -> Result<(u64, &'p [u8])> {
    let (d, n) = split(path);
    Ok((resolve(fs, d)?, n.as_bytes()))
}

/// Entries in E: exactly fill one leaf of the directory hash index (16-byte keys), so the
/// next one splits it.
const E_ENTRIES: usize = (BLOCK_SIZE - crate::format::BT_RECS) / 16;

/// Attributes on I (the setup's many-attribute file).
const I_XATTRS: usize = 120;

/// Make the starting tree: A/{foo,bar}, B/, C (with an xattr), D/e, E/ with E_ENTRIES
/// entries, F with INLINE_EXTENTS_MAX extents (one more converts it to an extent tree),
/// G and H (directory forms, below), I with an attribute fork of three leaves.
fn setup(fs: &Fs, big: bool) -> Result<()> {
    let r = fs.root_ino();
    let a = fs.mkdir(r, b"A", 0o755, &cred())?.ino;
    fs.mkdir(r, b"B", 0o755, &cred())?;
    let d = fs.mkdir(r, b"D", 0o755, &cred())?.ino;
    let file = |dir: u64, name: &[u8], len: usize, pat: u8| -> Result<u64> {
        let ino = fs.mknod(dir, name, libc::S_IFREG | 0o644, 0, &cred())?.ino;
        fs.write(ino, 0, &pattern(pat, 0, len), false)?;
        Ok(ino)
    };
    file(a, b"foo", 12288, 1)?;
    file(a, b"bar", 5000, 2)?;
    let c = file(r, b"C", 4096, 3)?;
    fs.setxattr(c, b"user.a", b"va", XattrFlags::default())?;
    file(d, b"e", 100, 4)?;
    if !big {
        // Workloads that do not name E or F go without them: smaller trees check faster.
        return fs.sync();
    }
    let e = fs.mkdir(r, b"E", 0o755, &cred())?.ino;
    for i in 0..E_ENTRIES {
        fs.mknod(
            e,
            format!("e{i}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &cred(),
        )?;
    }
    let f = fs.mknod(r, b"F", libc::S_IFREG | 0o644, 0, &cred())?.ino;
    for i in 0..crate::format::INLINE_EXTENTS_MAX as u64 {
        fs.write(f, i * 2 * 4096, &pattern(5, i * 2 * 4096, 4096), false)?;
    }
    // G: a short-form directory as full as its inode holds (3-byte names); H: a block
    // directory with one entry more than its inode holds.
    let g = fs.mkdir(r, b"G", 0o755, &cred())?.ino;
    let per = crate::format::SF_HDR + 3;
    for i in 0..crate::format::INODE_LITERAL_LEN / per {
        fs.mknod(
            g,
            format!("g{i:02}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &cred(),
        )?;
    }
    let h = fs.mkdir(r, b"H", 0o755, &cred())?.ino;
    for i in 0..40 {
        let name = format!("h{i:02}");
        let ino = fs
            .mknod(h, name.as_bytes(), libc::S_IFREG | 0o644, 0, &cred())?
            .ino;
        // Dropped as the kernel would: an unlinked inode still looked up stays on the
        // unlinked list, and every crash image's recovery would free it again.
        fs.forget(ino, 1);
    }
    for i in 18..40 {
        fs.unlink(h, format!("h{i:02}").as_bytes())?;
    }
    // I: an attribute fork of three leaves (120 entries of 72 bytes) and a remote value.
    let i = fs.mknod(r, b"I", libc::S_IFREG | 0o644, 0, &cred())?.ino;
    for n in 0..I_XATTRS {
        let name = format!("user.i{n:03}");
        fs.setxattr(i, name.as_bytes(), &[n as u8; 60], XattrFlags::default())?;
    }
    fs.setxattr(
        i,
        b"user.iremote",
        &pattern(9, 0, 10000),
        XattrFlags::default(),
    )?;
    fs.sync()
}

/// Run one operation. Errors (ENOENT in a random sequence, ...) are part of the workload.
fn run_op(fs: &Fs, op: &Op) -> Result<()> {
    match *op {
        Op::Create(p) => {
            let (d, n) = parent(fs, p)?;
            fs.mknod(d, n, libc::S_IFREG | 0o644, 0, &cred())?;
        }
        Op::Mkdir(p) => {
            let (d, n) = parent(fs, p)?;
            fs.mkdir(d, n, 0o755, &cred())?;
        }
        Op::Write(p, off, len, pat) => {
            let ino = resolve(fs, p)?;
            fs.write(ino, off, &pattern(pat, off, len), false)?;
        }
        Op::Append(p, len, pat) => {
            let ino = resolve(fs, p)?;
            let off = fs.getattr(ino)?.size;
            fs.write(ino, 0, &pattern(pat, off, len), true)?;
        }
        Op::DaxAppend(p, len, pat) => {
            let ino = resolve(fs, p)?;
            let off = fs.getattr(ino)?.size;
            client_store(fs, ino, off, &pattern(pat, off, len))?;
        }
        Op::DaxWrite(p, off, len, pat) => {
            let ino = resolve(fs, p)?;
            client_store(fs, ino, off, &pattern(pat, off, len))?;
        }
        Op::Truncate(p, size) => {
            let ino = resolve(fs, p)?;
            let set = SetAttr {
                size: Some(size),
                ..Default::default()
            };
            fs.setattr(ino, &set, &cred())?;
        }
        Op::Fallocate(p, mode, off, len) => {
            let ino = resolve(fs, p)?;
            fs.fallocate(ino, off, len, mode)?;
        }
        Op::Link(a, b) => {
            let ino = resolve(fs, a)?;
            let (d, n) = parent(fs, b)?;
            fs.link(ino, d, n)?;
        }
        Op::Unlink(p) => {
            let (d, n) = parent(fs, p)?;
            fs.unlink(d, n)?;
        }
        Op::Rmdir(p) => {
            let (d, n) = parent(fs, p)?;
            fs.rmdir(d, n)?;
        }
        Op::Rename(a, b) | Op::Exchange(a, b) | Op::Whiteout(a, b) => {
            let (da, na) = parent(fs, a)?;
            let (db, nb) = parent(fs, b)?;
            let flags = RenameFlags {
                exchange: matches!(op, Op::Exchange(..)),
                whiteout: matches!(op, Op::Whiteout(..)),
                ..Default::default()
            };
            fs.rename(da, na, db, nb, flags)?;
        }
        Op::Symlink(p, target) => {
            let (d, n) = parent(fs, p)?;
            fs.symlink(d, n, target.as_bytes(), &cred())?;
        }
        Op::SetXattr(p, name, len) => {
            let ino = resolve(fs, p)?;
            let v = pattern(len as u8, 0, len);
            fs.setxattr(ino, name.as_bytes(), &v, XattrFlags::default())?;
        }
        Op::RemoveXattr(p, name) => {
            let ino = resolve(fs, p)?;
            fs.removexattr(ino, name.as_bytes())?;
        }
        Op::Fsync(p) | Op::Fdatasync(p) => {
            let ino = resolve(fs, p)?;
            fs.fsync(ino, matches!(op, Op::Fdatasync(_)))?;
        }
        Op::FsyncDir(p) => {
            let ino = resolve(fs, split(p).0)?;
            fs.fsync(ino, false)?;
        }
        Op::Sync => fs.sync()?,
    }
    Ok(())
}

/// One object of the tree as a user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    ino: u64,
    kind: FileKind,
    nlink: u32,
    size: u64,
    target: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    data: Vec<u8>,
}

type Snap = BTreeMap<String, Node>;

/// Give back every lookup reference the snapshot and the operations took, as the kernel
/// does when it forgets inodes: under a memory budget the inodes become unreferenced, so
/// reclaim evicts them (and later operations load them again from the media).
fn drop_lookups(fs: &Fs, snap: &Snap) {
    for node in snap.values() {
        if let Ok(inode) = fs.iget(node.ino) {
            let n = inode.nlookup.load(std::sync::atomic::Ordering::Acquire);
            drop(inode);
            fs.forget(node.ino, n);
        }
    }
}

fn snapshot(fs: &Fs) -> Result<Snap> {
    let mut out = Snap::new();
    let mut stack = vec![(String::new(), fs.root_ino())];
    while let Some((path, dir)) = stack.pop() {
        let mut names = Vec::new();
        let mut cookie = 0;
        loop {
            let mut got = 0;
            fs.readdir(dir, cookie, &mut |e| {
                if e.name != b"." && e.name != b".." {
                    names.push(e.name.clone());
                }
                cookie = e.next;
                got += 1;
                false
            })?;
            if got == 0 {
                break;
            }
        }
        for name in names {
            let a = fs.lookup(dir, &name)?;
            let p = if path.is_empty() {
                String::from_utf8_lossy(&name).into_owned()
            } else {
                format!("{path}/{}", String::from_utf8_lossy(&name))
            };
            let mut node = Node {
                ino: a.ino,
                kind: a.kind,
                nlink: a.nlink,
                size: a.size,
                target: Vec::new(),
                xattrs: BTreeMap::new(),
                data: Vec::new(),
            };
            let list = fs.listxattr(a.ino)?;
            for x in list.split(|&b| b == 0).filter(|x| !x.is_empty()) {
                node.xattrs.insert(x.to_vec(), fs.getxattr(a.ino, x)?);
            }
            match a.kind {
                FileKind::Dir => stack.push((p.clone(), a.ino)),
                FileKind::Symlink => node.target = fs.readlink(a.ino)?,
                FileKind::File => {
                    let mut off = 0;
                    while off < a.size {
                        let chunk = fs.read(a.ino, off, 1 << 20, |b| b.to_vec())?;
                        if chunk.is_empty() {
                            return Err(FsError::corrupt(format!("{p}: short read at {off}")));
                        }
                        off += chunk.len() as u64;
                        node.data.extend_from_slice(&chunk);
                    }
                }
                _ => {}
            }
            out.insert(p, node);
        }
    }
    Ok(out)
}

/// The namespace part of a snapshot (everything but sizes and contents of files).
fn names(s: &Snap) -> BTreeMap<&str, (u64, FileKind, u32, &[u8], &BTreeMap<Vec<u8>, Vec<u8>>)> {
    s.iter()
        .map(|(p, n)| {
            (
                p.as_str(),
                (n.ino, n.kind, n.nlink, &n.target[..], &n.xattrs),
            )
        })
        .collect()
}

fn by_ino(s: &Snap) -> HashMap<u64, &Node> {
    s.values().map(|n| (n.ino, n)).collect()
}

/// What the run of a workload recorded: states after each operation and where each ended.
struct Run {
    snaps: Vec<Snap>,
    /// Trace length when operation i (1-based; 0 = start) had returned.
    ends: Vec<usize>,
    /// Per state and inode, per 8-byte word of the file, the values a crash may leave
    /// there (see `allowed_after`).
    allowed: Vec<HashMap<u64, Vec<Vec<u64>>>>,
    /// Client stores (DaxAppend, DaxWrite) that returned: operation number (1-based),
    /// inode, offset, bytes, and whether the store grew the file (its size committed).
    client: Vec<(usize, u64, u64, Vec<u8>, bool)>,
    /// Per number of completed operations, how many of them a completed fsync,
    /// fdatasync, directory fsync or sync made durable (the prefix rule's floor).
    floor: Vec<usize>,
    /// Page-cache mode: commits are durable at a log force only (log/force.rs), so a
    /// crash may leave any prefix from the floor on, not only the last state.
    prefix: bool,
}

fn word(data: &[u8], w: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(w * 8 + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// How operation `op` (which succeeded) moved the words of inode `ino`: for word `w` of the
/// new state, the word of the old state it came from (None: none, a new hole).
fn moved_from(op: &Op, op_ino: Option<u64>, ino: u64, w: usize) -> Option<usize> {
    match *op {
        Op::Fallocate(_, mode, off, len) if op_ino == Some(ino) => {
            let (o, l) = ((off / 8) as usize, (len / 8) as usize);
            if mode & COLLAPSE_RANGE != 0 {
                Some(if w >= o { w + l } else { w })
            } else if mode & INSERT_RANGE != 0 {
                match w {
                    w if w < o => Some(w),
                    w if w < o + l => None,
                    w => Some(w - l),
                }
            } else {
                Some(w)
            }
        }
        _ => Some(w),
    }
}

impl Run {
    /// Operations complete at trace position `pos`.
    fn done_at(&self, pos: usize) -> usize {
        self.ends.iter().skip(1).take_while(|&&e| e <= pos).count()
    }

    /// The per-word allowed values after operation `op` led to `snap`: what the file holds
    /// now, and, unless `op` made the inode's data durable (`durable`: None for all), what
    /// was allowed before (moved as the operation moved the file's words: an overwrite not
    /// yet durable may be lost even after a later collapse or insert shifted it).
    fn allowed_after(
        prev: &HashMap<u64, Vec<Vec<u64>>>,
        snap: &Snap,
        op: Option<(&Op, Option<u64>)>,
        durable: Option<&[u64]>,
    ) -> HashMap<u64, Vec<Vec<u64>>> {
        let mut out = HashMap::new();
        for node in snap.values().filter(|n| n.kind == FileKind::File) {
            if out.contains_key(&node.ino) {
                continue;
            }
            let words = node.data.len().div_ceil(8);
            let reset = durable.is_none_or(|d| d.contains(&node.ino));
            let old = prev.get(&node.ino);
            let mut a = Vec::with_capacity(words);
            for w in 0..words {
                let mut set = vec![word(&node.data, w)];
                if let (false, Some(old), Some((op, op_ino))) = (reset, old, op)
                    && let Some(from) = moved_from(op, op_ino, node.ino, w)
                    && let Some(vals) = old.get(from)
                {
                    for v in vals {
                        if !set.contains(v) {
                            set.push(*v);
                        }
                    }
                }
                a.push(set);
            }
            out.insert(node.ino, a);
        }
        out
    }

    /// Client stores, held strictly: once a store returned (it persisted), its bytes are
    /// there while the file reaches over them; and a size a client committed is never
    /// ahead of its data, also for the store in flight at the crash (no zeros where the
    /// committed size says data is).
    fn client_oracle(&self, got: &Snap, k: usize) -> std::result::Result<(), String> {
        let files = by_ino(got);
        for (i, ino, off, data, grew) in &self.client {
            let in_flight = *i == k + 1;
            if *i > k + 1 || (in_flight && !grew) {
                continue;
            }
            let Some(node) = files.get(ino) else { continue };
            let end = off + data.len() as u64;
            if node.size < end {
                continue;
            }
            let have = &node.data[*off as usize..end as usize];
            if have != &data[..] {
                let bad = have.iter().zip(data).position(|(a, b)| a != b).unwrap_or(0);
                return Err(format!(
                    "inode {ino}: client store {i} ({} bytes at {off}) is not there although \
                     the size ({}) covers it: byte {} is {:#04x}, not {:#04x}{}",
                    data.len(),
                    node.size,
                    *off as usize + bad,
                    have[bad],
                    data[bad],
                    if in_flight {
                        " (size ahead of its data)"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(())
    }

    /// Check a recovered filesystem against the states around `k` completed operations:
    /// the state after them or the one in progress; in page-cache mode (`prefix`) the
    /// state after any j of them, from the floor (what the last completed fsync or sync
    /// made durable) to k, or the one in progress after j.
    fn oracle(&self, got: &Snap, k: usize) -> std::result::Result<(), String> {
        let n = self.snaps.len() - 1;
        let hi = (k + 1).min(n);
        if !self.prefix {
            self.client_oracle(got, k)?;
            return self.oracle_at(got, k, hi);
        }
        let floor = self.floor[k];
        let mut first = None;
        for j in (floor..=k).rev() {
            match self
                .client_oracle(got, j)
                .and_then(|()| self.oracle_at(got, j, hi))
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(format!(
            "no prefix of {floor}..={k} operations (floor: the last fsync/sync) fits; after {k}: {}",
            first.unwrap_or_default()
        ))
    }

    /// `oracle` for the state after `k` operations (or the one in progress); file words
    /// may hold what any state up to `data_hi` held (data is not ordered by the log).
    fn oracle_at(&self, got: &Snap, k: usize, data_hi: usize) -> std::result::Result<(), String> {
        let n = self.snaps.len() - 1;
        let hi = (k + 1).min(n);
        let cands: Vec<usize> = (k..=hi).collect();
        let data_cands: Vec<usize> = (k..=data_hi.max(hi)).collect();
        let ns = names(got);
        let Some(&j) = cands.iter().find(|&&j| names(&self.snaps[j]) == ns) else {
            return Err(format!(
                "namespace is neither the state after {k} operations nor the next: got {:?}, expected {:?}",
                ns.keys().collect::<Vec<_>>(),
                names(&self.snaps[k]).keys().collect::<Vec<_>>()
            ));
        };
        let maps: Vec<HashMap<u64, &Node>> =
            cands.iter().map(|&s| by_ino(&self.snaps[s])).collect();
        for (path, node) in got {
            if node.kind != FileKind::File {
                continue;
            }
            let sizes: Vec<u64> = maps
                .iter()
                .filter_map(|m| m.get(&node.ino).map(|x| x.size))
                .collect();
            if !sizes.contains(&node.size) {
                return Err(format!(
                    "{path} (inode {}): size {} is none of {sizes:?} (state {j})",
                    node.ino, node.size
                ));
            }
            for w in 0..node.data.len().div_ceil(8) {
                let v = word(&node.data, w);
                // The file may end inside the word: compare only the bytes it has.
                let have = (node.data.len() - w * 8).min(8);
                let mask = if have == 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * have)) - 1
                };
                let fits = data_cands.iter().any(|&s| {
                    self.allowed[s]
                        .get(&node.ino)
                        .and_then(|a| a.get(w))
                        .is_some_and(|set| set.iter().any(|x| x & mask == v))
                        // Beyond what a state held, only zeros (a size-extending state).
                        || (v == 0
                            && self.allowed[s].get(&node.ino).is_some_and(|a| w >= a.len()))
                });
                if !fits {
                    let at = w * 8;
                    let chunk = &node.data[at..(at + 8).min(node.data.len())];
                    let stale = chunk.contains(&GARBAGE);
                    return Err(format!(
                        "{path} (inode {}): bytes {at}..{} are {chunk:02x?}, which no state since its data was last durable held{}",
                        node.ino,
                        at + chunk.len(),
                        if stale {
                            " (never-written garbage: stale data)"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        Ok(())
    }
}

fn fs_err(e: FsError) -> String {
    format!("{e}")
}

/// Mount (recover) the image on `dev`, snapshot it, unmount, check.
fn recover_and_check(dev: &Arc<Device>) -> std::result::Result<Snap, String> {
    let fs = Fs::mount(dev.clone(), &opts()).map_err(|e| format!("mount failed: {e}"))?;
    let snap = snapshot(&fs).map_err(|e| format!("walking the recovered tree: {}", fs_err(e)))?;
    fs.unmount().map_err(|e| format!("unmount failed: {e}"))?;
    drop(fs);
    let rep = check::check(dev).map_err(|e| format!("check could not read: {e}"))?;
    if !rep.problems.is_empty() {
        return Err(format!("check: {:?}", rep.problems));
    }
    Ok(snap)
}

thread_local! {
    /// Devices kept for reuse: making and freeing 16 MiB memfds for every workload costs
    /// more than checking it. Every user overwrites the whole device first.
    static POOL: std::cell::RefCell<Vec<(Option<Persistence>, Arc<Device>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A free tracing device: emulating `persistence`, or (None) a plain memfd that records
/// stores, which crash images are built on so that the pages one image and its recovery
/// wrote can be restored for the next (`CrashPoint::rebuild`).
fn pooled(persistence: Option<Persistence>) -> std::result::Result<Arc<Device>, String> {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if let Some((_, d)) = pool
            .iter()
            .find(|(k, d)| *k == persistence && Arc::strong_count(d) == 1)
        {
            d.take_trace();
            d.errtags.set(ErrorTag::FreeIntent, 0);
            return Ok(d.clone());
        }
        let d = match persistence {
            Some(p) => Device::traced(DEV_SIZE, p),
            None => Device::memfd(DEV_SIZE).map(|mut d| {
                d.enable_trace();
                d
            }),
        }
        .map_err(|e| e.to_string())?;
        let d = Arc::new(d);
        pool.push((persistence, d.clone()));
        Ok(d)
    })
}

fn catch<T>(f: impl FnOnce() -> std::result::Result<T, String>) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or(p.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        )),
    }
}

/// Run `w` on a traced device and check every crash image of it.
pub fn check_workload(w: &Workload, cfg: &Config) -> Summary {
    let mut sum = Summary {
        workloads: 1,
        ..Default::default()
    };
    let r = catch(|| run_and_check(w, cfg, &mut sum));
    if let Err(e) = r {
        sum.fail(format!("[{}] {}: {e}", mode_name(cfg), w.name));
    }
    sum
}

/// How failure reports name the emulated device.
fn mode_name(cfg: &Config) -> &'static str {
    match cfg.persistence {
        Persistence::Dax => "dax",
        Persistence::PageCache => "pagecache",
        Persistence::Volatile => "volatile",
    }
}

fn run_and_check(w: &Workload, cfg: &Config, sum: &mut Summary) -> std::result::Result<(), String> {
    let mode = mode_name(cfg);
    let dev = pooled(Some(cfg.persistence))?;
    dev.load_image(&vec![GARBAGE; DEV_SIZE as usize]);
    mkfs::mkfs(&dev, &MkfsOptions::default()).map_err(fs_err)?;
    let fs = Fs::mount(
        dev.clone(),
        &FsOptions {
            mem_limit: cfg.mem_limit,
            ..opts()
        },
    )
    .map_err(fs_err)?;
    setup(&fs, w.names_big_tree()).map_err(|e| format!("setup: {e}"))?;
    let mut base = vec![0u8; DEV_SIZE as usize];
    dev.read(0, &mut base);
    dev.take_trace();
    dev.errtags
        .set(ErrorTag::FreeIntent, cfg.pending_frees as u64);
    let mut trace = Vec::new();
    let snap0 = snapshot(&fs).map_err(fs_err)?;
    if cfg.mem_limit.is_some() {
        drop_lookups(&fs, &snap0);
    }
    let mut run = Run {
        allowed: vec![Run::allowed_after(&HashMap::new(), &snap0, None, None)],
        snaps: vec![snap0],
        ends: vec![0],
        client: Vec::new(),
        floor: vec![0],
        prefix: cfg.persistence == Persistence::PageCache,
    };
    for op in &w.ops {
        let op_ino = match op {
            Op::Fallocate(p, ..) | Op::DaxAppend(p, ..) | Op::DaxWrite(p, ..) => {
                resolve(&fs, p).ok()
            }
            _ => None,
        };
        let size_before = op_ino.and_then(|i| fs.getattr(i).ok()).map(|a| a.size);
        let ok = run_op(&fs, op).is_ok();
        if ok
            && let (Some(ino), Some(before)) = (op_ino, size_before)
            && let Op::DaxAppend(_, len, pat) | Op::DaxWrite(_, _, len, pat) = *op
        {
            let off = match *op {
                Op::DaxWrite(_, off, ..) => off,
                _ => before,
            };
            let grew = off + len as u64 > before;
            let n = run.ends.len();
            run.client.push((n, ino, off, pattern(pat, off, len), grew));
        }
        trace.extend(dev.take_trace());
        run.ends.push(trace.len());
        let synced = ok
            && matches!(
                op,
                Op::Fsync(_) | Op::Fdatasync(_) | Op::FsyncDir(_) | Op::Sync
            );
        let floor = if synced {
            run.ends.len() - 1
        } else {
            *run.floor.last().unwrap()
        };
        run.floor.push(floor);
        let snap = snapshot(&fs).map_err(fs_err)?;
        if cfg.mem_limit.is_some() {
            drop_lookups(&fs, &snap);
        }
        let durable = match op {
            Op::Sync => None,
            Op::Fsync(p) | Op::Fdatasync(p) => Some(resolve(&fs, p).into_iter().collect()),
            // A client persisted its stores (and committed the size) before returning.
            Op::DaxAppend(..) | Op::DaxWrite(..) => Some(op_ino.into_iter().collect()),
            _ => Some(vec![]),
        };
        let moved = Some((op, op_ino.filter(|_| ok)));
        let a = Run::allowed_after(
            run.allowed.last().unwrap(),
            &snap,
            moved,
            durable.as_deref(),
        );
        run.allowed.push(a);
        run.snaps.push(snap);
    }
    let st = &fs.mem().stats;
    sum.reclaim_direct += st.direct_runs.load(std::sync::atomic::Ordering::Relaxed);
    sum.reclaim_freed += st.freed.load(std::sync::atomic::Ordering::Relaxed);
    // Snapshots read, they must not write: the trace holds only the operations.
    drop(fs);
    dev.errtags.set(ErrorTag::FreeIntent, 0);
    let crashed = pooled(None)?;
    let mut rng = Rng::new(cfg.seed ^ sum.workloads.wrapping_mul(31) ^ w.name.len() as u64);
    let mut points = Vec::new();
    crashsim::for_each_point(&base, &trace, 0, &mut |p| {
        points.push(p.pos);
        let k = run.done_at(p.pos);
        sum.crash_points += 1;
        if std::env::var("DAXFS_CRASH_VERBOSE").is_ok() {
            eprintln!(
                "point {} k={k} lines={} inflight={}",
                p.pos,
                p.lines(),
                p.in_flight()
            );
        }
        for (i, c) in p.choices(cfg.limits, &mut rng).iter().enumerate() {
            sum.images += 1;
            p.rebuild(c, &crashed, i > 0);
            let r = catch(|| {
                let got = recover_and_check(&crashed)?;
                run.oracle(&got, k)
            });
            if let Err(e) = r {
                sum.fail(format!(
                    "[{mode}] {}: crash before trace op {} ({k} of {} operations done; {}): {e}",
                    w.name,
                    p.pos,
                    w.ops.len(),
                    p.describe(c)
                ));
                return;
            }
        }
    });
    // Idempotent recovery: crash the recovery of a few crash images and recover again.
    let picks: Vec<usize> = (0..cfg.recovery_crashes.min(points.len()))
        .map(|_| points[rng.below(points.len() as u64) as usize])
        .collect();
    for pick in picks {
        let mut result = Ok(());
        let mut seen = false;
        crashsim::for_each_point(&base, &trace, pick, &mut |p| {
            if seen || p.pos != pick {
                return;
            }
            seen = true;
            let c = p.choices(cfg.limits, &mut rng).pop().unwrap();
            result = catch(|| recovery_crashes(&p.describe(&c), |d| p.build(&c, d), cfg, sum));
        });
        if let Err(e) = result {
            sum.fail(format!("[{mode}] {}: crash at {pick}: {e}", w.name));
        }
    }
    Ok(())
}

/// Trace the recovery of the image `build` makes, crash it at each of its fences, and
/// require recovering again to give the filesystem the uninterrupted recovery gives.
fn recovery_crashes(
    what: &str,
    build: impl Fn(&Device),
    cfg: &Config,
    sum: &mut Summary,
) -> std::result::Result<(), String> {
    let traced = pooled(Some(cfg.persistence))?;
    build(&traced);
    let mut base = vec![0u8; DEV_SIZE as usize];
    traced.read(0, &mut base);
    traced.take_trace();
    let fs = Fs::mount(traced.clone(), &opts()).map_err(|e| format!("{what}: mount: {e}"))?;
    let trace = traced.take_trace();
    let want = snapshot(&fs).map_err(fs_err)?;
    drop(fs);
    let crashed = pooled(None)?;
    let mut rng = Rng::new(cfg.seed);
    let mut out = Ok(());
    crashsim::for_each_point(&base, &trace, 0, &mut |p| {
        if out.is_err() {
            return;
        }
        let limits = Limits {
            exhaustive: 4,
            samples: 4,
        };
        for (i, c) in p.choices(limits, &mut rng).iter().enumerate() {
            sum.recovery_images += 1;
            p.rebuild(c, &crashed, i > 0);
            let r = catch(|| {
                let got = recover_and_check(&crashed)?;
                if got != want {
                    return Err("recovering again gave a different filesystem".into());
                }
                Ok(())
            });
            if let Err(e) = r {
                out = Err(format!(
                    "{what}: recovery crashed before its trace op {} ({}): {e}",
                    p.pos,
                    p.describe(c)
                ));
                return;
            }
        }
    });
    out
}
