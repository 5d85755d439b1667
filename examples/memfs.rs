//! memfs: the benchmark's FUSE ceiling. A minimal in-memory filesystem on the same fuser
//! version and the same session setup as daxfs: the configuration comes from daxfs's own
//! `MountOpts::fuser_config` (threads, cloned fds, mount options, ACL), the INIT
//! negotiation from `fuse::negotiate`, the entry/attribute timeouts and open flags from
//! `fuse::TTL` / `fuse::FILE_OPEN_FLAGS`. Whatever daxfs costs beyond memfs is daxfs's own
//! work; whatever memfs costs beyond tmpfs is FUSE's.
//!
//! It does as little as a filesystem can: file data in a `Vec<u8>` per inode (behind its own
//! lock, so two fio jobs on two files do not serialize), directories as maps, nothing
//! persistent. Enough for fio and the metadata workloads of `scripts/bench.sh`.
//!
//! Usage: `cargo run --release --example memfs -- MOUNTPOINT`. Serves in the foreground
//! until unmounted (umount, or SIGTERM/SIGINT/SIGHUP, which unmount).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use daxfs::fuse::{FILE_OPEN_FLAGS, TTL};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const BLKSIZE: u32 = 4096;
const ROOT: u64 = 1;

/// A directory: entries by name, and by cookie for readdir (stable across inserts and
/// removals, found in O(log n)).
#[derive(Default)]
struct Dir {
    by_name: HashMap<OsString, (u64, u64)>, // name -> (ino, cookie)
    by_cookie: BTreeMap<u64, (OsString, u64)>,
    next_cookie: u64,
    parent: u64,
}

enum Body {
    File(Arc<RwLock<Vec<u8>>>),
    Dir(Dir),
    Symlink(Vec<u8>),
    Other,
}

struct Node {
    attr: FileAttr,
    body: Body,
    nlookup: u64,
    open: u64,
}

struct Table {
    nodes: HashMap<u64, Node>,
}

struct MemFs {
    table: Mutex<Table>,
    next_ino: AtomicU64,
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn new_attr(ino: u64, kind: FileType, perm: u16, uid: u32, gid: u32, rdev: u32) -> FileAttr {
    let t = now();
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

impl MemFs {
    fn new() -> MemFs {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                attr: new_attr(ROOT, FileType::Directory, 0o755, uid, gid, 0),
                body: Body::Dir(Dir {
                    parent: ROOT,
                    next_cookie: 3,
                    ..Dir::default()
                }),
                nlookup: 1,
                open: 0,
            },
        );
        MemFs {
            table: Mutex::new(Table { nodes }),
            next_ino: AtomicU64::new(2),
        }
    }

    /// The table lock. A panic elsewhere cannot leave the table half-changed in a way
    /// that matters to a benchmark, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make a node named `name` in `parent`.
    fn make(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        body: Body,
    ) -> Result<FileAttr, Errno> {
        let mut t = self.lock();
        let kind = kind_of(mode);
        let Some(p) = t.nodes.get_mut(&parent) else {
            return Err(Errno::ENOENT);
        };
        let Body::Dir(d) = &mut p.body else {
            return Err(Errno::ENOTDIR);
        };
        if d.by_name.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        let cookie = d.next_cookie;
        d.next_cookie += 1;
        d.by_name.insert(name.to_owned(), (ino, cookie));
        d.by_cookie.insert(cookie, (name.to_owned(), ino));
        let tm = now();
        p.attr.mtime = tm;
        p.attr.ctime = tm;
        p.attr.size += 1;
        if kind == FileType::Directory {
            p.attr.nlink += 1;
        }
        let mut attr = new_attr(
            ino,
            kind,
            (mode & 0o7777) as u16,
            req.uid(),
            req.gid(),
            rdev,
        );
        let body = match body {
            Body::Dir(mut d) => {
                d.parent = parent;
                d.next_cookie = 3;
                Body::Dir(d)
            }
            Body::Symlink(s) => {
                attr.size = s.len() as u64;
                Body::Symlink(s)
            }
            b => b,
        };
        t.nodes.insert(
            ino,
            Node {
                attr,
                body,
                nlookup: 1,
                open: 0,
            },
        );
        Ok(attr)
    }

