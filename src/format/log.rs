//! Log records (log/trans.rs writes and replays them).

// Log record (in the log region, byte-addressed, 8-aligned, circular):
//  0 magic u32 | 4 crc u32 | 8 lsn u64 | 16 len u32 (whole record) | 20 nregions u32
// 24 tail_lsn u64 | 32 tail_off u64: the oldest record whose in-place writes may not be
//    durable yet, and where it starts; recovery replays from there to this record.
//  then per region: blkno u64 | off u16 | len u16 | pad u32 | data (len, padded to 8)
//  A region with blkno LR_PENDING_FREES is not a block: its data is the pending-free list
//  after this record, entries fsblock u64 | len u64 (trans.rs).
pub const LR_HDR: usize = 40;
pub const LR_PENDING_FREES: u64 = u64::MAX;
pub const LR_PENDING_ENTRY: usize = 16;
pub const LR_TAIL_LSN: usize = 24;
pub const LR_TAIL_OFF: usize = 32;
pub const LR_REGION_HDR: usize = 16;
