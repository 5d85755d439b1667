//! In-core inodes, their locks, and the on-media inode (decode/verify, encode).
//!
//! Lock order (DESIGN.md section 4), the one place it is written:
//!
//!   IOLOCK (i_rwsem) -> MMAPLOCK (invalidate lock) -> [transaction begins] -> ILOCK
//!       -> AG locks, ascending AG number (AG allocation structures) -> log lock (commit)
//!
//! - IOLOCK serialises writers of a file against each other and against truncate.
//! - MMAPLOCK, the invalidate lock: shared by every path that maps or reads file blocks
//!   (read, write, the fault path, layout grants), exclusive by every path that removes or
//!   moves blocks (truncate, punch, collapse/insert/zero range), so no new mapping can be
//!   set up while the layout changes.
//! - A transaction is begun (blocks reserved, no lock taken) after IOLOCK/MMAPLOCK and
//!   before ILOCK, as XFS allocates its transaction before xfs_ilock. The AG and log
//!   locks are taken inside it (trans.rs, which also says how AG locks keep their order).
//! - ILOCK guards the inode core and its extent map (`InodeData`); held exclusive through
//!   commit by every transaction that changes the inode, shared by readers that read the
//!   inode's metadata straight off the device (so they never see a half-applied commit).
//! - Several inodes: ascending inode number (`lock_excl_many`).
//!
//! The order is checked per thread: starting a transaction or taking an IOLOCK/MMAPLOCK
//! while holding an ILOCK panics with the offending site (`assert_no_ilock`).
//!
//! - The lease set (`leases`) is a leaf mutex: taken under any of the above, briefly, and
//!   nothing is taken or waited for while it is held.
//!
//! References: FUSE lookups (`nlookup`), open files (`opens`) and layout leases (`leases`,
//! counted in `lease_count` so eviction reads it without a lock). An inode with none is
//! unreferenced and may be evicted; one with no links is then freed (inactivated).
//!
//! Each inode's mapping carries its allocation mask (`mapping_mask`, XFS's
//! mapping_gfp_mask), set once when the in-core inode is set up; the fault path
//! (dax/fault.rs) uses it unadulterated (reference/004).

pub mod bmap;
pub mod extent_map;
pub mod lease;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::btree::Root;
use crate::error::{FsError, Result};
use crate::format::*;
use crate::inode::extent_map::{Extent, ExtentMap};
use crate::inode::lease::InodeLeases;
use crate::log::lockorder;
use crate::mem::lockcheck::{self, Class, HeldToken, How};
use crate::mem::{AllocContext, Budget, Cache, Charge};

pub use crate::log::lockorder::assert_no_ilock;

/// Time as the inode keeps it (seconds and nanoseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

/// The on-media inode core, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskInode {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub btime: Timespec,
    pub rdev: u64,
    pub flags: u64,
    pub generation: u32,
    pub parent: u64,
    pub format: u8,
    pub bmbt: Root,
    pub dirhash: Root,
    /// The attribute fork: the legacy block (format AFMT_BLOCK) or the root of the
    /// attribute tree (AFMT_TREE, level `attr_level`); 0 when the inode has none.
    pub attr_blk: u64,
    pub attr_level: u8,
    pub attr_fmt: u8,
    /// Blocks of the attribute tree (index nodes, leaves, remote values).
    pub attr_blocks: u64,
    pub dir_entries: u64,
    /// Short symlink target (format LOCAL).
    pub local: Vec<u8>,
}

pub fn kind_of(mode: u32) -> Option<FileKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFCHR => FileKind::CharDev,
        libc::S_IFBLK => FileKind::BlockDev,
        libc::S_IFSOCK => FileKind::Socket,
        _ => return None,
    })
}

pub fn ftype_of(kind: FileKind) -> u8 {
    match kind {
        FileKind::File => FT_REG,
        FileKind::Dir => FT_DIR,
        FileKind::Symlink => FT_LNK,
        FileKind::Fifo => FT_FIFO,
        FileKind::CharDev => FT_CHR,
        FileKind::BlockDev => FT_BLK,
        FileKind::Socket => FT_SOCK,
    }
}

