//! The FUSE adapter: fuser requests in, `Fs` calls, replies out. Nothing here knows the
//! on-media format; every handler is a few lines. FUSE's root inode (1) is the
//! filesystem's root directory; every other inode number passes through unchanged (daxfs
//! inode numbers are never 1).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, Notifier, OpenFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::FsError;
use crate::fs::{
    Attr, CacheInvalidator, Cred, FileKind, Fs, InodeFlags, ReadCache, RenameFlags, SetAttr,
    SetTime, ShutdownMode, Timespec, XattrFlags,
};

/// How long the kernel may trust names and attributes: every change goes through this
/// mount, so the kernel's caches stay right. Public so the benchmark's in-memory reference
/// (examples/memfs.rs) runs with the same timeouts.
pub const TTL: Duration = Duration::from_secs(1);
/// The open flags of regular files (open and create); shared with examples/memfs.rs.
pub const FILE_OPEN_FLAGS: FopenFlags =
    FopenFlags::FOPEN_KEEP_CACHE.union(FopenFlags::FOPEN_NOFLUSH);
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
/// FS_IOC_GETFLAGS / SETFLAGS (_IOR/_IOW('f', 1/2, long)) and their 32-bit forms. The
/// kernel's FUSE sends them from its fileattr hooks with a 4-byte (int) argument.
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_XFLAG_DAX: u32 = 0x8000;
const FSXATTR_SIZE: usize = 28;
/// FS_IOC_GETFSLABEL / SETFSLABEL (linux/fs.h: _IOR/_IOW(0x94, 49/50, char[FSLABEL_MAX]));
/// FUSE passes them on as restricted ioctls with their 256-byte buffers.
const FS_IOC_GETFSLABEL: u32 = 0x8100_9431;
const FS_IOC_SETFSLABEL: u32 = 0x4100_9432;
const FSLABEL_MAX: usize = 256;
/// FITRIM (linux/fs.h: _IOWR('X', 121, struct fstrim_range)): fstrim(8) and `daxfs trim`.
pub const FITRIM: u32 = 0xc018_5879;
/// struct fstrim_range { u64 start; u64 len; u64 minlen; }
const FSTRIM_RANGE_SIZE: usize = 24;
/// How long a shutdown waits for the kernel's caches to be dropped (see `DaxFuse::new`).
const SHUTDOWN_INVAL_WAIT: Duration = Duration::from_millis(500);
/// FS_IOC_SHUTDOWN (linux/fs.h: _IOR('X', 125, __u32)), XFS_IOC_GOINGDOWN's number.
pub const FS_IOC_SHUTDOWN: u32 = 0x8004_587d;

/// The argument of the caller's FS_IOC_SHUTDOWN. FUSE passes no input to an `_IOR` ioctl
/// (it copies out only, and `arg` is not handed on by fuser), though this one is read by
/// the filesystem: so read it from the caller, who is blocked in the ioctl until answered:
/// its third syscall argument from /proc/TID/syscall, the u32 there from its memory. The
/// daemon serving a root request may read the caller (ptrace rules: root, or same user).
/// None when it cannot be read (then the caller gets EINVAL, nothing is shut down).
fn caller_shutdown_flags(tid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    let mut w = text.split_whitespace();
    let nr: i64 = w.next()?.parse().ok()?;
    let num = |s: Option<&str>| u64::from_str_radix(s?.strip_prefix("0x")?, 16).ok();
    let (_fd, cmd, arg) = (num(w.next()), num(w.next())?, num(w.next())?);
    if nr != libc::SYS_ioctl || cmd as u32 != FS_IOC_SHUTDOWN {
        return None;
    }
    let mut v = [0u8; 4];
    let local = libc::iovec {
        iov_base: v.as_mut_ptr() as *mut libc::c_void,
        iov_len: 4,
    };
    let remote = libc::iovec {
        iov_base: arg as *mut libc::c_void,
        iov_len: 4,
    };
    // SAFETY: `local` is 4 writable bytes of ours; the kernel checks the remote range
    // and our right to read it, and fails (EFAULT/EPERM/ESRCH) without touching memory.
    let n = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (n == 4).then(|| u32::from_ne_bytes(v))
}

