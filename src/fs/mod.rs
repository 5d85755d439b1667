//! The filesystem operations, as POSIX names them, knowing nothing of FUSE (fuse.rs is a
//! thin adapter). Every operation here is testable without a mount.
//!
//! Each operation takes locks in the order written in inode/mod.rs (IOLOCK -> MMAPLOCK ->
//! transaction -> ILOCK, several inodes in ascending number). Errors are checked before a
//! transaction changes anything: a transaction that fails after changing blocks cannot be
//! undone in memory and shuts the filesystem down (log/trans.rs).
//!
//! Here: the `Fs` struct, its types, mount and unmount. The inode cache (iget, eviction,
//! inactivation of unlinked inodes, its shrinker) is `icache`: each in-core inode owns its
//! charge to the mount's memory budget (mem/); an `iget` that misses past the budget runs
//! direct reclaim first; the shrinker evicts unreferenced inodes from a list of candidates
//! (an inode goes on it when it is loaded and at its last put) by trylock only, and writes
//! back deferred timestamps only in Full context (the background reclaimer). The operations
//! are one file per family, each another `impl Fs`: `namespace` (names: lookup to rename,
//! readdir), `data` (read, write, truncate, fsync), `attr` (setattr, xattrs, the DAX flag),
//! `falloc` (fallocate, lseek), `layout` (layout leases of direct-access clients: grant,
//! return, break).
//!
//! May call every layer below (pmem to xattr); nothing above it (fuse, mount).

pub mod acl;
mod attr;
mod data;
mod falloc;
mod icache;
use icache::IcacheShrinker;
mod layout;
mod namespace;

pub use layout::{CacheInvalidator, DaxState, LEASE_BREAK_MS_DEFAULT, LEASE_BREAK_MS_MAX};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::btree::BlockIo;
use crate::dax;
use crate::dir;
use crate::error::{FsError, Result, err};
use crate::format::*;
use crate::inode::bmap;
use crate::inode::extent_map::{Extent, ExtentMap};
use crate::inode::{self, DiskInode, IlockExcl, Inode, InodeData};
use crate::log::mp::Mp;
use crate::log::trans::{self, DevReader, Trans};
use crate::mem::lockcheck::{Class, HeldToken, How};
use crate::mem::{AllocContext, Cache, Charge, ScanControl, ScanResult, Shrinker};
use crate::pmem::device::{Device, Persistence};
use crate::pmem::errtag::ErrorTag;
use crate::space::ialloc;
use crate::xattr;

pub type Ino = u64;

pub use crate::inode::{FileKind, Timespec};

/// What `stat` shows.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: Ino,
    pub size: u64,
    /// 512-byte units, as st_blocks.
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub btime: Timespec,
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (mode & 0o7777).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    /// FS_XFLAG_DAX, as FS_IOC_FSGETXATTR reports (also in `flags`).
    pub dax: bool,
    /// Changes each time the inode number is reused: a file handle names (ino, generation).
    pub generation: u32,
    /// The inode flags chattr sets.
    pub flags: InodeFlags,
}

/// The inode flags of FS_IOC_GETFLAGS/SETFLAGS and FS_IOC_FSGETXATTR/FSSETXATTR, as the
/// core knows them (fuse.rs maps the ioctls' bits; `set_flags` enforces who may change
/// them, and every operation the rules of immutable and append-only files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InodeFlags {
    pub immutable: bool,
    pub append: bool,
    pub sync: bool,
    pub noatime: bool,
    pub nodump: bool,
    pub dax: bool,
}

impl InodeFlags {
    pub(crate) fn from_di(flags: u64) -> InodeFlags {
        InodeFlags {
            immutable: flags & DIFLAG_IMMUTABLE != 0,
            append: flags & DIFLAG_APPEND != 0,
            sync: flags & DIFLAG_SYNC != 0,
            noatime: flags & DIFLAG_NOATIME != 0,
            nodump: flags & DIFLAG_NODUMP != 0,
            dax: flags & DIFLAG_DAX != 0,
        }
    }
    pub(crate) fn to_di(self) -> u64 {
        [
            (self.immutable, DIFLAG_IMMUTABLE),
            (self.append, DIFLAG_APPEND),
            (self.sync, DIFLAG_SYNC),
            (self.noatime, DIFLAG_NOATIME),
            (self.nodump, DIFLAG_NODUMP),
            (self.dax, DIFLAG_DAX),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, bit)| acc | bit)
    }
}

