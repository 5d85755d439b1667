//! Transactions and the metadata write-ahead log.
//!
//! A transaction collects private copies of the metadata blocks it changes (with a
//! 64-byte-granular dirty mask). Commit:
//!   1. finish deferred work (frees go into the free-space trees now, so a block freed by
//!      this transaction cannot be reused by it: no stale data in a crash);
//!   2. seal every changed metadata block (LSN, then CRC);
//!   3. write one log record (header, then each dirty region), flush, fence: the record's
//!      CRC makes it all-or-nothing, so this fence is the commit point;
//!   4. write the same regions in place.
//!
//! Head and tail: the tail is the oldest record whose in-place writes may not be durable.
//! On DAX step 4 is flushed and fenced at once and the tail follows the head. Where a
//! fence is an msync (page cache) or free (memfd), step 4 is made durable lazily by a
//! checkpoint (`persist_all`) when a new record would overwrite the tail, and at fsync,
//! sync and unmount. Every record names the tail; recovery replays from the newest
//! record's tail to it, in order (replaying block images is idempotent, so a crash during
//! recovery just recovers again), then zeroes the log and moves `lsn_base` past every LSN
//! ever written. Steps 3 and 4 run under the log lock, so records are applied in LSN order.
//!
//! Record placement: records are written back to back from offset 0 of the log region and
//! wrap to 0 when the next one does not fit, so the newest lap is a chain from offset 0.
//! Recovery follows that chain and keeps the valid record with the highest LSN.
//!
//! Locks: a transaction is begun (blocks reserved) after IOLOCK and MMAPLOCK and before
//! any ILOCK, as XFS allocates its transaction before xfs_ilock. Beginning one takes no
//! lock. An AG's lock is taken at the first touch of its allocation structures and held
//! to the end; the log lock only around writing and applying the record. Order:
//! ILOCK -> AG locks, ascending -> log lock (see inode/mod.rs).
//!
//! AG locks (XFS's AGI/AGF buffer locks and its ascending-AG rule). A transaction blocks
//! on an AG lock only when the AG is above every AG it holds; a lower one it may only
//! try. So no two transactions wait for each other. The one exception is a last resort,
//! a bounded wait that ends in an error (`lock_ag`, counted in `ag_waits_out_of_order`).
//! The callers keep to the rule:
//! - An allocation chooses its AG: a held one, one whose lock is free, or one above those
//!   held; an AG that turns out unusable and that the transaction has not changed is let
//!   go again at once (`release_ag_if_clean`).
//! - Structures that must be changed in one given AG (an inode's AGI entry) are locked
//!   first in their transaction (fs/ locks a victim's AG before anything else).
//! - Frees run at commit in ascending AG order. A free into an AG below one already held
//!   whose lock is taken by someone else is not waited for: the record logs it as a
//!   *pending free* (XFS's EFI), and right after the commit, holding no AG lock, a second
//!   transaction does the free and takes it off the pending list (the EFD). Every record
//!   carries the whole pending list as it stands after that record, so recovery finishes
//!   what the newest record lists (`recover`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{MutexGuard, TryLockError};

use crate::btree::{BlockIo, Tree};
use crate::error::{FsError, Result, err};
use crate::format::*;
use crate::log::mp::Mp;

/// Recovery is its own file (recovery.rs); these names stay reachable from here.
pub use crate::log::recovery::{LogRecord, records_to_replay, recover};
use crate::mem::{NofsGuard, nofs_scope};
use crate::pmem::device::Persistence;
use crate::pmem::errtag::ErrorTag;

