//! Deferred durability on image files (page-cache mappings): log forces and the in-core
//! overlay of committed metadata (XFS's CIL and AIL, much simplified).
//!
//! On an image file a fence is an `msync(MS_SYNC)`: milliseconds on a disk. So there a
//! commit writes its record into the mapping and does not msync it; the operation is
//! complete (in core) but not yet durable. A *log force* makes every record since the last
//! force durable at once, with one msync for the file data the records depend on and one
//! for the log range. Forces happen at fsync, fdatasync, `Fs::sync`, O_SYNC/O_DSYNC
//! writes, sync and dirsync mounts (after every commit), unmount, a checkpoint, when the
//! overlay grows past `OVERLAY_MAX_BLOCKS`, and every `FORCE_INTERVAL_DEFAULT_MS` from a
//! timer (`-o commit=SECONDS`; ext4's default commit interval, 5 s).
//!
//! Ordering rules, and why a crash leaves a prefix of the completed operations:
//! - Pages of a shared mapping reach the disk in any order, at any time (writeback). So
//!   nothing whose early arrival could hurt is stored into the mapping before its force:
//!   the in-place copies of committed metadata are kept in the *overlay* (a block image
//!   and dirty mask per block), and every metadata read looks there first
//!   (`Mp::read_bytes`). They are written into the mapping only after the force that made
//!   their records durable (the write-ahead rule); the tail moves only at a checkpoint,
//!   after an msync of the whole mapping made those copies durable.
//! - File data a record depends on (new blocks, the bytes under a new EOF, zeroed tails,
//!   a new inode chunk's zeros: whatever the committing thread flushed) must be durable
//!   before the record can be, and a record in the mapping may reach the disk at any
//!   moment. So such a record is *held* in memory; the force msyncs the data, then stores
//!   the held records into the mapping, then msyncs the log range. A record that depends
//!   on no data goes into the mapping at commit.
//! - Records may reach the disk early and out of order. Recovery replays from the tail
//!   through consecutive LSNs and stops at the first record that is not whole
//!   (recovery.rs). Every record past a gap was never forced: its force (and every later
//!   one) had not completed, so none of its in-place copies, nor any later record's, was
//!   written into the mapping. What the disk holds in place is therefore at most the
//!   effect of the records before the gap, and replaying them gives exactly the state
//!   after some completed operation. A torn later record is the same case.
//! - Blocks freed by a record that is not yet forced are *busy*: a crash could bring the
//!   old owner back, so an allocation that would hand one out forces first (`unbusy`),
//!   as XFS does with busy extents. `-o discard` punches them only after the force.
//!
//! DAX mappings and memfd keep their eager behaviour: the record is fenced at commit.

use std::collections::HashMap;

use crate::error::{FsError, Result};
use crate::format::{BLOCK_SIZE, Block, new_block};
use crate::log::mp::Mp;
use crate::log::trans::LogState;

/// Force when the overlay holds this many blocks (16 MiB): bounds its memory and the
/// work a force does.
pub const OVERLAY_MAX_BLOCKS: usize = 4096;
/// The timer's default interval between log forces (`-o commit=`; 0: no timer).
pub const FORCE_INTERVAL_DEFAULT_MS: u64 = 5000;

/// Committed metadata not yet written in place: per block, its current image and which
/// 64-byte chunks differ from the mapping.
#[derive(Default)]
pub struct Overlay {
    blocks: HashMap<u64, (Box<Block>, u64)>,
}

impl Overlay {
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

impl Mp {
    /// Are commits on this mount durable only at a log force (module doc)?
    pub fn defers_durability(&self) -> bool {
        self.deferred
    }

    /// Bytes of a metadata block as committed: the overlay's copy, else the device.
    pub fn read_bytes(&self, blk: u64, off: usize, buf: &mut [u8]) {
        if self.deferred {
            let ov = self.overlay.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((b, _)) = ov.blocks.get(&blk) {
                buf.copy_from_slice(&b[off..off + buf.len()]);
                return;
            }
        }
        self.dev.read(blk * BLOCK_SIZE as u64 + off as u64, buf);
    }