pub fn kind_of_ftype(ft: u8) -> Option<FileKind> {
    Some(match ft {
        FT_REG => FileKind::File,
        FT_DIR => FileKind::Dir,
        FT_LNK => FileKind::Symlink,
        FT_FIFO => FileKind::Fifo,
        FT_CHR => FileKind::CharDev,
        FT_BLK => FileKind::BlockDev,
        FT_SOCK => FileKind::Socket,
        _ => return None,
    })
}

fn get_ts(b: &[u8], sec: usize, nsec: usize) -> Timespec {
    Timespec {
        sec: get_i64(b, sec),
        nsec: get_u32(b, nsec),
    }
}
fn put_ts(b: &mut [u8], sec: usize, nsec: usize, t: Timespec) {
    put_i64(b, sec, t.sec);
    put_u32(b, nsec, t.nsec);
}

impl DiskInode {
    pub fn kind(&self) -> FileKind {
        kind_of(self.mode).expect("mode verified at decode/creation")
    }
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// True when the slot holds no inode (free). Callers turn that into ENOENT/ESTALE.
    pub fn slot_is_free(b: &[u8]) -> bool {
        get_u32(b, DI_MAGIC) == 0
    }

    /// Decode and verify a 512-byte slot; returns the core and the inline extents.
    pub fn decode(b: &[u8], ino: u64, uuid: &[u8; 16]) -> Result<(DiskInode, Vec<Extent>)> {
        let bad = |what: String| Err(FsError::corrupt(format!("inode {ino}: {what}")));
        if get_u32(b, DI_MAGIC) != INODE_MAGIC {
            return bad(format!("bad magic {:#010x}", get_u32(b, DI_MAGIC)));
        }
        let (want, got) = (get_u32(b, DI_CRC), crc_with_hole(&b[..INODE_SIZE], DI_CRC));
        if want != got {
            return bad(format!(
                "CRC mismatch (stored {want:#010x}, computed {got:#010x})"
            ));
        }
        if get_u64(b, DI_INO) != ino {
            return bad(format!("slot says it is inode {}", get_u64(b, DI_INO)));
        }
        if &b[DI_UUID..DI_UUID + 16] != uuid {
            return bad("belongs to another filesystem (uuid mismatch)".into());
        }
        let mut di = DiskInode {
            ino,
            mode: get_u32(b, DI_MODE),
            uid: get_u32(b, DI_UID),
            gid: get_u32(b, DI_GID),
            nlink: get_u32(b, DI_NLINK),
            size: get_u64(b, DI_SIZE),
            atime: get_ts(b, DI_ATIME, DI_ATIME_NS),
            mtime: get_ts(b, DI_MTIME, DI_MTIME_NS),
            ctime: get_ts(b, DI_CTIME, DI_CTIME_NS),
            btime: get_ts(b, DI_BTIME, DI_BTIME_NS),
            rdev: get_u64(b, DI_RDEV),
            flags: get_u64(b, DI_FLAGS),
            generation: get_u32(b, DI_GEN),
            parent: get_u64(b, DI_PARENT),
            format: b[DI_FORMAT],
            bmbt: Root {
                blk: get_u64(b, DI_BMBT_ROOT),
                level: b[DI_BMBT_LEVEL],
            },
            dirhash: Root {
                blk: get_u64(b, DI_DIRHASH_ROOT),
                level: b[DI_DIRHASH_LEVEL],
            },
            attr_blk: get_u64(b, DI_ATTR_BLK),
            attr_level: b[DI_ATTR_LEVEL],
            attr_fmt: b[DI_ATTR_FORMAT],
            attr_blocks: get_u64(b, DI_ATTR_BLOCKS),
            dir_entries: get_u64(b, DI_DIR_ENTRIES),
            local: Vec::new(),
        };
        let Some(kind) = kind_of(di.mode) else {
            return bad(format!("invalid file type in mode {:#o}", di.mode));
        };
        if di.size > FILE_SIZE_MAX {
            return bad(format!("size {} beyond the largest file", di.size));
        }
        if di.flags & !DIFLAG_KNOWN != 0 {
            return bad(format!("unknown flags {:#x}", di.flags));
        }
        if b[DI_RESERVED..INODE_LITERAL_OFF].iter().any(|&x| x != 0) {
            return bad("reserved bytes are not zero".into());
        }
        let attr_sane = match di.attr_fmt {
            AFMT_BLOCK => di.attr_level == 0 && di.attr_blocks == 0,
            AFMT_TREE => di.attr_blk != 0 && di.attr_blocks > di.attr_level as u64,
            _ => false,
        };
        if !attr_sane {
            return bad(format!(
                "attribute fork format {} (root {}, level {}, {} blocks) is not valid",
                di.attr_fmt, di.attr_blk, di.attr_level, di.attr_blocks
            ));
        }
        if di.bmbt.level as usize >= BTREE_LEVELS_MAX
            || di.dirhash.level as usize >= BTREE_LEVELS_MAX
            || di.attr_level as usize >= BTREE_LEVELS_MAX
        {
            return bad("B+tree root level too high".into());
        }
        let nextents = get_u64(b, DI_NEXTENTS);
        let lit = &b[INODE_LITERAL_OFF..INODE_SIZE];
        let mut extents = Vec::new();
        match di.format {
            FMT_EXTENTS => {
                if nextents as usize > INLINE_EXTENTS_MAX {
                    return bad(format!(
                        "{nextents} inline extents, at most {INLINE_EXTENTS_MAX} fit"
                    ));
                }
                for i in 0..nextents as usize {
                    let r = &lit[i * INLINE_EXTENT_SIZE..];
                    let flags = get_u32(r, 20);
                    if flags & !EXT_UNWRITTEN != 0 {
                        return bad(format!("inline extent {i} has unknown flags {flags:#x}"));
                    }
                    extents.push(Extent {
                        fileoff: get_u64(r, 0),
                        startblock: get_u64(r, 8),
                        len: get_u32(r, 16) as u64,
                        unwritten: flags & EXT_UNWRITTEN != 0,
                    });
                }
                if di.bmbt.blk != 0 {
                    return bad("extent-format inode has a bmbt root".into());
                }
            }
            FMT_BTREE => {
                if di.bmbt.blk == 0 {
                    return bad("btree-format inode has no bmbt root".into());
                }
            }
            FMT_LOCAL => {
                // A symlink's target, or a short-form directory's entries (none: empty).
                let sane = match kind {
                    FileKind::Symlink => di.size > 0,
                    FileKind::Dir => di.dirhash.blk == 0,
                    _ => false,
                };
                if !sane
                    || di.size as usize > INODE_LITERAL_LEN
                    || nextents != 0
                    || di.bmbt.blk != 0
                {
                    return bad(format!("local format on a {kind:?} of size {}", di.size));
                }
                di.local = lit[..di.size as usize].to_vec();
            }
            f => return bad(format!("unknown data fork format {f}")),
        }
        if kind != FileKind::Dir && (di.dirhash.blk != 0 || di.dir_entries != 0) {
            return bad("non-directory with directory structures".into());
        }
        Ok((di, extents))
    }