/// What the log needs from the space layer above it, which implements it
/// (`space::SPACE`) and is handed to `Mp::new`: deferred frees at commit and recovery
/// (XFS's deferred-op types), and blocks for B+tree nodes (XFS's btree alloc_block ops).
/// A table rather than a call, so that this layer never names the one above.
pub trait SpaceOps: Sync {
    /// Put [fsblock, fsblock+len) into its AG's free-space trees (the AG is locked).
    fn free_extent_now(&self, tx: &mut Trans<'_>, fsblock: u64, len: u64) -> Result<()>;
    /// Is [fsblock, fsblock+len) a range this filesystem may free?
    fn check_free_range(&self, mp: &Mp, fsblock: u64, len: u64) -> Result<()>;
    /// A block for a new node of `tree`.
    fn alloc_node(&self, tx: &mut Trans<'_>, tree: &Tree) -> Result<u64>;
    /// Give back a node of `tree`.
    fn free_node(&self, tx: &mut Trans<'_>, tree: &Tree, blk: u64) -> Result<()>;
}

#[derive(Debug, Default)]
pub struct LogState {
    /// Byte offset in the log region where the next record goes.
    pub(super) head: u64,
    pub(super) next_lsn: u64,
    /// The oldest record whose in-place writes may not be durable (== next_lsn: none),
    /// and its offset. Records from the tail on must not be overwritten.
    pub(super) tail_lsn: u64,
    pub(super) tail_off: u64,
    pub commits: u64,
    pub checkpoints: u64,
    /// Blocks with regions in the records recovery would replay (lazy mode: every record
    /// since the last checkpoint). Such a block, once freed, must not be handed out again
    /// until a checkpoint: replaying an old record would write stale metadata over what
    /// the block holds now (file data is not logged). XFS's busy extents, simplified.
    logged: std::collections::BTreeSet<u64>,
    /// Extents unmapped by a committed record and not yet in the free-space trees (frees
    /// that could not take their AG lock in order): the list every record carries.
    pub(super) pending: Vec<(u64, u64)>,
    /// Deferred durability (force.rs): the device ranges of records, and of the file data
    /// they depend on, written since the last force; extents those records freed (busy
    /// until the force); forces done.
    pub(super) unforced_log: Vec<(u64, u64)>,
    pub(super) unforced_data: Vec<(u64, u64)>,
    pub(super) unforced_frees: BTreeMap<u64, u64>,
    /// Records that wait for their data before they may go into the mapping, with their
    /// device offsets (force.rs).
    pub(super) held: Vec<(u64, Vec<u8>)>,
    pub forces: u64,
}

/// Are records [tail, head) in the way of a new record at [pos, pos + len)?
fn overlaps_live(log: &LogState, pos: u64, len: u64) -> bool {
    if log.tail_lsn == log.next_lsn {
        return false;
    }
    let (t, h) = (log.tail_off, log.head);
    let live = |a: u64, b: u64| pos < b && a < pos + len;
    if t < h {
        live(t, h)
    } else {
        live(t, u64::MAX) || live(0, h)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufKind {
    /// Has a block header: sealed (LSN, CRC) at commit.
    Meta,
    /// Inode cluster: each inode slot carries its own CRC, computed when encoded.
    Raw,
}

struct TxBuf {
    data: Box<Block>,
    kind: BufKind,
    /// Bit i: bytes [64 i, 64 i + 64) changed.
    dirty: u64,
}

const CHUNK: usize = 64;

/// The most pending frees one record can list (its region length is a u16).
const PENDING_MAX: usize = u16::MAX as usize / LR_PENDING_ENTRY;

fn dirty_mask(off: usize, len: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    let first = off / CHUNK;
    let last = (off + len - 1) / CHUNK;
    let bits = last - first + 1;
    let m = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    m << first
}

fn diff_mask(old: &[u8], new: &[u8]) -> u64 {
    let mut m = 0u64;
    for i in 0..BLOCK_SIZE / CHUNK {
        let r = i * CHUNK..(i + 1) * CHUNK;
        if old[r.clone()] != new[r] {
            m |= 1 << i;
        }
    }
    m
}

/// An AG lock a transaction holds.
/// How far a search over the AGs (alloc.rs, ialloc.rs) goes for an AG's lock; it makes
/// one pass of each kind, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgPass {
    /// AGs held already, or whose lock is free.
    Try,
    /// Also waiting for AGs above every AG held.
    InOrder,
    /// Also the bounded wait for lower ones (`lock_ag`): nothing else was found.
    Last,
}

impl AgPass {
    pub const ALL: [AgPass; 3] = [AgPass::Try, AgPass::InOrder, AgPass::Last];
}

struct HeldAg<'a> {
    agno: u32,
    /// Locked up front for a change that must happen there: never let go early.
    pinned: bool,
    _guard: MutexGuard<'a, ()>,
}

pub struct Trans<'a> {
    pub mp: &'a Mp,
    /// AG locks held, ascending by AG number: taken at the first touch of an AG's
    /// structures (AGF, AGI, AGFL, the AG trees) and held until the transaction ends.
    ags: Vec<HeldAg<'a>>,
    bufs: BTreeMap<u64, TxBuf>,
    /// Extents freed by this transaction, put into the free-space trees at commit.
    deferred_frees: Vec<(u64, u64)>,
    /// Frees logged as pending by this transaction (their AG could not be locked in
    /// order), and pending frees it completes.
    pending_new: Vec<(u64, u64)>,
    pending_done: Vec<(u64, u64)>,
    /// Of `pending_new`, the frees of held blocks (holds.rs) with their owner: they stay
    /// pending after the commit, until the owner's hold is released.
    held_new: Vec<(u64, u64, u64)>,
    /// Blocks reserved at start; what is not used is given back at the end.
    reserved: u64,
    /// Backing space promised at start (`Device::reserve_backing`), given back at the end.
    backing: u64,
    /// With `-o discard` or deferred durability: extents this transaction put into the
    /// free-space trees, to be punched out of the image once the commit is durable, and
    /// busy until then (force.rs).
    pub(crate) freed: Vec<(u64, u64)>,
    /// Blocks taken from the free pool (allocations) and returned (frees) so far.
    pub(crate) blocks_allocated: u64,
    pub(crate) blocks_freed: u64,
    pub(crate) inodes_delta: i64,
    pub(crate) ifree_delta: i64,
    committed: bool,
    _nofs: NofsGuard,
}

impl Mp {
    /// Begin a transaction that may allocate up to `resblks` blocks.
    #[track_caller]
    pub fn trans(&self, resblks: u64) -> Result<Trans<'_>> {
        self.trans_inner(resblks, false)
    }

    /// Begin a transaction that removes things: it may use the set-aside blocks, so that
    /// deleting works on a full device.
    #[track_caller]
    pub fn trans_remove(&self, resblks: u64) -> Result<Trans<'_>> {
        self.trans_inner(resblks, true)
    }

