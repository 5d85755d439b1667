//! The superblock: block 0 of every AG (AG 0 holds the primary), its atomic state word.

use super::*;
use crate::error::{FsError, Result};

// Superblock: block 0 of every AG (AG 0 holds the primary). No block header: it has its
// own layout so that `daxfs info` can name a foreign file before trusting anything.
//
//  0 magic u32 | 4 crc u32 | 8 version u32 | 12 block_size u32 | 16 uuid [16]
// 32 total_blocks u64 | 40 ag_blocks u64 | 48 ag_count u32 | 52 inode_size u32
// 56 log_start u64 | 64 log_blocks u64 | 72 root_ino u64 | 80 compat u64
// 88 ro_compat u64 | 96 incompat u64 | 104 state u64 | 112 mkfs_time i64
// 120 pad u32 | 124 agno u32 | 128 label [32] | 160.. zero
//
// The state word (lsn_base | clean << 63) is the only field that changes after mkfs. It
// is left out of the CRC and updated by one aligned 8-byte store, which is atomic, so a
// crash can never tear the superblock.

pub const SB_CRC: usize = 4;
pub const SB_STATE: usize = 104;
pub const SB_SIZE_USED: usize = 160;
const SB_CLEAN_BIT: u64 = 1 << 63;

/// LSNs stay below this (2^62: centuries of commits). A superblock naming a larger LSN
/// base is damaged; it keeps `lsn + 1` and the clean bit (2^63) out of reach.
pub const LSN_MAX: u64 = 1 << 62;

pub fn sb_state_word(lsn_base: u64, clean: bool) -> u64 {
    debug_assert!(lsn_base & SB_CLEAN_BIT == 0);
    lsn_base | if clean { SB_CLEAN_BIT } else { 0 }
}

/// The superblock's CRC (the state word and the CRC field taken as zero).
pub fn sb_crc(b: &[u8]) -> u32 {
    let mut c = b[..BLOCK_SIZE].to_vec();
    c[SB_STATE..SB_STATE + 8].fill(0);
    crc_with_hole(&c, SB_CRC)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub uuid: [u8; 16],
    pub total_blocks: u64,
    pub ag_blocks: u64,
    pub ag_count: u32,
    pub log_start: u64,
    pub log_blocks: u64,
    pub root_ino: u64,
    pub compat: u64,
    pub ro_compat: u64,
    pub incompat: u64,
    /// Every log record ever written has an LSN below this (docs/format.md, "log").
    pub lsn_base: u64,
    pub mkfs_time: i64,
    /// 1 when the last unmount was clean (informational; recovery never trusts it).
    pub clean: u32,
    pub label: [u8; 32],
}

impl Superblock {
    pub fn encode(&self, agno: u32, b: &mut [u8]) {
        b[..BLOCK_SIZE].fill(0);
        put_u32(b, 0, SB_MAGIC);
        put_u32(b, 8, self.version);
        put_u32(b, 12, BLOCK_SIZE as u32);
        b[16..32].copy_from_slice(&self.uuid);
        put_u64(b, 32, self.total_blocks);
        put_u64(b, 40, self.ag_blocks);
        put_u32(b, 48, self.ag_count);
        put_u32(b, 52, INODE_SIZE as u32);
        put_u64(b, 56, self.log_start);
        put_u64(b, 64, self.log_blocks);
        put_u64(b, 72, self.root_ino);
        put_u64(b, 80, self.compat);
        put_u64(b, 88, self.ro_compat);
        put_u64(b, 96, self.incompat);
        put_i64(b, 112, self.mkfs_time);
        put_u32(b, 124, agno);
        b[128..160].copy_from_slice(&self.label);
        let crc = sb_crc(b);
        put_u32(b, SB_CRC, crc);
        put_u64(b, SB_STATE, sb_state_word(self.lsn_base, self.clean != 0));
    }

