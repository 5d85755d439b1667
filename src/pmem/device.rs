//! The persistent-memory device: an image file, a device-DAX character device, or a memfd
//! that emulates device-DAX. It is mapped once into the daemon and reached only through a
//! narrow API: copies in and out with raw pointers, and the persistence primitives
//! `flush(range)` and `fence()` (DESIGN.md section 1).
//!
//! Persistence depends on how the mapping is backed, detected at open and shown at mount:
//! - `Dax`: a MAP_SYNC mapping of a file on a DAX filesystem, or device-DAX. A store is
//!   durable once its cache lines are written back (clwb/clflushopt/clflush) and fenced.
//! - `PageCache`: an ordinary file. Stores land in the page cache; `fence` msyncs the
//!   ranges flushed since the last fence (MS_SYNC), which orders them before later stores.
//! - `Volatile`: a memfd. Nothing survives the process; flush and fence only order.
//!
//! Only aligned 8-byte stores are atomic. No `&[u8]` into the mapping escapes except through
//! `slice()`, whose callers hold the invalidate lock that keeps the blocks in place.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::pmem::errtag::{ErrorTag, ErrorTags};

use crate::format::BLOCK_SIZE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    Dax,
    PageCache,
    Volatile,
}

impl Persistence {
    pub fn describe(self) -> &'static str {
        match self {
            Persistence::Dax => "DAX mapping (MAP_SYNC): durable after cache-line flush + fence",
            Persistence::PageCache => "page-cache mapping: durable after msync",
            Persistence::Volatile => "memfd (emulated device-DAX): volatile, gone at unmount",
        }
    }
}

/// One recorded persistence event, for the tracing backend (crash tests).
#[derive(Debug, Clone)]
pub enum TraceOp {
    Store { off: u64, data: Vec<u8> },
    Flush { off: u64, len: u64 },
    Fence,
}

pub struct Device {
    base: *mut u8,
    len: u64,
    persistence: Persistence,
    /// Keeps the fd open for the mapping's lifetime (and for handing to DAX clients).
    file: File,
    source: String,
    read_only: bool,
    /// When set, every store/flush/fence is recorded in order (crash-consistency tests).
    trace: Option<std::sync::Mutex<Vec<TraceOp>>>,
    /// A tracing device that emulates `persistence` (crash tests): flushes and fences are
    /// only recorded, the memory behind it is an ordinary memfd.
    emulated: bool,
    pub stats: DeviceStats,
    /// Error injection points (src/errtag.rs).
    pub errtags: ErrorTags,
    /// A flush failed since the last `take_error` (sticky, like the kernel's errseq: the
    /// next commit or fsync that waits on a fence reports it).
    io_error: AtomicBool,
}

#[derive(Default, Debug)]
pub struct DeviceStats {
    pub fences: AtomicU64,
    pub flushed_bytes: AtomicU64,
}

// SAFETY: the mapping is shared memory; all access goes through raw-pointer copies whose
// ordering against other threads is given by the filesystem's locks (docs/design.md).
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

thread_local! {
    /// Ranges flushed on this thread since its last fence (PageCache mode msyncs them).
    static PENDING: RefCell<Vec<(u64, u64)>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Msg(String),
}

fn msg<T>(s: String) -> Result<T, DeviceError> {
    Err(DeviceError::Msg(s))
}

/// Parse a size like 64M, 8G, 4096, 1T (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        (i, 't' | 'T') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

