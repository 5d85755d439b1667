//! Who else holds an image: the one-writer rule, and finding the live mount of an image.
//!
//! Why two locks. An image has one writer: a read-write open takes an exclusive flock on
//! it, a read-only open (check, info, `-o ro`) a shared one, held by the descriptor for as
//! long as the device is mapped. A daemon keeps its flock until its unmount has committed,
//! some milliseconds after umount(8) returned, so a busy flock alone cannot tell a daemon
//! that is serving (refuse at once, name the mount point) from one that is exiting (wait
//! for it: a kernel filesystem can be mounted again the moment umount returns).
//!
//! So a serving daemon also holds an OFD byte-range lock on the image (on Linux, fcntl
//! locks and flock locks are independent) at `SERVE_BASE + st_dev of its FUSE mount`,
//! taken once the mount is live and dropped when its FUSE session ends, before the final
//! commit. A prober asks F_OFD_GETLK which serving lock is there and so learns the mount's
//! device number, and /proc/self/mountinfo gives its mount point. The byte range is far
//! past any image's end and only ever locked, never read or written.
//!
//! What a prober concludes when the flock is busy:
//! - a serving lock whose mount is in our mountinfo: `Mounted` at that mount point, at
//!   once (the caller refuses, or `daxfs mount` bind-mounts that mount);
//! - a serving lock whose device number is 0: a serving daemon whose mount point it could
//!   not find itself: `Mounted`, mount point unknown, at once;
//! - anything else (a daemon starting up or exiting, `daxfs check` holding the image, a
//!   mount gone lazily or in another mount namespace): wait, bounded by `WAIT`, saying so
//!   after a second, and give up with a message that says what was waited for.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Start of the serving locks' byte range (1 TiB; a lock needs no data there).
const SERVE_BASE: i64 = 1 << 40;
/// Device numbers are 32 bits (12 major, 20 minor in the kernel's encoding).
const SERVE_SPAN: i64 = 1 << 32;
/// How long an open waits for a daemon that is starting up or finishing its unmount.
pub const WAIT: Duration = Duration::from_secs(20);

/// Why an image could not be locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// A live daxfs mount serves the image (`mountpoint` None: it could not be found).
    Mounted {
        mountpoint: Option<PathBuf>,
        /// The serving daemon opened the image read-write.
        writable: bool,
    },
    /// Still held after waiting `WAIT`: the holder is not a live mount we can see.
    Timeout,
    /// flock itself failed (not EWOULDBLOCK).
    Error(String),
}

impl Busy {
    /// The message for a user, naming `source` once.
    pub fn describe(&self, source: &str) -> String {
        match self {
            Busy::Mounted {
                mountpoint: Some(m),
                writable,
            } => format!(
                "{source} is mounted {} on {} (unmount it first, or use that mount)",
                if *writable { "read-write" } else { "read-only" },
                m.display()
            ),
            Busy::Mounted {
                mountpoint: None, ..
            } => format!(
                "{source} is in use by a mounted daxfs whose mount point is not known \
                 (see `findmnt -t fuse.daxfs`; unmount it first)"
            ),
            Busy::Timeout => format!(
                "{source} is still in use after {} s, by a daxfs that is not a live mount \
                 here: a daemon still unmounting, a lazily unmounted mount still in use, a \
                 mount in another mount namespace, or `daxfs check`/`info` \
                 (`fuser -v {source}` shows the process)",
                WAIT.as_secs()
            ),
            Busy::Error(e) => format!("{source}: cannot lock: {e}"),
        }
    }
}

/// Take the image lock on `file` (exclusive for a writer, shared for a reader), waiting
/// for a daemon that is starting or exiting; see the module note.
pub fn lock_image(file: &File, source: &str, read_only: bool) -> Result<(), Busy> {
    let op = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    let start = Instant::now();
    let mut said = false;
    let mut pause = Duration::from_millis(2);
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Busy::Error(e.to_string()));
        }
        if let Some(busy) = live_mount(file) {
            return Err(busy);
        }
        if start.elapsed() >= WAIT {
            return Err(Busy::Timeout);
        }
        if !said && start.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "daxfs: {source} is held by a daxfs that is not serving a mount (one still \
                 unmounting?); waiting up to {} s",
                WAIT.as_secs()
            );
            said = true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The live mount serving the image open as `file`, if a serving lock says there is one