pub struct DaxFuse {
    fs: Arc<Fs>,
    /// The mount's device number, once mounted (what has_submounts looks for).
    mount_dev: Arc<OnceLock<u64>>,
    /// Set once the session exists: tells the kernel when attributes it cached changed
    /// behind its back (set-id bits killed on write or O_TRUNC).
    notifier: Arc<OnceLock<Notifier>>,
}

impl DaxFuse {
    pub fn new(fs: Arc<Fs>, notifier: Arc<OnceLock<Notifier>>) -> DaxFuse {
        // After a shutdown every request gets EIO (Fs::iget), but the kernel answers some
        // from its caches without asking: attributes and names within TTL, and the page
        // cache of files opened with FOPEN_KEEP_CACHE. Drop the attributes and pages of
        // every inode the kernel may hold, so stat, permission checks on a path walk, and
        // reads come here and fail. The hook runs inside the request that failed, before
        // its reply: it waits for the invalidation, so that once the failing call returns
        // nothing cached is served, but only for a bounded time, since the kernel may hold
        // a page lock until some other request is answered (a read or write of the same
        // file in flight); the rest then completes in the background.
        let weak = Arc::downgrade(&fs);
        let n = notifier.clone();
        fs.on_shutdown(Box::new(move || {
            let (weak, n) = (weak.clone(), n.clone());
            let (done, wait) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("daxfs-shutdown".into())
                .spawn(move || {
                    let (Some(fs), Some(n)) = (weak.upgrade(), n.get()) else {
                        return;
                    };
                    let root = fs.root_ino();
                    for ino in fs.cached_inos() {
                        let fuse_ino = INodeNo(if ino == root { 1 } else { ino });
                        // ENOENT: the kernel had already forgotten it.
                        let _ = n.inval_inode(fuse_ino, 0, 0);
                    }
                    let _ = done.send(());
                });
            if spawned.is_ok() {
                let _ = wait.recv_timeout(SHUTDOWN_INVAL_WAIT);
            }
        }));
        let mount_dev = Arc::new(OnceLock::new());
        fs.set_cache_invalidator(Some(Arc::new(NotifyInval::new(
            notifier.clone(),
            fs.root_ino(),
            mount_dev.clone(),
        ))));
        DaxFuse {
            fs,
            mount_dev,
            notifier,
        }
    }
    /// Where the mount's device number will be set once the session is mounted.
    pub fn mount_dev(&self) -> Arc<OnceLock<u64>> {
        self.mount_dev.clone()
    }
    /// After a shutdown nothing is answered but EIO (requests that do not reach `Fs::iget`
    /// check here).
    fn shut(&self) -> bool {
        self.fs.is_shutdown()
    }
    /// How an open file is served: a DAX file (one clients may map) without the kernel's
    /// page cache, so a client's store is seen by the next read() and a write() by the
    /// client's next load (one copy of the data); under strictatime every file so, since
    /// each read must reach the daemon to update atime; others with the page cache kept.
    /// A file whose atime a read is due to update under relatime is opened without
    /// FOPEN_KEEP_CACHE, so its first read reaches the daemon (Fs::read_cache_policy).
    fn fopen_flags(&self, ino: u64, flags: i32) -> FopenFlags {
        match self.fs.read_cache_policy(ino, flags) {
            ReadCache::Bypass => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            ReadCache::Drop => FopenFlags::FOPEN_NOFLUSH,
            ReadCache::Keep => FILE_OPEN_FLAGS,
        }
    }
    /// Set-id bits were killed: drop the kernel's cached attributes of `ino`.
    fn attrs_changed(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            let _ = n.inval_inode(self.fuse_ino(ino), -1, 0);
        }
    }
    fn ino(&self, i: INodeNo) -> u64 {
        if i.0 == 1 { self.fs.root_ino() } else { i.0 }
    }
    fn fuse_ino(&self, i: u64) -> INodeNo {
        INodeNo(if i == self.fs.root_ino() { 1 } else { i })
    }
    fn attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: self.fuse_ino(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: system_time(a.atime),
            mtime: system_time(a.mtime),
            ctime: system_time(a.ctime),
            crtime: system_time(a.btime),
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: a.blksize,
            flags: 0,
        }
    }
    fn entry(&self, r: crate::error::Result<Attr>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(a.generation.into())),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn empty(r: crate::error::Result<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn system_time(t: Timespec) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec as u64)
    }
}

fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                Timespec { sec: -s, nsec: 0 }
            } else {
                Timespec {
                    sec: -s - 1,
                    nsec: 1_000_000_000 - n,
                }
            }
        }
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

/// Supplementary groups of `pid`, from the "Groups:" line of /proc/PID/status.
pub fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn cred(req: &Request, with_groups: bool) -> Cred {
    let groups = if with_groups {
        std::fs::read_to_string(format!("/proc/{}/status", req.pid()))
            .map(|s| parse_groups(&s))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Cred {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        groups,
        cap_linux_immutable: None,
    }
}

/// CAP_LINUX_IMMUTABLE's bit in a capability set (linux/capability.h).
const CAP_LINUX_IMMUTABLE: u32 = 9;

/// The effective capabilities of a process, from the "CapEff:" line of /proc/PID/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The caller's credentials for a change of inode flags: whether it holds
/// CAP_LINUX_IMMUTABLE, read from its /proc status (the caller is blocked in its ioctl
/// meanwhile). Unreadable: None, and the core falls back to "uid 0 has it".
fn flags_cred(req: &Request) -> Cred {
    let cap = std::fs::read_to_string(format!("/proc/{}/status", req.pid()))
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .map(|caps| caps & (1 << CAP_LINUX_IMMUTABLE) != 0);
    Cred {
        cap_linux_immutable: cap,
        ..cred(req, false)
    }
}

/// An ioctl's flag bit and the core's flag it stands for.
type FlagBit = (u32, fn(&mut InodeFlags) -> &mut bool);

/// The FS_*_FL bits of FS_IOC_GETFLAGS/SETFLAGS (linux/fs.h) daxfs stores.
const FS_FL_BITS: [FlagBit; 6] = [
    (0x0000_0008, |f| &mut f.sync),      // FS_SYNC_FL
    (0x0000_0010, |f| &mut f.immutable), // FS_IMMUTABLE_FL
    (0x0000_0020, |f| &mut f.append),    // FS_APPEND_FL
    (0x0000_0040, |f| &mut f.nodump),    // FS_NODUMP_FL
    (0x0000_0080, |f| &mut f.noatime),   // FS_NOATIME_FL
    (0x0200_0000, |f| &mut f.dax),       // FS_DAX_FL
];
/// The same for the fsx_xflags of FS_IOC_FSGETXATTR/FSSETXATTR.
const FS_XFLAG_BITS: [FlagBit; 6] = [
    (0x0000_0008, |f| &mut f.immutable), // FS_XFLAG_IMMUTABLE
    (0x0000_0010, |f| &mut f.append),    // FS_XFLAG_APPEND
    (0x0000_0020, |f| &mut f.sync),      // FS_XFLAG_SYNC
    (0x0000_0040, |f| &mut f.noatime),   // FS_XFLAG_NOATIME
    (0x0000_0080, |f| &mut f.nodump),    // FS_XFLAG_NODUMP
    (FS_XFLAG_DAX, |f| &mut f.dax),
];

/// The ioctl bits of `flags` under the mapping `bits`.
fn flags_to_bits(flags: InodeFlags, bits: &[FlagBit]) -> u32 {
    let mut f = flags;
    bits.iter()
        .filter(|(_, get)| *get(&mut f))
        .fold(0, |acc, (bit, _)| acc | bit)
}

/// The core's flags from ioctl bits; None when a bit names a flag daxfs does not store
/// (refused with EOPNOTSUPP, never dropped).
fn bits_to_flags(v: u32, bits: &[FlagBit]) -> Option<InodeFlags> {
    let mut f = InodeFlags::default();
    let mut left = v;
    for (bit, get) in bits {
        if v & bit != 0 {
            *get(&mut f) = true;
            left &= !bit;
        }
    }
    (left == 0).then_some(f)
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(timespec(t)),
    }
}