impl Device {
    /// Open SOURCE: `memfd:SIZE`, a /dev/dax character device, or an image file.
    pub fn open(source: &str, read_only: bool) -> Result<Arc<Device>, DeviceError> {
        if let Some(size) = source.strip_prefix("memfd:") {
            let Some(size) = parse_size(size) else {
                return msg(format!(
                    "memfd:{size}: cannot parse the size (try memfd:1G)"
                ));
            };
            return Device::memfd(size).map(Arc::new);
        }
        let path = Path::new(source);
        let meta =
            std::fs::metadata(path).map_err(|e| DeviceError::Msg(format!("{source}: {e}")))?;
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| DeviceError::Msg(format!("{source}: cannot open: {e}")))?;
        lock_image(&file, source, read_only)?;
        if meta.file_type().is_char_device() {
            let len = devdax_size(path)?;
            return Device::map(file, len, source, read_only, true).map(Arc::new);
        }
        if !meta.is_file() {
            return msg(format!(
                "{source}: not an image file, a /dev/dax device or memfd:SIZE"
            ));
        }
        let len = meta.len();
        Device::map(file, len, source, read_only, false).map(Arc::new)
    }

    /// A memfd of `size` bytes, emulating device-DAX (volatile).
    pub fn memfd(size: u64) -> Result<Device, DeviceError> {
        let size = size & !(BLOCK_SIZE as u64 - 1);
        let name = c"daxfs";
        // SAFETY: name is a valid C string; flags are valid for memfd_create.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return msg(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size)
            .map_err(|e| DeviceError::Msg(format!("memfd: cannot size to {size}: {e}")))?;
        let mut dev = Device::map(file, size, &format!("memfd:{size}"), false, false)?;
        dev.persistence = Persistence::Volatile;
        Ok(dev)
    }

    fn map(
        file: File,
        len: u64,
        source: &str,
        read_only: bool,
        devdax: bool,
    ) -> Result<Device, DeviceError> {
        let len = len & !(BLOCK_SIZE as u64 - 1);
        if len == 0 {
            return msg(format!("{source}: empty device"));
        }
        let prot = if read_only {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        let fd = file.as_raw_fd();
        let mut persistence = if devdax {
            Persistence::Dax
        } else {
            Persistence::PageCache
        };
        // SAFETY: mapping a file we hold open; the result is checked.
        let mut base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED && !read_only {
            // Not on a DAX filesystem (EOPNOTSUPP) or MAP_SYNC unknown: page cache.
            if !devdax {
                persistence = Persistence::PageCache;
            }
            // SAFETY: as above.
            base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    prot,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
        } else if base == libc::MAP_FAILED {
            // SAFETY: as above.
            base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    prot,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if !devdax {
                persistence = Persistence::PageCache;
            }
        } else if !devdax {
            persistence = Persistence::Dax;
        }
        if base == libc::MAP_FAILED {
            return msg(format!(
                "{source}: mmap of {len} bytes failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Device {
            base: base as *mut u8,
            len,
            persistence,
            file,
            source: source.to_string(),
            read_only,
            trace: None,
            emulated: false,
            stats: DeviceStats::default(),
            errtags: ErrorTags::default(),
            io_error: AtomicBool::new(false),
        })
    }

    /// The tracing backend (DESIGN.md section 1): a memfd of `size` bytes that behaves to
    /// the filesystem like a device with `persistence` (Dax: eager cache-line flushes;
    /// PageCache: msync-style fences and lazy checkpoints) and records every store, flush
    /// and fence in order, for the crash-image generator (src/crashsim.rs).
    pub fn traced(size: u64, persistence: Persistence) -> Result<Device, DeviceError> {
        let mut dev = Device::memfd(size)?;
        dev.enable_trace();
        dev.persistence = persistence;
        dev.emulated = true;
        Ok(dev)
    }

    /// Start recording every store, flush and fence (crash-consistency tests).
    pub fn enable_trace(&mut self) {
        self.trace = Some(std::sync::Mutex::new(Vec::new()));
    }

    pub fn take_trace(&self) -> Vec<TraceOp> {
        self.trace
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().unwrap()))
            .unwrap_or_default()
    }

    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn blocks(&self) -> u64 {
        self.len / BLOCK_SIZE as u64
    }
    pub fn persistence(&self) -> Persistence {
        self.persistence
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    pub fn file(&self) -> &File {
        &self.file
    }

    #[inline]
    fn check(&self, off: u64, len: usize) {
        assert!(
            off.checked_add(len as u64)
                .is_some_and(|end| end <= self.len),
            "device access {off}+{len} beyond {} (callers bound media values first)",
            self.len
        );
    }

    /// Copy out of the device.
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        self.check(off, buf.len());
        // SAFETY: bounds checked; the mapping lives as long as self; raw copy, no reference.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(off as usize), buf.as_mut_ptr(), buf.len())
        }
    }

    /// Store into the device (not yet durable: flush and fence).
    pub fn write(&self, off: u64, data: &[u8]) {
        assert!(!self.read_only, "store to a read-only device");
        self.check(off, data.len());
        if let Some(t) = &self.trace {
            t.lock().unwrap().push(TraceOp::Store {
                off,
                data: data.to_vec(),
            });
        }
        // SAFETY: bounds checked, mapping writable (not read_only).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off as usize), data.len())
        }
    }

    /// Replace the device's contents from offset 0 without recording it in the trace:
    /// setting up a crash image or a test device, not a store of the filesystem's.
    pub fn load_image(&self, data: &[u8]) {
        assert!(!self.read_only, "store to a read-only device");
        self.check(0, data.len());
        // SAFETY: bounds checked, mapping writable.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base, data.len()) }
    }

    /// One aligned 8-byte store: atomic with respect to power failure (the only store size
    /// that is). Used for the superblock's state word.
    pub fn store_u64(&self, off: u64, v: u64) {
        assert!(!self.read_only, "store to a read-only device");
        assert!(
            off.is_multiple_of(8),
            "atomic store at unaligned offset {off}"
        );
        self.check(off, 8);
        if let Some(t) = &self.trace {
            t.lock().unwrap().push(TraceOp::Store {
                off,
                data: v.to_le_bytes().to_vec(),
            });
        }
        // SAFETY: bounds checked, aligned (the mapping is page aligned), writable.
        unsafe { std::ptr::write_volatile(self.base.add(off as usize) as *mut u64, v.to_le()) }
    }

    /// Store zeros.
    pub fn zero(&self, off: u64, len: u64) {
        assert!(!self.read_only, "store to a read-only device");
        self.check(off, len as usize);
        if let Some(t) = &self.trace {
            t.lock().unwrap().push(TraceOp::Store {
                off,
                data: vec![0; len as usize],
            });
        }
        // SAFETY: bounds checked, mapping writable.
        unsafe { std::ptr::write_bytes(self.base.add(off as usize), 0, len as usize) }
    }

    /// A borrowed view of device bytes, for zero-copy read replies.
    ///
    /// # Safety
    /// The caller must hold the locks that keep the range allocated to it and unchanged
    /// by this process for the life of the slice (invalidate lock shared + no writers of
    /// the range), and must not hand it to code that assumes it is immutable beyond that.
    pub unsafe fn slice(&self, off: u64, len: usize) -> &[u8] {
        self.check(off, len);
        // SAFETY: bounds checked; lifetime and aliasing are the caller's contract above.
        unsafe { std::slice::from_raw_parts(self.base.add(off as usize), len) }
    }

    /// Write back the cache lines of a range (not ordered until `fence`).
    pub fn flush(&self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.check(off, len as usize);
        self.stats.flushed_bytes.fetch_add(len, Ordering::Relaxed);
        if let Some(t) = &self.trace {
            t.lock().unwrap().push(TraceOp::Flush { off, len });
        }
        if self.emulated {
            return;
        }
        match self.persistence {
            Persistence::Dax => flush_cache_lines(self.base, off, len),
            Persistence::PageCache => PENDING.with(|p| p.borrow_mut().push((off, len))),
            Persistence::Volatile => {}
        }
    }

    /// Write back file data that is not ordered against a metadata commit (overwrites of
    /// blocks already in the file): DAX flushes cache lines; page-cache mappings leave it to
    /// fsync, which msyncs the whole device (`persist_all`).
    pub fn flush_data(&self, off: u64, len: u64) {
        if self.persistence == Persistence::Dax {
            self.flush(off, len);
        }
    }

    /// Order: everything flushed on this thread before the fence is durable before any
    /// store after it.
    pub fn fence(&self) {
        self.stats.fences.fetch_add(1, Ordering::Relaxed);
        if self.errtags.should_fail(ErrorTag::Flush) {
            // The write-back failed: nothing since the last fence is known to be durable.
            PENDING.with(|p| p.borrow_mut().clear());
            self.io_error.store(true, Ordering::Release);
            return;
        }
        if let Some(t) = &self.trace {
            t.lock().unwrap().push(TraceOp::Fence);
        }
        if self.emulated {
            return;
        }
        match self.persistence {
            Persistence::Dax => sfence(),
            Persistence::PageCache => {
                let ranges = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
                for (off, len) in coalesce(ranges) {
                    self.msync(off, len);
                }
            }
            Persistence::Volatile => std::sync::atomic::fence(Ordering::SeqCst),
        }
    }

    /// Make every store so far durable, whatever thread made it (fsync, sync, unmount).
    pub fn persist_all(&self) {
        PENDING.with(|p| p.borrow_mut().clear());
        if self.errtags.should_fail(ErrorTag::Flush) {
            self.io_error.store(true, Ordering::Release);
            return;
        }
        if self.emulated && self.persistence == Persistence::PageCache {
            // msync of the whole mapping: every line written back, then ordered.
            self.flush(0, self.len);
            self.fence();
            return;
        }
        match self.persistence {
            Persistence::Dax | Persistence::Volatile => self.fence(),
            Persistence::PageCache => {
                self.stats.fences.fetch_add(1, Ordering::Relaxed);
                self.msync(0, self.len)
            }
        }
    }

    fn msync(&self, off: u64, len: u64) {
        let page = 4096u64;
        let start = off & !(page - 1);
        let end = (off + len).div_ceil(page) * page;
        // SAFETY: range inside our mapping, page aligned.
        let r = unsafe {
            libc::msync(
                self.base.add(start as usize) as *mut _,
                (end - start) as usize,
                libc::MS_SYNC,
            )
        };
        if r != 0 {
            log::error!(
                "{}: msync failed: {}",
                self.source,
                std::io::Error::last_os_error()
            );
            self.io_error.store(true, Ordering::Release);
        }
    }

    /// Did a flush fail since the last call? (Clears the error.)
    pub fn take_error(&self) -> bool {
        self.io_error.swap(false, Ordering::AcqRel)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `map`; nothing borrows it past self.
        unsafe { libc::munmap(self.base as *mut _, self.len as usize) };
    }
}