/// and (for a known device number) its mount is in our mount table.
pub fn live_mount(file: &File) -> Option<Busy> {
    let (dev, writable) = serving_lock(file)?;
    if dev == 0 {
        return Some(Busy::Mounted {
            mountpoint: None,
            writable,
        });
    }
    let mountpoint = serving_mount(mounts(), dev)?;
    Some(Busy::Mounted {
        mountpoint: Some(mountpoint),
        writable,
    })
}

/// The mount point of the FUSE mount with device number `dev`. Only FUSE mounts count: the
/// kernel recycles anonymous device numbers, so the number of a daemon's mount that has
/// just gone (the daemon still exiting, its serving lock still held) may already belong to
/// another filesystem, e.g. an overlay mounted a moment later; taking that for the image's
/// mount would refuse a mount that should wait for the exiting daemon.
fn serving_mount(entries: Vec<MountEntry>, dev: u64) -> Option<PathBuf> {
    entries
        .into_iter()
        .find(|m| m.dev == dev && m.root == "/" && m.is_fuse())
        .map(|m| m.mountpoint)
}

fn flock_range(l_type: i32, dev: u64, len: i64) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = SERVE_BASE + dev as i64;
    fl.l_len = len;
    fl
}

/// The serving lock another descriptor holds: (device number, taken by a writer).
fn serving_lock(file: &File) -> Option<(u64, bool)> {
    let mut fl = flock_range(libc::F_WRLCK, 0, SERVE_SPAN);
    // SAFETY: F_OFD_GETLK fills the flock we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
        return None;
    }
    if fl.l_type == libc::F_UNLCK as i16 {
        return None;
    }
    Some((
        (fl.l_start - SERVE_BASE) as u64,
        fl.l_type == libc::F_WRLCK as i16,
    ))
}

/// Announce that the daemon holding `file` serves the FUSE mount with device number `dev`
/// (0: not known). A writer's lock is exclusive, a reader's shared. Dropped by
/// `end_serving` or when the descriptor closes.
pub fn start_serving(file: &File, dev: u64, writer: bool) -> std::io::Result<()> {
    let t = if writer { libc::F_WRLCK } else { libc::F_RDLCK };
    let fl = flock_range(t, dev.min(SERVE_SPAN as u64 - 1), 1);
    // SAFETY: F_OFD_SETLK reads the flock we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The session ended: drop the serving lock (the flock stays until the device closes).
pub fn end_serving(file: &File) {
    let fl = flock_range(libc::F_UNLCK, 0, SERVE_SPAN);
    // SAFETY: F_OFD_SETLK reads the flock we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
}

/// One line of /proc/self/mountinfo, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's id, and its parent mount's.
    pub id: u64,
    pub parent: u64,
    pub dev: u64,
    /// The subtree of the filesystem mounted here ("/" unless a bind of a subdirectory).
    pub root: String,
    pub mountpoint: PathBuf,
    /// Per-mount flags (rw/ro, nosuid, ...).
    pub mount_opts: String,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

impl MountEntry {
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }

    pub fn read_only(&self) -> bool {
        self.mount_opts.split(',').any(|o| o == "ro")
    }
}

/// Is anything mounted on a directory or file of the filesystem with device number `dev`
/// (through any of its mounts, binds included)? Such a dentry must never be invalidated:
/// the kernel detaches what is mounted on an invalidated dentry.
pub fn has_submounts(entries: &[MountEntry], dev: u64) -> bool {
    let ours: Vec<u64> = entries
        .iter()
        .filter(|m| m.dev == dev)
        .map(|m| m.id)
        .collect();
    entries.iter().any(|m| ours.contains(&m.parent))
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text (see proc_pid_mountinfo(5)).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if sep < 6 || f.len() < sep + 4 {
            continue;
        }
        let Some((maj, min)) = f[2].split_once(':') else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (maj.parse::<u64>(), min.parse::<u64>()) else {
            continue;
        };
        let (Ok(id), Ok(parent)) = (f[0].parse::<u64>(), f[1].parse::<u64>()) else {
            continue;
        };
        v.push(MountEntry {
            id,
            parent,
            dev: libc::makedev(maj as u32, min as u32),
            root: unescape(f[3]),
            mountpoint: PathBuf::from(unescape(f[4])),
            mount_opts: f[5].to_string(),
            fstype: f[sep + 1].to_string(),
            source: unescape(f[sep + 2]),
            super_opts: f[sep + 3].to_string(),
        });
    }
    v
}