    /// Encode into a 512-byte slot. `map` supplies inline extents for FMT_EXTENTS.
    pub fn encode(&self, map: &ExtentMap, uuid: &[u8; 16], out: &mut [u8]) {
        let b = &mut out[..INODE_SIZE];
        b.fill(0);
        put_u32(b, DI_MAGIC, INODE_MAGIC);
        put_u64(b, DI_INO, self.ino);
        b[DI_UUID..DI_UUID + 16].copy_from_slice(uuid);
        put_u32(b, DI_MODE, self.mode);
        put_u32(b, DI_UID, self.uid);
        put_u32(b, DI_GID, self.gid);
        put_u32(b, DI_NLINK, self.nlink);
        put_u64(b, DI_SIZE, self.size);
        put_u64(b, DI_NBLOCKS, self.nblocks(map));
        put_ts(b, DI_ATIME, DI_ATIME_NS, self.atime);
        put_ts(b, DI_MTIME, DI_MTIME_NS, self.mtime);
        put_ts(b, DI_CTIME, DI_CTIME_NS, self.ctime);
        put_ts(b, DI_BTIME, DI_BTIME_NS, self.btime);
        put_u64(b, DI_RDEV, self.rdev);
        put_u64(b, DI_FLAGS, self.flags);
        put_u32(b, DI_GEN, self.generation);
        put_u64(b, DI_PARENT, self.parent);
        b[DI_FORMAT] = self.format;
        b[DI_BMBT_LEVEL] = self.bmbt.level;
        b[DI_DIRHASH_LEVEL] = self.dirhash.level;
        put_u64(b, DI_NEXTENTS, map.len() as u64);
        put_u64(b, DI_BMBT_ROOT, self.bmbt.blk);
        put_u64(b, DI_DIRHASH_ROOT, self.dirhash.blk);
        put_u64(b, DI_ATTR_BLK, self.attr_blk);
        b[DI_ATTR_LEVEL] = self.attr_level;
        b[DI_ATTR_FORMAT] = self.attr_fmt;
        put_u64(b, DI_ATTR_BLOCKS, self.attr_blocks);
        put_u64(b, DI_DIR_ENTRIES, self.dir_entries);
        let lit = &mut b[INODE_LITERAL_OFF..];
        match self.format {
            FMT_EXTENTS => {
                assert!(
                    map.len() <= INLINE_EXTENTS_MAX,
                    "inline extents overflow: sync the fork first"
                );
                for (i, e) in map.iter().enumerate() {
                    let r = &mut lit[i * INLINE_EXTENT_SIZE..];
                    put_u64(r, 0, e.fileoff);
                    put_u64(r, 8, e.startblock);
                    put_u32(r, 16, e.len as u32);
                    put_u32(r, 20, if e.unwritten { EXT_UNWRITTEN } else { 0 });
                }
            }
            FMT_LOCAL => lit[..self.local.len()].copy_from_slice(&self.local),
            _ => {}
        }
        let crc = crc_with_hole(b, DI_CRC);
        put_u32(b, DI_CRC, crc);
    }

