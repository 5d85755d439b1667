//! Errors of the filesystem core.
//!
//! Two kinds of failure (docs/design.md): a bug in our code is an `assert!`; bad bytes on
//! the media or bad input from a caller is an `FsError`. Corruption carries what was wrong
//! and where, is logged once where it is detected, and reaches the FUSE boundary as EUCLEAN.

use std::fmt;

/// Linux calls EFSCORRUPTED EUCLEAN ("Structure needs cleaning"), as XFS does.
pub const EFSCORRUPTED: i32 = libc::EUCLEAN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    /// A POSIX error for the caller (ENOENT, EEXIST, ENOSPC, ...).
    Errno(i32),
    /// On-media structure failed verification: what and where.
    Corrupt(String),
    /// The device could not be read or written.
    Io(String),
    /// A request that cannot be honoured as asked (bad geometry, bad option): the message
    /// says why and what to do.
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, FsError>;

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Errno(e) => *e,
            FsError::Corrupt(_) => EFSCORRUPTED,
            FsError::Io(_) => libc::EIO,
            FsError::Invalid(_) => libc::EINVAL,
        }
    }

    /// Corruption found on the media. Logged here, once, with what and where.
    pub fn corrupt(msg: impl Into<String>) -> FsError {
        let msg = msg.into();
        log::error!("metadata corruption: {msg}; unmount and run `daxfs check`");
        FsError::Corrupt(msg)
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Errno(e) => write!(f, "{}", std::io::Error::from_raw_os_error(*e)),
            FsError::Corrupt(m) => write!(f, "metadata corruption: {m}"),
            FsError::Io(m) => write!(f, "I/O error: {m}"),
            FsError::Invalid(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for FsError {}

/// `err(libc::ENOENT)` reads better than `Err(FsError::Errno(libc::ENOENT))`.
pub fn err<T>(errno: i32) -> Result<T> {
    Err(FsError::Errno(errno))
}

/// Return a corruption error unless `cond` holds (XFS_IS_CORRUPT, inverted).
#[macro_export]
macro_rules! ensure_sane {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::error::FsError::corrupt(format!($($arg)+)));
        }
    };
}
