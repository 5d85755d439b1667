//! Error injection, after XFS's errortag: named points where an operation can be made to
//! fail on purpose, to prove that a failure anywhere leaves the media consistent and that a
//! later mount recovers (issue 3, part 6).
//!
//! A tag's value is a frequency: 0 is off, N makes every Nth pass through the point fail
//! (1: every one). Tests set tags through `Device::errtags`; on a live mount root sets them
//! through the root directory's virtual `trusted.daxfs.errortag.NAME` attribute (value: N in
//! decimal), the way XFS exposes /sys/fs/xfs/DEV/errortag/NAME.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorTag {
    /// Block allocation finds no space (ENOSPC), wherever a transaction allocates.
    Alloc,
    /// Writing a log record fails part way (EIO): half the record reaches the media,
    /// without its fence; the filesystem shuts down.
    LogWrite,
    /// A device flush (cache-line write-back or msync) fails: the fence reports an I/O
    /// error, which the commit or fsync waiting on it returns (EIO).
    Flush,
    /// A metadata block cannot be read (EIO), as a poisoned persistent-memory line reads.
    MetaRead,
    /// Not a failure: a free at commit is logged as pending and done by a follow-up
    /// transaction, the path taken when its AG cannot be locked in order (trans.rs).
    FreeIntent,
}

impl ErrorTag {
    pub const ALL: [ErrorTag; 5] = [
        ErrorTag::Alloc,
        ErrorTag::LogWrite,
        ErrorTag::Flush,
        ErrorTag::MetaRead,
        ErrorTag::FreeIntent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorTag::Alloc => "alloc",
            ErrorTag::LogWrite => "log_write",
            ErrorTag::Flush => "flush",
            ErrorTag::MetaRead => "meta_read",
            ErrorTag::FreeIntent => "free_intent",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorTag> {
        ErrorTag::ALL.into_iter().find(|t| t.name() == name)
    }
}

#[derive(Debug, Default)]
pub struct ErrorTags {
    freq: [AtomicU64; TAGS],
    hits: [AtomicU64; TAGS],
    fired: [AtomicU64; TAGS],
}

const TAGS: usize = ErrorTag::ALL.len();

impl ErrorTags {
    /// Make every `freq`th pass through `tag` fail (0: never).
    pub fn set(&self, tag: ErrorTag, freq: u64) {
        self.hits[tag as usize].store(0, Ordering::Relaxed);
        self.freq[tag as usize].store(freq, Ordering::Relaxed);
    }

    pub fn get(&self, tag: ErrorTag) -> u64 {
        self.freq[tag as usize].load(Ordering::Relaxed)
    }

    /// How many times `tag` made something fail.
    pub fn fired(&self, tag: ErrorTag) -> u64 {
        self.fired[tag as usize].load(Ordering::Relaxed)
    }

    /// Called at the injection point: should this pass fail?
    #[inline]
    pub fn should_fail(&self, tag: ErrorTag) -> bool {
        let f = self.freq[tag as usize].load(Ordering::Relaxed);
        if f == 0 {
            return false;
        }
        let n = self.hits[tag as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if n % f != 0 {
            return false;
        }
        self.fired[tag as usize].fetch_add(1, Ordering::Relaxed);
        log::warn!("error tag {} fired (pass {n})", tag.name());
        true
    }

    /// "name=freq" for each tag, for `daxfs stat`.
    pub fn describe(&self) -> String {
        ErrorTag::ALL
            .iter()
            .map(|&t| format!("{}={}/{}", t.name(), self.get(t), self.fired(t)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