    /// Blocks charged to this inode: mapped data blocks plus the attribute fork's.
    pub fn nblocks(&self, map: &ExtentMap) -> u64 {
        map.mapped_blocks() + self.attr_fork_blocks()
    }

    /// Blocks the attribute fork holds (the legacy block, or the tree's count).
    pub fn attr_fork_blocks(&self) -> u64 {
        match self.attr_fmt {
            AFMT_TREE => self.attr_blocks,
            _ => (self.attr_blk != 0) as u64,
        }
    }
}

/// A directory's in-core index of each data block's largest free run (dir.rs fills
/// and uses it; here because `InodeData` holds it and dir.rs is above this layer).
#[derive(Debug, Default)]
pub struct FreeIndex {
    by_block: BTreeMap<u64, u16>,
    by_size: BTreeSet<(u16, u64)>,
}

impl FreeIndex {
    pub(crate) fn set(&mut self, dblock: u64, best: u16) {
        if let Some(old) = self.by_block.insert(dblock, best) {
            self.by_size.remove(&(old, dblock));
        }
        self.by_size.insert((best, dblock));
    }
    pub(crate) fn remove(&mut self, dblock: u64) {
        if let Some(old) = self.by_block.remove(&dblock) {
            self.by_size.remove(&(old, dblock));
        }
    }
    pub(crate) fn find(&self, need: usize) -> Option<u64> {
        self.by_size
            .range((need as u16, 0)..)
            .next()
            .map(|&(_, b)| b)
    }
    /// Heap bytes (estimate, O(1)): a record in each of the two trees per data block.
    pub fn mem_bytes(&self) -> u64 {
        std::mem::size_of::<FreeIndex>() as u64
            + self.by_block.len() as u64 * FREE_INDEX_BLOCK_BYTES
    }
}

/// Heap bytes one directory data block costs in a `FreeIndex` (a (u64, u16) and a
/// (u16, u64) B-tree record, leaves about two thirds full).
pub const FREE_INDEX_BLOCK_BYTES: u64 = 48;

/// What ILOCK protects.
pub struct InodeData {
    pub di: DiskInode,
    pub map: ExtentMap,
    /// Directory free-space index, built on first insert (dir.rs).
    pub dir_free: Option<FreeIndex>,
    /// Timestamps changed in memory only (pure overwrites); written at the next
    /// transaction on this inode, fsync, sync or unmount.
    pub times_dirty: bool,
    /// The inode was freed: any further use is a bug or a stale handle (ESTALE).
    pub freed: bool,
    /// What this inode is charged in the memory budget (mem/budget.rs): set when it is
    /// built and after every exclusive ILOCK section (`recharge`), returned when dropped.
    pub charge: Charge,
}