/// Who asks: the caller's credentials (FUSE request header plus supplementary groups).
#[derive(Debug, Clone, Default)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// Supplementary groups, when known (used for setgid rules).
    pub groups: Vec<u32>,
    /// Whether the caller has CAP_LINUX_IMMUTABLE (may change the immutable and
    /// append-only flags), when known; None: only uid 0 has it.
    pub cap_linux_immutable: Option<bool>,
}

impl Cred {
    pub fn may_set_immutable(&self) -> bool {
        self.cap_linux_immutable.unwrap_or(self.uid == 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timespec),
}

#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Timespec>,
    /// The open file the change comes through (ftruncate), if any.
    pub fh: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
    pub whiteout: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XattrFlags {
    pub create: bool,
    pub replace: bool,
}

/// FUSE requests by kind, as counted by the FUSE layer (fuse.rs), for `daxfs stat`.
#[derive(Debug, Default)]
pub struct RequestCounters {
    pub lookups: AtomicU64,
    pub getattrs: AtomicU64,
    pub readdirs: AtomicU64,
    pub readdirplus: AtomicU64,
    /// Entries handed to the kernel with their attributes by READDIRPLUS.
    pub readdirplus_entries: AtomicU64,
}

impl RequestCounters {
    fn text(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "fuse_lookups {}\nfuse_getattrs {}\nfuse_readdirs {}\nfuse_readdirplus {}\nfuse_readdirplus_entries {}\n",
            g(&self.lookups),
            g(&self.getattrs),
            g(&self.readdirs),
            g(&self.readdirplus),
            g(&self.readdirplus_entries),
        )
    }
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: FileKind,
    pub name: Vec<u8>,
    /// Cookie that resumes the listing after this entry.
    pub next: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// The modes of FS_IOC_SHUTDOWN (linux/fs.h FS_SHUTDOWN_FLAGS_*, XFS's
/// XFS_FSOP_GOING_FLAGS_*: the same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// 0: make everything durable (sync), then shut down.
    Default,
    /// 1: force the log (what completed is committed), then shut down.
    LogFlush,
    /// 2: shut down at once.
    NoLogFlush,
}

impl ShutdownMode {
    pub fn from_flags(flags: u32) -> Option<ShutdownMode> {
        match flags {
            0 => Some(ShutdownMode::Default),
            1 => Some(ShutdownMode::LogFlush),
            2 => Some(ShutdownMode::NoLogFlush),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ShutdownMode::Default => "default",
            ShutdownMode::LogFlush => "logflush",
            ShutdownMode::NoLogFlush => "nologflush",
        }
    }
}

/// How the kernel may cache a file's data for one open (`Fs::read_cache_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCache {
    /// No page cache: every read and write reaches the filesystem (FOPEN_DIRECT_IO).
    Bypass,
    /// Drop what is cached at this open, then cache (no FOPEN_KEEP_CACHE).
    Drop,
    /// Keep what is cached (FOPEN_KEEP_CACHE).
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtimeMode {
    #[default]
    Relatime,
    Noatime,
    Strictatime,
}

impl AtimeMode {
    /// The mount option's name.
    pub fn name(self) -> &'static str {
        match self {
            AtimeMode::Relatime => "relatime",
            AtimeMode::Noatime => "noatime",
            AtimeMode::Strictatime => "strictatime",
        }
    }
}

