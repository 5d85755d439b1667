//! Bugs the fuzz targets found in code this work could not change (src/fs.rs and
//! src/trans.rs were being edited by someone else at the time). Each test reproduces one
//! and is `#[ignore]`d until the fix lands; the fuzz harness steps around them
//! (`daxfs::fuzzing`, look for "Open bug"). Most are arithmetic overflows on values read
//! from the media, which panic only where overflow checks are on (debug builds, and
//! cargo-fuzz's builds), so run them in a debug build:
//!
//!     cargo test --test fuzz_found -- --ignored
//!
//! When one is fixed: drop its `#[ignore]` and its guard in src/fuzzing.rs.

use daxfs::format::*;
use daxfs::fs::{Fs, FsOptions};
use daxfs::fuzzing;

/// An AGI whose free-inode count exceeds its inode count mounts (Fs::load_counters does
/// not check what ialloc::read_agi checks), then statfs computes
/// `inodes_count - inodes_free` and underflows (fs.rs, `statfs`): a panic with overflow
/// checks, a nonsense inode count without.
/// Fix (fs.rs): in load_counters, `ensure_sane!(agi.free <= agi.count && agi.count <=
/// ag_len * INODES_PER_BLOCK, ...)` as read_agi does, and saturating arithmetic in statfs.
#[test]
#[ignore = "open bug in src/fs.rs (statfs / load_counters)"]
fn statfs_with_more_free_inodes_than_inodes() {
    let p = fuzzing::pristine();
    let dev = p.clean.device(&mut |d| {
        let mut b = new_block();
        d.read(AGI_BLOCK * BLOCK_SIZE as u64, &mut b[..]);
        let count = get_u64(&b[..], 56);
        put_u64(&mut b[..], 64, count + 1); // AGI free
        let lsn = get_u64(&b[..], HDR_LSN);
        seal_block(&mut b[..], lsn);
        d.write(AGI_BLOCK * BLOCK_SIZE as u64, &b[..]);
    });
    let fs = Fs::mount(dev, &FsOptions::default()).expect("mounts: nothing checks free <= count");
    let _ = fs.statfs();
}

/// A log whose newest record has LSN u64::MAX (and names itself as the tail): recovery's
/// walk from the tail does `expect += 1` past u64::MAX (trans.rs, records_to_replay),
/// and `recover` computes `rec.lsn + 1`. With overflow checks that is a panic; without,
/// the walk wraps to LSN 0 and mount fails with "record 0 is missing".
/// Fix (trans.rs): treat a record whose LSN is not below 2^62 (far beyond any real LSN,
/// and below the superblock's clean bit 2^63) as invalid in read_record, or use
/// checked_add for `expect` and `rec.lsn + 1`.
#[test]
#[ignore = "open bug in src/trans.rs (records_to_replay / recover)"]
fn log_record_with_the_largest_lsn() {
    let mut log = vec![0u8; 1 << 20];
    let rec = &mut log[..LR_HDR];
    put_u32(rec, 0, LOG_MAGIC);
    put_u64(rec, 8, u64::MAX);
    put_u32(rec, 16, LR_HDR as u32);
    put_u32(rec, 20, 0);
    put_u64(rec, LR_TAIL_LSN, u64::MAX);
    put_u64(rec, LR_TAIL_OFF, 0);
    let crc = crc_with_hole(rec, 4);
    put_u32(rec, 4, crc);
    let read = |pos: u64, buf: &mut [u8]| {
        buf.copy_from_slice(&log[pos as usize..pos as usize + buf.len()]);
    };
    let r = daxfs::trans::records_to_replay(&read, log.len() as u64, 0, MIN_BLOCKS);
    assert!(r.is_ok_and(|v| v.len() == 1), "one record to replay");
}
