//! Log recovery at mount: find the newest valid record on the chain from offset 0, replay
//! every record from its tail to it in order (block images: idempotent, so a crash during
//! recovery recovers again), finish the pending frees it lists, move the superblock's LSN
//! base past them with one atomic store, and zero the log (docs/design.md, "Transactions
//! and the log").

use crate::error::{FsError, Result};
use crate::format::*;
use crate::log::mp::Mp;
use crate::log::trans::*;

/// One decoded log record: its LSN, (block, offset, bytes) regions, the pending frees
/// after it, and the log offset just past it.
pub struct LogRecord {
    pub lsn: u64,
    pub regions: Vec<(u64, usize, Vec<u8>)>,
    pub pending: Vec<(u64, u64)>,
    /// Log offsets of the record's first byte and just past it.
    pub start: u64,
    pub end: u64,
}

/// Read and verify the record at `pos`: Some((lsn, bytes)) when it is whole.
fn read_record(read: &dyn Fn(u64, &mut [u8]), log_bytes: u64, pos: u64) -> Option<(u64, Vec<u8>)> {
    if pos + LR_HDR as u64 > log_bytes {
        return None;
    }
    let mut h = [0u8; LR_HDR];
    read(pos, &mut h);
    let len = get_u32(&h, 16) as u64;
    if get_u32(&h, 0) != LOG_MAGIC || len < LR_HDR as u64 || pos + len > log_bytes {
        return None;
    }
    let mut rec = vec![0u8; len as usize];
    read(pos, &mut rec);
    if crc_with_hole(&rec, 4) != get_u32(&rec, 4) {
        return None;
    }
    // No real LSN comes near LSN_MAX (2^62): a record naming one is damage, whatever its
    // CRC says, and keeps `lsn + 1` in recovery from overflowing.
    if get_u64(&rec, 8) >= LSN_MAX || get_u64(&rec, LR_TAIL_LSN) >= LSN_MAX {
        return None;
    }
    Some((get_u64(&rec, 8), rec))
}

/// The records recovery must replay, oldest first. The newest valid record (LSN at least
/// `lsn_base`) is on the chain of records written back to back from offset 0; its header
/// names the tail, the oldest record whose in-place writes may not be durable, and every
/// record from the tail to the newest is replayed (they follow each other, wrapping to
/// offset 0 where the next one did not fit).
///
/// The replay stops at the first record of that run that is not whole: on an image file
/// records reach the disk in any order until a log force, and every record after a gap
/// was never forced, so none of its in-place writes can be on the media either
/// (log/force.rs): the records before the gap give a prefix of the completed operations.
pub fn records_to_replay(
    read: &dyn Fn(u64, &mut [u8]),
    log_bytes: u64,
    lsn_base: u64,
    total_blocks: u64,
) -> Result<Vec<LogRecord>> {
    Ok(scan_log(read, log_bytes, lsn_base, total_blocks)?.0)
}

/// `records_to_replay`, and the newest LSN seen on the chain (replayed or not).
pub fn scan_log(
    read: &dyn Fn(u64, &mut [u8]),
    log_bytes: u64,
    lsn_base: u64,
    total_blocks: u64,
) -> Result<(Vec<LogRecord>, Option<u64>)> {
    let mut pos = 0u64;
    let mut newest: Option<(u64, u64, u64)> = None; // (lsn, tail_lsn, tail_off)
    // Each record is at least LR_HDR bytes: the walk is bounded by log_bytes / LR_HDR.
    while let Some((lsn, rec)) = read_record(read, log_bytes, pos) {
        if lsn >= lsn_base && newest.is_none_or(|n| lsn > n.0) {
            newest = Some((lsn, get_u64(&rec, LR_TAIL_LSN), get_u64(&rec, LR_TAIL_OFF)));
        }
        pos += rec.len() as u64;
    }
    let Some((last, tail_lsn, tail_off)) = newest else {
        return Ok((Vec::new(), None));
    };
    crate::ensure_sane!(
        tail_lsn >= lsn_base && tail_lsn <= last && tail_off < log_bytes,
        "log record {last}: tail {tail_lsn} at {tail_off} is not a record of this mount"
    );
    let mut out = Vec::new();
    let (mut pos, mut expect) = (tail_off, tail_lsn);
    while expect <= last {
        let rec = match read_record(read, log_bytes, pos) {
            Some((lsn, rec)) if lsn == expect => rec,
            // The writer wrapped to offset 0 where the next record did not fit.
            _ if pos != 0 => match read_record(read, log_bytes, 0) {
                Some((lsn, rec)) if lsn == expect => {
                    pos = 0;
                    rec
                }
                _ => break,
            },
            _ => break,
        };
        out.push(decode_record(&rec, total_blocks, pos + rec.len() as u64)?);
        pos += rec.len() as u64;
        expect += 1;
    }
    if expect <= last {
        log::warn!(
            "log: record {expect} (of {tail_lsn}..={last}) is not whole: replaying up to {} \
             (records after it were never forced)",
            expect.saturating_sub(1)
        );
    }
    Ok((out, Some(last)))
}