impl DaxMode {
    /// The value of the `dax=` mount option.
    pub fn name(self) -> &'static str {
        match self {
            DaxMode::Inode => "inode",
            DaxMode::Always => "always",
            DaxMode::Never => "never",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DaxMode {
    /// Per-file FS_XFLAG_DAX decides (the default, as XFS).
    #[default]
    Inode,
    Always,
    Never,
}

/// What one reclaim scan did (`Fs::reclaim_inodes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub scanned: usize,
    pub evicted: usize,
    /// Referenced, busy (a lock could not be taken), unlinked or with unwritten times.
    pub skipped: usize,
}

/// Options the core understands (mount.rs parses `-o` into these).
#[derive(Debug, Clone)]
pub struct FsOptions {
    pub read_only: bool,
    pub atime: AtimeMode,
    pub dax: DaxMode,
    /// The memory budget in bytes for the in-core caches (`mem=SIZE`); None: unbounded
    /// (the library's default; the daemon always sets one, see mount.rs).
    pub mem_limit: Option<u64>,
    /// Punch freed extents out of a sparse image file (`-o discard`).
    pub discard: bool,
    /// How long a layout recall waits for the client before it revokes. Default 1000 ms:
    /// a cooperative client answers in microseconds, but one that is descheduled on a
    /// loaded machine, or finishing a persist of a large range, needs slack; while the
    /// wait lasts, writers and truncates of that one file stall (the breaker holds its
    /// IOLOCK), so it must stay short. At most LEASE_BREAK_MS_MAX.
    pub lease_break_ms: u64,
    /// `-o sync` or `-o dirsync`: every commit is forced before the operation returns
    /// (image files; elsewhere every commit is durable at once anyway).
    pub sync_commits: bool,
    /// Image files: the timed log force's interval in ms (0: no timer; log/force.rs).
    pub force_interval_ms: u64,
}

impl Default for FsOptions {
    fn default() -> FsOptions {
        FsOptions {
            read_only: false,
            atime: AtimeMode::default(),
            dax: DaxMode::default(),
            mem_limit: None,
            discard: false,
            lease_break_ms: LEASE_BREAK_MS_DEFAULT,
            sync_commits: false,
            force_interval_ms: crate::log::force::FORCE_INTERVAL_DEFAULT_MS,
        }
    }
}

/// The mounted filesystem. All methods take `&self`: locking is per inode inside, and
/// metadata transactions are serialised by the log (see log/trans.rs and inode/mod.rs).
pub struct Fs {
    mp: Mp,
    icache: Mutex<HashMap<Ino, Arc<Inode>>>,
    /// Eviction candidates, oldest first: inode numbers put here when loaded and at their
    /// last put. Stale or now-referenced entries are dropped by the shrinker. A leaf lock,
    /// taken under `icache`.
    lru: Mutex<VecDeque<Ino>>,
    /// The hash table's own charge (icache::TableCharge). A leaf lock, taken under `icache`.
    table_charge: Mutex<icache::TableCharge>,
    shrinker: Arc<IcacheShrinker>,
    opts: FsOptions,
    next_fh: AtomicU64,
    /// Dentries the kernel was asked to forget to meet the memory budget (icache.rs).
    forget_asks: AtomicU64,
    /// Requests of the kinds the kernel's caches should spare, counted by the FUSE layer
    /// (`daxfs stat`: a test sees whether a stat after a listing reached the daemon).
    pub requests: RequestCounters,
    generation: AtomicU64,
    /// Serialises renames (see `rename`).
    rename_lock: Mutex<()>,
    /// Layout leases of direct-access clients (layout.rs).
    pub(crate) dax: DaxState,
    /// Stops the timed log force (`start_force_timer`).
    force_timer: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

const LINK_MAX: u32 = 65000;
/// An allocating write of this many blocks or more allocates before it copies.
const SPLIT_WRITE_BLOCKS: u64 = 16;

/// The root directory's virtual attribute that carries `stats()`.
pub const STATS_XATTR: &[u8] = b"trusted.daxfs.stats";
/// On the root directory, `trusted.daxfs.errortag.NAME` reads and sets an error tag
/// (src/errtag.rs); not stored, not listed.
pub const ERRTAG_XATTR: &[u8] = b"trusted.daxfs.errortag.";
/// Blocks a transaction allocating data may take at once; bigger requests are split.
const ALLOC_CHUNK_BLOCKS: u64 = 16384;
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_COLLAPSE_RANGE: i32 = 0x08;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
const FALLOC_FL_INSERT_RANGE: i32 = 0x20;
const FALLOC_FL_UNSHARE_RANGE: i32 = 0x40;

const BS: u64 = BLOCK_SIZE as u64;

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return err(libc::ENOENT);
    }
    if name.len() > NAME_LEN_MAX {
        return err(libc::ENAMETOOLONG);
    }
    if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
        return err(libc::EINVAL);
    }
    Ok(())
}

fn in_group(cred: &Cred, gid: u32) -> bool {
    cred.gid == gid || cred.groups.contains(&gid)
}