impl InodeData {
    /// Charge what this inode holds now: its struct and core, its extent map, its
    /// directory index. O(1); called when an exclusive ILOCK is let go.
    pub fn recharge(&mut self) {
        let fixed = (std::mem::size_of::<Inode>() + 2 * std::mem::size_of::<usize>()) as u64
            + self.di.local.capacity() as u64;
        self.charge.set(Cache::Inodes, fixed);
        self.charge.set(Cache::ExtentMaps, self.map.mem_bytes());
        let dir = self.dir_free.as_ref().map_or(0, |f| f.mem_bytes());
        self.charge.set(Cache::DirIndexes, dir);
    }
}

pub struct Inode {
    pub ino: u64,
    iolock: RwLock<()>,
    mmaplock: RwLock<()>,
    ilock: RwLock<InodeData>,
    pub nlookup: AtomicU64,
    pub opens: AtomicU64,
    /// The allocation mask of this inode's mapping (XFS's mapping_gfp_mask): set once when
    /// the in-core inode is set up, used unadulterated by every allocation made for its
    /// data (the fault path, writes): reclaim for them runs in the stricter of this and the
    /// thread's scope (reference/004). Full for ordinary files; NoIo for a file that is the
    /// image of another daxfs (fs/icache.rs `mapping_mask_for`).
    pub mapping_mask: AllocContext,
    /// Isolated by reclaim (XFS's XFS_IRECLAIMABLE): unreferenced, being written back or
    /// evicted. Set and cleared under the inode cache lock; `iget` clears it (the inode is
    /// recycled). Decides the ILOCK's class for the reclaim lock checker.
    pub reclaimable: AtomicBool,
    /// On the inode cache's list of eviction candidates (fs/icache.rs).
    pub on_lru: AtomicBool,
    /// Live layout leases (lease.rs); `lease_count` mirrors their number.
    leases: Mutex<InodeLeases>,
    lease_count: AtomicU64,
    /// The (parent, name) the kernel last got this inode by (lookup, create, link,
    /// rename): what the daemon names when it asks the kernel to forget its dentry so
    /// that its lookup reference goes (FUSE notify inval_entry; fs/icache.rs). A leaf lock.
    pub dentry: Mutex<Option<(u64, Box<[u8]>)>>,
    /// A directory (an inode's file type never changes).
    pub is_dir: bool,
}

/// The inode's lease set, locked (a leaf lock); keeps `lease_count` in step on drop.
pub struct LeasesGuard<'a> {
    g: MutexGuard<'a, InodeLeases>,
    count: &'a AtomicU64,
}
impl std::ops::Deref for LeasesGuard<'_> {
    type Target = InodeLeases;
    fn deref(&self) -> &InodeLeases {
        &self.g
    }
}
impl std::ops::DerefMut for LeasesGuard<'_> {
    fn deref_mut(&mut self) -> &mut InodeLeases {
        &mut self.g
    }
}
impl Drop for LeasesGuard<'_> {
    fn drop(&mut self) {
        self.count.store(self.g.len() as u64, Ordering::Release);
    }
}

pub struct IoLockGuard<'a> {
    _g: IoGuardInner<'a>,
    _t: HeldToken,
}
impl IoLockGuard<'_> {
    /// Breaking layouts needs the IOLOCK exclusive (fs/layout.rs asserts it).
    pub fn is_excl(&self) -> bool {
        matches!(self._g, IoGuardInner::Excl(_))
    }
}
enum IoGuardInner<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Excl(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

pub struct MmapLockGuard<'a> {
    _g: IoGuardInner<'a>,
    _t: HeldToken,
}

pub struct IlockShared<'a> {
    g: RwLockReadGuard<'a, InodeData>,
    _t: HeldToken,
}
pub struct IlockExcl<'a> {
    g: RwLockWriteGuard<'a, InodeData>,
    _t: HeldToken,
}

