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
//!   The log defers its fences to a log force there (log/force.rs, `take_flushed`).
//! - `Volatile`: a memfd. Nothing survives the process; flush and fence only order.
//!
//! Only aligned 8-byte stores are atomic. No `&[u8]` into the mapping escapes except through
//! `slice()`, whose callers hold the invalidate lock that keeps the blocks in place.
//!
//! Sparse image files (`Backing`): a store into a hole of a shared file mapping makes the
//! backing filesystem allocate the page at fault time, and when it is full the kernel
//! answers with SIGBUS, which kills the daemon. So no block of a sparse image is stored to
//! before it is real: the allocator calls `make_real` (fallocate) on every extent before it
//! hands it out, and the fixed metadata (headers, log) is made real at mkfs and mount. A
//! fallocate that fails mid-transaction would leave a dirty transaction that can only shut
//! down, so backing space is also *reserved* when a transaction begins (`reserve_backing`):
//! blocks preallocated past the end of the image file (FALLOC_FL_KEEP_SIZE, invisible to the
//! filesystem), as many as the running transactions may still allocate, or, when the
//! backing filesystem is full, free blocks inside the image that are real already (freed
//! by earlier deletes). A transaction that can get neither fails with ENOSPC before it
//! changes anything. When a fallocate fails later, the reserve is punched by as much and
//! the fallocate retried; failing that, the allocator takes free blocks that are real
//! instead of the hole it chose (alloc.rs). What is left is a race with other processes
//! filling the backing filesystem in that instant: the allocation then fails, and a
//! transaction that had changed something shuts the mount down (logged) - an error, never
//! a signal.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// A writable image file: its holes and the backing-space reserve (module doc).
    backing: Option<Backing>,
}

/// Backing space of a writable image file (module doc).
struct Backing {
    /// The file may have holes inside the filesystem: set at open when it has fewer
    /// allocated bytes than its size, and whenever a hole is punched. While clear, making
    /// blocks real and reserving are skipped (a fully preallocated image costs nothing).
    sparse: AtomicBool,
    /// Where the reserve starts: the file size rounded up to a page.
    base: u64,
    reserve: Mutex<Reserve>,
    /// "The backing filesystem is full" was logged and not yet taken back.
    full_logged: AtomicBool,
}

/// Blocks preallocated past the end of the image file, and how many of them running
/// transactions may still claim.
#[derive(Debug, Default)]
struct Reserve {
    have: u64,
    promised: u64,
}

/// The reserve grows and shrinks in steps of this many blocks (1 MiB), so that most
/// transactions leave it alone.
const RESERVE_STEP: u64 = 256;
/// Kept beyond what is promised, for removals (which never fail for want of a reserve:
/// deleting must work when the backing filesystem is full) and for the few blocks an
/// operation takes that its transaction did not reserve (AGFL refills).
const RESERVE_STANDING: u64 = 256;

/// The backing filesystem could not provide the space: ENOSPC (or EDQUOT) from fallocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackingFull(pub i32);

#[derive(Default, Debug)]
pub struct DeviceStats {
    pub fences: AtomicU64,
    pub flushed_bytes: AtomicU64,
    /// Bytes of freed blocks given back to the image file's filesystem (discard, trim).
    pub discarded_bytes: AtomicU64,
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
    /// The image lock is held (src/pmem/imagelock.rs): by a live mount, or still after waiting.
    #[error("{}", busy.describe(image))]
    Busy {
        image: String,
        busy: crate::pmem::imagelock::Busy,
    },
}

fn msg<T>(s: String) -> Result<T, DeviceError> {
    Err(DeviceError::Msg(s))
}

/// Parse a size: a number of bytes, or a decimal number with a binary unit, as mkfs.xfs
/// takes them: K/M/G/T, KiB/MiB/GiB/TiB, KB/MB/GB/TB (all powers of 1024; any case), with
/// an optional space: 4096, 64M, 1.5G, 8GiB, 0.5 TiB. A fraction of a byte is dropped.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (&s[..split], s[split..].trim_start());
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.len() > 18 || frac.contains('.') {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = (int << shift) + ((frac_val << shift) / scale);
    u64::try_from(bytes).ok()
}

impl Device {
    /// Open SOURCE: `memfd:SIZE`, a /dev/dax character device, or an image file.
    pub fn open(source: &str, read_only: bool) -> Result<Arc<Device>, DeviceError> {
        Device::open_with(source, read_only, true)
    }