    /// Drop `ino` if nothing refers to it any more.
    fn maybe_drop(t: &mut Table, ino: u64) {
        if let Some(n) = t.nodes.get(&ino)
            && ino != ROOT
            && n.nlookup == 0
            && n.open == 0
            && (n.attr.nlink == 0 || matches!(n.body, Body::Dir(_)) && n.attr.nlink <= 1)
        {
            t.nodes.remove(&ino);
        }
    }

    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut t = self.lock();
        let ino = match t.nodes.get(&parent).map(|n| &n.body) {
            Some(Body::Dir(d)) => d.by_name.get(name).ok_or(Errno::ENOENT)?.0,
            Some(_) => return Err(Errno::ENOTDIR),
            None => return Err(Errno::ENOENT),
        };
        match (t.nodes.get(&ino).map(|n| &n.body), dir) {
            (Some(Body::Dir(d)), true) if !d.by_name.is_empty() => return Err(Errno::ENOTEMPTY),
            (Some(Body::Dir(_)), true) => {}
            (Some(Body::Dir(_)), false) => return Err(Errno::EISDIR),
            (Some(_), true) => return Err(Errno::ENOTDIR),
            (Some(_), false) => {}
            (None, _) => return Err(Errno::ENOENT),
        }
        let tm = now();
        if let Some(p) = t.nodes.get_mut(&parent)
            && let Body::Dir(d) = &mut p.body
        {
            if let Some((_, cookie)) = d.by_name.remove(name) {
                d.by_cookie.remove(&cookie);
            }
            p.attr.size = p.attr.size.saturating_sub(1);
            p.attr.mtime = tm;
            p.attr.ctime = tm;
            if dir {
                p.attr.nlink -= 1;
            }
        }
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.attr.nlink = if dir { 0 } else { n.attr.nlink - 1 };
            n.attr.ctime = tm;
        }
        Self::maybe_drop(&mut t, ino);
        Ok(())
    }

    fn file_data(&self, ino: u64) -> Result<Arc<RwLock<Vec<u8>>>, Errno> {
        match self.lock().nodes.get(&ino).map(|n| &n.body) {
            Some(Body::File(d)) => Ok(d.clone()),
            Some(Body::Dir(_)) => Err(Errno::EISDIR),
            Some(_) => Err(Errno::EINVAL),
            None => Err(Errno::ENOENT),
        }
    }

    fn readdir_common(
        &self,
        ino: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(u64, u64, FileType, &OsStr, Option<&FileAttr>) -> bool,
    ) -> Result<(), Errno> {
        let mut t = self.lock();
        let (parent, list): (u64, Vec<(u64, OsString, u64)>) = match t.nodes.get(&ino) {
            Some(Node {
                body: Body::Dir(d), ..
            }) => {
                // A reply holds at most a few hundred entries; take a bounded slice.
                let list = d
                    .by_cookie
                    .range((offset + 1).max(3)..)
                    .take(1024)
                    .map(|(c, (n, i))| (*c, n.clone(), *i))
                    .collect();
                (d.parent, list)
            }
            Some(_) => return Err(Errno::ENOTDIR),
            None => return Err(Errno::ENOENT),
        };
        let dots = [(1u64, OsStr::new("."), ino), (2, OsStr::new(".."), parent)];
        for (cookie, name, i) in dots {
            if offset < cookie {
                let a = t.nodes.get(&i).map(|n| n.attr);
                if add(i, cookie, FileType::Directory, name, a.as_ref()) {
                    return Ok(());
                }
            }
        }
        for (cookie, name, i) in list {
            let Some(n) = t.nodes.get_mut(&i) else {
                continue;
            };
            let a = n.attr;
            if add(i, cookie, a.kind, &name, Some(&a)) {
                return Ok(());
            }
            // readdirplus hands the kernel a reference, as lookup does (readdir none).
            if plus {
                n.nlookup += 1;
            }
        }
        Ok(())
    }
}