    #[track_caller]
    fn trans_inner(&self, resblks: u64, use_set_aside: bool) -> Result<Trans<'_>> {
        // The reclaim checker: a transaction inside NOFS/NOIO reclaim is a bug.
        crate::mem::lockcheck::fs_entered("a transaction", std::panic::Location::caller());
        self.check_writable()?;
        crate::log::lockorder::assert_no_ilock("a transaction");
        // Entering a transaction enters the NOFS scope: reclaim from here must not recurse
        // into the filesystem (DESIGN.md section 5).
        let nofs = nofs_scope();
        let mut waits = 0;
        while let Err(e) = self.reserve(resblks, use_set_aside) {
            // A removal gives space back, so on a full device it waits (a while) for the
            // running transactions to hand back their reservations rather than fail:
            // deleting must work when the device is full (XFS blocks here as well).
            if !use_set_aside || self.reserved.load(Relaxed) == 0 || waits == 5000 {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            waits += 1;
        }
        // A sparse image: the backing filesystem must hold whatever this transaction may
        // allocate, or it fails now, before it has changed anything (device.rs).
        let used = self.sb.total_blocks as i64 - self.free_blocks.load(Relaxed);
        let Ok(backing) = self
            .dev
            .reserve_backing(resblks, use_set_aside, used.max(0) as u64)
        else {
            self.unreserve(resblks);
            return err(libc::ENOSPC);
        };
        let mut tx = self.new_trans(resblks, nofs);
        tx.backing = backing;
        Ok(tx)
    }

    fn new_trans(&self, reserved: u64, nofs: NofsGuard) -> Trans<'_> {
        Trans {
            mp: self,
            ags: Vec::new(),
            bufs: BTreeMap::new(),
            deferred_frees: Vec::new(),
            pending_new: Vec::new(),
            pending_done: Vec::new(),
            held_new: Vec::new(),
            reserved,
            backing: 0,
            freed: Vec::new(),
            blocks_allocated: 0,
            blocks_freed: 0,
            inodes_delta: 0,
            ifree_delta: 0,
            committed: false,
            _nofs: nofs,
        }
    }

    /// Do pending frees (a transaction that logged them has just committed, or recovery
    /// found them in the newest record) and take them off the pending list. Holds no AG
    /// lock when called, so it may wait for each AG in ascending order. It may run while
    /// the caller holds ILOCKs (they come before AG locks) and reserves nothing: frees
    /// take blocks only from their own AG's free list.
    pub(super) fn finish_pending(&self, mut extents: Vec<(u64, u64)>) -> Result<()> {
        extents.sort_unstable();
        let mut tx = self.new_trans(0, nofs_scope());
        for &(blk, len) in &extents {
            self.space.check_free_range(self, blk, len)?;
            tx.lock_ag(self.ag_of(blk))?;
            self.space.free_extent_now(&mut tx, blk, len)?;
        }
        tx.pending_done = extents;
        tx.commit()
    }
}

impl<'a> Trans<'a> {
    pub fn holds_ag(&self, agno: u32) -> bool {
        self.ags.iter().any(|h| h.agno == agno)
    }