fn attr_of(d: &InodeData) -> Attr {
    let di = &d.di;
    Attr {
        ino: di.ino,
        size: di.size,
        blocks: di.nblocks(&d.map) * (BS / 512),
        atime: di.atime,
        mtime: di.mtime,
        ctime: di.ctime,
        btime: di.btime,
        kind: di.kind(),
        perm: (di.mode & 0o7777) as u16,
        nlink: di.nlink,
        uid: di.uid,
        gid: di.gid,
        rdev: di.rdev as u32,
        blksize: BLOCK_SIZE as u32,
        dax: di.flags & DIFLAG_DAX != 0,
        generation: di.generation,
        flags: InodeFlags::from_di(di.flags),
    }
}

/// EPERM when `d` may not change at all (immutable): data, size, attributes, xattrs,
/// links, or, for a directory, its entries.
fn check_mutable(d: &InodeData) -> Result<()> {
    if d.di.flags & DIFLAG_IMMUTABLE != 0 {
        return err(libc::EPERM);
    }
    Ok(())
}

/// EPERM when `d` may change only by growing (immutable or append-only): no truncate,
/// attribute change, xattr change, unlink or rename of it, nor removal of an entry of an
/// append-only directory.
fn check_not_append_only(d: &InodeData) -> Result<()> {
    check_mutable(d)?;
    if d.di.flags & DIFLAG_APPEND != 0 {
        return err(libc::EPERM);
    }
    Ok(())
}

/// Mode without set-user-id, and without set-group-id when group-executable (a
/// set-group-id bit without group execute means mandatory locking, and stays).
fn without_setid(mode: u32) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    m
}

/// Link counts come from the media: a corrupt one must not wrap around.
fn dec_nlink(d: &mut InodeData) {
    d.di.nlink = d.di.nlink.saturating_sub(1);
}

/// Find the locked guard of inode `ino` among `locks`.
fn g<'l, 'a>(locks: &'l mut [(u64, IlockExcl<'a>)], ino: u64) -> &'l mut InodeData {
    &mut locks
        .iter_mut()
        .find(|(i, _)| *i == ino)
        .expect("inode is locked")
        .1
}

impl Fs {
    /// Mount the filesystem on `dev`: verify the superblock, replay the log, free inodes
    /// left unlinked by a crash.
    pub fn mount(dev: Arc<Device>, opts: &FsOptions) -> Result<Arc<Fs>> {
        let mut b = new_block();
        if dev.len() < BS {
            // The caller names the device.
            return Err(FsError::Corrupt(
                "too small to hold a daxfs superblock".into(),
            ));
        }
        dev.read(0, &mut b[..]);
        let sb = Superblock::decode(&b[..], dev.blocks())?;
        let read_only = opts.read_only || dev.read_only();
        if sb.ro_compat & !RO_COMPAT_KNOWN != 0 && !read_only {
            return Err(FsError::Corrupt(format!(
                "unknown read-only-compatible features {:#x}: mount with -o ro",
                sb.ro_compat & !RO_COMPAT_KNOWN
            )));
        }
        if sb.root_ino == 0 {
            return Err(FsError::Corrupt(
                "superblock has no root directory (unfinished mkfs?)".into(),
            ));
        }
        let mp = Mp::new(dev, sb, read_only, &crate::space::SPACE);
        if opts.discard && !read_only {
            if !mp.dev.can_discard() {
                return Err(FsError::Invalid(format!(
                    "{}: -o discard needs an image file (not memfd or device-DAX)",
                    mp.dev.source()
                )));
            }
            mp.discard.store(true, Ordering::Release);
        }
        if read_only {
            let dev = &mp.dev;
            let log_off = mp.sb.log_start * BS;
            let read = |pos: u64, buf: &mut [u8]| dev.read(log_off + pos, buf);
            if let Some(r) = trans::records_to_replay(
                &read,
                mp.sb.log_blocks * BS,
                mp.sb.lsn_base,
                mp.sb.total_blocks,
            )?
            .last()
            {
                return Err(FsError::Corrupt(format!(
                    "the log holds transaction {} that may need replay: mount read-write once to recover",
                    r.lsn
                )));
            }
        } else if let Some(lsn) = {
            crate::space::alloc::make_fixed_real(&mp)?;
            trans::recover(&mp)?
        } {
            log::info!("{}: replayed the log up to record {lsn}", mp.dev.source());
        }
        if let Some(limit) = opts.mem_limit {
            mp.mem.budget.set_limit(limit);
        }
        let table_charge = Mutex::new(icache::TableCharge::new(mp.mem.budget.clone()));
        let fs = Arc::new_cyclic(|me: &Weak<Fs>| Fs {
            mp,
            icache: Mutex::new(HashMap::new()),
            lru: Mutex::new(VecDeque::new()),
            table_charge,
            shrinker: Arc::new(IcacheShrinker { fs: me.clone() }),
            opts: opts.clone(),
            next_fh: AtomicU64::new(1),
            forget_asks: AtomicU64::new(0),
            requests: RequestCounters::default(),
            rename_lock: Mutex::new(()),
            dax: DaxState::new(opts),
            generation: AtomicU64::new(inode::now().nsec as u64),
            force_timer: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
        });
        fs.mp
            .force_every_commit
            .store(opts.sync_commits, Ordering::Release);
        fs.mp
            .mem
            .register(Arc::downgrade(&fs.shrinker) as Weak<dyn Shrinker>);
        if fs.mp.mem.budget.is_limited() && !read_only {
            let me = Arc::downgrade(&fs);
            fs.mp
                .mem
                .start_background(Box::new(move || match me.upgrade() {
                    Some(fs) => {
                        fs.icache_upkeep();
                        true
                    }
                    None => false,
                }));
        }
        fs.load_counters()?;
        let root = fs.iget(fs.mp.sb.root_ino)?;
        if !root.ilock_shared().di.is_dir() {
            return Err(FsError::corrupt(format!(
                "root inode {} is not a directory",
                root.ino
            )));
        }
        if !read_only {
            fs.free_unlinked()?;
            if fs.mp.defers_durability() && opts.force_interval_ms > 0 {
                fs.start_force_timer(opts.force_interval_ms);
            }
        }
        Ok(fs)
    }

