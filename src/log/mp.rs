//! The per-mount core context (XFS's `struct xfs_mount`, "mp"): the device, the geometry
//! from the superblock, the log state, and the in-core free-space and inode counters.
//!
//! Counters are in-core sums of the AG headers, kept exact at commit time. Blocks are
//! *reserved* when a transaction starts, so a transaction that began never runs out of
//! space half way (which would leave a dirty transaction that can only shut down).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::error::{FsError, Result, err};
use crate::format::*;
use crate::log::trans::SpaceOps;
use crate::pmem::device::Device;

/// Keep at least this many blocks on each AGFL before an operation: one allocation or free
/// changes at most 3 records per tree, each splitting at most BTREE_LEVELS_MAX nodes.
pub const AGFL_MIN: u32 = 2 * 3 * 4;

/// Blocks per AG kept back from users so that frees and btree growth never hit ENOSPC:
/// the AGFL_MIN blocks each AG keeps on its free list (counted free, never handed out),
/// and room for the removals that may use the rest.
pub const AG_SET_ASIDE: u64 = 64;

pub struct Mp {
    pub dev: Arc<Device>,
    pub sb: Superblock,
    /// Serialises commits: record write and in-place apply (trans.rs).
    pub(crate) log: Mutex<crate::log::trans::LogState>,
    /// The space layer's deferred frees and B+tree node allocation (trans.rs, `SpaceOps`).
    pub(crate) space: &'static dyn SpaceOps,
    /// Per AG: the lock over its allocation structures, and in-core hints (trans.rs).
    pub(crate) ags: Vec<PerAg>,
    /// Free blocks: in the free-space trees plus on the AGFLs.
    pub free_blocks: AtomicI64,
    /// Blocks promised to running transactions.
    pub reserved: AtomicI64,
    pub inodes_count: AtomicU64,
    pub inodes_free: AtomicU64,
    read_only: AtomicBool,
    /// Set when a dirty transaction could not commit: every later change fails with EIO
    /// (XFS's forced shutdown); the media still holds the last committed state.
    shutdown: AtomicBool,
    /// Run once when the filesystem shuts down (the FUSE adapter drops the kernel's caches,
    /// so nothing cached is served after it). It runs wherever the failure was found,
    /// locks held: it takes none of the filesystem's locks and waits only a bounded time.
    shutdown_hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The AG the next new directory goes to: directories are spread over the AGs (XFS's
    /// inode64 rotor), files go near their directory, so work in different directories
    /// takes different AG locks.
    pub ag_rotor: AtomicU64,
    /// Frees logged as pending (their AG was below one held and taken), and waits for an
    /// AG lock out of order (the bounded wait in `Trans::lock_ag`): `daxfs stat`.
    pub pending_frees: AtomicU64,
    pub ag_waits_out_of_order: AtomicU64,
    /// The memory budget and reclaimer of this mount (mem/): unlimited until the
    /// filesystem sets a limit (fs/mod.rs), so mkfs and check run unbounded.
    pub mem: Arc<crate::mem::Mem>,
    /// `-o discard`: extents a commit frees are punched out of the image file (trans.rs).
    pub discard: AtomicBool,
    /// Frees held back from the free-space trees (holds.rs): the quarantine of blocks a
    /// revoked direct-access client may still store into.
    pub(crate) holds: Mutex<crate::log::holds::Holds>,
    /// Commits are durable only at a log force (image files, force.rs).
    pub(crate) deferred: bool,
    /// Committed metadata not yet written in place (force.rs). A leaf lock.
    pub(crate) overlay: Mutex<crate::log::force::Overlay>,
    /// Force the log after every commit (`-o sync`, `-o dirsync`).
    pub force_every_commit: AtomicBool,
}

/// One AG's in-core state (XFS's `struct xfs_perag`).
#[derive(Default)]
pub struct PerAg {
    /// Guards the AG's allocation structures: AGF, AGI, AGFL, the free-space trees, the
    /// inode trees and the unlinked tree. A transaction takes it at its first touch of any
    /// of them and holds it to its end; several in ascending AG order (trans.rs).
    pub(crate) lock: Mutex<()>,
    /// Free blocks and free inodes as of the last change, read without the lock to choose
    /// an AG; the choice is checked against the AGF or AGI once the lock is held.
    pub free_blocks: AtomicU64,
    pub free_inodes: AtomicU64,
}

impl Mp {
    pub fn new(
        dev: Arc<Device>,
        sb: Superblock,
        read_only: bool,
        space: &'static dyn SpaceOps,
    ) -> Mp {
        let dev_deferred = dev.persistence() == crate::pmem::device::Persistence::PageCache;
        Mp {
            dev,
            space,
            log: Mutex::new(crate::log::trans::LogState::default()),
            ags: (0..sb.ag_count).map(|_| PerAg::default()).collect(),
            sb,
            free_blocks: AtomicI64::new(0),
            reserved: AtomicI64::new(0),
            inodes_count: AtomicU64::new(0),
            inodes_free: AtomicU64::new(0),
            read_only: AtomicBool::new(read_only),
            shutdown: AtomicBool::new(false),
            shutdown_hook: OnceLock::new(),
            ag_rotor: AtomicU64::new(0),
            pending_frees: AtomicU64::new(0),
            ag_waits_out_of_order: AtomicU64::new(0),
            mem: Arc::new(crate::mem::Mem::default()),
            discard: AtomicBool::new(false),
            holds: Mutex::new(Default::default()),
            deferred: dev_deferred,
            overlay: Mutex::new(Default::default()),
            force_every_commit: AtomicBool::new(false),
        }
    }