    /// Take AG `agno`'s lock if that cannot deadlock: it is held already, it is free now,
    /// or (`may_wait`) it is above every AG held, so waiting keeps the ascending order.
    /// False: it is below an AG held and someone else has it.
    pub fn try_lock_ag(&mut self, agno: u32, may_wait: bool) -> bool {
        if self.holds_ag(agno) {
            return true;
        }
        let lock = &self.mp.ags[agno as usize].lock;
        let guard = match lock.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                let in_order = self.ags.last().is_none_or(|h| h.agno < agno);
                if !(may_wait && in_order) {
                    return false;
                }
                lock.lock().unwrap_or_else(|p| p.into_inner())
            }
        };
        if self.ags.is_empty() {
            // The first AG of this transaction must have room for all it may allocate
            // (its hint is exact now that the lock is held: only holders change it).
            // Otherwise later allocations could need a lower AG that another transaction
            // holds while it waits for this one, and fail half way with ENOSPC. So on a
            // nearly full AG the transaction takes every AG, in order, holding none yet:
            // transactions serialise only when space is short.
            let need = self.blocks_left() + 2 * crate::log::mp::AGFL_MIN as u64;
            if self.mp.ags[agno as usize].free_blocks.load(Relaxed) < need {
                drop(guard);
                if !may_wait {
                    return false;
                }
                self.lock_every_ag();
                return true;
            }
        }
        let at = self.ags.partition_point(|h| h.agno < agno);
        self.ags.insert(
            at,
            HeldAg {
                agno,
                pinned: false,
                _guard: guard,
            },
        );
        true
    }

    /// Every AG's lock, in ascending order, by a transaction that holds none yet; they are
    /// all pinned, so none is let go early and no later lock is out of order.
    fn lock_every_ag(&mut self) {
        debug_assert!(self.ags.is_empty());
        for (agno, perag) in self.mp.ags.iter().enumerate() {
            self.ags.push(HeldAg {
                agno: agno as u32,
                pinned: true,
                _guard: perag.lock.lock().unwrap_or_else(|p| p.into_inner()),
            });
        }
    }

    /// Take AG `agno`'s lock for a structure that must be changed there (an inode's AGI
    /// entry, an AG tree found through its header). When it is below an AG held and
    /// taken, the AGs above it that this transaction has not changed are let go, which
    /// puts it in order again. The callers lock such AGs first (trans.rs module doc), so
    /// what remains is a bounded wait and then an I/O error rather than a deadlock.
    pub fn lock_ag(&mut self, agno: u32) -> Result<()> {
        if self.lock_ag_in_order(agno) {
            return Ok(());
        }
        self.mp.ag_waits_out_of_order.fetch_add(1, Relaxed);
        log::warn!(
            "AG {agno}: lock wanted below AG {} already held; waiting",
            self.ags.last().map_or(0, |h| h.agno)
        );
        for _ in 0..5000 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            if self.try_lock_ag(agno, false) {
                return Ok(());
            }
        }
        Err(FsError::Io(format!(
            "AG {agno}: lock wanted out of order stayed taken for 5 s"
        )))
    }

    /// AG `agno`'s lock without waiting out of order: held, free, above every AG held,
    /// or so once the unchanged AGs above it are let go. False: it stays below one.
    fn lock_ag_in_order(&mut self, agno: u32) -> bool {
        if self.try_lock_ag(agno, true) {
            return true;
        }
        self.release_clean_above(agno);
        self.try_lock_ag(agno, true)
    }

    /// AG `agno`'s lock as far as search pass `pass` goes (alloc.rs, ialloc.rs).
    pub fn lock_ag_for(&mut self, agno: u32, pass: AgPass) -> bool {
        match pass {
            AgPass::Try => self.try_lock_ag(agno, false),
            AgPass::InOrder => self.try_lock_ag(agno, true),
            AgPass::Last => self.lock_ag(agno).is_ok(),
        }
    }

    /// Lock AG `agno` before anything else in the transaction, for a structure that will
    /// have to be changed there later (an inode's AGI entry): locked first it is in
    /// order, and it stays held however the allocations in between choose.
    pub fn pin_ag(&mut self, agno: u32) -> Result<()> {
        self.lock_ag(agno)?;
        if let Some(h) = self.ags.iter_mut().find(|h| h.agno == agno) {
            h.pinned = true;
        }
        Ok(())
    }

    /// The device blocks of AG `agno`.
    fn ag_blocks(&self, agno: u32) -> std::ops::Range<u64> {
        let start = self.mp.fsblock(agno, 0);
        start..start + self.mp.ag_len(agno)
    }

    /// Has this transaction changed any block of AG `agno`?
    fn ag_dirty(&self, agno: u32) -> bool {
        self.bufs
            .range(self.ag_blocks(agno))
            .any(|(_, b)| b.dirty != 0)
    }

    /// Let go of AG `agno` if this transaction holds it and changed nothing in it (it
    /// looked at the AG and chose another). Its unchanged buffers go too: they may be
    /// stale once another transaction has the lock.
    pub fn release_ag_if_clean(&mut self, agno: u32) {
        let Some(i) = self.ags.iter().position(|h| h.agno == agno) else {
            return;
        };
        if self.ags[i].pinned || self.ag_dirty(agno) {
            return;
        }
        let clean: Vec<u64> = self
            .bufs
            .range(self.ag_blocks(agno))
            .map(|(&b, _)| b)
            .collect();
        for b in clean {
            self.bufs.remove(&b);
        }
        self.ags.remove(i);
    }

    fn release_clean_above(&mut self, agno: u32) {
        let above: Vec<u32> = self
            .ags
            .iter()
            .map(|h| h.agno)
            .filter(|&a| a > agno)
            .collect();
        for a in above {
            self.release_ag_if_clean(a);
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.bufs.values().any(|b| b.dirty != 0)
            || !self.deferred_frees.is_empty()
            || !self.pending_new.is_empty()
            || !self.pending_done.is_empty()
    }

    /// Make blocks [blk, blk + len) real in a sparse image before they are handed out
    /// (device.rs module doc). Called by the allocator before it takes the blocks out of
    /// the free-space trees. Ok(false): the backing filesystem is full (nothing changed).
    pub(crate) fn claim_blocks(&mut self, blk: u64, len: u64) -> Result<bool> {
        let bs = BLOCK_SIZE as u64;
        match self.mp.dev.make_real(blk * bs, len * bs) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.0, libc::ENOSPC | libc::EDQUOT) => Ok(false),
            Err(e) => Err(FsError::Io(format!(
                "cannot allocate blocks {blk}+{len} in the image: {}",
                std::io::Error::from_raw_os_error(e.0)
            ))),
        }
    }

    /// Blocks this transaction may still allocate.
    pub fn blocks_left(&self) -> u64 {
        self.reserved.saturating_sub(self.blocks_allocated)
    }

    /// Raw bytes of a block as this transaction sees it.
    pub fn read_raw(&self, blk: u64, off: usize, buf: &mut [u8]) {
        match self.bufs.get(&blk) {
            Some(b) => buf.copy_from_slice(&b.data[off..off + buf.len()]),
            None => self.mp.read_bytes(blk, off, buf),
        }
    }

    fn load(&mut self, blk: u64, kind: BufKind) -> &mut TxBuf {
        let mp = self.mp;
        self.bufs.entry(blk).or_insert_with(|| {
            let mut data = new_block();
            mp.read_block(blk, &mut data[..]);
            TxBuf {
                data,
                kind,
                dirty: 0,
            }
        })
    }

    /// Change bytes of a block without a block header (inode clusters).
    pub fn write_raw(&mut self, blk: u64, off: usize, data: &[u8]) {
        assert!(blk < self.mp.sb.total_blocks && off + data.len() <= BLOCK_SIZE);
        let b = self.load(blk, BufKind::Raw);
        b.data[off..off + data.len()].copy_from_slice(data);
        b.dirty |= dirty_mask(off, data.len());
    }

    /// Start a metadata block from scratch (no read of its old contents is needed).
    pub fn new_meta(&mut self, blk: u64, data: &Block) {
        assert!(blk < self.mp.sb.total_blocks);
        self.bufs.insert(
            blk,
            TxBuf {
                data: Box::new(*data),
                kind: BufKind::Meta,
                dirty: u64::MAX,
            },
        );
    }

    /// Free an extent when the transaction commits.
    pub fn defer_free(&mut self, fsblock: u64, len: u64) {
        assert!(len > 0 && fsblock + len <= self.mp.sb.total_blocks);
        self.deferred_frees.push((fsblock, len));
    }

    /// Forget a buffered block (it was freed in this transaction and must not be written).
    pub fn forget_block(&mut self, blk: u64) {
        self.bufs.remove(&blk);
    }

    /// Commit: see the module doc for the steps and why they are in this order.
    pub fn commit(mut self) -> Result<()> {
        let mut r = self.commit_inner();
        if let Err(e) = &r {
            // The operations that completed before this one keep what they were told:
            // where commits wait for a force, force them before stopping (force.rs; a
            // failing device just fails this too).
            let _ = crate::log::force::force(self.mp);
            self.mp
                .force_shutdown(&format!("transaction commit failed: {e}"));
        }
        self.committed = true;
        self.ags.clear();
        let mut pending = std::mem::take(&mut self.pending_new);
        let held = std::mem::take(&mut self.held_new);
        if r.is_ok() && !held.is_empty() {
            pending.retain(|&(b, n)| !held.iter().any(|h| (h.0, h.1) == (b, n)));
            pending.extend(self.mp.park_held(held));
        }
        if r.is_ok() && !pending.is_empty() {
            r = self.mp.finish_pending(pending);
        }
        r
    }

    /// Put the deferred frees into the free-space trees, in ascending AG order. A free
    /// whose AG is below one held and taken by someone else becomes a pending free (the
    /// module doc); the `free_intent` error tag forces that path.
    fn finish_frees(&mut self) -> Result<()> {
        while !self.deferred_frees.is_empty() {
            let mut frees = std::mem::take(&mut self.deferred_frees);
            frees.sort_unstable();
            let mut pieces = Vec::with_capacity(frees.len());
            {
                let holds = self.mp.holds.lock().unwrap_or_else(|p| p.into_inner());
                for (blk, len) in frees {
                    pieces.extend(holds.split(blk, len));
                }
            }
            for (blk, len, owner) in pieces {
                if let Some(owner) = owner {
                    // A revoked client may still store into these blocks: logged as
                    // pending, finished only when the hold is released (holds.rs).
                    self.mp.space.check_free_range(self.mp, blk, len)?;
                    self.pending_new.push((blk, len));
                    self.held_new.push((blk, len, owner));
                    continue;
                }
                let agno = self.mp.ag_of(blk);
                let forced = self.mp.dev.errtags.should_fail(ErrorTag::FreeIntent);
                if !forced && self.lock_ag_in_order(agno) {
                    self.mp.space.free_extent_now(self, blk, len)?;
                } else {
                    self.mp.space.check_free_range(self.mp, blk, len)?;
                    self.pending_new.push((blk, len));
                    self.mp.pending_frees.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(())
    }

    fn commit_inner(&mut self) -> Result<()> {
        self.finish_frees()?;
        if !self.is_dirty() {
            self.settle_counters();
            return Ok(());
        }
        // The log lock: records are written, and applied in place, one transaction at a
        // time, so at most the newest record can be unapplied after a crash.
        let mut log = self.mp.log.lock().unwrap_or_else(|p| p.into_inner());
        let lsn = log.next_lsn;
        for (_, b) in self.bufs.iter_mut() {
            if b.dirty != 0 && b.kind == BufKind::Meta {
                seal_block(&mut b.data[..], lsn);
                b.dirty |= 1; // header chunk (LSN, CRC)
            }
        }
        // The pending list as it stands after this record.
        let mut pending = log.pending.clone();
        for done in &self.pending_done {
            let Some(i) = pending.iter().position(|p| p == done) else {
                return Err(FsError::Io(format!(
                    "pending free {}+{} is not on the pending list",
                    done.0, done.1
                )));
            };
            pending.swap_remove(i);
        }
        pending.extend_from_slice(&self.pending_new);
        if pending.len() > PENDING_MAX {
            return Err(FsError::Io(format!(
                "{} pending frees: more than a log record can list",
                pending.len()
            )));
        }
        let mut record = self.build_record(lsn, &pending);
        let log_bytes = self.mp.sb.log_blocks * BLOCK_SIZE as u64;
        if record.len() as u64 > log_bytes {
            return Err(FsError::Errno(libc::ENOSPC));
        }
        let dev = &self.mp.dev;
        let mut head = log.head;
        if head + record.len() as u64 > log_bytes {
            head = 0;
        }
        if overlaps_live(&log, head, record.len() as u64) {
            checkpoint_locked(self.mp, &mut log)?;
        }
        // The oldest record recovery must replay: the live tail, or this record itself.
        let (tail_lsn, tail_off) = if log.tail_lsn == log.next_lsn {
            (lsn, head)
        } else {
            (log.tail_lsn, log.tail_off)
        };
        put_u64(&mut record, LR_TAIL_LSN, tail_lsn);
        put_u64(&mut record, LR_TAIL_OFF, tail_off);
        let crc = crc_with_hole(&record, 4);
        put_u32(&mut record, 4, crc);
        let log_off = self.mp.sb.log_start * BLOCK_SIZE as u64 + head;
        if dev.errtags.should_fail(ErrorTag::LogWrite) {
            // Half the record reaches the media, unfenced: its CRC keeps it out of replay.
            let half = record.len() / 2;
            dev.write(log_off, &record[..half]);
            dev.flush(log_off, half as u64);
            return Err(FsError::Io(format!(
                "log write at LSN {lsn} failed (error tag)"
            )));
        }
        let deferred = self.mp.deferred;
        let rec_len = record.len() as u64;
        if deferred {
            // Durable at the next force (force.rs). A record that depends on file data
            // this thread flushed for it waits in memory until that data is durable;
            // one that does not goes into the mapping now. The in-place copies wait in
            // the overlay.
            let data = dev.take_flushed();
            log.unforced_log.push((log_off, record.len() as u64));
            if data.is_empty() {
                dev.write(log_off, &record);
            } else {
                log.unforced_data.extend(data);
                log.held.push((log_off, std::mem::take(&mut record)));
            }
        } else {
            dev.write(log_off, &record);
            dev.flush(log_off, record.len() as u64);
            dev.fence();
            if dev.take_error() {
                // Whether the record is durable is unknown; nothing more may be written.
                return Err(FsError::Io(format!(
                    "device flush of the log record at LSN {lsn} failed"
                )));
            }
        }
        // Committed. Now the same bytes in place. Where a fence is an msync (page cache),
        // they are made durable lazily, at the next checkpoint; until then recovery replays
        // every record from the tail.
        let lazy = dev.persistence() != Persistence::Dax;
        for (&blk, b) in self.bufs.iter() {
            if deferred {
                if b.dirty != 0 {
                    crate::log::force::stage(self.mp, blk, &b.data, b.dirty);
                }
                continue;
            }
            for (off, len) in regions(b.dirty) {
                let at = blk * BLOCK_SIZE as u64 + off as u64;
                dev.write(at, &b.data[off..off + len]);
                if !lazy {
                    dev.flush(at, len as u64);
                }
            }
        }
        if lazy {
            (log.tail_lsn, log.tail_off) = (tail_lsn, tail_off);
            log.logged.extend(
                self.bufs
                    .iter()
                    .filter(|(_, b)| b.dirty != 0)
                    .map(|(&blk, _)| blk),
            );
        } else {
            dev.fence();
            if dev.take_error() {
                // The record is durable; the in-place writes may not be: recovery replays.
                return Err(FsError::Io(format!(
                    "device flush after applying LSN {lsn} failed"
                )));
            }
            (log.tail_lsn, log.tail_off) = (lsn + 1, head + rec_len);
        }
        log.head = head + rec_len;
        log.next_lsn += 1;
        log.pending = pending;
        log.commits += 1;
        let freed = std::mem::take(&mut self.freed);
        let discards = if deferred {
            // Busy until the force; punched after it (force.rs).
            log.unforced_frees.extend(freed);
            Vec::new()
        } else {
            not_busy(&log, &freed)
        };
        if deferred
            && (self.mp.force_every_commit.load(Relaxed)
                || self
                    .mp
                    .overlay
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .len()
                    > crate::log::force::OVERLAY_MAX_BLOCKS)
        {
            crate::log::force::force_locked(self.mp, &mut log)?;
        }
        drop(log);
        self.settle_counters();
        // `-o discard`: the frees are durable now (the record is), their AGs are still
        // locked by this transaction (nobody can allocate the blocks in between), and
        // blocks an unreplayed record still names were left out above.
        for (blk, len) in discards {
            discard_blocks(self.mp, blk, len);
        }
        Ok(())
    }

    fn settle_counters(&mut self) {
        use std::sync::atomic::Ordering::AcqRel;
        let mp = self.mp;
        mp.free_blocks.fetch_add(
            self.blocks_freed as i64 - self.blocks_allocated as i64,
            AcqRel,
        );
        mp.inodes_count.fetch_add(self.inodes_delta as u64, AcqRel);
        mp.inodes_free.fetch_add(self.ifree_delta as u64, AcqRel);
        self.blocks_freed = 0;
        self.blocks_allocated = 0;
        self.inodes_delta = 0;
        self.ifree_delta = 0;
    }

    fn build_record(&self, lsn: u64, pending: &[(u64, u64)]) -> Vec<u8> {
        let mut rec = vec![0u8; LR_HDR];
        let mut n = 0u32;
        if !pending.is_empty() {
            let mut h = [0u8; LR_REGION_HDR];
            put_u64(&mut h, 0, LR_PENDING_FREES);
            put_u16(&mut h, 10, (pending.len() * LR_PENDING_ENTRY) as u16);
            rec.extend_from_slice(&h);
            for &(blk, len) in pending {
                rec.extend_from_slice(&blk.to_le_bytes());
                rec.extend_from_slice(&len.to_le_bytes());
            }
            n += 1;
        }
        for (&blk, b) in self.bufs.iter() {
            for (off, len) in regions(b.dirty) {
                let mut h = [0u8; LR_REGION_HDR];
                put_u64(&mut h, 0, blk);
                put_u16(&mut h, 8, off as u16);
                put_u16(&mut h, 10, len as u16);
                rec.extend_from_slice(&h);
                rec.extend_from_slice(&b.data[off..off + len]);
                n += 1;
            }
        }
        put_u32(&mut rec, 0, LOG_MAGIC);
        put_u64(&mut rec, 8, lsn);
        let len = rec.len() as u32;
        put_u32(&mut rec, 16, len);
        put_u32(&mut rec, 20, n);
        let crc = crc_with_hole(&rec, 4);
        put_u32(&mut rec, 4, crc);
        rec
    }
}

impl Drop for Trans<'_> {
    fn drop(&mut self) {
        if !self.committed && self.is_dirty() {
            // A dirty transaction that is cancelled cannot be undone in memory: stop all
            // changes (XFS does the same). The media is still consistent.
            self.mp.force_shutdown("a dirty transaction was cancelled");
        }
        self.mp.unreserve(self.reserved);
        self.mp.dev.release_backing(self.backing);
    }
}

/// Runs of dirty 64-byte chunks as (offset, len). Regions are multiples of 8 bytes.
pub(super) fn regions(mask: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < 64 {
        if mask & (1 << i) == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < 64 && mask & (1 << i) != 0 {
            i += 1;
        }
        out.push((start * CHUNK, (i - start) * CHUNK));
    }
    out
}

impl BlockIo for Trans<'_> {
    fn uuid(&self) -> [u8; 16] {
        self.mp.sb.uuid
    }

    fn read_meta(
        &mut self,
        blk: u64,
        magic: u32,
        owner: Option<u64>,
        what: &'static str,
    ) -> Result<Box<Block>> {
        if let Some(b) = self.bufs.get(&blk) {
            // Already verified when first read (or written by us).
            let d = b.data.clone();
            if get_u32(&d[..], HDR_MAGIC) != magic {
                return Err(FsError::corrupt(format!(
                    "{what} block {blk}: bad magic in transaction"
                )));
            }
            return Ok(d);
        }
        read_verified(self.mp, blk, magic, owner, what)
    }

    fn write_meta(&mut self, blk: u64, data: &Block) {
        assert!(blk < self.mp.sb.total_blocks);
        let mp = self.mp;
        let b = self.bufs.entry(blk).or_insert_with(|| {
            let mut old = new_block();
            mp.read_block(blk, &mut old[..]);
            TxBuf {
                data: old,
                kind: BufKind::Meta,
                dirty: 0,
            }
        });
        b.kind = BufKind::Meta;
        b.dirty |= diff_mask(&b.data[..], &data[..]);
        b.data.copy_from_slice(&data[..]);
    }

    fn alloc_node(&mut self, tree: &Tree) -> Result<u64> {
        self.mp.space.alloc_node(self, tree)
    }

    fn free_node(&mut self, tree: &Tree, blk: u64) -> Result<()> {
        self.mp.space.free_node(self, tree, blk)
    }
}

