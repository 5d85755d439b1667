//! Bugs the fuzz targets found in code outside the fuzzing work (src/fs.rs and
//! src/trans.rs, which someone else was changing at the time), each reproduced on its
//! own. Both are fixed (commit d42ca6d); the tests stay as regression tests. Most such
//! bugs are arithmetic overflows on values read from the media, which panic only where
//! overflow checks are on (debug builds, and cargo-fuzz's builds): `cargo test --test
//! fuzz_found` runs them that way. An open one would be `#[ignore]`d here, with a guard
//! in src/fuzzing.rs, until fixed.

use daxfs::format::*;
use daxfs::fs::{Fs, FsOptions};
use daxfs::testing::fuzzing;

/// Found by the `agi` target: an AGI whose free-inode count exceeded its inode count
/// mounted (Fs::load_counters did not check what ialloc::read_agi checks), then statfs
/// computed `inodes_count - inodes_free` and underflowed: a panic with overflow checks, a
/// nonsense inode count without. Fixed in fs/mod.rs: load_counters checks `free <= count <=
/// ag_len * INODES_PER_BLOCK`, statfs saturates. Now the mount is refused.
#[test]
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
    if let Ok(fs) = Fs::mount(dev, &FsOptions::default()) {
        let _ = fs.statfs();
        panic!("an AGI with more free inodes than inodes was accepted");
    }
}

/// Found while writing the `log_records` target (and its superblock cousin, an LSN base
/// next to the clean bit, by the `superblock` target): a log whose newest record had LSN
/// u64::MAX (naming itself as the tail) made recovery's walk from the tail do
/// `expect += 1` past u64::MAX (trans.rs, records_to_replay), and `recover` compute
/// `rec.lsn + 1`: a panic with overflow checks; without, the walk wrapped to LSN 0 and
/// mount failed with "record 0 is missing". Fixed in trans.rs: a record naming an LSN or
/// tail LSN at or above format::LSN_MAX (2^62) is not a valid record.
#[test]
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
    let r = daxfs::log::trans::records_to_replay(&read, log.len() as u64, 0, MIN_BLOCKS);
    assert!(
        r.is_ok_and(|v| v.is_empty()),
        "the record is not valid: nothing to replay"
    );
}