/// This process's mount table (empty if /proc is not there).
pub fn mounts() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// The FUSE mount on `mountpoint`, an absolute path without symlinks (the topmost, if
/// mounts are stacked there). Reads only the mount table: safe to call from the daemon
/// before it serves its own mount (a stat of the mount point would wait for it).
pub fn fuse_mount_at(mountpoint: &Path) -> Option<MountEntry> {
    mounts()
        .into_iter()
        .rfind(|m| m.mountpoint == mountpoint && m.is_fuse())
}

/// The mount an image is served at, if a daemon serves it (for `daxfs info IMAGE` and
/// `check`: say at once where it is mounted).
pub fn mount_of_image(path: &Path) -> Option<Busy> {
    let f = File::open(path).ok()?;
    live_mount(&f)
}

/// The device number and inode of a path, to compare images.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let t = "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                 50 29 0:48 / /tmp/m rw,nosuid,nodev,relatime - fuse.daxfs /tmp/img rw,user_id=0\n\
                 garbage\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt 2"));
        assert_eq!(m[0].root, "/mnt1");
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].dev, libc::makedev(0, 48));
        assert_eq!(m[1].source, "/tmp/img");
        assert!(!m[1].read_only());
    }

    /// A device number recycled by another filesystem (here an overlay that took the number
    /// of a FUSE mount just gone) is not the image's mount; the FUSE mount with it is.
    #[test]
    fn submounts_are_found_through_any_mount_of_the_filesystem() {
        let ours = libc::makedev(0, 48);
        let base = "29 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    61 29 0:48 / /tmp/m rw - fuse.daxfs /tmp/img rw\n\
                    62 29 0:48 /d /tmp/bind rw - fuse.daxfs /tmp/img rw\n";
        assert!(!has_submounts(&parse_mountinfo(base), ours));
        let on_bind = format!("{base}70 62 0:50 / /tmp/bind/x rw - tmpfs tmpfs rw\n");
        assert!(has_submounts(&parse_mountinfo(&on_bind), ours));
        let on_mount = format!("{base}71 61 0:51 / /tmp/m/y rw - tmpfs tmpfs rw\n");
        assert!(has_submounts(&parse_mountinfo(&on_mount), ours));
        assert!(!has_submounts(
            &parse_mountinfo(&on_mount),
            libc::makedev(0, 49)
        ));
    }

    #[test]
    fn serving_mount_is_a_fuse_mount() {
        let overlay = "60 29 0:48 / /usr/sbin ro,relatime - overlay overlay ro,lowerdir=/a\n";
        assert_eq!(
            serving_mount(parse_mountinfo(overlay), libc::makedev(0, 48)),
            None
        );
        let both = format!(
            "{overlay}61 29 0:48 / /tmp/m rw,relatime - fuse.daxfs /tmp/img rw,user_id=0\n"
        );
        assert_eq!(
            serving_mount(parse_mountinfo(&both), libc::makedev(0, 48)),
            Some(PathBuf::from("/tmp/m"))
        );
    }

    /// A serving lock on one descriptor is seen, with its device number, through another
    /// descriptor of the same file; once dropped it is gone (the flock is separate).
    #[test]
    fn serving_lock_is_seen_through_another_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"x").unwrap();
        let a = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let b = File::open(&p).unwrap();
        lock_image(&a, "img", false).unwrap();
        assert_eq!(serving_lock(&b), None);
        start_serving(&a, libc::makedev(0, 77), true).unwrap();
        assert_eq!(serving_lock(&b), Some((libc::makedev(0, 77), true)));
        // No mount with that number here: not a live mount, so a reader would wait.
        assert_eq!(live_mount(&b), None);
        end_serving(&a);
        assert_eq!(serving_lock(&b), None);
        start_serving(&a, 0, true).unwrap();
        assert_eq!(
            live_mount(&b),
            Some(Busy::Mounted {
                mountpoint: None,
                writable: true
            })
        );
    }
}