impl std::ops::Deref for IlockShared<'_> {
    type Target = InodeData;
    fn deref(&self) -> &InodeData {
        &self.g
    }
}
impl std::ops::Deref for IlockExcl<'_> {
    type Target = InodeData;
    fn deref(&self) -> &InodeData {
        &self.g
    }
}
impl std::ops::DerefMut for IlockExcl<'_> {
    fn deref_mut(&mut self) -> &mut InodeData {
        &mut self.g
    }
}
impl Drop for IlockShared<'_> {
    fn drop(&mut self) {
        lockorder::ilock_released();
    }
}
impl Drop for IlockExcl<'_> {
    fn drop(&mut self) {
        // Whatever the section changed (extents, directory index) is charged here, once.
        self.g.recharge();
        lockorder::ilock_released();
    }
}

fn unpoison<G>(r: std::sync::LockResult<G>) -> G {
    r.unwrap_or_else(|p| p.into_inner())
}

impl Inode {
    /// An in-core inode charged to no budget (mkfs, tests).
    pub fn new(di: DiskInode, map: ExtentMap) -> Inode {
        Inode::setup(di, map, None, AllocContext::Full)
    }

    /// Set up an in-core inode: charged to `budget`, its mapping mask fixed for its life.
    pub fn setup(
        di: DiskInode,
        map: ExtentMap,
        budget: Option<Arc<Budget>>,
        mapping_mask: AllocContext,
    ) -> Inode {
        let mut data = InodeData {
            di,
            map,
            dir_free: None,
            times_dirty: false,
            freed: false,
            charge: budget.map(Charge::new).unwrap_or_default(),
        };
        data.recharge();
        Inode {
            ino: data.di.ino,
            is_dir: data.di.is_dir(),
            iolock: RwLock::new(()),
            mmaplock: RwLock::new(()),
            ilock: RwLock::new(data),
            nlookup: AtomicU64::new(0),
            opens: AtomicU64::new(0),
            mapping_mask,
            reclaimable: AtomicBool::new(false),
            on_lru: AtomicBool::new(false),
            leases: Mutex::new(InodeLeases::default()),
            dentry: Mutex::new(None),
            lease_count: AtomicU64::new(0),
        }
    }

    /// The live leases, locked (leaf lock: take nothing else while holding it).
    pub fn leases(&self) -> LeasesGuard<'_> {
        LeasesGuard {
            g: unpoison(self.leases.lock()),
            count: &self.lease_count,
        }
    }

    /// True while any client holds a layout lease on this inode (no lock taken).
    pub fn has_leases(&self) -> bool {
        self.lease_count.load(Ordering::Acquire) > 0
    }

    fn ilock_token(&self, how: How, site: &'static Location<'static>) -> HeldToken {
        let class = lockcheck::ilock_class(self.reclaimable.load(Ordering::Acquire));
        HeldToken::from_raw(lockcheck::acquired(class, how, site))
    }

    #[track_caller]
    pub fn iolock_shared(&self) -> IoLockGuard<'_> {
        assert_no_ilock("IOLOCK");
        let site = Location::caller();
        IoLockGuard {
            _g: IoGuardInner::Shared(unpoison(self.iolock.read())),
            _t: HeldToken::from_raw(lockcheck::acquired(Class::Iolock, How::Blocking, site)),
        }
    }
    #[track_caller]
    pub fn iolock_excl(&self) -> IoLockGuard<'_> {
        assert_no_ilock("IOLOCK");
        let site = Location::caller();
        IoLockGuard {
            _g: IoGuardInner::Excl(unpoison(self.iolock.write())),
            _t: HeldToken::from_raw(lockcheck::acquired(Class::Iolock, How::Blocking, site)),
        }
    }
    #[track_caller]
    pub fn mmaplock_shared(&self) -> MmapLockGuard<'_> {
        assert_no_ilock("MMAPLOCK");
        let site = Location::caller();
        MmapLockGuard {
            _g: IoGuardInner::Shared(unpoison(self.mmaplock.read())),
            _t: HeldToken::from_raw(lockcheck::acquired(Class::Mmaplock, How::Blocking, site)),
        }
    }
    #[track_caller]
    pub fn mmaplock_excl(&self) -> MmapLockGuard<'_> {
        assert_no_ilock("MMAPLOCK");
        let site = Location::caller();
        MmapLockGuard {
            _g: IoGuardInner::Excl(unpoison(self.mmaplock.write())),
            _t: HeldToken::from_raw(lockcheck::acquired(Class::Mmaplock, How::Blocking, site)),
        }
    }
    #[track_caller]
    pub fn ilock_shared(&self) -> IlockShared<'_> {
        let site = Location::caller();
        let g = unpoison(self.ilock.read());
        lockorder::ilock_taken();
        IlockShared {
            g,
            _t: self.ilock_token(How::Blocking, site),
        }
    }
    #[track_caller]
    pub fn ilock_excl(&self) -> IlockExcl<'_> {
        let site = Location::caller();
        let g = unpoison(self.ilock.write());
        lockorder::ilock_taken();
        IlockExcl {
            g,
            _t: self.ilock_token(How::Blocking, site),
        }
    }
    /// Reclaim's way in: never waits (DESIGN.md section 5).
    #[track_caller]
    pub fn try_ilock_excl(&self) -> Option<IlockExcl<'_>> {
        let site = Location::caller();
        let g = self.ilock.try_write().ok()?;
        lockorder::ilock_taken();
        Some(IlockExcl {
            g,
            _t: self.ilock_token(How::Try, site),
        })
    }

    pub fn referenced(&self) -> bool {
        self.nlookup.load(Ordering::Acquire) > 0
            || self.opens.load(Ordering::Acquire) > 0
            || self.has_leases()
    }
}

