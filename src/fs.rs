//! The filesystem operations, as POSIX names them, knowing nothing of FUSE (fuse.rs is a
//! thin adapter). Every operation here is testable without a mount.
//!
//! Each operation takes locks in the order written in inode.rs (IOLOCK -> MMAPLOCK ->
//! transaction -> ILOCK, several inodes in ascending number). Errors are checked before a
//! transaction changes anything: a transaction that fails after changing blocks cannot be
//! undone in memory and shuts the filesystem down (trans.rs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::bmap;
use crate::btree::BlockIo;
use crate::device::{Device, Persistence};
use crate::dir;
use crate::error::{FsError, Result, err};
use crate::errtag::ErrorTag;
use crate::extent_map::{Extent, ExtentMap};
use crate::format::*;
use crate::ialloc;
use crate::inode::{self, DiskInode, IlockExcl, Inode, InodeData};
use crate::mp::Mp;
use crate::trans::{self, DevReader, Trans};
use crate::xattr;

pub type Ino = u64;

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
    /// FS_XFLAG_DAX and friends, as FS_IOC_FSGETXATTR reports.
    pub dax: bool,
}

/// Who asks: the caller's credentials (FUSE request header plus supplementary groups).
#[derive(Debug, Clone, Default)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// Supplementary groups, when known (used for setgid rules).
    pub groups: Vec<u32>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtimeMode {
    #[default]
    Relatime,
    Noatime,
    Strictatime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DaxMode {
    /// Per-file FS_XFLAG_DAX decides (the default, as XFS).
    #[default]
    Inode,
    Always,
    Never,
}

/// Options the core understands (mount.rs parses `-o` into these).
#[derive(Debug, Clone, Default)]
pub struct FsOptions {
    pub read_only: bool,
    pub atime: AtimeMode,
    pub dax: DaxMode,
}

/// The mounted filesystem. All methods take `&self`: locking is per inode inside, and
/// metadata transactions are serialised by the log (see trans.rs and inode.rs).
pub struct Fs {
    mp: Mp,
    icache: Mutex<HashMap<Ino, Arc<Inode>>>,
    opts: FsOptions,
    next_fh: AtomicU64,
    generation: AtomicU64,
    /// Serialises renames (see `rename`).
    rename_lock: Mutex<()>,
    /// Layout leases of direct-access clients (src/dax).
    pub(crate) dax: crate::dax::DaxState,
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
    }
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
            return Err(FsError::Corrupt(format!(
                "{}: too small to hold a daxfs superblock",
                dev.source()
            )));
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
        let mp = Mp::new(dev, sb, read_only);
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
        } else if let Some(lsn) = trans::recover(&mp)? {
            log::info!("{}: replayed the log up to record {lsn}", mp.dev.source());
        }
        let fs = Arc::new(Fs {
            mp,
            icache: Mutex::new(HashMap::new()),
            opts: opts.clone(),
            next_fh: AtomicU64::new(1),
            rename_lock: Mutex::new(()),
            dax: Default::default(),
            generation: AtomicU64::new(inode::now().nsec as u64),
        });
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
        }
        Ok(fs)
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
                self.icache.lock().unwrap().remove(&ino);
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
    // The inode cache.

    /// The in-core inode `ino`, loading it from media if needed. A number that names no
    /// inode (a stale handle) is ESTALE.
    pub fn iget(&self, ino: Ino) -> Result<Arc<Inode>> {
        if !self.mp.ino_valid(ino) {
            return err(libc::ESTALE);
        }
        let mut cache = self.icache.lock().unwrap();
        if let Some(i) = cache.get(&ino) {
            return Ok(i.clone());
        }
        let mut slot = [0u8; INODE_SIZE];
        self.mp.dev.read(
            self.mp.ino_block(ino) * BS + self.mp.ino_offset(ino) as u64,
            &mut slot,
        );
        if DiskInode::slot_is_free(&slot) {
            return err(libc::ESTALE);
        }
        let (di, inline) = DiskInode::decode(&slot, ino, &self.mp.sb.uuid)?;
        let map = bmap::load_map(&mut DevReader { mp: &self.mp }, &self.mp, &di, inline)?;
        let inode = Arc::new(Inode::new(di, map));
        cache.insert(ino, inode.clone());
        Ok(inode)
    }

    /// Evict `ino` if nothing references it; free it first if it has no links. Only
    /// unreferenced inodes are touched, and only by trylock (reclaim rules, DESIGN.md 5).
    fn maybe_evict(&self, ino: Ino) {
        let inode = {
            let cache = self.icache.lock().unwrap();
            let Some(inode) = cache.get(&ino) else { return };
            // The cache's own reference plus ours below: anyone else is using it.
            if inode.referenced() || Arc::strong_count(inode) > 1 || ino == self.root_ino() {
                return;
            }
            inode.clone()
        };
        let (nlink, times_dirty, freed) = match inode.try_ilock_excl() {
            Some(d) => (d.di.nlink, d.times_dirty, d.freed),
            None => return,
        };
        if nlink == 0 && !freed && !self.mp.is_read_only() && !self.mp.is_shutdown() {
            if let Err(e) = self.inactivate(&inode) {
                log::error!("inode {ino}: could not free unlinked inode: {e}");
                return;
            }
        } else if times_dirty {
            return; // written by sync/unmount; stays cached until then
        }
        let mut cache = self.icache.lock().unwrap();
        if Arc::strong_count(&inode) == 2 && !inode.referenced() {
            cache.remove(&ino);
        }
    }

    /// Free an unlinked, unreferenced inode: its blocks (in bounded transactions), its
    /// attributes, then the inode itself.
    fn inactivate(&self, inode: &Inode) -> Result<()> {
        loop {
            let mut tx = self.mp.trans_remove(4 * BTREE_LEVELS_MAX as u64)?;
            let mut d = inode.ilock_excl();
            if d.freed {
                return Ok(());
            }
            if !d.map.is_empty() {
                let end = bmap::bounded_remove_end(&d.map, 0, u64::MAX);
                bmap::free_range(&mut tx, &mut d, 0, end);
                bmap::sync_inode(&mut tx, &mut d)?;
                tx.commit()?;
                drop(d);
                continue;
            }
            xattr::remove_all(&mut tx, &mut d)?;
            if d.di.format == FMT_BTREE {
                bmap::sync_inode(&mut tx, &mut d)?;
            }
            ialloc::unlinked_remove(&mut tx, inode.ino)?;
            ialloc::ifree(&mut tx, inode.ino)?;
            d.freed = true;
            let r = tx.commit();
            drop(d);
            return r;
        }
    }

    /// Drop `nlookup` lookup references (FUSE forget).
    pub fn forget(&self, ino: Ino, nlookup: u64) {
        let Some(inode) = self.icache.lock().unwrap().get(&ino).cloned() else {
            return;
        };
        let _ = inode
            .nlookup
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(nlookup))
            });
        drop(inode);
        self.maybe_evict(ino);
    }

    fn take_lookup_ref(&self, inode: &Inode) {
        inode.nlookup.fetch_add(1, Ordering::AcqRel);
    }

    // ------------------------------------------------------------------------------------
    // Names.

    fn dir_lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<dir::Found>> {
        let d = dir.ilock_shared();
        if d.freed {
            return err(libc::ESTALE);
        }
        if !d.di.is_dir() {
            return err(libc::ENOTDIR);
        }
        dir::lookup(&mut DevReader { mp: &self.mp }, &d, name)
    }

    /// `iget` for the inode a directory entry names. A free inode there is corruption (the
    /// directory and the inode disagree), unless the entry changed meanwhile (a racing
    /// unlink), which the caller sees as ENOENT.
    fn iget_entry(&self, dir: &Inode, name: &[u8], ino: Ino) -> Result<Arc<Inode>> {
        match self.iget(ino) {
            Err(FsError::Errno(libc::ESTALE)) => match self.dir_lookup(dir, name)? {
                Some(f) if f.ino == ino => Err(FsError::corrupt(format!(
                    "directory {}: entry \"{}\" names inode {ino}, which is free",
                    dir.ino,
                    String::from_utf8_lossy(name)
                ))),
                _ => err(libc::ENOENT),
            },
            r => r,
        }
    }

    /// Look up `name` in `parent`; takes one lookup reference on the result (FUSE nlookup).
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if name.len() > NAME_LEN_MAX {
            return err(libc::ENAMETOOLONG);
        }
        let dir = self.iget(parent)?;
        let found = if name == b"." {
            parent
        } else if name == b".." {
            let p = dir.ilock_shared().di.parent;
            if parent == self.root_ino() { parent } else { p }
        } else {
            self.dir_lookup(&dir, name)?
                .ok_or(FsError::Errno(libc::ENOENT))?
                .ino
        };
        let inode = if name == b"." || name == b".." {
            self.iget(found)?
        } else {
            self.iget_entry(&dir, name, found)?
        };
        let d = inode.ilock_shared();
        let a = attr_of(&d);
        self.take_lookup_ref(&inode);
        Ok(a)
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        if d.freed {
            return err(libc::ESTALE);
        }
        Ok(attr_of(&d))
    }

    /// Create an inode named `name` in `parent` (files, fifos, sockets, devices, dirs,
    /// symlinks). `mode` includes the type bits and is already masked by the umask.
    fn create(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: &Cred,
        target: Option<&[u8]>,
    ) -> Result<Attr> {
        check_name(name)?;
        let Some(kind) = inode::kind_of(mode) else {
            return err(libc::EINVAL);
        };
        let dir = self.iget(parent)?;
        let symlink_blocks = target.map_or(0, |t| (t.len() > INODE_LITERAL_LEN) as u64);
        let mut tx = self
            .mp
            .trans(ialloc::IALLOC_RESBLKS + dir::ADD_RESBLKS + symlink_blocks)?;
        let mut dd = dir.ilock_excl();
        if dd.freed || dd.di.nlink == 0 {
            return err(libc::ENOENT);
        }
        if !dd.di.is_dir() {
            return err(libc::ENOTDIR);
        }
        if dir::lookup(&mut tx, &dd, name)?.is_some() {
            return err(libc::EEXIST);
        }
        let is_dir = kind == FileKind::Dir;
        if is_dir && dd.di.nlink >= LINK_MAX {
            return err(libc::EMLINK);
        }
        // Files go near their directory; directories are spread over the AGs (XFS's
        // inode64 rotor), so work in different directories takes different AG locks.
        let hint_ag = if is_dir {
            (self.mp.ag_rotor.fetch_add(1, Ordering::Relaxed) % self.mp.sb.ag_count as u64) as u32
        } else {
            self.mp.ag_of(self.mp.ino_block(parent))
        };
        let ino = ialloc::ialloc(&mut tx, hint_ag)?;
        let now = inode::now();
        let mut mode = mode;
        let gid = if dd.di.mode & libc::S_ISGID != 0 {
            if is_dir {
                mode |= libc::S_ISGID;
            }
            dd.di.gid
        } else {
            cred.gid
        };
        let mut di = DiskInode {
            ino,
            mode,
            uid: cred.uid,
            gid,
            nlink: if is_dir { 2 } else { 1 },
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            rdev: rdev as u64,
            flags: if self.opts.dax == DaxMode::Always || (dd.di.flags & DIFLAG_DAX != 0 && is_dir)
            {
                DIFLAG_DAX
                    & if self.opts.dax == DaxMode::Never {
                        0
                    } else {
                        u64::MAX
                    }
            } else {
                0
            },
            generation: self.generation.fetch_add(1, Ordering::Relaxed) as u32,
            parent: if is_dir { parent } else { 0 },
            format: FMT_EXTENTS,
            ..Default::default()
        };
        if kind == FileKind::File
            && dd.di.flags & DIFLAG_DAX != 0
            && self.opts.dax != DaxMode::Never
        {
            di.flags |= DIFLAG_DAX;
        }
        if is_dir && self.mp.sb.incompat & INCOMPAT_SHORTFORM_DIRS != 0 {
            di.format = FMT_LOCAL; // no entries yet, no blocks (dir.rs)
        }
        let inode = Arc::new(Inode::new(di, ExtentMap::new()));
        {
            let mut nd = inode.ilock_excl();
            if let Some(t) = target {
                nd.di.size = t.len() as u64;
                if t.len() <= INODE_LITERAL_LEN {
                    nd.di.format = FMT_LOCAL;
                    nd.di.local = t.to_vec();
                } else {
                    bmap::alloc_holes(&mut tx, &mut nd, 0, 1, false, &mut |mp, blk, _, _| {
                        let mut b = [0u8; BLOCK_SIZE];
                        b[..t.len()].copy_from_slice(t);
                        mp.dev.write(blk * BS, &b);
                        mp.dev.flush(blk * BS, BS);
                        // Durable before the commit record that maps the block can be.
                        mp.dev.fence();
                    })?;
                }
            }
            bmap::sync_inode(&mut tx, &mut nd)?;
        }
        dir::add(&mut tx, &mut dd, name, ino, inode::ftype_of(kind))?;
        if is_dir {
            dd.di.nlink += 1;
        }
        dd.di.mtime = now;
        dd.di.ctime = now;
        bmap::sync_inode(&mut tx, &mut dd)?;
        tx.commit()?;
        self.take_lookup_ref(&inode);
        let a = attr_of(&inode.ilock_shared());
        self.icache.lock().unwrap().insert(ino, inode);
        Ok(a)
    }

    /// Regular files, fifos, sockets and device nodes. Takes a lookup reference.
    pub fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: &Cred,
    ) -> Result<Attr> {
        match mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => {}
            0 => return self.create(parent, name, mode | libc::S_IFREG, 0, cred, None),
            _ => return err(libc::EINVAL),
        }
        self.create(parent, name, mode, rdev, cred, None)
    }

    pub fn mkdir(&self, parent: Ino, name: &[u8], mode: u32, cred: &Cred) -> Result<Attr> {
        self.create(parent, name, (mode & 0o7777) | libc::S_IFDIR, 0, cred, None)
    }

    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], cred: &Cred) -> Result<Attr> {
        if target.is_empty() {
            return err(libc::ENOENT);
        }
        if target.len() > SYMLINK_LEN_MAX {
            return err(libc::ENAMETOOLONG);
        }
        self.create(parent, name, libc::S_IFLNK | 0o777, 0, cred, Some(target))
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        if d.di.kind() != FileKind::Symlink {
            return err(libc::EINVAL);
        }
        if d.di.format == FMT_LOCAL {
            return Ok(d.di.local.clone());
        }
        let len = d.di.size as usize;
        crate::ensure_sane!(
            len <= SYMLINK_LEN_MAX,
            "symlink {ino}: target length {len} too long"
        );
        let Some(e) = d.map.find(0) else {
            return Err(FsError::corrupt(format!(
                "symlink {ino}: remote target block is not mapped"
            )));
        };
        let mut buf = vec![0u8; len];
        self.mp.dev.read(bmap::dev_off(&e, 0), &mut buf);
        Ok(buf)
    }

    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        let inode = self.iget(ino)?;
        let dir = self.iget(newparent)?;
        let mut tx = self.mp.trans(dir::ADD_RESBLKS)?;
        let mut locks = inode::lock_excl_many(&[&inode, &dir]);
        {
            let dd = g(&mut locks, newparent);
            if !dd.di.is_dir() {
                return err(libc::ENOTDIR);
            }
            if dir::lookup(&mut tx, dd, newname)?.is_some() {
                return err(libc::EEXIST);
            }
        }
        {
            let c = g(&mut locks, ino);
            if c.di.is_dir() {
                return err(libc::EPERM);
            }
            if c.di.nlink == 0 || c.freed {
                return err(libc::ENOENT);
            }
            if c.di.nlink >= LINK_MAX {
                return err(libc::EMLINK);
            }
        }
        let dd = g(&mut locks, newparent);
        if dd.di.nlink == 0 {
            return err(libc::ENOENT);
        }
        let now = inode::now();
        let ftype = inode::ftype_of(g(&mut locks, ino).di.kind());
        let dd = g(&mut locks, newparent);
        dir::add(&mut tx, dd, newname, ino, ftype)?;
        dd.di.mtime = now;
        dd.di.ctime = now;
        bmap::sync_inode(&mut tx, dd)?;
        let c = g(&mut locks, ino);
        c.di.nlink += 1;
        c.di.ctime = now;
        bmap::sync_inode(&mut tx, c)?;
        let a = attr_of(c);
        tx.commit()?;
        drop(locks);
        self.take_lookup_ref(&inode);
        Ok(a)
    }

    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        if name == b"." {
            return err(libc::EINVAL);
        }
        if name == b".." {
            return err(libc::ENOTEMPTY);
        }
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: Ino, name: &[u8], want_dir: bool) -> Result<()> {
        if name.len() > NAME_LEN_MAX {
            return err(libc::ENAMETOOLONG);
        }
        let dir = self.iget(parent)?;
        for _ in 0..100 {
            // Find the child unlocked, then lock both in inode order and make sure the name
            // still names it: another transaction may have changed the directory meanwhile.
            let found = self
                .dir_lookup(&dir, name)?
                .ok_or(FsError::Errno(libc::ENOENT))?;
            let child = self.iget_entry(&dir, name, found.ino)?;
            if self.remove_locked(&dir, &child, name, found, want_dir)? {
                drop(child);
                self.maybe_evict(found.ino);
                return Ok(());
            }
        }
        err(libc::EAGAIN)
    }

    /// The body of unlink/rmdir once the child is known. Ok(false): the name moved on
    /// before the locks were taken; look again.
    fn remove_locked(
        &self,
        dir: &Inode,
        child: &Inode,
        name: &[u8],
        found: dir::Found,
        want_dir: bool,
    ) -> Result<bool> {
        let (parent, cino) = (dir.ino, child.ino);
        let mut tx = self
            .mp
            .trans_remove(dir::ADD_RESBLKS + BTREE_LEVELS_MAX as u64)?;
        let mut locks = inode::lock_excl_many(&[dir, child]);
        if dir::lookup(&mut tx, g(&mut locks, parent), name)? != Some(found) {
            return Ok(false);
        }
        let c = g(&mut locks, cino);
        if want_dir && !c.di.is_dir() {
            return err(libc::ENOTDIR);
        }
        if !want_dir && c.di.is_dir() {
            return err(libc::EISDIR);
        }
        if want_dir && c.di.dir_entries != 0 {
            return err(libc::ENOTEMPTY);
        }
        if want_dir || c.di.nlink <= 1 {
            // The child goes on its AG's unlinked list: lock that AG before the directory
            // change, which may allocate (the AG lock order, trans.rs).
            tx.pin_ag(self.mp.ag_of(self.mp.ino_block(cino)))?;
        }
        let now = inode::now();
        let dd = g(&mut locks, parent);
        dir::remove(&mut tx, dd, name, found)?;
        if want_dir {
            dd.di.nlink = dd.di.nlink.saturating_sub(1);
        }
        dd.di.mtime = now;
        dd.di.ctime = now;
        bmap::sync_inode(&mut tx, dd)?;
        let c = g(&mut locks, cino);
        c.di.nlink = if want_dir {
            0
        } else {
            c.di.nlink.saturating_sub(1)
        };
        c.di.ctime = now;
        if c.di.nlink == 0 {
            ialloc::unlinked_add(&mut tx, cino)?;
        }
        bmap::sync_inode(&mut tx, g(&mut locks, cino))?;
        tx.commit()?;
        drop(locks);
        Ok(true)
    }

    /// Is `ancestor` on the path from `ino` up to the root? (rename loop check; the
    /// caller holds the rename lock, so no directory moves meanwhile)
    fn is_ancestor(&self, ancestor: Ino, ino: Ino) -> Result<bool> {
        let mut cur = ino;
        for _ in 0..1_000_000 {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == self.root_ino() {
                return Ok(false);
            }
            let next = self.iget(cur)?.ilock_shared().di.parent;
            crate::ensure_sane!(
                next != 0 && next != cur,
                "directory {cur}: bad parent pointer {next}"
            );
            cur = next;
        }
        Err(FsError::corrupt(format!(
            "directory {ino}: parent chain does not reach the root"
        )))
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        if flags.whiteout || (flags.noreplace && flags.exchange) {
            return err(libc::EINVAL);
        }
        check_name(newname)?;
        if name.len() > NAME_LEN_MAX {
            return err(libc::ENAMETOOLONG);
        }
        // Renames are one at a time (the VFS's s_vfs_rename_mutex): the loop check walks
        // parent pointers that only a rename changes.
        let _rename = self.rename_lock.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..100 {
            if let Some(orphan) = self.rename_once(parent, name, newparent, newname, flags)? {
                if let Some(o) = orphan {
                    self.maybe_evict(o);
                }
                return Ok(());
            }
        }
        err(libc::EAGAIN)
    }

    /// One attempt at a rename. Ok(None): an entry changed between the unlocked lookups
    /// and taking the locks; try again. Ok(Some(victim)): done, and the inode that lost
    /// its last link, if any.
    fn rename_once(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<Option<Option<Ino>>> {
        let sdir = self.iget(parent)?;
        let ddir = self.iget(newparent)?;
        let mut tx = self
            .mp
            .trans_remove(2 * dir::ADD_RESBLKS + BTREE_LEVELS_MAX as u64)?;
        let src = self
            .dir_lookup(&sdir, name)?
            .ok_or(FsError::Errno(libc::ENOENT))?;
        let dst = self.dir_lookup(&ddir, newname)?;
        if parent == newparent && name == newname {
            return Ok(Some(None));
        }
        if flags.exchange && dst.is_none() {
            return err(libc::ENOENT);
        }
        if flags.noreplace && dst.is_some() {
            return err(libc::EEXIST);
        }
        if dst.is_some_and(|d| d.ino == src.ino) && !flags.exchange {
            return Ok(Some(None)); // two links to one inode: POSIX says do nothing
        }
        let sino = self.iget_entry(&sdir, name, src.ino)?;
        let dino = dst
            .map(|d| self.iget_entry(&ddir, newname, d.ino))
            .transpose()?;
        let s_is_dir = src.ftype == FT_DIR;
        let d_is_dir = dst.is_some_and(|d| d.ftype == FT_DIR);
        if let Some(dst) = dst {
            if !flags.exchange {
                if s_is_dir && !d_is_dir {
                    return err(libc::ENOTDIR);
                }
                if !s_is_dir && d_is_dir {
                    return err(libc::EISDIR);
                }
                if d_is_dir && dino.as_ref().unwrap().ilock_shared().di.dir_entries != 0 {
                    return err(libc::ENOTEMPTY);
                }
            }
            if flags.exchange
                && d_is_dir
                && parent != newparent
                && self.is_ancestor(dst.ino, parent)?
            {
                return err(libc::EINVAL);
            }
        }
        if s_is_dir && parent != newparent && self.is_ancestor(src.ino, newparent)? {
            return err(libc::EINVAL);
        }
        let mut all: Vec<&Inode> = vec![&sdir, &ddir, &sino];
        if let Some(d) = &dino {
            all.push(d);
        }
        let mut locks = inode::lock_excl_many(&all);
        if dir::lookup(&mut tx, g(&mut locks, parent), name)? != Some(src)
            || dir::lookup(&mut tx, g(&mut locks, newparent), newname)? != dst
        {
            return Ok(None);
        }
        if let Some(d) = dst.filter(|_| d_is_dir && !flags.exchange)
            && g(&mut locks, d.ino).di.dir_entries != 0
        {
            return err(libc::ENOTEMPTY);
        }
        if let Some(d) = dst.filter(|_| !flags.exchange) {
            // The victim may go on its AG's unlinked list: lock that AG before the
            // directory changes allocate (the AG lock order, trans.rs).
            tx.pin_ag(self.mp.ag_of(self.mp.ino_block(d.ino)))?;
        }
        let now = inode::now();
        let moves_dir_across = s_is_dir && parent != newparent;
        if moves_dir_across && !d_is_dir && g(&mut locks, newparent).di.nlink >= LINK_MAX {
            return err(libc::EMLINK);
        }
        let s_ft = src.ftype;
        let mut orphan = None;
        if flags.exchange {
            let dst = dst.unwrap();
            dir::retarget(&mut tx, g(&mut locks, parent), src, dst.ino, dst.ftype)?;
            dir::retarget(&mut tx, g(&mut locks, newparent), dst, src.ino, s_ft)?;
            if parent != newparent {
                if s_is_dir {
                    g(&mut locks, src.ino).di.parent = newparent;
                    dec_nlink(g(&mut locks, parent));
                    g(&mut locks, newparent).di.nlink += 1;
                }
                if d_is_dir {
                    g(&mut locks, dst.ino).di.parent = parent;
                    dec_nlink(g(&mut locks, newparent));
                    g(&mut locks, parent).di.nlink += 1;
                }
            }
            g(&mut locks, dst.ino).di.ctime = now;
        } else {
            match dst {
                Some(dst) => {
                    dir::retarget(&mut tx, g(&mut locks, newparent), dst, src.ino, s_ft)?;
                    let v = g(&mut locks, dst.ino);
                    v.di.nlink = if d_is_dir {
                        0
                    } else {
                        v.di.nlink.saturating_sub(1)
                    };
                    v.di.ctime = now;
                    if v.di.nlink == 0 {
                        orphan = Some(dst.ino);
                        ialloc::unlinked_add(&mut tx, dst.ino)?;
                    }
                    if d_is_dir {
                        dec_nlink(g(&mut locks, newparent));
                    }
                }
                None => dir::add(&mut tx, g(&mut locks, newparent), newname, src.ino, s_ft)?,
            }
            dir::remove(&mut tx, g(&mut locks, parent), name, src)?;
            if moves_dir_across {
                g(&mut locks, src.ino).di.parent = newparent;
                dec_nlink(g(&mut locks, parent));
                g(&mut locks, newparent).di.nlink += 1;
            }
        }
        g(&mut locks, src.ino).di.ctime = now;
        for ino in [parent, newparent] {
            let d = g(&mut locks, ino);
            d.di.mtime = now;
            d.di.ctime = now;
        }
        for (_, d) in locks.iter_mut() {
            bmap::sync_inode(&mut tx, d)?;
        }
        tx.commit()?;
        drop(locks);
        drop(dino);
        Ok(Some(orphan))
    }

    // ------------------------------------------------------------------------------------
    // Attributes.

    pub fn setattr(&self, ino: Ino, set: &SetAttr, cred: &Cred) -> Result<Attr> {
        self.mp.check_writable()?;
        let inode = self.iget(ino)?;
        if let Some(size) = set.size {
            match inode.ilock_shared().di.kind() {
                FileKind::File => {}
                FileKind::Dir => return err(libc::EISDIR),
                // A symlink, fifo, device or socket has no data to size (the kernel never
                // asks; a client that does gets what truncate(2) gives).
                _ => return err(libc::EINVAL),
            }
            self.truncate(&inode, size, false)?;
        }
        let mut tx = self.mp.trans(0)?;
        let mut d = inode.ilock_excl();
        let now = inode::now();
        if let Some(mode) = set.mode {
            let mut mode = mode & 0o7777;
            if cred.uid != 0 && !in_group(cred, d.di.gid) && set.gid.is_none() {
                mode &= !libc::S_ISGID;
            }
            d.di.mode = (d.di.mode & libc::S_IFMT) | mode;
        }
        if let Some(uid) = set.uid {
            d.di.uid = uid;
        }
        if let Some(gid) = set.gid {
            d.di.gid = gid;
        }
        // The filesystem kills set-id bits (FUSE handle_killpriv_v2): on chown of a
        // non-directory, and when an unprivileged caller truncates, as Linux does.
        let chown = set.uid.is_some() || set.gid.is_some();
        let unpriv_truncate = set.size.is_some() && cred.uid != 0;
        if (chown || unpriv_truncate) && !d.di.is_dir() && set.mode.is_none() {
            d.di.mode = without_setid(d.di.mode);
        }
        let ts = |t: SetTime| match t {
            SetTime::Now => now,
            SetTime::At(t) => t,
        };
        if let Some(t) = set.atime {
            d.di.atime = ts(t);
        }
        if let Some(t) = set.mtime {
            d.di.mtime = ts(t);
        }
        d.di.ctime = set.ctime.unwrap_or(now);
        bmap::sync_inode(&mut tx, &mut d)?;
        let a = attr_of(&d);
        tx.commit()?;
        drop(d);
        Ok(a)
    }

    /// Change the size: zero the tail of the new last block, free blocks past it in
    /// bounded transactions. The size changes in the first one.
    fn truncate(&self, inode: &Inode, size: u64, touch: bool) -> Result<()> {
        if size > FILE_SIZE_MAX {
            return err(libc::EFBIG);
        }
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_excl();
        let mut first = true;
        loop {
            let mut tx = self.mp.trans_remove(4 * BTREE_LEVELS_MAX as u64)?;
            let mut d = inode.ilock_excl();
            let keep = size.div_ceil(BS);
            if first {
                let now = inode::now();
                if size < d.di.size {
                    self.zero_tail(&d, size);
                }
                if size != d.di.size || touch {
                    d.di.mtime = now;
                    d.di.ctime = now;
                }
                d.di.size = size;
                first = false;
            }
            let end = bmap::bounded_remove_end(&d.map, keep, u64::MAX);
            let more = end != u64::MAX;
            bmap::free_range(&mut tx, &mut d, keep, end - keep);
            bmap::sync_inode(&mut tx, &mut d)?;
            tx.commit()?;
            drop(d);
            if !more {
                return Ok(());
            }
        }
    }

    /// Zero bytes [size, end of its block) if that block holds written data, so bytes past
    /// EOF always read as zero when the file grows again.
    fn zero_tail(&self, d: &InodeData, size: u64) {
        let within = size % BS;
        if within == 0 {
            return;
        }
        if let Some(e) = d.map.find(size / BS)
            && !e.unwritten
        {
            let at = bmap::dev_off(&e, size / BS) + within;
            self.mp.dev.zero(at, BS - within);
            // Ordered before the commit of the new size: were the zeros lost in a crash
            // while a later extension of the file survived, the old bytes would show.
            self.mp.dev.flush(at, BS - within);
        }
    }

    // ------------------------------------------------------------------------------------
    // Open files and data.

    /// Open a file or directory: holds the inode until `release` (unlinked files live on).
    /// O_TRUNC with write access truncates here and always updates mtime and ctime, as
    /// POSIX requires of open (core callers; through FUSE the kernel sends O_TRUNC as a
    /// SETATTR after its ETXTBSY check, see fuse.rs `init`).
    pub fn open(&self, ino: Ino, flags: i32) -> Result<u64> {
        let inode = self.iget(ino)?;
        let (freed, kind) = {
            let d = inode.ilock_shared();
            (d.freed, d.di.kind())
        };
        if freed {
            return err(libc::ESTALE);
        }
        if flags & libc::O_TRUNC != 0
            && kind == FileKind::File
            && flags & libc::O_ACCMODE != libc::O_RDONLY
        {
            self.mp.check_writable()?;
            self.truncate(&inode, 0, true)?;
        }
        inode.opens.fetch_add(1, Ordering::AcqRel);
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    pub fn release(&self, ino: Ino, _fh: u64) {
        let Some(inode) = self.icache.lock().unwrap().get(&ino).cloned() else {
            return;
        };
        let _ = inode
            .opens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        drop(inode);
        self.maybe_evict(ino);
    }

    /// Read up to `size` bytes at `off`; `reply` gets the bytes: a slice of the device when
    /// one written extent holds them all (zero copy), else a gathered buffer.
    pub fn read<R>(
        &self,
        ino: Ino,
        off: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let inode = self.iget(ino)?;
        let _io = inode.iolock_shared();
        let _mm = inode.mmaplock_shared();
        let d = inode.ilock_shared();
        match d.di.kind() {
            FileKind::File => {}
            FileKind::Dir => return err(libc::EISDIR),
            _ => return err(libc::EINVAL),
        }
        if off >= d.di.size || size == 0 {
            drop(d);
            self.touch_atime(&inode);
            return Ok(reply(&[]));
        }
        let len = (size as u64).min(d.di.size - off);
        let (fb, lb) = (off / BS, (off + len - 1) / BS);
        let pieces = d.map.range(fb, lb - fb + 1);
        let r = if pieces.len() == 1
            && !pieces[0].unwritten
            && pieces[0].fileoff == fb
            && pieces[0].len == lb - fb + 1
        {
            let at = bmap::dev_off(&pieces[0], fb) + off % BS;
            // SAFETY: the invalidate lock (shared) keeps these blocks mapped to this file
            // and the ILOCK (shared) keeps writers of this inode's metadata out while the
            // slice lives; it is handed to the reply and dropped before the locks.
            reply(unsafe { self.mp.dev.slice(at, len as usize) })
        } else {
            let mut buf = vec![0u8; len as usize];
            for p in pieces.iter().filter(|p| !p.unwritten) {
                let start = (p.fileoff * BS).max(off);
                let end = (p.end() * BS).min(off + len);
                self.mp.dev.read(
                    bmap::dev_off(p, start / BS) + start % BS,
                    &mut buf[(start - off) as usize..(end - off) as usize],
                );
            }
            reply(&buf)
        };
        drop(d);
        self.touch_atime(&inode);
        Ok(r)
    }

    /// atime per the mount's policy, in memory (written lazily, like lazytime).
    fn touch_atime(&self, inode: &Inode) {
        if self.opts.atime == AtimeMode::Noatime || self.mp.is_read_only() {
            return;
        }
        let now = inode::now();
        let stale = |d: &InodeData| match self.opts.atime {
            AtimeMode::Strictatime => d.di.atime != now,
            AtimeMode::Relatime => {
                d.di.atime <= d.di.mtime
                    || d.di.atime <= d.di.ctime
                    || d.di.atime.sec + 86400 <= now.sec
            }
            AtimeMode::Noatime => false,
        };
        // Decide under the shared lock: parallel readers of one file rarely need more.
        if !stale(&inode.ilock_shared()) {
            return;
        }
        let mut d = inode.ilock_excl();
        if stale(&d) {
            d.di.atime = now;
            d.times_dirty = true;
        }
    }

    /// Write `data` at `off` (at EOF when `append`); returns bytes written.
    /// Writes of at least SPLIT_WRITE_BLOCKS blocks that allocate do so in a transaction
    /// of their own before copying (see below).
    pub fn write(&self, ino: Ino, off: u64, data: &[u8], append: bool) -> Result<u32> {
        self.mp.check_writable()?;
        let inode = self.iget(ino)?;
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_shared();
        let (size, kind, needs_alloc) = {
            let d = inode.ilock_shared();
            let off = if append { d.di.size } else { off };
            let needs = !data.is_empty() && {
                let (fb, lb) = (off / BS, (off + data.len() as u64 - 1) / BS);
                let pieces = d.map.range(fb, lb - fb + 1);
                pieces.iter().map(|p| p.len).sum::<u64>() != lb - fb + 1
                    || pieces.iter().any(|p| p.unwritten)
            };
            (d.di.size, d.di.kind(), needs)
        };
        match kind {
            FileKind::File => {}
            FileKind::Dir => return err(libc::EISDIR),
            // Only regular files have data a write can reach (the kernel only writes to
            // them; a symlink's inline target must never be written as file data).
            _ => return err(libc::EINVAL),
        }
        let off = if append { size } else { off };
        if off >= FILE_SIZE_MAX {
            return err(libc::EFBIG);
        }
        let data = &data[..data.len().min((FILE_SIZE_MAX - off) as usize)];
        if data.is_empty() {
            return Ok(0);
        }
        let end = off + data.len() as u64;
        let now = inode::now();
        if !needs_alloc {
            // Overwrite of written blocks: the mapping is stable under our IOLOCK and
            // invalidate lock, so copy without the ILOCK.
            let pieces = inode
                .ilock_shared()
                .map
                .range(off / BS, (end - 1) / BS - off / BS + 1);
            // A write that moves EOF is ordered before the commit of the new size, as XFS
            // updates the on-disk size only at I/O completion: a crash never shows a size
            // whose last bytes read as zeros instead of what was written.
            self.copy_to_blocks(&pieces, off, data, end > size);
            if end > size {
                let mut tx = self.mp.trans(0)?;
                let mut d = inode.ilock_excl();
                d.di.size = d.di.size.max(end);
                d.di.mtime = now;
                d.di.ctime = now;
                bmap::sync_inode(&mut tx, &mut d)?;
                tx.commit()?;
                drop(d);
            } else {
                let mut d = inode.ilock_excl();
                d.di.mtime = now;
                d.di.ctime = now;
                d.times_dirty = true;
            }
            return Ok(data.len() as u32);
        }
        let (fb, lb) = (off / BS, (end - 1) / BS);
        let nblocks = lb - fb + 1;
        if nblocks >= SPLIT_WRITE_BLOCKS {
            // A large write allocates in a transaction of its own, then copies and flushes
            // its data holding only the inode's IOLOCK: no AG lock (every allocation in
            // that AG) is held while megabytes are copied and written back.
            // A crash in between leaves unwritten blocks, which read as zeros.
            let mut tx = self.mp.trans(bmap::write_resblks(nblocks))?;
            let mut d = inode.ilock_excl();
            bmap::alloc_holes(&mut tx, &mut d, fb, nblocks, true, &mut |_, _, _, _| {})?;
            bmap::sync_inode(&mut tx, &mut d)?;
            tx.commit()?;
            drop(d);
        }
        let resblks = if nblocks >= SPLIT_WRITE_BLOCKS {
            2 * BTREE_LEVELS_MAX as u64 // converting extents only
        } else {
            bmap::write_resblks(nblocks)
        };
        let mut tx = self.mp.trans(resblks)?;
        let mut d = inode.ilock_excl();
        // New blocks arrive unwritten, so every block the write touches is either written
        // (copy) or unwritten (zero what the write leaves, copy, then mark written): no
        // stale bytes can show, and no block is visible before this commit.
        bmap::alloc_holes(&mut tx, &mut d, fb, nblocks, true, &mut |_, _, _, _| {})?;
        let pieces = d.map.range(fb, nblocks);
        for p in pieces.iter().filter(|p| p.unwritten) {
            for b in [p.fileoff, p.end() - 1] {
                let covered = b * BS >= off && (b + 1) * BS <= end;
                if !covered {
                    self.mp.dev.zero(bmap::dev_off(p, b), BS);
                    self.mp.dev.flush(bmap::dev_off(p, b), BS);
                }
            }
        }
        self.copy_to_blocks(&pieces, off, data, true);
        self.mp.dev.fence();
        d.map.mark_written(fb, lb - fb + 1);
        d.di.size = d.di.size.max(end);
        d.di.mtime = now;
        d.di.ctime = now;
        bmap::sync_inode(&mut tx, &mut d)?;
        tx.commit()?;
        drop(d);
        Ok(data.len() as u32)
    }

    /// Copy `data` (file bytes from `off`) into the blocks of `pieces` and flush them;
    /// `ordered`: the next fence on this thread must make them durable (new blocks, before
    /// the commit that maps them).
    fn copy_to_blocks(&self, pieces: &[Extent], off: u64, data: &[u8], ordered: bool) {
        let end = off + data.len() as u64;
        for p in pieces {
            let start = (p.fileoff * BS).max(off);
            let stop = (p.end() * BS).min(end);
            if start >= stop {
                continue;
            }
            let at = bmap::dev_off(p, start / BS) + start % BS;
            self.mp
                .dev
                .write(at, &data[(start - off) as usize..(stop - off) as usize]);
            if ordered {
                self.mp.dev.flush(at, stop - start);
            } else {
                self.mp.dev.flush_data(at, stop - start);
            }
        }
    }

    /// Clear setuid/setgid after a write or O_TRUNC open by an unprivileged caller (the
    /// kernel leaves this to the filesystem: handle_killpriv_v2).
    /// Returns whether the mode changed (the kernel's cached attributes are then stale).
    pub fn kill_suid(&self, ino: Ino) -> Result<bool> {
        let inode = self.iget(ino)?;
        if inode.ilock_shared().di.mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
            return Ok(false);
        }
        let mut tx = self.mp.trans(0)?;
        let mut d = inode.ilock_excl();
        let mode = without_setid(d.di.mode);
        if mode == d.di.mode {
            return Ok(false);
        }
        d.di.mode = mode;
        d.di.ctime = inode::now();
        bmap::sync_inode(&mut tx, &mut d)?;
        tx.commit()?;
        drop(d);
        Ok(true)
    }

    pub fn fsync(&self, ino: Ino, _datasync: bool) -> Result<()> {
        let inode = self.iget(ino)?;
        self.flush_times(&inode)?;
        trans::checkpoint(&self.mp)
    }

    /// Write timestamps changed in memory only.
    fn flush_times(&self, inode: &Inode) -> Result<()> {
        if !inode.ilock_shared().times_dirty || self.mp.is_read_only() {
            return Ok(());
        }
        let mut tx = self.mp.trans(0)?;
        let mut d = inode.ilock_excl();
        if d.times_dirty && !d.freed {
            bmap::sync_inode(&mut tx, &mut d)?;
        }
        let r = tx.commit();
        drop(d);
        r
    }

    /// List `ino` from `cookie` (0 = start). `add` returns true when the reply buffer is
    /// full; the entry it refused is given again at the next call.
    pub fn readdir(
        &self,
        ino: Ino,
        cookie: u64,
        add: &mut dyn FnMut(&DirEntry) -> bool,
    ) -> Result<()> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        if !d.di.is_dir() {
            return err(libc::ENOTDIR);
        }
        if cookie == 0
            && add(&DirEntry {
                ino,
                kind: FileKind::Dir,
                name: b".".to_vec(),
                next: 1,
            })
        {
            return Ok(());
        }
        if cookie <= 1 {
            let parent = if ino == self.root_ino() {
                ino
            } else {
                d.di.parent
            };
            if add(&DirEntry {
                ino: parent,
                kind: FileKind::Dir,
                name: b"..".to_vec(),
                next: 2,
            }) {
                return Ok(());
            }
        }
        let start = cookie.saturating_sub(2);
        let mut bad = None;
        dir::list(
            &mut DevReader { mp: &self.mp },
            &d,
            start,
            &mut |dataptr, eino, ft, name| {
                let Some(kind) = inode::kind_of_ftype(ft) else {
                    bad = Some(ft);
                    return true;
                };
                add(&DirEntry {
                    ino: eino,
                    kind,
                    name: name.to_vec(),
                    next: dataptr + 3,
                })
            },
        )?;
        if let Some(ft) = bad {
            return Err(FsError::corrupt(format!(
                "directory {ino}: entry with file type {ft}"
            )));
        }
        Ok(())
    }

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

    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        if name == STATS_XATTR {
            return err(libc::EPERM);
        }
        if ino == self.root_ino()
            && let Some(tag) = name.strip_prefix(ERRTAG_XATTR)
        {
            let tag = std::str::from_utf8(tag).ok().and_then(ErrorTag::from_name);
            let freq = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            let (Some(tag), Some(freq)) = (tag, freq) else {
                return err(libc::EINVAL);
            };
            log::warn!("error tag {} set to {freq}", tag.name());
            self.mp.dev.errtags.set(tag, freq);
            return Ok(());
        }
        let inode = self.iget(ino)?;
        let mut tx = self.mp.trans(1)?;
        let mut d = inode.ilock_excl();
        xattr::set(&mut tx, &mut d, name, value, flags.create, flags.replace)?;
        d.di.ctime = inode::now();
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        if ino == self.root_ino() && name == STATS_XATTR {
            return Ok(self.stats().into_bytes());
        }
        if ino == self.root_ino()
            && let Some(tag) = name.strip_prefix(ERRTAG_XATTR)
        {
            return match std::str::from_utf8(tag).ok().and_then(ErrorTag::from_name) {
                Some(t) => Ok(self.mp.dev.errtags.get(t).to_string().into_bytes()),
                None => err(libc::ENODATA),
            };
        }
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        xattr::get(&mut DevReader { mp: &self.mp }, &d, name)
    }

    /// Live counters, as text (`daxfs stat MOUNT` reads them through the root directory's
    /// `trusted.daxfs.stats`, which is not stored and not listed).
    pub fn stats(&self) -> String {
        let mp = &self.mp;
        let (commits, checkpoints, next_lsn) = trans::log_counters(mp);
        let cached = self.icache.lock().unwrap().len();
        format!(
            "source {}\npersistence {}\ncommits {commits}\ncheckpoints {checkpoints}\nnext_lsn {next_lsn}\n\
             fences {}\nflushed_bytes {}\nfree_blocks {}\nreserved_blocks {}\ninodes_allocated {}\n\
             inodes_free {}\ncached_inodes {cached}\npending_frees {}\nag_waits_out_of_order {}\n\
             read_only {}\nshutdown {}\nerrortags (frequency/fired) {}\n",
            mp.dev.source(),
            mp.dev.persistence().describe(),
            mp.dev.stats.fences.load(Ordering::Relaxed),
            mp.dev.stats.flushed_bytes.load(Ordering::Relaxed),
            mp.free_blocks.load(Ordering::Relaxed),
            mp.reserved.load(Ordering::Relaxed),
            mp.inodes_count.load(Ordering::Relaxed),
            mp.inodes_free.load(Ordering::Relaxed),
            mp.pending_frees.load(Ordering::Relaxed),
            mp.ag_waits_out_of_order.load(Ordering::Relaxed),
            mp.is_read_only(),
            mp.is_shutdown(),
            mp.dev.errtags.describe(),
        ) + &self.dax.stats_text()
    }

    /// Names, each NUL-terminated, as listxattr(2) returns them.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        xattr::list(&mut DevReader { mp: &self.mp }, &d)
    }

    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        let inode = self.iget(ino)?;
        let mut tx = self.mp.trans_remove(0)?;
        let mut d = inode.ilock_excl();
        xattr::remove(&mut tx, &mut d, name)?;
        d.di.ctime = inode::now();
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }

    // ------------------------------------------------------------------------------------
    // Space management.

    /// fallocate(2): `mode` is the FALLOC_FL_* bits.
    pub fn fallocate(&self, ino: Ino, off: u64, len: u64, mode: i32) -> Result<()> {
        self.mp.check_writable()?;
        if len == 0 {
            return err(libc::EINVAL);
        }
        let Some(end) = off.checked_add(len).filter(|&e| e <= FILE_SIZE_MAX) else {
            return err(libc::EFBIG);
        };
        let inode = self.iget(ino)?;
        if inode.ilock_shared().di.kind() != FileKind::File {
            return err(if inode.ilock_shared().di.is_dir() {
                libc::EISDIR
            } else {
                libc::ENODEV
            });
        }
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        match mode & !FALLOC_FL_KEEP_SIZE {
            0 => self.falloc_alloc(&inode, off, end, keep),
            FALLOC_FL_PUNCH_HOLE if keep => self.falloc_punch(&inode, off, end),
            FALLOC_FL_ZERO_RANGE => self.falloc_zero(&inode, off, end, keep),
            FALLOC_FL_COLLAPSE_RANGE if !keep => self.falloc_collapse(&inode, off, len),
            FALLOC_FL_INSERT_RANGE if !keep => self.falloc_insert(&inode, off, len),
            FALLOC_FL_UNSHARE_RANGE => Ok(()), // no shared blocks exist (no reflink yet)
            FALLOC_FL_PUNCH_HOLE => err(libc::EOPNOTSUPP),
            _ => err(libc::EOPNOTSUPP),
        }
    }

    /// Allocate unwritten blocks for the holes of [off, end), in bounded transactions.
    fn alloc_unwritten(
        &self,
        inode: &Inode,
        off: u64,
        end: u64,
        new_size: Option<u64>,
    ) -> Result<()> {
        let (fb, lb) = (off / BS, end.div_ceil(BS));
        let mut pos = fb;
        while pos < lb {
            let chunk = (lb - pos).min(ALLOC_CHUNK_BLOCKS);
            let mut tx = self.mp.trans(bmap::write_resblks(chunk))?;
            let mut d = inode.ilock_excl();
            bmap::alloc_holes(&mut tx, &mut d, pos, chunk, true, &mut |_, _, _, _| {})?;
            pos += chunk;
            let now = inode::now();
            if pos >= lb
                && let Some(s) = new_size
            {
                d.di.size = d.di.size.max(s);
            }
            d.di.mtime = now;
            d.di.ctime = now;
            bmap::sync_inode(&mut tx, &mut d)?;
            tx.commit()?;
            drop(d);
        }
        Ok(())
    }

    fn falloc_alloc(&self, inode: &Inode, off: u64, end: u64, keep: bool) -> Result<()> {
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_shared();
        self.alloc_unwritten(inode, off, end, (!keep).then_some(end))
    }

    /// Zero the bytes of [off, end) that lie in written blocks, at the partial blocks at
    /// either edge of the range (whole blocks are handled by the caller).
    fn zero_partial_edges(&self, d: &InodeData, off: u64, end: u64) {
        let mut edges = vec![(off, end.min((off / BS + 1) * BS))];
        if !end.is_multiple_of(BS) && end / BS != off / BS {
            edges.push(((end / BS) * BS, end));
        }
        for (s, e) in edges {
            if s % BS == 0 && e - s == BS {
                continue; // a whole block, not an edge
            }
            if let Some(x) = d.map.find(s / BS)
                && !x.unwritten
            {
                let at = bmap::dev_off(&x, s / BS) + s % BS;
                self.mp.dev.zero(at, e - s);
                // Ordered before the commit that follows (as in `zero_tail`).
                self.mp.dev.flush(at, e - s);
            }
        }
    }

    /// Remove whole blocks [fb, lb) in bounded transactions; `last` runs in the final one.
    fn remove_blocks(
        &self,
        inode: &Inode,
        fb: u64,
        lb: u64,
        last: &mut dyn FnMut(&mut Trans, &mut InodeData) -> Result<()>,
    ) -> Result<()> {
        loop {
            let mut tx = self.mp.trans_remove(4 * BTREE_LEVELS_MAX as u64)?;
            let mut d = inode.ilock_excl();
            let stop = if fb < lb {
                bmap::bounded_remove_end(&d.map, fb, lb)
            } else {
                lb
            };
            if fb < stop {
                bmap::free_range(&mut tx, &mut d, fb, stop - fb);
            }
            let done = stop >= lb;
            if done {
                last(&mut tx, &mut d)?;
            }
            let now = inode::now();
            d.di.mtime = now;
            d.di.ctime = now;
            bmap::sync_inode(&mut tx, &mut d)?;
            tx.commit()?;
            drop(d);
            if done {
                return Ok(());
            }
        }
    }

    fn falloc_punch(&self, inode: &Inode, off: u64, end: u64) -> Result<()> {
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_excl();
        self.zero_partial_edges(&inode.ilock_shared(), off, end);
        self.remove_blocks(inode, off.div_ceil(BS), end / BS, &mut |_, _| Ok(()))
    }

    fn falloc_zero(&self, inode: &Inode, off: u64, end: u64, keep: bool) -> Result<()> {
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_excl();
        self.zero_partial_edges(&inode.ilock_shared(), off, end);
        {
            let (fb, lb) = (off.div_ceil(BS), end / BS);
            if fb < lb {
                let mut tx = self.mp.trans(0)?;
                let mut d = inode.ilock_excl();
                d.map.mark_unwritten(fb, lb - fb);
                bmap::sync_inode(&mut tx, &mut d)?;
                tx.commit()?;
                drop(d);
            }
        }
        self.alloc_unwritten(inode, off, end, (!keep).then_some(end))
    }

    fn falloc_collapse(&self, inode: &Inode, off: u64, len: u64) -> Result<()> {
        if !off.is_multiple_of(BS) || !len.is_multiple_of(BS) {
            return err(libc::EINVAL);
        }
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_excl();
        if off + len >= inode.ilock_shared().di.size {
            return err(libc::EINVAL);
        }
        let (fb, nb) = (off / BS, len / BS);
        self.remove_blocks(inode, fb, fb + nb, &mut |_, d| {
            d.map.shift_down(fb, nb);
            d.di.size -= len;
            Ok(())
        })
    }

    fn falloc_insert(&self, inode: &Inode, off: u64, len: u64) -> Result<()> {
        if !off.is_multiple_of(BS) || !len.is_multiple_of(BS) {
            return err(libc::EINVAL);
        }
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_excl();
        let mut tx = self.mp.trans(2 * BTREE_LEVELS_MAX as u64)?;
        let mut d = inode.ilock_excl();
        if off >= d.di.size {
            return err(libc::EINVAL);
        }
        if d.di.size + len > FILE_SIZE_MAX {
            return err(libc::EFBIG);
        }
        if d.map.shift_up(off / BS, len / BS).is_err() {
            return err(libc::EFBIG);
        }
        let now = inode::now();
        d.di.size += len;
        d.di.mtime = now;
        d.di.ctime = now;
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }

    /// SEEK_DATA / SEEK_HOLE (other whence values are the kernel's). Unwritten extents
    /// are holes.
    pub fn lseek(&self, ino: Ino, off: u64, whence: i32) -> Result<u64> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        let size = d.di.size;
        if off >= size {
            return err(libc::ENXIO);
        }
        match whence {
            libc::SEEK_DATA => match d.map.next_data(off / BS) {
                Some(b) if b * BS < size => Ok(off.max(b * BS)),
                _ => err(libc::ENXIO),
            },
            libc::SEEK_HOLE => Ok(off.max(d.map.next_hole(off / BS) * BS).min(size)),
            _ => err(libc::EINVAL),
        }
    }

    pub fn copy_file_range(
        &self,
        ino_in: Ino,
        off_in: u64,
        ino_out: Ino,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let mut done = 0u64;
        while done < len {
            let chunk = (len - done).min(1 << 20) as u32;
            let buf = self.read(ino_in, off_in + done, chunk, |b| b.to_vec())?;
            if buf.is_empty() {
                break;
            }
            let n = self.write(ino_out, off_out + done, &buf, false)?;
            done += n as u64;
            if (n as usize) < buf.len() {
                break;
            }
        }
        Ok(done)
    }

    /// FS_IOC_FSSETXATTR's DAX flag.
    pub fn set_dax_flag(&self, ino: Ino, dax: bool) -> Result<()> {
        let inode = self.iget(ino)?;
        let mut tx = self.mp.trans(0)?;
        let mut d = inode.ilock_excl();
        let flags = if dax {
            d.di.flags | DIFLAG_DAX
        } else {
            d.di.flags & !DIFLAG_DAX
        };
        if flags != d.di.flags {
            d.di.flags = flags;
            d.di.ctime = inode::now();
            bmap::sync_inode(&mut tx, &mut d)?;
        }
        let r = tx.commit();
        drop(d);
        r
    }

    // ------------------------------------------------------------------------------------
    // Whole filesystem.

    /// Make everything durable (sync(2), syncfs).
    pub fn sync(&self) -> Result<()> {
        let inodes: Vec<Arc<Inode>> = self.icache.lock().unwrap().values().cloned().collect();
        for i in inodes {
            self.flush_times(&i)?;
        }
        trans::checkpoint(&self.mp)
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

    /// Commit everything and mark the image clean. Called once, at unmount.
    pub fn unmount(&self) -> Result<()> {
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
        trans::checkpoint(&self.mp)?;
        // Every record in the log is applied: move the LSN base past them all.
        trans::write_sb_state(&self.mp, trans::next_lsn(&self.mp), true);
        self.mp.dev.persist_all();
        Ok(())
    }
}