    /// Force the log every `ms` on an image file, so that a completed operation is
    /// durable within that bound even if nobody asks (log/force.rs). The thread holds
    /// only a weak reference and ends when the filesystem is dropped.
    fn start_force_timer(self: &Arc<Fs>, ms: u64) {
        let me = Arc::downgrade(self);
        let stop = self.force_timer.clone();
        let spawned = std::thread::Builder::new()
            .name("daxfs-logforce".into())
            .spawn(move || {
                let (lock, cv) = &*stop;
                let wait = std::time::Duration::from_millis(ms);
                loop {
                    {
                        // Released before the force: dropping the last `Fs` here takes it.
                        let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                        let (stopped, _) = cv
                            .wait_timeout_while(stopped, wait, |s| !*s)
                            .unwrap_or_else(|p| p.into_inner());
                        if *stopped {
                            return;
                        }
                    }
                    let Some(fs) = me.upgrade() else { return };
                    if !fs.mp.is_shutdown()
                        && let Err(e) = crate::log::force::force(&fs.mp)
                    {
                        log::error!("{}: timed log force failed: {e}", fs.mp.dev.source());
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!(
                "{}: no timed log force ({e}): operations are durable at fsync, sync and \
                 unmount only",
                self.mp.dev.source()
            );
        }
    }

    fn load_counters(&self) -> Result<()> {
        let mp = &self.mp;
        let mut io = DevReader { mp };
        let (mut free, mut count, mut ifree) = (0i64, 0u64, 0u64);
        for agno in 0..mp.sb.ag_count {
            let agf_blk = mp.fsblock(agno, AGF_BLOCK);
            let agf = Agf::decode(&io.read_meta(agf_blk, AGF_MAGIC, Some(agno as u64), "AGF")?[..]);
            let agfl = io.read_meta(
                mp.fsblock(agno, AGFL_BLOCK),
                AGFL_MAGIC,
                Some(agno as u64),
                "AGFL",
            )?;
            let agi = Agi::decode(
                &io.read_meta(
                    mp.fsblock(agno, AGI_BLOCK),
                    AGI_MAGIC,
                    Some(agno as u64),
                    "AGI",
                )?[..],
            );
            let flcount = get_u32(&agfl[..], AGFL_COUNT) as u64;
            crate::ensure_sane!(
                agf.agno == agno
                    && agi.agno == agno
                    && agf.free_blocks <= mp.ag_len(agno)
                    && flcount as usize <= AGFL_CAPACITY
                    && agi.free <= agi.count
                    && agi.count <= mp.ag_len(agno) * INODES_PER_BLOCK,
                "AG {agno}: headers disagree with the geometry"
            );
            free += (agf.free_blocks + flcount) as i64;
            count += agi.count;
            ifree += agi.free;
            let perag = &mp.ags[agno as usize];
            perag.free_blocks.store(agf.free_blocks, Ordering::Relaxed);
            perag.free_inodes.store(agi.free, Ordering::Relaxed);
        }
        mp.free_blocks.store(free, Ordering::Release);
        mp.inodes_count.store(count, Ordering::Release);
        mp.inodes_free.store(ifree, Ordering::Release);
        Ok(())
    }

    /// Free every inode a crash left on an unlinked list.
    fn free_unlinked(&self) -> Result<()> {
        for agno in 0..self.mp.sb.ag_count {
            let mut io = DevReader { mp: &self.mp };
            let agi = Agi::decode(
                &io.read_meta(
                    self.mp.fsblock(agno, AGI_BLOCK),
                    AGI_MAGIC,
                    Some(agno as u64),
                    "AGI",
                )?[..],
            );
            for ino in ialloc::unlinked_list(&mut io, &agi)? {
                log::info!(
                    "{}: freeing inode {ino}, unlinked while open before the crash",
                    self.mp.dev.source()
                );
                let inode = self.iget(ino)?;
                self.inactivate(&inode)?;
                let mut cache = self.icache.lock().unwrap();
                cache.remove(&ino);
                self.recharge_table(&cache);
            }
        }
        Ok(())
    }

    pub fn dax_mode(&self) -> DaxMode {
        self.opts.dax
    }

    pub fn persistence(&self) -> Persistence {
        self.mp.dev.persistence()
    }

    pub fn mp(&self) -> &Mp {
        &self.mp
    }

    pub fn root_ino(&self) -> Ino {
        self.mp.sb.root_ino
    }

    // ------------------------------------------------------------------------------------
    // Names.

    pub fn statfs(&self) -> StatFs {
        let mp = &self.mp;
        let avail = mp.avail_blocks();
        let ifree = mp
            .inodes_free
            .load(Ordering::Relaxed)
            .saturating_add(avail.saturating_mul(INODES_PER_BLOCK));
        let used_inodes = mp
            .inodes_count
            .load(Ordering::Relaxed)
            .saturating_sub(mp.inodes_free.load(Ordering::Relaxed));
        StatFs {
            blocks: mp.sb.total_blocks,
            bfree: avail,
            bavail: avail,
            files: used_inodes.saturating_add(ifree),
            ffree: ifree,
            bsize: BLOCK_SIZE as u32,
            namelen: NAME_LEN_MAX as u32,
            frsize: BLOCK_SIZE as u32,
        }
    }

    // ------------------------------------------------------------------------------------
    // Extended attributes.

    /// Live counters, as text (`daxfs stat MOUNT` reads them through the root directory's
    /// `trusted.daxfs.stats`, which is not stored and not listed).
    /// The filesystem label (FS_IOC_GETFSLABEL, `daxfs info`), without its NUL padding.
    pub fn label(&self) -> Vec<u8> {
        let l = &self.mp.sb.label;
        l[..l.iter().position(|&b| b == 0).unwrap_or(l.len())].to_vec()
    }

    pub fn stats(&self) -> String {
        let mp = &self.mp;
        let (commits, checkpoints, next_lsn) = trans::log_counters(mp);
        let (forces, unforced) = crate::log::force::force_counters(mp);
        let cached = self.icache.lock().unwrap().len();
        let mut out = format!(
            "source {}\npersistence {}\ncommits {commits}\ncheckpoints {checkpoints}\nnext_lsn {next_lsn}\n\
             log_forces {forces}\nunforced_records {unforced}\n\
             fences {}\nflushed_bytes {}\ndiscarded_bytes {}\nfree_blocks {}\nreserved_blocks {}\ninodes_allocated {}\n\
             inodes_free {}\ncached_inodes {cached}\npending_frees {}\nag_waits_out_of_order {}\n\
             read_only {}\nsync_commits {}\nshutdown {}\natime {}\ndax {}\nerrortags (frequency/fired) {}\n",
            mp.dev.source(),
            mp.dev.persistence().describe(),
            mp.dev.stats.fences.load(Ordering::Relaxed),
            mp.dev.stats.flushed_bytes.load(Ordering::Relaxed),
            mp.dev.stats.discarded_bytes.load(Ordering::Relaxed),
            mp.free_blocks.load(Ordering::Relaxed),
            mp.reserved.load(Ordering::Relaxed),
            mp.inodes_count.load(Ordering::Relaxed),
            mp.inodes_free.load(Ordering::Relaxed),
            mp.pending_frees.load(Ordering::Relaxed),
            mp.ag_waits_out_of_order.load(Ordering::Relaxed),
            mp.is_read_only(),
            self.sync_commits(),
            mp.is_shutdown(),
            self.opts.atime.name(),
            self.opts.dax.name(),
            mp.dev.errtags.describe(),
        );
        out.push_str(&self.dax.stats_text(mp.held_blocks()));
        out.push_str(&self.requests.text());
        out.push_str(&self.mem_stats());
        out
    }

    /// The memory part of `stats()`: budget, charges per cache, watermarks, reclaim.
    pub fn mem_stats(&self) -> String {
        use std::fmt::Write;
        let mem = &self.mp.mem;
        let b = &mem.budget;
        let st = &mem.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lim = |v: u64| {
            if v == crate::mem::budget::UNLIMITED {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        let mut s = String::new();
        let _ = writeln!(s, "mem_budget {}", lim(b.limit()));
        let _ = writeln!(s, "mem_charged {}", b.used());
        for c in crate::mem::budget::CACHES {
            let _ = writeln!(s, "mem_charged_{} {}", c.name(), b.charged(c));
        }
        let _ = writeln!(s, "mem_high_watermark {}", lim(b.high()));
        let _ = writeln!(s, "mem_low_watermark {}", lim(b.low()));
        let _ = writeln!(s, "mem_peak {}", b.peak());
        let over = b.over_by();
        if over > 0 {
            let (referenced, unreferenced) = {
                let cache = self.icache.lock().unwrap();
                let r = cache.values().filter(|i| i.referenced()).count();
                (r, cache.len() - r)
            };
            let _ = writeln!(
                s,
                "mem_budget_exceeded_by {over} (in-core inodes: {referenced} referenced by kernel \
                 lookups or open files, {unreferenced} unreferenced but busy or dirty)"
            );
        } else {
            let _ = writeln!(s, "mem_budget_exceeded_by 0");
        }
        let _ = writeln!(
            s,
            "reclaim_direct {} (nofs {}, noio {})\nreclaim_background {}\nreclaim_scanned {}\n\
             reclaim_freed {}\nreclaim_freed_bytes {}\nreclaim_skipped_locked {}\n\
             reclaim_skipped_context {}\nreclaim_written_back {}\nreclaim_unmet {}\n\
             reclaim_backed_off {}\nreclaim_trims {}\nreclaim_kernel_forget_asks {}",
            l(&st.direct_runs),
            l(&st.direct_nofs),
            l(&st.direct_noio),
            l(&st.background_runs),
            l(&st.scanned),
            l(&st.freed),
            l(&st.freed_bytes),
            l(&st.skipped_locked),
            l(&st.skipped_context),
            l(&st.written_back),
            l(&st.unmet),
            l(&st.backed_off),
            l(&st.trims),
            l(&self.forget_asks),
        );
        s
    }

    /// Make everything durable (sync(2), syncfs).
    pub fn sync(&self) -> Result<()> {
        let inodes: Vec<Arc<Inode>> = self.icache.lock().unwrap().values().cloned().collect();
        for i in inodes {
            self.flush_times(&i)?;
        }
        trans::checkpoint(&self.mp)
    }

    /// Read-only now (mounted so, or remounted)?
    pub fn is_read_only(&self) -> bool {
        self.mp.is_read_only()
    }

    /// Shut down (after a failure that left the in-core state unsure)?
    pub fn is_shutdown(&self) -> bool {
        self.mp.is_shutdown()
    }

    /// FS_IOC_SHUTDOWN (XFS_IOC_GOINGDOWN): shut the filesystem down on request, as a
    /// crash-consistency test does. What the modes differ in is what is not durable yet:
    /// timestamps kept dirty in core (lazy atime/mtime), on an image file the records not
    /// yet forced (log/force.rs), and in-place writes and file data not yet made durable
    /// (a checkpoint). `Default` syncs everything first (XFS freezes), `LogFlush` logs the
    /// dirty timestamps and forces the log (as XFS forces its log), `NoLogFlush` stops at
    /// once. Already shut down: nothing to do.
    pub fn shutdown(&self, mode: ShutdownMode) -> Result<()> {
        if self.mp.is_shutdown() {
            return Ok(());
        }
        let writable = !self.mp.is_read_only();
        let r = match mode {
            ShutdownMode::Default if writable => self.sync(),
            ShutdownMode::LogFlush if writable => {
                let inodes: Vec<Arc<Inode>> =
                    self.icache.lock().unwrap().values().cloned().collect();
                inodes
                    .iter()
                    .try_for_each(|i| self.flush_times(i))
                    .and_then(|()| crate::log::force::force(&self.mp))
            }
            _ => Ok(()),
        };
        self.mp
            .force_shutdown(&format!("shut down on request ({})", mode.name()));
        r
    }

    /// Run `hook` once when the filesystem shuts down (see `Mp::on_shutdown`).
    pub fn on_shutdown(&self, hook: Box<dyn Fn() + Send + Sync>) {
        self.mp.on_shutdown(hook)
    }

    /// The inodes in core: every inode the kernel holds a reference to is among them.
    pub fn cached_inos(&self) -> Vec<Ino> {
        self.icache.lock().unwrap().keys().copied().collect()
    }

    /// Switch between read-only and read-write (remount). Read-only refuses changes: EROFS.
    pub fn set_read_only(&self, ro: bool) -> Result<()> {
        if !ro && self.mp.dev.read_only() {
            return err(libc::EROFS);
        }
        if ro {
            self.sync()?;
        }
        self.mp.set_read_only(ro);
        Ok(())
    }

    /// `-o sync`/`-o dirsync` switched on or off on the live mount (a remount; the daemon
    /// learns it from the mount table, mount.rs): from now on every commit is forced before
    /// the operation returns, or not. Switching it on forces what is committed already, so
    /// the remount leaves everything before it durable, as sync_filesystem does for a
    /// local filesystem.
    pub fn set_sync_commits(&self, on: bool) -> Result<()> {
        let was = self.mp.force_every_commit.swap(on, Ordering::AcqRel);
        if on && !was && !self.mp.is_read_only() && !self.mp.is_shutdown() {
            crate::log::force::force(&self.mp)?;
        }
        Ok(())
    }

    /// Every commit forced before it returns (`-o sync`/`dirsync`, also by a remount)?
    pub fn sync_commits(&self) -> bool {
        self.mp.force_every_commit.load(Ordering::Acquire)
    }

    /// Commit everything and mark the image clean. Called once, at unmount.
    /// FITRIM / `daxfs trim`: give the free space in bytes [start, start + len), in free
    /// extents of at least `minlen` bytes, back to the image file's filesystem. Returns
    /// the bytes given back.
    pub fn trim(&self, start: u64, len: u64, minlen: u64) -> Result<u64> {
        let end = start.saturating_add(len) / BS;
        let blocks = crate::space::alloc::trim(&self.mp, start / BS, end, minlen.div_ceil(BS))?;
        Ok(blocks * BS)
    }

    pub fn unmount(&self) -> Result<()> {
        // Nothing may write after the last checkpoint: the background reclaimer ends first.
        self.mp.mem.stop_background();
        if self.mp.is_read_only() || self.mp.is_shutdown() {
            return Ok(());
        }
        let inodes: Vec<Arc<Inode>> = self.icache.lock().unwrap().values().cloned().collect();
        for i in &inodes {
            let orphan = {
                let d = i.ilock_shared();
                d.di.nlink == 0 && !d.freed
            };
            if orphan {
                self.inactivate(i)?;
            } else {
                self.flush_times(i)?;
            }
        }
        // No client reaches the device once the daemon is gone: quarantined blocks are
        // free again (a clean unmount's log is never replayed, so they must be done here).
        self.mp.release_all_frees()?;
        trans::checkpoint(&self.mp)?;
        // Every record in the log is applied: move the LSN base past them all.
        trans::write_sb_state(&self.mp, trans::next_lsn(&self.mp), true);
        self.mp.dev.persist_all();
        Ok(())
    }
}

/// At most this many dentries are named to the kernel for forgetting per background pass.
const FORGET_ASKS_PER_PASS: u64 = 16384;

/// Bytes one in-core inode costs before its extents (what `iget` asks the budget for).
const INODE_BYTES: u64 = (std::mem::size_of::<Inode>() + 2 * std::mem::size_of::<usize>()) as u64;

impl Drop for Fs {
    fn drop(&mut self) {
        // Ask the background reclaimer to end (it may be the thread dropping us: then it
        // does not wait for itself).
        self.mp.mem.stop_background();
        let (lock, cv) = &*self.force_timer;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
}