/// Lock several inodes' ILOCKs exclusive in ascending inode order (duplicates once).
/// Returns the guards in the order of `inodes` (duplicates share by index: use `find`).
#[track_caller]
pub fn lock_excl_many<'a>(inodes: &[&'a Inode]) -> Vec<(u64, IlockExcl<'a>)> {
    let mut sorted: Vec<&Inode> = inodes.to_vec();
    sorted.sort_by_key(|i| i.ino);
    sorted.dedup_by_key(|i| i.ino);
    let site = Location::caller();
    let mut out = Vec::with_capacity(sorted.len());
    for i in sorted {
        let g = unpoison(i.ilock.write());
        lockorder::ilock_taken();
        out.push((
            i.ino,
            IlockExcl {
                g,
                _t: i.ilock_token(How::Blocking, site),
            },
        ));
    }
    out
}

/// Current time for timestamps.
pub fn now() -> Timespec {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timespec {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DiskInode {
        DiskInode {
            ino: 4096 * 8 + 3,
            mode: libc::S_IFREG | 0o644,
            uid: 1,
            gid: 2,
            nlink: 1,
            size: 12345,
            mtime: Timespec { sec: 5, nsec: 6 },
            format: FMT_EXTENTS,
            ..Default::default()
        }
    }

    #[test]
    fn inode_roundtrip_and_damage() {
        let uuid = [3u8; 16];
        let di = sample();
        let mut map = ExtentMap::new();
        map.insert(Extent {
            fileoff: 0,
            startblock: 100,
            len: 3,
            unwritten: false,
        });
        map.insert(Extent {
            fileoff: 10,
            startblock: 200,
            len: 1,
            unwritten: true,
        });
        let mut slot = [0u8; INODE_SIZE];
        di.encode(&map, &uuid, &mut slot);
        let (back, exts) = DiskInode::decode(&slot, di.ino, &uuid).unwrap();
        assert_eq!(back, di);
        assert_eq!(exts.len(), 2);
        assert!(exts[1].unwritten);
        assert!(DiskInode::decode(&slot, di.ino + 1, &uuid).is_err());
        for off in [DI_MODE, DI_NEXTENTS, DI_FORMAT, 300] {
            let mut bad = slot;
            bad[off] ^= 0x40;
            assert!(
                DiskInode::decode(&bad, di.ino, &uuid).is_err(),
                "flip at {off}"
            );
        }
    }

    #[test]
    fn lock_order_checker_fires() {
        let ino = Inode::new(sample(), ExtentMap::new());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _i = ino.ilock_excl();
            let _io = ino.iolock_excl();
        }));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("lock order violation"), "{msg}");
    }
}