    pub fn uuid(&self) -> [u8; 16] {
        self.sb.uuid
    }

    pub fn ag_of(&self, fsblock: u64) -> u32 {
        (fsblock / self.sb.ag_blocks) as u32
    }
    pub fn agbno(&self, fsblock: u64) -> u64 {
        fsblock % self.sb.ag_blocks
    }
    pub fn fsblock(&self, agno: u32, agbno: u64) -> u64 {
        agno as u64 * self.sb.ag_blocks + agbno
    }
    pub fn ag_len(&self, agno: u32) -> u64 {
        self.sb.ag_len(agno)
    }

    pub fn ino_block(&self, ino: u64) -> u64 {
        ino / INODES_PER_BLOCK
    }
    pub fn ino_offset(&self, ino: u64) -> usize {
        (ino % INODES_PER_BLOCK) as usize * INODE_SIZE
    }
    /// An inode number from a caller or the media names a block inside the device, past
    /// the AG headers. Anything else is garbage (ESTALE for callers, corruption on media).
    pub fn ino_valid(&self, ino: u64) -> bool {
        let blk = self.ino_block(ino);
        blk < self.sb.total_blocks && self.agbno(blk) >= AG_FIRST_FREE
    }

    /// Blocks users may still allocate (statfs f_bavail).
    pub fn avail_blocks(&self) -> u64 {
        let set_aside = AG_SET_ASIDE * self.sb.ag_count as u64;
        let v = self.free_blocks.load(Ordering::Relaxed)
            - self.reserved.load(Ordering::Relaxed)
            - set_aside as i64;
        v.max(0) as u64
    }

    /// Reserve `n` blocks for a transaction; `use_set_aside` lets removals dip into the
    /// per-AG set-aside so that deleting files works on a full device.
    pub fn reserve(&self, n: u64, use_set_aside: bool) -> Result<()> {
        let set_aside = if use_set_aside {
            0
        } else {
            AG_SET_ASIDE * self.sb.ag_count as u64
        };
        // Compare-and-swap so that concurrent transactions cannot both take the last blocks.
        let mut reserved = self.reserved.load(Ordering::Acquire);
        loop {
            let free = self.free_blocks.load(Ordering::Acquire);
            if free - reserved - (n as i64) < set_aside as i64 {
                return err(libc::ENOSPC);
            }
            match self.reserved.compare_exchange(
                reserved,
                reserved + n as i64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => reserved = now,
            }
        }
    }

    pub fn unreserve(&self, n: u64) {
        self.reserved.fetch_sub(n as i64, Ordering::AcqRel);
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }
    pub fn set_read_only(&self, ro: bool) {
        self.read_only.store(ro, Ordering::Release)
    }
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
    pub fn force_shutdown(&self, why: &str) {
        if !self.shutdown.swap(true, Ordering::AcqRel) {
            log::error!(
                "{}: filesystem shut down: {why}. The media holds the last committed state; \
                 unmount and run `daxfs check`.",
                self.dev.source()
            );
            if let Some(hook) = self.shutdown_hook.get() {
                hook();
            }
        }
    }
    /// Set what `force_shutdown` runs (once per mount; a second call is ignored).
    pub fn on_shutdown(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.shutdown_hook.set(hook);
    }

    /// May this mount change anything now?
    pub fn check_writable(&self) -> Result<()> {
        if self.is_shutdown() {
            return Err(FsError::Io("filesystem is shut down".into()));
        }
        if self.is_read_only() {
            return err(libc::EROFS);
        }
        Ok(())
    }

    /// Read a block as committed: the overlay's copy, else the device (no transaction).
    pub fn read_block(&self, blk: u64, buf: &mut [u8]) {
        self.read_bytes(blk, 0, &mut buf[..BLOCK_SIZE]);
    }
}
