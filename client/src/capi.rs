//! The C ABI (include/daxfs.h): opaque handles over `Client`, `File` and `Mapping`.
//!
//! Conventions: functions returning int give 0 (or a non-negative value) on success and
//! -errno on failure; functions returning a pointer give NULL on failure. Either way the
//! failure's text is in `daxfs_last_error()` (per thread). No Rust panic crosses the ABI:
//! each entry point catches one and reports EIO.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::client::{Client, Error, File, Mapping, Mode, Pin};

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

fn set_err(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = c);
}

fn fail(e: Error) -> c_int {
    set_err(e.to_string());
    -e.errno()
}

/// Run `f`, turning errors and panics into -errno.
fn guard(f: impl FnOnce() -> Result<c_int, Error>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => fail(e),
        Err(_) => {
            set_err("internal error (panic) in libdaxfs".into());
            -libc::EIO
        }
    }
}

fn guard_ptr<T>(f: impl FnOnce() -> Result<Box<T>, Error>) -> *mut T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(b)) => Box::into_raw(b),
        Ok(Err(e)) => {
            fail(e);
            std::ptr::null_mut()
        }
        Err(_) => {
            set_err("internal error (panic) in libdaxfs".into());
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn path<'a>(p: *const c_char) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::Invalid("NULL path"));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::Invalid("path is not UTF-8"))
}

fn copy_reason(mode: &Mode, buf: *mut c_char, len: usize) -> c_int {
    match mode {
        Mode::Direct => 1,
        Mode::Fallback { reason } => {
            if !buf.is_null() && len > 0 {
                let n = reason.len().min(len - 1);
                // SAFETY: the caller gives `len` writable bytes at `buf`.
                unsafe {
                    std::ptr::copy_nonoverlapping(reason.as_ptr(), buf as *mut u8, n);
                    *buf.add(n) = 0;
                }
            }
            0
        }
    }
}

pub struct DaxfsMapping {
    // Declared first: pins drop before the mapping they borrow.
    pins: Vec<Pin<'static>>,
    m: Box<Mapping>,
}

/// The text of the calling thread's last failure ("" if none). Valid until its next call.
#[unsafe(no_mangle)]
pub extern "C" fn daxfs_last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}

/// # Safety
/// `path` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_connect(path: *const c_char) -> *mut Client {
    guard_ptr(|| {
        // SAFETY: forwarded contract.
        let p = unsafe { self::path(path) }?;
        Client::connect(p).map(Box::new)
    })
}

/// # Safety
/// `c` is NULL or from daxfs_connect, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_disconnect(c: *mut Client) {
    if !c.is_null() {
        // SAFETY: ownership comes back from daxfs_connect.
        drop(unsafe { Box::from_raw(c) });
    }
}

/// 1 if files may be mapped directly, 0 if not (reason copied to `buf`).
/// # Safety
/// `c` from daxfs_connect; `buf` NULL or `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_client_direct(
    c: *const Client,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    // SAFETY: a live handle.
    let Some(c) = (unsafe { c.as_ref() }) else {
        return -libc::EINVAL;
    };
    copy_reason(&c.mode(), buf, len)
}

/// # Safety
/// `c` from daxfs_connect; `path` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_open(
    c: *const Client,
    path: *const c_char,
    write: c_int,
) -> *mut File {
    guard_ptr(|| {
        // SAFETY: a live handle.
        let c = unsafe { c.as_ref() }.ok_or(Error::Invalid("NULL client"))?;
        // SAFETY: forwarded contract.
        let p = unsafe { self::path(path) }?;
        c.open(p, write != 0).map(Box::new)
    })
}

/// 1 direct, 0 fallback (reason copied to `buf`).
/// # Safety
/// `f` from daxfs_open; `buf` NULL or `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_file_direct(f: *const File, buf: *mut c_char, len: usize) -> c_int {
    // SAFETY: a live handle.
    let Some(f) = (unsafe { f.as_ref() }) else {
        return -libc::EINVAL;
    };
    copy_reason(f.mode(), buf, len)
}

/// Commit appends and close. 0 or -errno (the file is closed either way).
/// # Safety
/// `f` NULL or from daxfs_open, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_close(f: *mut File) -> c_int {
    if f.is_null() {
        return 0;
    }
    // SAFETY: ownership comes back from daxfs_open.
    let f = unsafe { Box::from_raw(f) };
    guard(|| f.close().map(|_| 0))
}

/// # Safety
/// `f` from daxfs_open.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_size(f: *const File) -> i64 {
    // SAFETY: a live handle.
    match unsafe { f.as_ref() } {
        Some(f) => f.size() as i64,
        None => -libc::EINVAL as i64,
    }
}