    /// Order the flushes made so far on this thread before the record of the next commit
    /// on it. A fence where commits are eager; nothing where they are deferred, because
    /// the commit hands the flushed ranges to the next force, which msyncs them before the
    /// log (module doc).
    pub fn order_before_commit(&self) {
        if !self.deferred {
            self.dev.fence();
        }
    }
}

/// Stage a committed block's dirty chunks in the overlay (under the log lock).
pub(super) fn stage(mp: &Mp, blk: u64, data: &Block, dirty: u64) {
    let mut ov = mp.overlay.lock().unwrap_or_else(|p| p.into_inner());
    let (b, mask) = ov.blocks.entry(blk).or_insert_with(|| {
        let mut b = new_block();
        mp.dev.read(blk * BLOCK_SIZE as u64, &mut b[..]);
        (b, 0)
    });
    for (off, len) in super::trans::regions(dirty) {
        b[off..off + len].copy_from_slice(&data[off..off + len]);
    }
    *mask |= dirty;
}

/// Make every committed record durable, then write the overlay in place (module doc).
/// A failed msync shuts the filesystem down: what is durable is no longer known.
pub(super) fn force_locked(mp: &Mp, log: &mut LogState) -> Result<()> {
    if !mp.deferred || log.unforced_log.is_empty() {
        return Ok(());
    }
    if mp.is_shutdown() {
        return Err(FsError::Io("filesystem is shut down".into()));
    }
    let dev = &mp.dev;
    let data = std::mem::take(&mut log.unforced_data);
    if !data.is_empty() {
        for (off, len) in data {
            dev.flush(off, len);
        }
        dev.fence();
    }
    // The data is durable: the records that waited for it may reach the disk now.
    for (off, rec) in std::mem::take(&mut log.held) {
        dev.write(off, &rec);
    }
    for (off, len) in std::mem::take(&mut log.unforced_log) {
        dev.flush(off, len);
    }
    dev.fence();
    if dev.take_error() {
        mp.force_shutdown("a device flush failed during a log force");
        return Err(FsError::Io("device flush failed during a log force".into()));
    }
    // Durable: now the in-place copies may reach the disk, in any order.
    {
        let mut ov = mp.overlay.lock().unwrap_or_else(|p| p.into_inner());
        // Written under the overlay lock, so a reader sees either copy, never a mix.
        for (&blk, (b, mask)) in ov.blocks.iter() {
            for (off, len) in super::trans::regions(*mask) {
                dev.write(blk * BLOCK_SIZE as u64 + off as u64, &b[off..off + len]);
            }
        }
        ov.blocks.clear();
    }
    let frees: Vec<(u64, u64)> = std::mem::take(&mut log.unforced_frees)
        .into_iter()
        .collect();
    if mp.discard.load(std::sync::atomic::Ordering::Acquire) {
        for (blk, len) in super::trans::not_busy(log, &frees) {
            super::trans::discard_blocks(mp, blk, len);
        }
    }
    log.forces += 1;
    Ok(())
}

/// Force the log now (fsync, O_SYNC, sync mounts, the timer): every completed operation
/// is durable when this returns.
#[track_caller]
pub fn force(mp: &Mp) -> Result<()> {
    if !mp.deferred {
        return Ok(());
    }
    crate::mem::lockcheck::fs_entered("a log force", std::panic::Location::caller());
    let mut log = mp.log.lock().unwrap_or_else(|p| p.into_inner());
    force_locked(mp, &mut log)
}

/// (forces done, records committed and not yet forced) for `daxfs stat`.
pub fn force_counters(mp: &Mp) -> (u64, usize) {
    let log = mp.log.lock().unwrap_or_else(|p| p.into_inner());
    (log.forces, log.unforced_log.len())
}

/// Do records not yet forced free any block of [blk, blk + len)? (under the log lock)
pub(super) fn freed_unforced(log: &LogState, blk: u64, len: u64) -> bool {
    log.unforced_frees
        .range(..blk + len)
        .next_back()
        .is_some_and(|(&b, &n)| blk < b + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_counts_blocks() {
        let mut o = Overlay::default();
        assert!(o.is_empty());
        o.blocks.insert(7, (new_block(), 1));
        assert_eq!(o.len(), 1);
    }
}