/// The INIT negotiation: what daxfs asks of the kernel. A function of its own so that the
/// benchmark's in-memory reference (examples/memfs.rs) asks for exactly the same.
pub fn negotiate(config: &mut KernelConfig) {
    for f in [
        InitFlags::FUSE_ASYNC_READ,
        InitFlags::FUSE_BIG_WRITES,
        // Not FUSE_ATOMIC_O_TRUNC: with it the kernel sends O_TRUNC in OPEN and sets
        // the size to 0 before it checks for ETXTBSY, so opening a running program
        // with O_RDONLY|O_TRUNC cut its pages from under it (it crashed, and the open
        // then succeeded). Without it, O_TRUNC is a SETATTR after that check.
        InitFlags::FUSE_PARALLEL_DIROPS,
        InitFlags::FUSE_CACHE_SYMLINKS,
        InitFlags::FUSE_MAX_PAGES,
        InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        // DAX files are opened FOPEN_DIRECT_IO; mmap of them must keep working.
        InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        // File handles (open_by_handle_at, NFS export): node ids are inode numbers and
        // entries carry the inode's generation, so a handle outlives the kernel's caches
        // and a remount; the kernel decodes one it no longer caches with a LOOKUP of ".".
        InitFlags::FUSE_EXPORT_SUPPORT,
        // READDIRPLUS: a listing carries each entry's attributes, so `ls -l`, `find`,
        // `rm -rf` and `cp -a` of a tree make no LOOKUP per name; AUTO lets the kernel ask
        // for them only where they are used (the first batch of a listing, and later ones
        // of a directory whose entries were looked up), plain READDIR elsewhere.
        InitFlags::FUSE_DO_READDIRPLUS,
        InitFlags::FUSE_READDIRPLUS_AUTO,
        // Not FUSE_ALLOW_IDMAP: with it the kernel sends uid/gid -1 in every request but
        // creates (measured on 6.18, on the plain mount too), and daxfs decides on the
        // caller's uid (root-only ioctls, set-id killing, flag owners): docs/design.md.
    ] {
        let _ = config.add_capabilities(f);
    }
    let _ = config.set_max_write(1 << 20);
}

/// The core's `CacheInvalidator` over FUSE notify inval_inode and inval_entry (once the
/// session exists).
struct NotifyInval {
    notifier: Arc<OnceLock<Notifier>>,
    root: u64,
    /// Dentries to forget, for the thread that names them to the kernel (`forgetter`).
    forget: crossbeam_channel::Sender<(u64, Box<[u8]>)>,
}

/// Dentries queued for the kernel to forget, at most (more are dropped: the reclaimer
/// asks again in a later pass).
const FORGET_QUEUE_MAX: usize = 65536;
/// Dentries named per look at the mount table.
const FORGET_BATCH_MAX: usize = 4096;