/// Append; returns the offset written at, or -errno.
/// # Safety
/// `f` from daxfs_open; `buf` has `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_append(f: *const File, buf: *const c_void, len: usize) -> i64 {
    let mut at = 0i64;
    let r = guard(|| {
        // SAFETY: a live handle.
        let f = unsafe { f.as_ref() }.ok_or(Error::Invalid("NULL file"))?;
        if buf.is_null() && len > 0 {
            return Err(Error::Invalid("NULL buffer"));
        }
        // SAFETY: the caller gives `len` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
        at = f.append(data)? as i64;
        Ok(0)
    });
    if r < 0 { r as i64 } else { at }
}

/// # Safety
/// `f` from daxfs_open.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_fsync(f: *const File) -> c_int {
    guard(|| {
        // SAFETY: a live handle.
        let f = unsafe { f.as_ref() }.ok_or(Error::Invalid("NULL file"))?;
        f.fsync().map(|_| 0)
    })
}

/// # Safety
/// `f` from daxfs_open.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_map(
    f: *const File,
    off: u64,
    len: u64,
    write: c_int,
) -> *mut DaxfsMapping {
    guard_ptr(|| {
        // SAFETY: a live handle.
        let f = unsafe { f.as_ref() }.ok_or(Error::Invalid("NULL file"))?;
        let m = f.map(off, len, write != 0)?;
        Ok(Box::new(DaxfsMapping {
            pins: Vec::new(),
            m: Box::new(m),
        }))
    })
}

/// Drop pins and return the leases.
/// # Safety
/// `m` NULL or from daxfs_map, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_unmap(m: *mut DaxfsMapping) {
    if !m.is_null() {
        // SAFETY: ownership comes back from daxfs_map; pins drop before the mapping.
        drop(unsafe { Box::from_raw(m) });
    }
}

/// Pin the mapping: returns the address of file offset `off` of the mapping (its first
/// byte), valid until the matching daxfs_unpin. NULL on failure (revoked: ENOKEY text).
/// # Safety
/// `m` from daxfs_map.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_pin(m: *mut DaxfsMapping) -> *mut c_void {
    // SAFETY: a live handle.
    let Some(m) = (unsafe { m.as_mut() }) else {
        return std::ptr::null_mut();
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the Mapping is boxed (stable address) and outlives every pin in `pins`,
        // which are dropped first (field order, and daxfs_unpin).
        let mref: &'static Mapping = unsafe { &*(m.m.as_ref() as *const Mapping) };
        mref.pin()
    }));
    match r {
        Ok(Ok(p)) => {
            let ptr = p.as_mut_ptr();
            m.pins.push(p);
            ptr as *mut c_void
        }
        Ok(Err(e)) => {
            fail(e);
            std::ptr::null_mut()
        }
        Err(_) => {
            set_err("internal error (panic) in libdaxfs".into());
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// `m` from daxfs_map.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_unpin(m: *mut DaxfsMapping) -> c_int {
    // SAFETY: a live handle.
    let Some(m) = (unsafe { m.as_mut() }) else {
        return -libc::EINVAL;
    };
    match m.pins.pop() {
        Some(p) => {
            drop(p);
            0
        }
        None => {
            set_err("daxfs_unpin without daxfs_pin".into());
            -libc::EINVAL
        }
    }
}

/// # Safety
/// `m` from daxfs_map; `buf` has `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_read(
    m: *const DaxfsMapping,
    off: u64,
    buf: *mut c_void,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: a live handle.
        let m = unsafe { m.as_ref() }.ok_or(Error::Invalid("NULL mapping"))?;
        if buf.is_null() && len > 0 {
            return Err(Error::Invalid("NULL buffer"));
        }
        // SAFETY: the caller gives `len` writable bytes.
        let b = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, len) };
        m.m.read_at(off, b).map(|_| 0)
    })
}

/// # Safety
/// `m` from daxfs_map; `buf` has `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_write(
    m: *const DaxfsMapping,
    off: u64,
    buf: *const c_void,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: a live handle.
        let m = unsafe { m.as_ref() }.ok_or(Error::Invalid("NULL mapping"))?;
        if buf.is_null() && len > 0 {
            return Err(Error::Invalid("NULL buffer"));
        }
        // SAFETY: the caller gives `len` readable bytes.
        let b = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
        m.m.write_at(off, b).map(|_| 0)
    })
}

/// # Safety
/// `m` from daxfs_map.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_persist(m: *const DaxfsMapping, off: u64, len: u64) -> c_int {
    guard(|| {
        // SAFETY: a live handle.
        let m = unsafe { m.as_ref() }.ok_or(Error::Invalid("NULL mapping"))?;
        m.m.persist(off, len).map(|_| 0)
    })
}

/// # Safety
/// `m` from daxfs_map.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_commit_size(m: *const DaxfsMapping, size: u64) -> c_int {
    guard(|| {
        // SAFETY: a live handle.
        let m = unsafe { m.as_ref() }.ok_or(Error::Invalid("NULL mapping"))?;
        m.m.commit_size(size).map(|_| 0)
    })
}