/// One writer per image: a read-write open takes an exclusive lock (a second mount is
/// refused), a read-only open (check, info) a shared one, waiting up to 10 s for a daemon
/// that is still committing its unmount. The lock goes with the file descriptor.
fn lock_image(file: &File, source: &str, read_only: bool) -> Result<(), DeviceError> {
    let op = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    for attempt in 0..100 {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return msg(format!("{source}: cannot lock: {e}"));
        }
        if !read_only || attempt == 99 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    msg(format!(
        "{source}: in use by a mounted daxfs (unmount it first)"
    ))
}

fn coalesce(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (off, len) in r {
        // Merge ranges within one page of each other: one msync call per page run.
        if let Some(last) = out.last_mut()
            && off <= last.0 + last.1 + 4096
        {
            last.1 = last.1.max(off + len - last.0);
            continue;
        }
        out.push((off, len));
    }
    out
}

fn devdax_size(path: &Path) -> Result<u64, DeviceError> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path)
        .map_err(|e| DeviceError::Msg(e.to_string()))?
        .rdev();
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let p = format!("/sys/dev/char/{maj}:{min}/size");
    let s = std::fs::read_to_string(&p).map_err(|e| {
        DeviceError::Msg(format!(
            "{}: not a device-DAX device ({p}: {e})",
            path.display()
        ))
    })?;
    s.trim()
        .parse()
        .map_err(|_| DeviceError::Msg(format!("{p}: unreadable size {s:?}")))
}