/// A verified copy of metadata block `blk` read from the device: bounds, CRC, identity.
fn read_verified(
    mp: &Mp,
    blk: u64,
    magic: u32,
    owner: Option<u64>,
    what: &'static str,
) -> Result<Box<Block>> {
    if blk >= mp.sb.total_blocks {
        return Err(FsError::corrupt(format!(
            "{what}: pointer to block {blk} beyond the device"
        )));
    }
    if mp.dev.errtags.should_fail(ErrorTag::MetaRead) {
        log::error!("{what} block {blk}: read failed (error tag)");
        return Err(FsError::Io(format!("{what} block {blk}: read failed")));
    }
    let mut d = new_block();
    mp.read_block(blk, &mut d[..]);
    verify_header(&d[..], magic, blk, owner, &mp.sb.uuid, what)?;
    Ok(d)
}

/// Read-only access to metadata straight from the device, for paths that hold the ILOCK
/// of the structure's owner instead of a transaction (lookup, readdir, getxattr).
pub struct DevReader<'a> {
    pub mp: &'a Mp,
}

impl BlockIo for DevReader<'_> {
    fn uuid(&self) -> [u8; 16] {
        self.mp.sb.uuid
    }
    fn read_meta(
        &mut self,
        blk: u64,
        magic: u32,
        owner: Option<u64>,
        what: &'static str,
    ) -> Result<Box<Block>> {
        read_verified(self.mp, blk, magic, owner, what)
    }
    fn write_meta(&mut self, _blk: u64, _data: &Block) {
        unreachable!("DevReader is read-only: changes go through a transaction");
    }
    fn alloc_node(&mut self, _tree: &Tree) -> Result<u64> {
        unreachable!("DevReader is read-only: changes go through a transaction");
    }
    fn free_node(&mut self, _tree: &Tree, _blk: u64) -> Result<()> {
        unreachable!("DevReader is read-only: changes go through a transaction");
    }
}

