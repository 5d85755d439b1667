//! The memory budget: what the in-core caches are charged, against a limit and two
//! watermarks (DESIGN.md section 5).
//!
//! Charges are estimates of heap bytes an object holds (its struct plus what its
//! collections point to), not allocator counters: they must be cheap (O(1), taken when an
//! object is built or its ILOCK is let go after a change) and *exact in the sense that
//! matters*: every byte charged is uncharged by the same object, so the sum returns to its
//! start when the objects are gone. `Charge` makes that hold by construction: an object
//! owns its charge, `set` moves it by the difference, and dropping it returns all of it.
//!
//! The watermarks: above `high` the background reclaimer works until usage is under `low`;
//! an allocation that would pass `limit` runs direct reclaim in the allocating thread
//! (reclaim.rs). Nothing fails when the budget cannot be met: `over_by` says by how much.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The caches charged to the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// In-core inodes: the struct, its locks, the decoded core (and a short target).
    Inodes = 0,
    /// Decoded extent maps (records plus the pending-change log of each map).
    ExtentMaps = 1,
    /// Directories' in-core free-space indexes.
    DirIndexes = 2,
    /// The inode cache's hash table (its capacity: a HashMap never shrinks by itself).
    CacheTable = 3,
}

pub const NCACHES: usize = 4;
pub const CACHES: [Cache; NCACHES] = [
    Cache::Inodes,
    Cache::ExtentMaps,
    Cache::DirIndexes,
    Cache::CacheTable,
];

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Inodes => "inodes",
            Cache::ExtentMaps => "extent_maps",
            Cache::DirIndexes => "dir_indexes",
            Cache::CacheTable => "icache_table",
        }
    }
}

/// No budget: the limit a bare `Mp` (mkfs, check, unit tests) starts with.
pub const UNLIMITED: u64 = u64::MAX;

pub struct Budget {
    limit: AtomicU64,
    charged: [AtomicU64; NCACHES],
    total: AtomicU64,
    peak: AtomicU64,
    /// Bytes uncharged since the allocator was last asked to give memory back.
    uncharged_since_trim: AtomicU64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(UNLIMITED)
    }
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit: AtomicU64::new(limit),
            charged: Default::default(),
            total: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            uncharged_since_trim: AtomicU64::new(0),
        }
    }

    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Relaxed);
    }
    pub fn limit(&self) -> u64 {
        self.limit.load(Relaxed)
    }
    pub fn is_limited(&self) -> bool {
        self.limit() != UNLIMITED
    }
    /// Background reclaim starts above this: 7/8 of the limit.
    pub fn high(&self) -> u64 {
        let l = self.limit();
        if l == UNLIMITED { UNLIMITED } else { l - l / 8 }
    }
    /// Background reclaim stops below this: 3/4 of the limit.
    pub fn low(&self) -> u64 {
        let l = self.limit();
        if l == UNLIMITED { UNLIMITED } else { l - l / 4 }
    }

    pub fn charge(&self, cache: Cache, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.charged[cache as usize].fetch_add(bytes, Relaxed);
        let t = self.total.fetch_add(bytes, Relaxed) + bytes;
        self.peak.fetch_max(t, Relaxed);
    }

    pub fn uncharge(&self, cache: Cache, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let prev = self.charged[cache as usize].fetch_sub(bytes, Relaxed);
        debug_assert!(
            prev >= bytes,
            "{} uncharged more than it was charged",
            cache.name()
        );
        self.total.fetch_sub(bytes, Relaxed);
        self.uncharged_since_trim.fetch_add(bytes, Relaxed);
    }

    /// Bytes uncharged since the last call (reclaim.rs trims the allocator after many).
    pub fn take_uncharged(&self) -> u64 {
        self.uncharged_since_trim.swap(0, Relaxed)
    }
    pub fn uncharged_since_trim(&self) -> u64 {
        self.uncharged_since_trim.load(Relaxed)
    }

    pub fn used(&self) -> u64 {
        self.total.load(Relaxed)
    }
    pub fn charged(&self, cache: Cache) -> u64 {
        self.charged[cache as usize].load(Relaxed)
    }
    pub fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }
    /// Bytes above the limit now (0 when within it).
    pub fn over_by(&self) -> u64 {
        self.used().saturating_sub(self.limit())
    }
    /// Would charging `bytes` more pass the limit?
    pub fn would_exceed(&self, bytes: u64) -> bool {
        self.used().saturating_add(bytes) > self.limit()
    }
}

/// What one object is charged, per cache; returned in full when it is dropped.
#[derive(Default)]
pub struct Charge {
    budget: Option<Arc<Budget>>,
    bytes: [u64; NCACHES],
}

impl Charge {
    /// A charge against `budget` (nothing charged yet).
    pub fn new(budget: Arc<Budget>) -> Charge {
        Charge {
            budget: Some(budget),
            bytes: [0; NCACHES],
        }
    }

    /// Make this object's charge to `cache` exactly `bytes`.
    pub fn set(&mut self, cache: Cache, bytes: u64) {
        let Some(b) = &self.budget else { return };
        let old = self.bytes[cache as usize];
        if bytes > old {
            b.charge(cache, bytes - old);
        } else {
            b.uncharge(cache, old - bytes);
        }
        self.bytes[cache as usize] = bytes;
    }

    pub fn get(&self, cache: Cache) -> u64 {
        self.bytes[cache as usize]
    }

    pub fn total(&self) -> u64 {
        self.bytes.iter().sum()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            for c in CACHES {
                b.uncharge(c, self.bytes[c as usize]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_return_to_start() {
        let b = Arc::new(Budget::new(1000));
        assert_eq!((b.high(), b.low()), (875, 750));
        {
            let mut c1 = Charge::new(b.clone());
            let mut c2 = Charge::new(b.clone());
            c1.set(Cache::Inodes, 300);
            c2.set(Cache::Inodes, 300);
            c1.set(Cache::ExtentMaps, 500);
            assert_eq!(b.used(), 1100);
            assert_eq!(b.over_by(), 100);
            c1.set(Cache::ExtentMaps, 100);
            assert_eq!(b.charged(Cache::ExtentMaps), 100);
            assert_eq!(b.used(), 700);
            assert!(b.would_exceed(301) && !b.would_exceed(300));
        }
        assert_eq!(b.used(), 0);
        for c in CACHES {
            assert_eq!(b.charged(c), 0, "{}", c.name());
        }
        assert_eq!(b.peak(), 1100);
        // An unaccounted charge (no budget) does nothing.
        let mut c = Charge::default();
        c.set(Cache::Inodes, 5);
        assert_eq!(b.used(), 0);
    }
}