impl NotifyInval {
    fn new(
        notifier: Arc<OnceLock<Notifier>>,
        root: u64,
        mount_dev: Arc<OnceLock<u64>>,
    ) -> NotifyInval {
        let (tx, rx) = crossbeam_channel::bounded::<(u64, Box<[u8]>)>(FORGET_QUEUE_MAX);
        let n = notifier.clone();
        // inval_entry waits for the parent directory's lock in the kernel, which a request
        // in flight may hold until we answer it; and at unmount for the superblock, which
        // umount holds until the daemon's DESTROY is answered. So the waiting is done by a
        // thread of its own that nobody joins (it ends when the queue's sender is dropped
        // with the session), never by the reclaimer, which unmount stops and waits for.
        let spawned = std::thread::Builder::new()
            .name("daxfs-forget".into())
            .spawn(move || {
                let mut refused = false;
                while let Ok(first) = rx.recv() {
                    let batch: Vec<_> = std::iter::once(first)
                        .chain(rx.try_iter().take(FORGET_BATCH_MAX))
                        .collect();
                    let (Some(n), Some(&dev)) = (n.get(), mount_dev.get()) else {
                        continue;
                    };
                    // The kernel detaches what is mounted on a dentry it is told to drop,
                    // and we cannot tell which of ours are mount points: with anything
                    // mounted on this filesystem, it is asked to forget nothing.
                    if crate::pmem::imagelock::has_submounts(&crate::pmem::imagelock::mounts(), dev)
                    {
                        if !refused {
                            log::info!(
                                "over the memory budget, but something is mounted on this \
                                 filesystem: not asking the kernel to forget dentries"
                            );
                            refused = true;
                        }
                        continue;
                    }
                    for (parent, name) in batch {
                        let parent = INodeNo(if parent == root { 1 } else { parent });
                        // ENOENT: the kernel had already dropped it.
                        let _ = n.inval_entry(parent, OsStr::from_bytes(&name));
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("no thread to ask the kernel to forget dentries: {e}");
        }
        NotifyInval {
            notifier,
            root,
            forget: tx,
        }
    }
}

impl CacheInvalidator for NotifyInval {
    fn invalidate(&self, ino: u64, off: u64, len: u64) {
        if let Some(n) = self.notifier.get() {
            // len <= 0 is "to the end of the file" for the kernel.
            let len = i64::try_from(len).unwrap_or(0);
            let ino = INodeNo(if ino == self.root { 1 } else { ino });
            let _ = n.inval_inode(ino, off.min(i64::MAX as u64) as i64, len);
        }
    }
    fn forget_entry(&self, parent: u64, name: &[u8]) {
        let _ = self.forget.try_send((parent, name.into()));
    }
}

impl fuser::Filesystem for DaxFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        negotiate(config);
        if self.fs.acls_supported() {
            // POSIX ACLs (fs/acl.rs): the kernel enforces them (it turns on default
            // permissions) and reads them through getxattr; it leaves the umask to us
            // (DONT_MASK), since a default ACL replaces it. Creates pass the umask in
            // either case: applying it twice changes nothing.
            let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
            let _ = config.add_capabilities(InitFlags::FUSE_DONT_MASK);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.fs.requests.lookups.fetch_add(1, Ordering::Relaxed);
        self.entry(self.fs.lookup(self.ino(parent), name.as_bytes()), reply)
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(self.ino(ino), nlookup)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.fs.requests.getattrs.fetch_add(1, Ordering::Relaxed);
        match self.fs.getattr(self.ino(ino)) {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(timespec),
            fh: fh.map(|f| f.0),
        };
        match self
            .fs
            .setattr(self.ino(ino), &set, &cred(req, mode.is_some()))
        {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(self.ino(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            self.fs.mknod_umask(
                self.ino(parent),
                name.as_bytes(),
                mode,
                umask,
                rdev,
                &cred(req, false),
            ),
            reply,
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            self.fs.mkdir_umask(
                self.ino(parent),
                name.as_bytes(),
                mode,
                umask,
                &cred(req, false),
            ),
            reply,
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.fs.unlink(self.ino(parent), name.as_bytes()), reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.fs.rmdir(self.ino(parent), name.as_bytes()), reply)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let t = target.as_os_str().as_bytes();
        self.entry(
            self.fs
                .symlink(self.ino(parent), link_name.as_bytes(), t, &cred(req, false)),
            reply,
        )
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let bits = flags.bits();
        if bits & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) != 0 {
            return reply.error(Errno::EINVAL);
        }
        let f = RenameFlags {
            noreplace: bits & libc::RENAME_NOREPLACE != 0,
            exchange: bits & libc::RENAME_EXCHANGE != 0,
            whiteout: bits & libc::RENAME_WHITEOUT != 0,
        };
        let r = self.fs.rename_as(
            self.ino(parent),
            name.as_bytes(),
            self.ino(newparent),
            newname.as_bytes(),
            f,
            &cred(req, false),
        );
        empty(r, reply)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(
            self.fs
                .link(self.ino(ino), self.ino(newparent), newname.as_bytes()),
            reply,
        )
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let ino = self.ino(ino);
        let mut killed = false;
        let r = self.fs.open(ino, flags.0).and_then(|fh| {
            // handle_killpriv_v2: an unprivileged O_TRUNC kills set-id bits here (the
            // kernel sends O_TRUNC in OPEN only with atomic O_TRUNC, which daxfs does not
            // ask for; otherwise it comes as a SETATTR).
            if flags.0 & libc::O_TRUNC != 0 && req.uid() != 0 {
                killed = self.fs.kill_suid(ino)?;
            }
            Ok(fh)
        });
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), self.fopen_flags(ino, flags.0)),
            Err(e) => reply.error(errno(&e)),
        }
        if killed {
            self.attrs_changed(ino);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut reply = Some(reply);
        let r = self.fs.read(self.ino(ino), offset, size, |bytes| {
            reply.take().unwrap().data(bytes)
        });
        if let (Err(e), Some(reply)) = (r, reply) {
            reply.error(errno(&e));
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ino = self.ino(ino);
        // O_APPEND: the core writes at its EOF (the kernel's offset is its cached size),
        // and an append-only file takes only such writes.
        // A page-cache writeback (FUSE_WRITE_CACHE: mmap stores) is never an append.
        let append =
            flags.0 & libc::O_APPEND != 0 && !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        // O_SYNC/O_DSYNC: durable before the reply, as an fsync/fdatasync after it (the
        // kernel may send that fsync too; the second finds nothing left to force).
        let sync = flags.0 & (libc::O_SYNC | libc::O_DSYNC);
        let r = self.fs.write(ino, offset, data, append).and_then(|n| {
            if sync != 0 {
                self.fs.fsync(ino, sync & libc::O_SYNC != libc::O_SYNC)?;
            }
            Ok(n)
        });
        match r {
            Ok(n) => {
                let killed = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
                    && self.fs.kill_suid(ino).unwrap_or(false);
                reply.written(n);
                if killed {
                    self.attrs_changed(ino);
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(self.ino(ino), fh.0);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(self.fs.fsync(self.ino(ino), datasync), reply)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(self.ino(ino), flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.fs.requests.readdirs.fetch_add(1, Ordering::Relaxed);
        let r = self.fs.readdir(self.ino(ino), offset, &mut |e| {
            reply.add(
                self.fuse_ino(e.ino),
                e.next,
                file_type(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let c = &self.fs.requests;
        c.readdirplus.fetch_add(1, Ordering::Relaxed);
        let r = self.fs.readdirplus(self.ino(ino), offset, &mut |e, a| {
            let full = reply.add(
                self.fuse_ino(e.ino),
                e.next,
                OsStr::from_bytes(&e.name),
                &TTL,
                &self.attr(a),
                Generation(a.generation.into()),
            );
            if !full {
                c.readdirplus_entries.fetch_add(1, Ordering::Relaxed);
            }
            full
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.release(self.ino(ino), fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(self.fs.fsync(self.ino(ino), datasync), reply)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if self.shut() {
            return reply.error(Errno::EIO);
        }
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        )
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let f = XattrFlags {
            create: flags & libc::XATTR_CREATE != 0,
            replace: flags & libc::XATTR_REPLACE != 0,
        };
        empty(
            self.fs.setxattr(self.ino(ino), name.as_bytes(), value, f),
            reply,
        )
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr_reply(
            self.fs.getxattr(self.ino(ino), name.as_bytes()),
            size,
            reply,
        )
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(self.fs.listxattr(self.ino(ino)), size, reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.fs.removexattr(self.ino(ino), name.as_bytes()), reply)
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks permissions; only existence is ours.
        empty(self.fs.getattr(self.ino(ino)).map(|_| ()), reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let a = match self.fs.mknod_umask(
            self.ino(parent),
            name.as_bytes(),
            mode,
            umask,
            0,
            &cred(req, false),
        ) {
            Ok(a) => a,
            Err(e) => return reply.error(errno(&e)),
        };
        match self.fs.open(a.ino, flags) {
            Ok(fh) => reply.created(
                &TTL,
                &self.attr(&a),
                Generation(a.generation.into()),
                FileHandle(fh),
                self.fopen_flags(a.ino, flags),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        if self.shut() {
            return reply.error(Errno::EIO);
        }
        let ino = self.ino(ino);
        match cmd {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS => {
                if (out_size as usize) < 4 {
                    return reply.error(Errno::EINVAL);
                }
                match self.fs.getattr(ino) {
                    Ok(a) => reply.ioctl(0, &flags_to_bits(a.flags, &FS_FL_BITS).to_le_bytes()),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => {
                let Some(v) = in_data.get(..4) else {
                    return reply.error(Errno::EINVAL);
                };
                let v = u32::from_le_bytes(v.try_into().unwrap());
                let Some(flags) = bits_to_flags(v, &FS_FL_BITS) else {
                    return reply.error(Errno::EOPNOTSUPP);
                };
                match self.fs.set_flags(ino, flags, &flags_cred(req)) {
                    Ok(()) => reply.ioctl(0, &[]),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            FS_IOC_FSGETXATTR => {
                if (out_size as usize) < FSXATTR_SIZE {
                    return reply.error(Errno::EINVAL);
                }
                match self.fs.getattr(ino) {
                    Ok(a) => {
                        let mut out = [0u8; FSXATTR_SIZE];
                        let flags = flags_to_bits(a.flags, &FS_XFLAG_BITS);
                        out[..4].copy_from_slice(&flags.to_le_bytes());
                        reply.ioctl(0, &out)
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            }
            FS_IOC_FSSETXATTR => {
                if in_data.len() < FSXATTR_SIZE {
                    return reply.error(Errno::EINVAL);
                }
                let word =
                    |i: usize| u32::from_le_bytes(in_data[4 * i..4 * i + 4].try_into().unwrap());
                // fsx_extsize, fsx_projid, fsx_cowextsize: daxfs has no extent size hints
                // or project ids; a request to set one is refused, not dropped.
                let Some(flags) = bits_to_flags(word(0), &FS_XFLAG_BITS)
                    .filter(|_| word(1) == 0 && word(3) == 0 && word(4) == 0)
                else {
                    return reply.error(Errno::EOPNOTSUPP);
                };
                match self.fs.set_flags(ino, flags, &flags_cred(req)) {
                    Ok(()) => reply.ioctl(0, &[]),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            FS_IOC_GETFSLABEL => {
                if (out_size as usize) < FSLABEL_MAX {
                    return reply.error(Errno::EINVAL);
                }
                let mut out = [0u8; FSLABEL_MAX];
                let label = self.fs.label();
                out[..label.len()].copy_from_slice(&label);
                reply.ioctl(0, &out)
            }
            // The label is written by mkfs only: the superblock is never rewritten on a live
            // filesystem (format/sb.rs; docs/design.md says why).
            FS_IOC_SETFSLABEL => reply.error(Errno::EOPNOTSUPP),
            FITRIM => {
                if in_data.len() < FSTRIM_RANGE_SIZE || (out_size as usize) < FSTRIM_RANGE_SIZE {
                    return reply.error(Errno::EINVAL);
                }
                // As for any filesystem, only the administrator may trim.
                if req.uid() != 0 {
                    return reply.error(Errno::EPERM);
                }
                let word =
                    |i: usize| u64::from_le_bytes(in_data[8 * i..8 * i + 8].try_into().unwrap());
                let (start, len, minlen) = (word(0), word(1), word(2));
                match self.fs.trim(start, len, minlen) {
                    Ok(trimmed) => {
                        // The kernel's convention: range.len comes back as the bytes trimmed.
                        let mut out = [0u8; FSTRIM_RANGE_SIZE];
                        out[..8].copy_from_slice(&start.to_le_bytes());
                        out[8..16].copy_from_slice(&trimmed.to_le_bytes());
                        out[16..].copy_from_slice(&minlen.to_le_bytes());
                        reply.ioctl(0, &out)
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            }
            FS_IOC_SHUTDOWN => {
                // Root only, as in XFS, ext4 and f2fs (CAP_SYS_ADMIN).
                if req.uid() != 0 {
                    return reply.error(Errno::EPERM);
                }
                let Some(mode) =
                    caller_shutdown_flags(req.pid()).and_then(ShutdownMode::from_flags)
                else {
                    return reply.error(Errno::EINVAL);
                };
                log::warn!("shutdown requested by pid {} ({})", req.pid(), mode.name());
                match self.fs.shutdown(mode) {
                    Ok(()) => reply.ioctl(0, &[]),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            _ => reply.error(Errno::from_i32(libc::ENOTTY)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let ino = self.ino(ino);
        match self
            .fs
            .fallocate_as(ino, offset, length, mode, &cred(req, false))
        {
            Ok(killed) => {
                reply.ok();
                if killed {
                    self.attrs_changed(ino);
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        if offset < 0 {
            return reply.error(Errno::from_i32(libc::ENXIO));
        }
        match self.fs.lseek(self.ino(ino), offset as u64, whence) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let len = len.min(u32::MAX as u64 & !0xfff);
        match self.fs.copy_file_range(
            self.ino(ino_in),
            offset_in,
            self.ino(ino_out),
            offset_out,
            len,
        ) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn xattr_reply(r: crate::error::Result<Vec<u8>>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_from_proc_status() {
        let s = "Name:\tbash\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 \nNgid:\t0\n";
        assert_eq!(parse_groups(s), vec![4, 24, 27]);
        assert_eq!(parse_groups("Name: x\n"), Vec::<u32>::new());
    }

    #[test]
    fn cap_eff_from_proc_status() {
        let s = "Name:\tx\nCapInh:\t0\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn ioctl_flag_bits_map_both_ways_and_refuse_unknown_bits() {
        let all = InodeFlags {
            immutable: true,
            append: true,
            sync: true,
            noatime: true,
            nodump: true,
            dax: true,
        };
        assert_eq!(flags_to_bits(all, &FS_FL_BITS), 0x0200_00f8);
        assert_eq!(flags_to_bits(all, &FS_XFLAG_BITS), 0x80f8);
        for bits in [&FS_FL_BITS, &FS_XFLAG_BITS] {
            assert_eq!(bits_to_flags(flags_to_bits(all, bits), bits), Some(all));
            let one = InodeFlags {
                immutable: true,
                ..Default::default()
            };
            assert_eq!(bits_to_flags(flags_to_bits(one, bits), bits), Some(one));
        }
        // FS_EXTENT_FL (0x80000) and FS_XFLAG_REALTIME (0x1): not stored, refused.
        assert_eq!(bits_to_flags(0x0008_0000, &FS_FL_BITS), None);
        assert_eq!(bits_to_flags(0x1, &FS_XFLAG_BITS), None);
    }

    #[test]
    fn times_roundtrip() {
        for t in [
            Timespec { sec: 5, nsec: 7 },
            Timespec { sec: -5, nsec: 7 },
            Timespec { sec: -1, nsec: 0 },
        ] {
            assert_eq!(timespec(system_time(t)), t);
        }
    }
}