// ---------------------------------------------------------------------------------------
// Recovery.

/// Update the primary superblock's state word (LSN base, clean flag) with one atomic
/// store, outside the log, then fence.
pub fn write_sb_state(mp: &Mp, lsn_base: u64, clean: bool) {
    mp.dev
        .store_u64(SB_STATE as u64, sb_state_word(lsn_base, clean));
    mp.dev.flush(SB_STATE as u64, 8);
    mp.dev.fence();
}

/// Make every in-place write durable and empty the live part of the log.
/// A failed flush leaves the tail where it was (recovery still replays those records) and
/// shuts the filesystem down: what is durable is no longer known.
pub(super) fn checkpoint_locked(mp: &Mp, log: &mut LogState) -> Result<()> {
    crate::log::force::force_locked(mp, log)?;
    mp.dev.persist_all();
    if mp.dev.take_error() {
        mp.force_shutdown("a device flush failed during a checkpoint");
        return Err(FsError::Io(
            "device flush failed during a checkpoint".into(),
        ));
    }
    (log.tail_lsn, log.tail_off) = (log.next_lsn, log.head);
    log.logged.clear();
    log.checkpoints += 1;
    Ok(())
}

/// An allocation is about to hand out [blk, blk + len): if a record recovery would replay
/// logged any of those blocks (as the metadata they were before they were freed), make
/// the log's in-place writes durable first, so that no replay can reach them.
pub fn unbusy(mp: &Mp, blk: u64, len: u64) -> Result<()> {
    if mp.dev.persistence() == Persistence::Dax {
        return Ok(()); // in-place writes are durable at commit: nothing is busy
    }
    let mut log = mp.log.lock().unwrap_or_else(|p| p.into_inner());
    if crate::log::force::freed_unforced(&log, blk, len) {
        // Freed by a record not yet durable: a crash could give it back to its old
        // owner, so that record is forced before the block changes hands (force.rs).
        crate::log::force::force_locked(mp, &mut log)?;
    }
    if log.logged.range(blk..blk + len).next().is_none() {
        return Ok(());
    }
    checkpoint_locked(mp, &mut log)
}