#[cfg(target_arch = "x86_64")]
fn flush_cache_lines(base: *mut u8, off: u64, len: u64) {
    let line = 64u64;
    let mut a = off & !(line - 1);
    while a < off + len {
        // SAFETY: the address is inside the mapping (checked by the caller); clflush only
        // writes back a cache line. clwb/clflushopt would be cheaper where present.
        unsafe { core::arch::x86_64::_mm_clflush(base.add(a as usize)) };
        a += line;
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn flush_cache_lines(_base: *mut u8, _off: u64, _len: u64) {
    std::sync::atomic::fence(Ordering::SeqCst);
}

fn sfence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no memory-safety preconditions.
    unsafe {
        core::arch::x86_64::_mm_sfence()
    };
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("8g"), Some(8 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn memfd_roundtrip_and_trace() {
        let mut d = Device::memfd(1 << 20).unwrap();
        assert_eq!(d.persistence(), Persistence::Volatile);
        d.enable_trace();
        d.write(4096, b"hello");
        d.flush(4096, 5);
        d.fence();
        let mut b = [0u8; 5];
        d.read(4096, &mut b);
        assert_eq!(&b, b"hello");
        let t = d.take_trace();
        assert_eq!(t.len(), 3);
        assert!(matches!(t[2], TraceOp::Fence));
    }

    #[test]
    fn image_file_is_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        let d = Device::open(p.to_str().unwrap(), false).unwrap();
        // /tmp is not DAX here; a MAP_SYNC mapping would say Dax.
        assert_ne!(d.persistence(), Persistence::Volatile);
        d.write(0, b"x");
        d.flush(0, 1);
        d.fence();
    }
}