    /// Open the image of a live mount read-only without its lock (`daxfs info MOUNTPOINT`):
    /// what is read may be in the middle of changing, so only for showing.
    pub fn open_live(source: &str) -> Result<Arc<Device>, DeviceError> {
        Device::open_with(source, true, false)
    }

    fn open_with(source: &str, read_only: bool, lock: bool) -> Result<Arc<Device>, DeviceError> {
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
        if lock {
            crate::pmem::imagelock::lock_image(&file, source, read_only).map_err(|busy| {
                DeviceError::Busy {
                    image: source.to_string(),
                    busy,
                }
            })?;
        }
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
        let mut dev = Device::map(file, len, source, read_only, false)?;
        if !read_only {
            dev.backing = Some(Backing::open(&dev.file, len, source));
        }
        Ok(Arc::new(dev))
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
            backing: None,
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
    #[track_caller]
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        crate::mem::lockcheck::device_touched(std::panic::Location::caller());
        self.check(off, buf.len());
        // SAFETY: bounds checked; the mapping lives as long as self; raw copy, no reference.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(off as usize), buf.as_mut_ptr(), buf.len())
        }
    }

    /// Store into the device (not yet durable: flush and fence).
    #[track_caller]
    pub fn write(&self, off: u64, data: &[u8]) {
        crate::mem::lockcheck::device_touched(std::panic::Location::caller());
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
    #[track_caller]
    pub fn store_u64(&self, off: u64, v: u64) {
        crate::mem::lockcheck::device_touched(std::panic::Location::caller());
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
    #[track_caller]
    pub fn zero(&self, off: u64, len: u64) {
        crate::mem::lockcheck::device_touched(std::panic::Location::caller());
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
    #[track_caller]
    pub unsafe fn slice(&self, off: u64, len: usize) -> &[u8] {
        crate::mem::lockcheck::device_touched(std::panic::Location::caller());
        self.check(off, len);
        // SAFETY: bounds checked; lifetime and aliasing are the caller's contract above.
        unsafe { std::slice::from_raw_parts(self.base.add(off as usize), len) }
    }

    /// Write back the cache lines of a range (not ordered until `fence`).
    #[track_caller]
    pub fn flush(&self, off: u64, len: u64) {
        crate::mem::lockcheck::device_touched(std::panic::Location::caller());
        if len == 0 {
            return;
        }
        self.check(off, len as usize);
        self.stats.flushed_bytes.fetch_add(len, Ordering::Relaxed);
        if let Some(t) = &self.trace {
            t.lock().unwrap().push(TraceOp::Flush { off, len });
        }
        match self.persistence {
            Persistence::Dax if !self.emulated => flush_cache_lines(self.base, off, len),
            // Also when emulated: `take_flushed` hands the ranges to a log force.
            Persistence::PageCache => PENDING.with(|p| p.borrow_mut().push((off, len))),
            _ => {}
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
    #[track_caller]
    pub fn fence(&self) {
        crate::mem::lockcheck::device_touched(std::panic::Location::caller());
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
            PENDING.with(|p| p.borrow_mut().clear());
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

    /// Take the ranges flushed on this thread and not yet fenced (page cache; empty
    /// otherwise), for a later fence on any thread to make durable (`flush` them again).
    pub fn take_flushed(&self) -> Vec<(u64, u64)> {
        if self.persistence != Persistence::PageCache {
            return Vec::new();
        }
        coalesce(PENDING.with(|p| std::mem::take(&mut *p.borrow_mut())))
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

fn fallocate(file: &File, mode: i32, off: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, off as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Allocate every byte of `file` up to `len` (mkfs without --sparse).
pub fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    fallocate(file, 0, 0, len)
}

/// Give back every allocated byte of `file` up to `len` (mkfs --sparse over an old image).
pub fn punch_all(file: &File, len: u64) -> std::io::Result<()> {
    fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        0,
        len,
    )
}

fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

const BS: u64 = BLOCK_SIZE as u64;

impl Backing {
    fn open(file: &File, len: u64, source: &str) -> Backing {
        let base = len.div_ceil(4096) * 4096;
        // A reserve left behind by a daemon that died: give it back. (Not supported by
        // the backing filesystem: then there is nothing past the end either.)
        let _ = fallocate(
            file,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            base,
            i64::MAX as u64 - base,
        );
        use std::os::unix::fs::MetadataExt;
        let sparse = file
            .metadata()
            .map(|m| m.blocks() * 512 < len)
            .unwrap_or(true);
        if sparse {
            log::info!("{source}: sparse image: blocks are allocated in it as they are used");
        }
        Backing {
            sparse: AtomicBool::new(sparse),
            base,
            reserve: Mutex::new(Reserve::default()),
            full_logged: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reserve> {
        self.reserve.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resize the reserve to `blocks`: Err when growing it failed (it is unchanged then).
    fn resize(&self, file: &File, r: &mut Reserve, blocks: u64) -> std::io::Result<()> {
        if blocks > r.have {
            fallocate(
                file,
                libc::FALLOC_FL_KEEP_SIZE,
                self.base + r.have * BS,
                (blocks - r.have) * BS,
            )?;
        } else if blocks < r.have {
            // Punching cannot fail for want of space; if it fails otherwise the blocks
            // stay allocated past the end, which costs space but nothing else.
            let _ = fallocate(
                file,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                self.base + blocks * BS,
                (r.have - blocks) * BS,
            );
        }
        r.have = blocks;
        Ok(())
    }
}

impl Device {
    /// The backing-space state, when this is a writable image file that may have holes.
    fn sparse_backing(&self) -> Option<&Backing> {
        self.backing
            .as_ref()
            .filter(|b| b.sparse.load(Ordering::Acquire))
    }

    /// Is this a writable image file with holes (so that `make_real` has work to do)?
    pub fn is_sparse(&self) -> bool {
        self.sparse_backing().is_some()
    }

    /// Promise a transaction that it can make `blocks` blocks real (module doc). The
    /// promise is kept by the reserve past the end of the file, or, when that cannot grow
    /// (the backing filesystem is full), by blocks of the image that are real and free:
    /// the allocator takes those when a hole cannot be filled (alloc.rs). `used_blocks`:
    /// the filesystem's blocks in use (all real). A removal (`removal`) never fails.
    /// Returns what was promised, for `release_backing` (0 where nothing is sparse).
    pub fn reserve_backing(
        &self,
        blocks: u64,
        removal: bool,
        used_blocks: u64,
    ) -> Result<u64, BackingFull> {
        let Some(b) = self.sparse_backing().filter(|_| blocks > 0) else {
            return Ok(0);
        };
        let mut r = b.lock();
        r.promised += blocks;
        let need = r.promised + if removal { 0 } else { RESERVE_STANDING };
        if r.have >= need {
            return Ok(blocks);
        }
        let grown = b
            .resize(&self.file, &mut r, need + RESERVE_STEP)
            .or_else(|_| b.resize(&self.file, &mut r, need));
        let e = match grown {
            Ok(()) => {
                b.full_logged.store(false, Ordering::Relaxed);
                return Ok(blocks);
            }
            Err(e) => e,
        };
        if removal || r.have + self.real_free_blocks(r.have, used_blocks) >= need {
            return Ok(blocks);
        }
        r.promised -= blocks;
        if !b.full_logged.swap(true, Ordering::Relaxed) {
            log::warn!(
                "{}: the filesystem that holds the image is full ({e}): writes fail with \
                 ENOSPC until space is freed on it",
                self.source
            );
        }
        Err(BackingFull(e.raw_os_error().unwrap_or(libc::ENOSPC)))
    }

    /// Free blocks of the filesystem that are real in the image: what the image file has
    /// allocated (less the reserve) beyond the blocks in use.
    fn real_free_blocks(&self, reserve: u64, used_blocks: u64) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let allocated = self.file.metadata().map_or(0, |m| m.blocks() * 512 / BS);
        allocated
            .saturating_sub(reserve)
            .saturating_sub(used_blocks)
    }

    /// A transaction that was promised `blocks` (`reserve_backing`) ends.
    pub fn release_backing(&self, blocks: u64) {
        let Some(b) = self.backing.as_ref().filter(|_| blocks > 0) else {
            return;
        };
        let mut r = b.lock();
        r.promised = r.promised.saturating_sub(blocks);
        if r.have > r.promised + RESERVE_STANDING + 3 * RESERVE_STEP {
            let keep = r.promised + RESERVE_STANDING + RESERVE_STEP;
            let _ = b.resize(&self.file, &mut r, keep);
        }
    }

    /// Make device bytes [off, off + len) real in the image before anything is stored
    /// there, in a transaction's promise (`reserve_backing`); their contents are unchanged. Err(BackingFull(ENOSPC or EDQUOT)): the backing
    /// filesystem and the reserve could not provide the space (nothing changed; the
    /// allocator then looks for free blocks that are real already). Other errors are the
    /// backing filesystem's own.
    pub fn make_real(&self, off: u64, len: u64) -> Result<(), BackingFull> {
        let Some(b) = self.sparse_backing() else {
            return Ok(());
        };
        self.check(off, len as usize);
        let e = match fallocate(&self.file, 0, off, len) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                return self.write_zeros_to_file(off, len);
            }
            Err(e) => e,
        };
        if !is_full(&e) {
            log::error!(
                "{}: cannot allocate {len} bytes at {off} in the image: {e}",
                self.source
            );
            return Err(BackingFull(e.raw_os_error().unwrap_or(libc::EIO)));
        }
        // The backing filesystem is full: take the space from the reserve.
        let mut r = b.lock();
        if r.have == 0 {
            return Err(BackingFull(libc::ENOSPC));
        }
        let keep = r.have.saturating_sub(len.div_ceil(BS));
        let _ = b.resize(&self.file, &mut r, keep);
        fallocate(&self.file, 0, off, len)
            .map_err(|e| BackingFull(e.raw_os_error().unwrap_or(libc::ENOSPC)))
    }

    /// Can freed blocks be given back to the backing filesystem (`discard`)? Writable
    /// image files only: memfd and device-DAX are left alone.
    pub fn can_discard(&self) -> bool {
        self.backing.is_some()
    }

    /// Give device bytes [off, off + len) back to the image file's filesystem (a hole
    /// punched; it reads as zeros). The caller guarantees the blocks are free, that the
    /// free is durable, that no log record recovery may replay writes into them, and that
    /// nobody can allocate them meanwhile (it holds their AG's lock). From now on the
    /// image has holes, so blocks are made real again before they are handed out.
    pub fn discard(&self, off: u64, len: u64) -> std::io::Result<()> {
        let Some(b) = &self.backing else {
            return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        };
        self.check(off, len as usize);
        b.sparse.store(true, Ordering::Release);
        fallocate(
            &self.file,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )?;
        self.stats.discarded_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// The first run of device bytes in [off, end) that is real in the image (all of it
    /// where the image has no holes), as (start, len).
    pub fn real_run(&self, off: u64, end: u64) -> Option<(u64, u64)> {
        if off >= end {
            return None;
        }
        if self.sparse_backing().is_none() {
            return Some((off, end - off));
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, off as i64, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= end {
            return None;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let stop = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        Some((data as u64, stop - data as u64))
    }

    /// `make_real` where the backing filesystem has no fallocate: write zeros through the
    /// file into the holes of the range (a write into a hole fails with ENOSPC, where a
    /// store would raise SIGBUS; zeros are what a hole reads as, so nothing changes).
    fn write_zeros_to_file(&self, off: u64, len: u64) -> Result<(), BackingFull> {
        use std::os::unix::fs::FileExt;
        let fd = self.file.as_raw_fd();
        let end = off + len;
        let zeros = vec![0u8; 1 << 16];
        let mut at = off;
        while at < end {
            // SAFETY: lseek on a descriptor we own.
            let hole = unsafe { libc::lseek(fd, at as i64, libc::SEEK_HOLE) };
            if hole < 0 || hole as u64 >= end {
                break;
            }
            // SAFETY: as above. ENXIO (no data after the hole): the hole reaches the end.
            let data = unsafe { libc::lseek(fd, hole, libc::SEEK_DATA) };
            let stop = if data < 0 {
                end
            } else {
                (data as u64).min(end)
            };
            let mut p = hole as u64;
            while p < stop {
                let n = (stop - p).min(zeros.len() as u64) as usize;
                if let Err(e) = self.file.write_all_at(&zeros[..n], p) {
                    log::error!("{}: cannot write into the image at {p}: {e}", self.source);
                    return Err(BackingFull(e.raw_os_error().unwrap_or(libc::EIO)));
                }
                p += n as u64;
            }
            at = stop;
        }
        Ok(())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `map`; nothing borrows it past self.
        unsafe { libc::munmap(self.base as *mut _, self.len as usize) };
        if let Some(b) = &self.backing {
            let mut r = b.lock();
            let _ = b.resize(&self.file, &mut r, 0);
        }
    }
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
        // Decimals and the IEC and SI-looking spellings, all binary (issue 12 item 9).
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("8GiB"), Some(8 << 30));
        assert_eq!(parse_size("8 GiB"), Some(8 << 30));
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("0.5TiB"), Some(1 << 39));
        assert_eq!(parse_size(".25k"), Some(256));
        assert_eq!(parse_size("16384kib"), Some(16 << 20));
        assert_eq!(parse_size("1.5"), Some(1));
        for bad in ["", ".", "1.2.3G", "G", "1.5X", "1GiBs", "-1G", "1e3"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
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