    /// Decode and validate. `device_blocks` bounds the geometry against the real device.
    pub fn decode(b: &[u8], device_blocks: u64) -> Result<Superblock> {
        let magic = get_u32(b, 0);
        if magic != SB_MAGIC {
            return Err(FsError::Invalid(format!(
                "not a daxfs image (superblock magic {magic:#010x}, expected {SB_MAGIC:#010x})"
            )));
        }
        let want = get_u32(b, SB_CRC);
        let got = sb_crc(b);
        if want != got {
            return Err(FsError::corrupt(format!(
                "superblock: CRC mismatch (stored {want:#010x}, computed {got:#010x})"
            )));
        }
        let sb = Superblock {
            version: get_u32(b, 8),
            uuid: b[16..32].try_into().unwrap(),
            total_blocks: get_u64(b, 32),
            ag_blocks: get_u64(b, 40),
            ag_count: get_u32(b, 48),
            log_start: get_u64(b, 56),
            log_blocks: get_u64(b, 64),
            root_ino: get_u64(b, 72),
            compat: get_u64(b, 80),
            ro_compat: get_u64(b, 88),
            incompat: get_u64(b, 96),
            lsn_base: get_u64(b, SB_STATE) & !SB_CLEAN_BIT,
            mkfs_time: get_i64(b, 112),
            clean: (get_u64(b, SB_STATE) & SB_CLEAN_BIT != 0) as u32,
            label: b[128..160].try_into().unwrap(),
        };
        let bs = get_u32(b, 12);
        let isz = get_u32(b, 52);
        if sb.version == 0 || sb.version > VERSION {
            return Err(FsError::corrupt(format!(
                "superblock: format version {} is not supported by this daxfs (knows 1..={VERSION})",
                sb.version
            )));
        }
        if bs as usize != BLOCK_SIZE || isz as usize != INODE_SIZE {
            return Err(FsError::corrupt(format!(
                "superblock: block size {bs} / inode size {isz} unsupported (need {BLOCK_SIZE}/{INODE_SIZE})"
            )));
        }
        if sb.incompat & !INCOMPAT_KNOWN != 0 {
            return Err(FsError::corrupt(format!(
                "superblock: unknown incompatible features {:#x}; a newer daxfs made this image",
                sb.incompat & !INCOMPAT_KNOWN
            )));
        }
        if sb.total_blocks > device_blocks && sb.total_blocks >= MIN_BLOCKS {
            return Err(FsError::corrupt(format!(
                "superblock: the filesystem spans {} blocks but the device holds only {device_blocks} \
                 (truncated image?)",
                sb.total_blocks
            )));
        }
        let sane = sb.total_blocks >= MIN_BLOCKS
            && sb.total_blocks <= device_blocks
            && sb.ag_blocks >= AG_MIN_BLOCKS
            && sb.ag_blocks <= AG_MAX_BLOCKS
            && sb.ag_count >= 1
            && (sb.ag_count as u64 - 1) * sb.ag_blocks < sb.total_blocks
            && sb.ag_count as u64 * sb.ag_blocks >= sb.total_blocks
            && sb.log_start >= AG_FIRST_FREE
            && sb.log_blocks >= LOG_MIN_BLOCKS
            && sb
                .log_start
                .checked_add(sb.log_blocks)
                .is_some_and(|end| end <= sb.ag_blocks.min(sb.total_blocks));
        if !sane {
            return Err(FsError::corrupt(format!(
                "superblock: geometry does not hold together (blocks {}, device blocks {device_blocks}, \
                 ag_blocks {}, ag_count {}, log {}+{})",
                sb.total_blocks, sb.ag_blocks, sb.ag_count, sb.log_start, sb.log_blocks
            )));
        }
        if sb.lsn_base >= LSN_MAX {
            return Err(FsError::corrupt(format!(
                "superblock: LSN base {:#x} is beyond any real LSN (damaged state word)",
                sb.lsn_base
            )));
        }
        Ok(sb)
    }

    pub fn ag_len(&self, agno: u32) -> u64 {
        let start = agno as u64 * self.ag_blocks;
        (self.total_blocks - start).min(self.ag_blocks)
    }
}