/// The parts of `extents` that no record recovery would replay names (`LogState::logged`):
/// those may be punched; a replay would write into the others again.
pub(super) fn not_busy(log: &LogState, extents: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(blk, len) in extents {
        let mut start = blk;
        for &b in log.logged.range(blk..blk + len) {
            if b > start {
                out.push((start, b - start));
            }
            start = b + 1;
        }
        if start < blk + len {
            out.push((start, blk + len - start));
        }
    }
    out
}

/// Punch free blocks [blk, blk + len) out of the image (`Device::discard`, whose
/// conditions the caller meets). A failure costs only space: logged, not returned.
pub(super) fn discard_blocks(mp: &Mp, blk: u64, len: u64) {
    let bs = BLOCK_SIZE as u64;
    if let Err(e) = mp.dev.discard(blk * bs, len * bs) {
        log::warn!(
            "{}: discard of blocks {blk}+{len} failed: {e}",
            mp.dev.source()
        );
    }
}

/// Punch the parts of free extents `extents` that no record recovery would replay
/// names out of the image (trim). The caller holds the AG locks of the extents, so none
/// of them can be allocated meanwhile. Returns the blocks punched.
pub fn discard_free(mp: &Mp, extents: &[(u64, u64)]) -> u64 {
    let log = mp.log.lock().unwrap_or_else(|p| p.into_inner());
    let punch = not_busy(&log, extents);
    drop(log);
    let mut done = 0;
    for (blk, len) in punch {
        discard_blocks(mp, blk, len);
        done += len;
    }
    done
}

