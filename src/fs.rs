//! The filesystem operations, as POSIX names them, knowing nothing of FUSE (fuse.rs adapts).
//! API SKETCH: bodies are being written; signatures are what fuse.rs codes against.

use crate::error::Result;

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

/// The mounted filesystem. All methods take `&self`: locking is per inode inside.
pub struct Fs {}

#[allow(unused_variables)]
impl Fs {
    /// Mount the filesystem on `dev`: verify the superblock, replay the log, free inodes
    /// left unlinked by a crash.
    pub fn mount(dev: std::sync::Arc<crate::device::Device>, opts: &FsOptions) -> Result<std::sync::Arc<Fs>> {
        unimplemented!()
    }
    /// Where the daemon tells the user how durability works on this device.
    pub fn persistence(&self) -> crate::device::Persistence {
        unimplemented!()
    }
    pub fn root_ino(&self) -> Ino {
        unimplemented!()
    }
    /// Look up `name` in `parent`; takes one lookup reference on the result (FUSE nlookup).
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        unimplemented!()
    }
    /// Drop `nlookup` lookup references (FUSE forget).
    pub fn forget(&self, ino: Ino, nlookup: u64) {
        unimplemented!()
    }
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        unimplemented!()
    }
    pub fn setattr(&self, ino: Ino, set: &SetAttr, cred: &Cred) -> Result<Attr> {
        unimplemented!()
    }
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        unimplemented!()
    }
    /// Regular files, fifos, sockets and device nodes. `mode` includes the type bits and is
    /// already masked by the umask. Takes a lookup reference on the result.
    pub fn mknod(&self, parent: Ino, name: &[u8], mode: u32, rdev: u32, cred: &Cred) -> Result<Attr> {
        unimplemented!()
    }
    pub fn mkdir(&self, parent: Ino, name: &[u8], mode: u32, cred: &Cred) -> Result<Attr> {
        unimplemented!()
    }
    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], cred: &Cred) -> Result<Attr> {
        unimplemented!()
    }
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        unimplemented!()
    }
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        unimplemented!()
    }
    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        unimplemented!()
    }
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        unimplemented!()
    }
    /// Open a file or directory: holds the inode until `release` (unlinked files live on).
    /// Returns a file handle.
    pub fn open(&self, ino: Ino, flags: i32) -> Result<u64> {
        unimplemented!()
    }
    pub fn release(&self, ino: Ino, fh: u64) {
        unimplemented!()
    }
    /// Read up to `size` bytes at `off`; `reply` gets the bytes (a slice of the device when
    /// the range is one extent, else a gathered buffer). Short at EOF.
    pub fn read<R>(&self, ino: Ino, off: u64, size: u32, reply: impl FnOnce(&[u8]) -> R) -> Result<R> {
        unimplemented!()
    }
    /// Write `data` at `off` (at EOF when `append`); returns bytes written.
    pub fn write(&self, ino: Ino, off: u64, data: &[u8], append: bool) -> Result<u32> {
        unimplemented!()
    }
    /// Clear setuid/setgid after a write by a non-owner (the kernel asks via FUSE flags).
    pub fn kill_suid(&self, ino: Ino) -> Result<()> {
        unimplemented!()
    }
    pub fn fsync(&self, ino: Ino, datasync: bool) -> Result<()> {
        unimplemented!()
    }
    /// List `ino` from `cookie` (0 = start). `add` returns true when the reply buffer is
    /// full; the entry it refused is given again at the next call.
    pub fn readdir(&self, ino: Ino, cookie: u64, add: &mut dyn FnMut(&DirEntry) -> bool) -> Result<()> {
        unimplemented!()
    }
    pub fn statfs(&self) -> StatFs {
        unimplemented!()
    }
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        unimplemented!()
    }
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        unimplemented!()
    }
    /// Names, each NUL-terminated, as listxattr(2) returns them.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        unimplemented!()
    }
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        unimplemented!()
    }
    /// fallocate(2): `mode` is the FALLOC_FL_* bits.
    pub fn fallocate(&self, ino: Ino, off: u64, len: u64, mode: i32) -> Result<()> {
        unimplemented!()
    }
    /// SEEK_DATA / SEEK_HOLE (other whence values are the kernel's).
    pub fn lseek(&self, ino: Ino, off: u64, whence: i32) -> Result<u64> {
        unimplemented!()
    }
    pub fn copy_file_range(&self, ino_in: Ino, off_in: u64, ino_out: Ino, off_out: u64, len: u64) -> Result<u64> {
        unimplemented!()
    }
    /// FS_IOC_FSGETXATTR's flags and FS_IOC_FSSETXATTR's DAX flag.
    pub fn set_dax_flag(&self, ino: Ino, dax: bool) -> Result<()> {
        unimplemented!()
    }
    /// Make everything durable (sync(2), syncfs).
    pub fn sync(&self) -> Result<()> {
        unimplemented!()
    }
    /// Switch between read-only and read-write (remount). Read-only refuses changes: EROFS.
    pub fn set_read_only(&self, ro: bool) -> Result<()> {
        unimplemented!()
    }
    /// Commit everything and mark the image clean. Called once, at unmount.
    pub fn unmount(&self) -> Result<()> {
        unimplemented!()
    }
}