fn decode_record(rec: &[u8], total_blocks: u64, end: u64) -> Result<LogRecord> {
    let lsn = get_u64(rec, 8);
    let n = get_u32(rec, 20);
    let mut regions = Vec::new();
    let mut pending = Vec::new();
    let mut p = LR_HDR;
    for _ in 0..n {
        if p + LR_REGION_HDR > rec.len() {
            return Err(FsError::corrupt(format!(
                "log record {lsn}: region header past the record end"
            )));
        }
        let blk = get_u64(rec, p);
        let off = get_u16(rec, p + 8) as usize;
        let len = get_u16(rec, p + 10) as usize;
        p += LR_REGION_HDR;
        if blk == LR_PENDING_FREES {
            if off != 0 || !len.is_multiple_of(LR_PENDING_ENTRY) || p + len > rec.len() {
                return Err(FsError::corrupt(format!(
                    "log record {lsn}: pending-free list of {len} bytes is malformed"
                )));
            }
            for e in rec[p..p + len].chunks_exact(LR_PENDING_ENTRY) {
                let (fsb, flen) = (get_u64(e, 0), get_u64(e, 8));
                if flen == 0 || fsb.checked_add(flen).is_none_or(|e| e > total_blocks) {
                    return Err(FsError::corrupt(format!(
                        "log record {lsn}: pending free {fsb}+{flen} out of bounds"
                    )));
                }
                pending.push((fsb, flen));
            }
            p += len;
            continue;
        }
        if blk >= total_blocks || off + len > BLOCK_SIZE || p + len > rec.len() {
            return Err(FsError::corrupt(format!(
                "log record {lsn}: region (block {blk}, {off}+{len}) out of bounds"
            )));
        }
        regions.push((blk, off, rec[p..p + len].to_vec()));
        p += len;
    }
    Ok(LogRecord {
        lsn,
        regions,
        pending,
        start: end - rec.len() as u64,
        end,
    })
}

/// Replay the log at mount (read-write), then reset it. Returns the newest LSN replayed.
pub fn recover(mp: &Mp) -> Result<Option<u64>> {
    let dev = &mp.dev;
    let sb = &mp.sb;
    let log_off = sb.log_start * BLOCK_SIZE as u64;
    let log_bytes = sb.log_blocks * BLOCK_SIZE as u64;
    let read = |pos: u64, buf: &mut [u8]| dev.read(log_off + pos, buf);
    let (records, newest) = scan_log(&read, log_bytes, sb.lsn_base, sb.total_blocks)?;
    // Past every LSN on the log, also records after a gap that are not replayed: a
    // crash before the log is zeroed must not find them valid again.
    let mut max_lsn = sb.lsn_base.max(newest.map_or(0, |n| n + 1));
    let replayed = records.last().map(|r| r.lsn);
    for rec in &records {
        for (blk, off, data) in &rec.regions {
            // Normally real already (metadata, or freed and never punched while the log
            // could replay into it); never stored to as a hole of a sparse image.
            dev.make_real(blk * BLOCK_SIZE as u64, BLOCK_SIZE as u64)
                .map_err(|e| backing_error(mp, e))?;
            let at = blk * BLOCK_SIZE as u64 + *off as u64;
            dev.write(at, data);
            dev.flush(at, data.len() as u64);
        }
        max_lsn = max_lsn.max(rec.lsn + 1);
    }
    dev.fence();
    if let Some(newest) = records.last()
        && !newest.pending.is_empty()
    {
        // Frees the crash left pending: done by one more record on the same log, after
        // the newest (a crash before it commits finds them pending again).
        log::info!(
            "{}: finishing {} frees left pending by the crash",
            mp.dev.source(),
            newest.pending.len()
        );
        // The record that finishes them goes right after the newest replayed one. Zero
        // what follows it there (outside the run replayed, whose in-place writes are
        // durable now): a record past a gap that was never forced could otherwise
        // continue the chain after the new record, should this recovery crash.
        let first = records[0].start;
        let stop = if first <= newest.start {
            log_bytes
        } else {
            first
        };
        if stop > newest.end {
            dev.zero(log_off + newest.end, stop - newest.end);
            dev.flush(log_off + newest.end, stop - newest.end);
            dev.fence();
        }
        {
            let mut log = mp.log.lock().unwrap_or_else(|p| p.into_inner());
            log.head = newest.end;
            // Past every LSN seen, also those after a gap: this record must not chain
            // into a record that was never forced.
            log.next_lsn = max_lsn;
            (log.tail_lsn, log.tail_off) = (log.next_lsn, log.head);
            log.pending = newest.pending.clone();
        }
        mp.finish_pending(newest.pending.clone())?;
        let mut log = mp.log.lock().unwrap_or_else(|p| p.into_inner());
        checkpoint_locked(mp, &mut log)?;
        max_lsn = max_lsn.max(log.next_lsn);
        log.pending.clear();
    }
    // Move lsn_base past every LSN the log may hold, then clear the log: from here on the
    // log holds only this mount's records.
    write_sb_state(mp, max_lsn, false);
    dev.zero(log_off, log_bytes);
    dev.flush(log_off, log_bytes);
    dev.fence();
    let mut log = mp.log.lock().unwrap();
    log.head = 0;
    log.next_lsn = max_lsn;
    (log.tail_lsn, log.tail_off) = (max_lsn, 0);
    Ok(replayed)
}

pub(crate) fn backing_error(mp: &Mp, e: crate::pmem::device::BackingFull) -> FsError {
    FsError::Io(format!(
        "{}: cannot allocate space in the image ({}): free space on the filesystem that \
         holds it",
        mp.dev.source(),
        std::io::Error::from_raw_os_error(e.0)
    ))
}