/// Checkpoint now (fsync, sync, unmount): afterwards no record needs replay.
#[track_caller]
pub fn checkpoint(mp: &Mp) -> Result<()> {
    crate::mem::lockcheck::fs_entered("a log force", std::panic::Location::caller());
    let mut log = mp.log.lock().unwrap_or_else(|p| p.into_inner());
    checkpoint_locked(mp, &mut log)
}

/// (commits, checkpoints, next LSN) for `daxfs stat`.
pub fn log_counters(mp: &Mp) -> (u64, u64, u64) {
    let log = mp.log.lock().unwrap_or_else(|p| p.into_inner());
    (log.commits, log.checkpoints, log.next_lsn)
}

/// The LSN the next commit will carry (info, tests).
pub fn next_lsn(mp: &Mp) -> u64 {
    mp.log.lock().unwrap().next_lsn
}

/// Refuse changes on a read-only device before any transaction is attempted.
pub fn writable_device(mp: &Mp) -> Result<()> {
    if mp.dev.read_only() {
        return err(libc::EROFS);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_leaves_out_blocks_the_log_may_replay_into() {
        let mut log = LogState::default();
        log.logged.extend([10, 11, 15, 40]);
        assert_eq!(
            not_busy(&log, &[(8, 10), (30, 5), (40, 1)]),
            vec![(8, 2), (12, 3), (16, 2), (30, 5)]
        );
    }

    #[test]
    fn masks_and_regions() {
        assert_eq!(dirty_mask(0, 1), 1);
        assert_eq!(dirty_mask(60, 8), 0b11);
        assert_eq!(dirty_mask(0, 4096), u64::MAX);
        assert_eq!(regions(0b1101), vec![(0, 64), (128, 128)]);
        assert_eq!(regions(u64::MAX), vec![(0, 4096)]);
    }
}