impl fuser::Filesystem for MemFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        daxfs::fuse::negotiate(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut t = self.lock();
        let ino = match t.nodes.get(&parent.0).map(|n| &n.body) {
            Some(Body::Dir(d)) => match name.as_bytes() {
                b"." => parent.0,
                b".." => d.parent,
                _ => match d.by_name.get(name) {
                    Some(&(i, _)) => i,
                    None => return reply.error(Errno::ENOENT),
                },
            },
            Some(_) => return reply.error(Errno::ENOTDIR),
            None => return reply.error(Errno::ENOENT),
        };
        match t.nodes.get_mut(&ino) {
            Some(n) => {
                n.nlookup += 1;
                reply.entry(&TTL, &n.attr, Generation(0))
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut t = self.lock();
        if let Some(n) = t.nodes.get_mut(&ino.0) {
            n.nlookup = n.nlookup.saturating_sub(nlookup);
        }
        Self::maybe_drop(&mut t, ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().nodes.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &n.attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut t = self.lock();
        let Some(n) = t.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let tm = now();
        if let Some(m) = mode {
            n.attr.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            n.attr.uid = u;
        }
        if let Some(g) = gid {
            n.attr.gid = g;
        }
        if let Some(s) = size {
            let Body::File(d) = &n.body else {
                return reply.error(Errno::EISDIR);
            };
            let mut d = d.write().unwrap_or_else(|e| e.into_inner());
            d.resize(s as usize, 0);
            n.attr.size = s;
            n.attr.blocks = s.div_ceil(512);
            n.attr.mtime = tm;
        }
        let when = |t: TimeOrNow| match t {
            TimeOrNow::Now => tm,
            TimeOrNow::SpecificTime(s) => s,
        };
        if let Some(a) = atime {
            n.attr.atime = when(a);
        }
        if let Some(m) = mtime {
            n.attr.mtime = when(m);
        }
        n.attr.ctime = ctime.unwrap_or(tm);
        reply.attr(&TTL, &n.attr)
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.lock().nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::Symlink(s)) => reply.data(s),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let body = if kind_of(mode) == FileType::RegularFile {
            Body::File(Arc::default())
        } else {
            Body::Other
        };
        match self.make(req, parent.0, name, mode, rdev, body) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mode = (mode & 0o7777) | libc::S_IFDIR;
        match self.make(req, parent.0, name, mode, 0, Body::Dir(Dir::default())) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let body = Body::Symlink(target.as_os_str().as_bytes().to_vec());
        match self.make(req, parent.0, link_name, libc::S_IFLNK | 0o777, 0, body) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let bits = flags.bits();
        if bits & libc::RENAME_EXCHANGE != 0 || bits & libc::RENAME_WHITEOUT != 0 {
            return reply.error(Errno::EINVAL);
        }
        let ino = match self.lock().nodes.get(&parent.0).map(|n| &n.body) {
            Some(Body::Dir(d)) => match d.by_name.get(name) {
                Some(&(i, _)) => i,
                None => return reply.error(Errno::ENOENT),
            },
            _ => return reply.error(Errno::ENOTDIR),
        };
        // Replace the target first (the remove checks directory-ness and emptiness).
        let target = match self.lock().nodes.get(&newparent.0).map(|n| &n.body) {
            Some(Body::Dir(d)) => d.by_name.get(newname).map(|&(i, _)| i),
            _ => return reply.error(Errno::ENOTDIR),
        };
        if let Some(old) = target {
            if old == ino {
                return reply.ok();
            }
            if bits & libc::RENAME_NOREPLACE != 0 {
                return reply.error(Errno::EEXIST);
            }
            let is_dir = matches!(
                self.lock().nodes.get(&old).map(|n| &n.body),
                Some(Body::Dir(_))
            );
            if let Err(e) = self.remove(newparent.0, newname, is_dir) {
                return reply.error(e);
            }
        }
        let mut t = self.lock();
        let tm = now();
        let is_dir = matches!(t.nodes.get(&ino).map(|n| &n.body), Some(Body::Dir(_)));
        if let Some(p) = t.nodes.get_mut(&parent.0)
            && let Body::Dir(d) = &mut p.body
        {
            if let Some((_, c)) = d.by_name.remove(name) {
                d.by_cookie.remove(&c);
            }
            p.attr.size = p.attr.size.saturating_sub(1);
            p.attr.mtime = tm;
            p.attr.ctime = tm;
            if is_dir {
                p.attr.nlink -= 1;
            }
        }
        if let Some(p) = t.nodes.get_mut(&newparent.0)
            && let Body::Dir(d) = &mut p.body
        {
            let c = d.next_cookie;
            d.next_cookie += 1;
            d.by_name.insert(newname.to_owned(), (ino, c));
            d.by_cookie.insert(c, (newname.to_owned(), ino));
            p.attr.size += 1;
            p.attr.mtime = tm;
            p.attr.ctime = tm;
            if is_dir {
                p.attr.nlink += 1;
            }
        }
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.attr.ctime = tm;
            if let Body::Dir(d) = &mut n.body {
                d.parent = newparent.0;
            }
        }
        reply.ok()
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut t = self.lock();
        match t.nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::Dir(_)) => return reply.error(Errno::EPERM),
            Some(_) => {}
            None => return reply.error(Errno::ENOENT),
        }
        let tm = now();
        let Some(p) = t.nodes.get_mut(&newparent.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Body::Dir(d) = &mut p.body else {
            return reply.error(Errno::ENOTDIR);
        };
        if d.by_name.contains_key(newname) {
            return reply.error(Errno::EEXIST);
        }
        let c = d.next_cookie;
        d.next_cookie += 1;
        d.by_name.insert(newname.to_owned(), (ino.0, c));
        d.by_cookie.insert(c, (newname.to_owned(), ino.0));
        p.attr.size += 1;
        p.attr.mtime = tm;
        p.attr.ctime = tm;
        let n = t.nodes.get_mut(&ino.0).expect("checked above");
        n.attr.nlink += 1;
        n.attr.ctime = tm;
        n.nlookup += 1;
        reply.entry(&TTL, &n.attr, Generation(0))
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut t = self.lock();
        match t.nodes.get_mut(&ino.0) {
            Some(n) => {
                n.open += 1;
                let flags = if matches!(n.body, Body::File(_)) {
                    FILE_OPEN_FLAGS
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(0), flags)
            }
            None => reply.error(Errno::ENOENT),
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
        let data = match self.file_data(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let d = data.read().unwrap_or_else(|e| e.into_inner());
        let start = (offset as usize).min(d.len());
        let end = start.saturating_add(size as usize).min(d.len());
        reply.data(&d[start..end])
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let file = match self.file_data(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let end = offset as usize + data.len();
        let size = {
            let mut d = file.write().unwrap_or_else(|e| e.into_inner());
            if d.len() < end {
                d.resize(end, 0);
            }
            d[offset as usize..end].copy_from_slice(data);
            d.len() as u64
        };
        let mut t = self.lock();
        if let Some(n) = t.nodes.get_mut(&ino.0) {
            let tm = now();
            n.attr.size = n.attr.size.max(size);
            n.attr.blocks = n.attr.size.div_ceil(512);
            n.attr.mtime = tm;
            n.attr.ctime = tm;
        }
        reply.written(data.len() as u32)
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut t = self.lock();
        if let Some(n) = t.nodes.get_mut(&ino.0) {
            n.open = n.open.saturating_sub(1);
        }
        Self::maybe_drop(&mut t, ino.0);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.open(req, ino, flags, reply)
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Plain readdir hands out no references: undo the count readdir_common adds.
        let mut added = Vec::new();
        let r = self.readdir_common(ino.0, offset, false, &mut |i, c, k, n, _| {
            let full = reply.add(INodeNo(i), c, k, n);
            if !full {
                added.push(i);
            }
            full
        });
        let mut t = self.lock();
        for i in added {
            if let Some(n) = t.nodes.get_mut(&i) {
                n.nlookup = n.nlookup.saturating_sub(1);
            }
        }
        drop(t);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
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
        let r = self.readdir_common(ino.0, offset, true, &mut |i, c, _k, n, a| match a {
            Some(a) => reply.add(INodeNo(i), c, n, &TTL, a, Generation(0)),
            None => false,
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.release(req, ino, fh, flags, None, false, reply)
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.lock().nodes.len() as u64;
        let blocks = 1u64 << 20; // 4 GiB, as the benchmark's daxfs and tmpfs
        reply.statfs(
            blocks,
            blocks,
            blocks,
            files + (1 << 20),
            1 << 20,
            BLKSIZE,
            255,
            BLKSIZE,
        )
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if self.lock().nodes.contains_key(&ino.0) {
            reply.ok()
        } else {
            reply.error(Errno::ENOENT)
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mode = (mode & 0o7777) | libc::S_IFREG;
        match self.make(req, parent.0, name, mode, 0, Body::File(Arc::default())) {
            Ok(a) => {
                if let Some(n) = self.lock().nodes.get_mut(&a.ino.0) {
                    n.open += 1;
                }
                reply.created(&TTL, &a, Generation(0), FileHandle(0), FILE_OPEN_FLAGS)
            }
            Err(e) => reply.error(e),
        }
    }
}

/// SIGTERM/SIGINT/SIGHUP unmount, which ends the session loop (as daxfs's daemon does).
fn spawn_signal_thread(mut unmounter: fuser::SessionUnmounter) -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    // Blocked here before the session's threads start, so they inherit the mask.
    set.thread_block().map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("memfs-signals".into())
        .spawn(move || {
            // EINVAL: no longer mounted (umount(8) got there first), nothing to say.
            if set.wait().is_ok()
                && let Err(e) = unmounter.unmount()
                && e.raw_os_error() != Some(libc::EINVAL)
            {
                eprintln!("memfs: unmount failed: {e}");
            }
        })?;
    Ok(())
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let [mountpoint] = &args[..] else {
        eprintln!("usage: memfs MOUNTPOINT");
        std::process::exit(2);
    };
    let mountpoint = std::path::PathBuf::from(mountpoint);
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // daxfs's defaults, shown as fuse.memfs with source "memfs".
    let opts = daxfs::mount::MountOpts {
        subtype: Some("memfs".into()),
        ..Default::default()
    };
    let config = opts.fuser_config("memfs", root);
    let mut session = match fuser::Session::new(MemFs::new(), &mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("memfs: cannot mount {}: {e}", mountpoint.display());
            std::process::exit(1);
        }
    };
    if let Err(e) = spawn_signal_thread(session.unmount_callable()) {
        eprintln!("memfs: signal thread: {e}");
        std::process::exit(1);
    }
    if let Err(e) = session.run() {
        eprintln!("memfs: session ended: {e}");
        std::process::exit(1);
    }
}
