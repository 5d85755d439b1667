//! Every on-media byte of daxfs is defined here and only here (docs/format.md draws them).
//!
//! All multi-byte integers are little-endian and reached through `get_*`/`put_*` at named
//! offsets, never by casting a pointer to a struct. Every metadata block starts with the
//! self-describing `BlockHeader` (magic, CRC32C, uuid, own block number, owner, LSN); inodes
//! carry the same fields in their own 512-byte slot. Readers verify CRC, then structure;
//! writers fill structure, stamp the LSN, then the CRC (`seal_block`).

use crate::error::{FsError, Result};

pub const BLOCK_SIZE: usize = 4096;
pub const BLOCK_SHIFT: u32 = 12;
pub const INODE_SIZE: usize = 512;
pub const INODES_PER_BLOCK: u64 = (BLOCK_SIZE / INODE_SIZE) as u64;
/// Inodes are allocated in chunks of 64 (8 contiguous blocks), one inobt record each.
pub const INODES_PER_CHUNK: u64 = 64;
pub const CHUNK_BLOCKS: u64 = INODES_PER_CHUNK / INODES_PER_BLOCK;
pub const NAME_LEN_MAX: usize = 255;
pub const SYMLINK_LEN_MAX: usize = 4095;
/// Largest file: 2^63 - 1 bytes, as XFS (offsets are i64 in the kernel).
pub const FILE_SIZE_MAX: u64 = i64::MAX as u64;
/// Inode core: fixed part; the literal area holds inline extents or a short symlink.
pub const INODE_LITERAL_OFF: usize = 256;
pub const INODE_LITERAL_LEN: usize = INODE_SIZE - INODE_LITERAL_OFF;
pub const INLINE_EXTENT_SIZE: usize = 24;
pub const INLINE_EXTENTS_MAX: usize = INODE_LITERAL_LEN / INLINE_EXTENT_SIZE;
/// A B+tree is never deeper than this; loops over tree levels are bounded by it.
pub const BTREE_LEVELS_MAX: usize = 8;

pub const SB_MAGIC: u32 = 0x5846_5844; // "DXFX"
pub const AGF_MAGIC: u32 = 0x4647_4158; // "XAGF"
pub const AGI_MAGIC: u32 = 0x4947_4158; // "XAGI"
pub const AGFL_MAGIC: u32 = 0x4c46_4158; // "XAFL"
pub const INODE_MAGIC: u32 = 0x4e49_5844; // "DXIN"
pub const BNOBT_MAGIC: u32 = 0x3342_4e41; // "ANB3"
pub const CNTBT_MAGIC: u32 = 0x3343_4e41; // "ANC3"
pub const INOBT_MAGIC: u32 = 0x3349_4149; // "IAI3"
pub const FINOBT_MAGIC: u32 = 0x3346_4149; // "IAF3"
pub const UNLINKBT_MAGIC: u32 = 0x3355_4c55; // "ULU3"
pub const BMBT_MAGIC: u32 = 0x3341_4d42; // "BMA3"
pub const DIRHASH_MAGIC: u32 = 0x3348_4444; // "DDH3"
pub const DIRDATA_MAGIC: u32 = 0x3344_4444; // "DDD3"
pub const ATTR_MAGIC: u32 = 0x3341_5458; // "XTA3"
pub const LOG_MAGIC: u32 = 0x474f_4c44; // "DLOG"

/// Format version of this code. Older versions keep mounting (docs/format.md registry).
pub const VERSION: u32 = 1;
/// Incompatible feature bits this code understands; any other bit refuses to mount.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_SHORTFORM_DIRS;
/// Small directories keep their entries in the inode (`FMT_LOCAL` directories, dir.rs).
pub const INCOMPAT_SHORTFORM_DIRS: u64 = 1;
/// Read-only-compatible feature bits this code understands; others mount read-only only.
pub const RO_COMPAT_KNOWN: u64 = 0;

// ---------------------------------------------------------------------------------------
// Little-endian accessors. Bounds are the caller's job: offsets are constants of this file.

#[inline]
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
#[inline]
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
#[inline]
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
#[inline]
pub fn get_i64(b: &[u8], off: usize) -> i64 {
    get_u64(b, off) as i64
}
#[inline]
pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn put_i64(b: &mut [u8], off: usize, v: i64) {
    put_u64(b, off, v as u64)
}

/// Read `len` bytes (1..=16) as a little-endian integer; B+tree keys and values.
pub fn get_uint(b: &[u8], off: usize, len: usize) -> u128 {
    let mut buf = [0u8; 16];
    buf[..len].copy_from_slice(&b[off..off + len]);
    u128::from_le_bytes(buf)
}
/// Write the low `len` bytes of `v` little-endian. Debug builds check nothing is lost.
pub fn put_uint(b: &mut [u8], off: usize, len: usize, v: u128) {
    debug_assert!(
        len == 16 || v >> (len * 8) == 0,
        "value {v:#x} does not fit {len} bytes"
    );
    b[off..off + len].copy_from_slice(&v.to_le_bytes()[..len]);
}

pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// CRC32C of `data` computed as if the 4 bytes at `crc_off` were zero.
pub fn crc_with_hole(data: &[u8], crc_off: usize) -> u32 {
    let c = crc32c::crc32c(&data[..crc_off]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &data[crc_off + 4..])
}

// ---------------------------------------------------------------------------------------
// The header at the start of every metadata block (48 bytes).
//
//  0      4      8             16            24            32                     48
//  +------+------+-------------+-------------+-------------+----------------------+
//  |magic | crc  | blkno       | owner       | lsn         | fs uuid              |
//  +------+------+-------------+-------------+-------------+----------------------+

pub const HDR_MAGIC: usize = 0;
pub const HDR_CRC: usize = 4;
pub const HDR_BLKNO: usize = 8;
pub const HDR_OWNER: usize = 16;
pub const HDR_LSN: usize = 24;
pub const HDR_UUID: usize = 32;
pub const HDR_SIZE: usize = 48;

pub type Block = [u8; BLOCK_SIZE];

pub fn new_block() -> Box<Block> {
    Box::new([0u8; BLOCK_SIZE])
}

/// Fill in a fresh header. The CRC and LSN are stamped at commit (`seal_block`).
pub fn init_header(b: &mut [u8], magic: u32, blkno: u64, owner: u64, uuid: &[u8; 16]) {
    b[..HDR_SIZE].fill(0);
    put_u32(b, HDR_MAGIC, magic);
    put_u64(b, HDR_BLKNO, blkno);
    put_u64(b, HDR_OWNER, owner);
    b[HDR_UUID..HDR_UUID + 16].copy_from_slice(uuid);
}

/// Stamp LSN then CRC: the last step before a metadata block goes to the log.
pub fn seal_block(b: &mut [u8], lsn: u64) {
    put_u64(b, HDR_LSN, lsn);
    let crc = crc_with_hole(b, HDR_CRC);
    put_u32(b, HDR_CRC, crc);
}

/// Verify a metadata block read from the media: CRC first, then identity.
/// `owner` of `None` accepts any owner (the caller checks it against its own knowledge).
pub fn verify_header(
    b: &[u8],
    magic: u32,
    blkno: u64,
    owner: Option<u64>,
    uuid: &[u8; 16],
    what: &str,
) -> Result<()> {
    let want = get_u32(b, HDR_CRC);
    let got = crc_with_hole(b, HDR_CRC);
    if want != got {
        return Err(FsError::corrupt(format!(
            "{what} block {blkno}: CRC mismatch (stored {want:#010x}, computed {got:#010x})"
        )));
    }
    let m = get_u32(b, HDR_MAGIC);
    if m != magic {
        return Err(FsError::corrupt(format!(
            "{what} block {blkno}: bad magic {m:#010x}, expected {magic:#010x}"
        )));
    }
    let bn = get_u64(b, HDR_BLKNO);
    if bn != blkno {
        return Err(FsError::corrupt(format!(
            "{what} block {blkno}: header says it is block {bn} (misdirected write?)"
        )));
    }
    if &b[HDR_UUID..HDR_UUID + 16] != uuid {
        return Err(FsError::corrupt(format!(
            "{what} block {blkno}: belongs to another filesystem (uuid mismatch)"
        )));
    }
    if let Some(o) = owner {
        let got = get_u64(b, HDR_OWNER);
        if got != o {
            return Err(FsError::corrupt(format!(
                "{what} block {blkno}: owner is {got}, expected {o}"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------
// Geometry.

/// AG header blocks: 0 superblock, 1 AGF, 2 AGI, 3 AGFL; the first free block is 4.
pub const AGF_BLOCK: u64 = 1;
pub const AGI_BLOCK: u64 = 2;
pub const AGFL_BLOCK: u64 = 3;
pub const AG_FIRST_FREE: u64 = 4;
/// An AG is at most 2^20 blocks (4 GiB), so AG block numbers fit u32 with room.
pub const AG_MAX_BLOCKS: u64 = 1 << 20;
pub const AG_MIN_BLOCKS: u64 = 64;
pub const LOG_MIN_BLOCKS: u64 = 256;
pub const LOG_MAX_BLOCKS: u64 = 16384;
/// Smallest device: 16 MiB.
pub const MIN_BLOCKS: u64 = 4096;

// ---------------------------------------------------------------------------------------
// AGF: free-space B+tree roots and counters (after the 48-byte header).
// 48 agno u32 | 52 pad | 56 length u64 | 64 bno_root u64 | 72 cnt_root u64
// 80 bno_level u8 | 81 cnt_level u8 | 82 pad[6] | 88 free_blocks u64 | 96 btree_blocks u64

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agf {
    pub agno: u32,
    pub length: u64,
    pub bno_root: u64,
    pub bno_level: u8,
    pub cnt_root: u64,
    pub cnt_level: u8,
    /// Blocks in the free-space trees (not counting blocks on the AGFL).
    pub free_blocks: u64,
    /// Blocks used by the bno and cnt trees themselves.
    pub btree_blocks: u64,
}

impl Agf {
    pub fn encode(&self, b: &mut [u8]) {
        put_u32(b, 48, self.agno);
        put_u32(b, 52, 0);
        put_u64(b, 56, self.length);
        put_u64(b, 64, self.bno_root);
        put_u64(b, 72, self.cnt_root);
        b[80] = self.bno_level;
        b[81] = self.cnt_level;
        b[82..88].fill(0);
        put_u64(b, 88, self.free_blocks);
        put_u64(b, 96, self.btree_blocks);
    }
    pub fn decode(b: &[u8]) -> Agf {
        Agf {
            agno: get_u32(b, 48),
            length: get_u64(b, 56),
            bno_root: get_u64(b, 64),
            cnt_root: get_u64(b, 72),
            bno_level: b[80],
            cnt_level: b[81],
            free_blocks: get_u64(b, 88),
            btree_blocks: get_u64(b, 96),
        }
    }
}

// AGI: inode B+tree roots and counters.
// 48 agno u32 | 52 pad | 56 count u64 | 64 free u64 | 72 ino_root u64 | 80 fino_root u64
// 88 unlinked_root u64 | 96 ino_level u8 | 97 fino_level u8 | 98 unlinked_level u8

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agi {
    pub agno: u32,
    /// Inodes in allocated chunks.
    pub count: u64,
    /// Free inodes in allocated chunks.
    pub free: u64,
    pub ino_root: u64,
    pub ino_level: u8,
    pub fino_root: u64,
    pub fino_level: u8,
    /// Inodes with no links that are still open: freed at last close, or at next mount.
    pub unlinked_root: u64,
    pub unlinked_level: u8,
}

impl Agi {
    pub fn encode(&self, b: &mut [u8]) {
        put_u32(b, 48, self.agno);
        put_u32(b, 52, 0);
        put_u64(b, 56, self.count);
        put_u64(b, 64, self.free);
        put_u64(b, 72, self.ino_root);
        put_u64(b, 80, self.fino_root);
        put_u64(b, 88, self.unlinked_root);
        b[96] = self.ino_level;
        b[97] = self.fino_level;
        b[98] = self.unlinked_level;
    }
    pub fn decode(b: &[u8]) -> Agi {
        Agi {
            agno: get_u32(b, 48),
            count: get_u64(b, 56),
            free: get_u64(b, 64),
            ino_root: get_u64(b, 72),
            fino_root: get_u64(b, 80),
            unlinked_root: get_u64(b, 88),
            ino_level: b[96],
            fino_level: b[97],
            unlinked_level: b[98],
        }
    }
}

// AGFL: a stack of free blocks reserved for the free-space trees' own splits.
// 48 count u32 | 52 pad | 56.. entries u32 (AG block numbers)
pub const AGFL_COUNT: usize = 48;
pub const AGFL_ENTRIES: usize = 56;
pub const AGFL_CAPACITY: usize = (BLOCK_SIZE - AGFL_ENTRIES) / 4;

// ---------------------------------------------------------------------------------------
// B+tree node: header then records. Leaves: (key, value) pairs; interior nodes: (key,
// child block u64) pairs. Keys and values are fixed-size per tree (see btree.rs).
// 48 level u16 | 50 numrecs u16 | 52 pad u32 | 56.. records
pub const BT_LEVEL: usize = 48;
pub const BT_NUMRECS: usize = 50;
pub const BT_RECS: usize = 56;

// ---------------------------------------------------------------------------------------
// Inode (512 bytes, 8 per block; ino = fs block number * 8 + slot).
pub const DI_MAGIC: usize = 0;
pub const DI_CRC: usize = 4;
pub const DI_INO: usize = 8;
pub const DI_LSN: usize = 16;
pub const DI_UUID: usize = 24;
pub const DI_MODE: usize = 40;
pub const DI_UID: usize = 44;
pub const DI_GID: usize = 48;
pub const DI_NLINK: usize = 52;
pub const DI_SIZE: usize = 56;
pub const DI_NBLOCKS: usize = 64;
pub const DI_ATIME: usize = 72;
pub const DI_MTIME: usize = 80;
pub const DI_CTIME: usize = 88;
pub const DI_BTIME: usize = 96;
pub const DI_ATIME_NS: usize = 104;
pub const DI_MTIME_NS: usize = 108;
pub const DI_CTIME_NS: usize = 112;
pub const DI_BTIME_NS: usize = 116;
pub const DI_RDEV: usize = 120;
pub const DI_FLAGS: usize = 128;
pub const DI_GEN: usize = 136;
pub const DI_PARENT: usize = 144;
pub const DI_FORMAT: usize = 152;
pub const DI_BMBT_LEVEL: usize = 153;
pub const DI_DIRHASH_LEVEL: usize = 154;
pub const DI_NEXTENTS: usize = 160;
pub const DI_BMBT_ROOT: usize = 168;
pub const DI_DIRHASH_ROOT: usize = 176;
pub const DI_ATTR_BLK: usize = 184;
pub const DI_DIR_ENTRIES: usize = 192;
pub const DI_RESERVED: usize = 200;

/// Data fork formats.
pub const FMT_EXTENTS: u8 = 1;
pub const FMT_BTREE: u8 = 2;
/// Short symlink target stored in the literal area.
pub const FMT_LOCAL: u8 = 3;

/// Inode flag: file data is served with DAX semantics (FS_XFLAG_DAX).
pub const DIFLAG_DAX: u64 = 1;
pub const DIFLAG_KNOWN: u64 = DIFLAG_DAX;

// Inline extent (24 bytes): fileoff u64 | startblock u64 | len u32 | flags u32
pub const EXT_UNWRITTEN: u32 = 1;
/// Longest extent, in blocks (in core and on media; check rejects longer ones).
pub const EXTENT_LEN_MAX: u64 = 1 << 21;

// ---------------------------------------------------------------------------------------
// Directory data block: header, then 8-aligned entries back to back to the block's end.
// 48 best_free u16 (largest free entry) | 50 free_total u16 | 52 nentries u16 | 54..64 pad
// Entry: ino u64 (0 = free space) | reclen u16 | namelen u8 | ftype u8 | name | pad to 8
pub const DD_BEST_FREE: usize = 48;
pub const DD_FREE_TOTAL: usize = 50;
pub const DD_NENTRIES: usize = 52;
pub const DD_ENTRIES: usize = 64;
pub const DE_HDR: usize = 12;

// Short-form directory (FMT_LOCAL directory; di.size = bytes used in the literal area):
// entries sorted by `off`, packed: off u16 | ino u64 | ftype u8 | namelen u8 | name.
// `off` is where the entry goes in data block 0 when the directory becomes a block
// directory, and its readdir cookie meanwhile; entries do not overlap there.
pub const SF_HDR: usize = 12;

pub const fn dirent_reclen(namelen: usize) -> usize {
    (DE_HDR + namelen + 7) & !7
}

// Attribute block: header, then 8-aligned entries; used bytes at 48.
// 48 used u16 | 50 count u16 | 52..56 pad | 56.. entries
// Entry: namespace u8 | namelen u8 | valuelen u16 | name | value | pad to 8
pub const AT_USED: usize = 48;
pub const AT_COUNT: usize = 50;
pub const AT_ENTRIES: usize = 56;

// ---------------------------------------------------------------------------------------
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

// File types in directory entries (same numbers as DT_*).
pub const FT_FIFO: u8 = 1;
pub const FT_CHR: u8 = 2;
pub const FT_DIR: u8 = 4;
pub const FT_BLK: u8 = 6;
pub const FT_REG: u8 = 8;
pub const FT_LNK: u8 = 10;
pub const FT_SOCK: u8 = 12;

const _: () = assert!(INODE_SIZE * INODES_PER_BLOCK as usize == BLOCK_SIZE);
const _: () = assert!(DI_RESERVED <= INODE_LITERAL_OFF);
const _: () = assert!(INLINE_EXTENTS_MAX >= 8);
const _: () = assert!(HDR_SIZE <= BT_LEVEL && HDR_SIZE <= DD_BEST_FREE && HDR_SIZE <= AGFL_COUNT);
const _: () = assert!(SB_SIZE_USED <= BLOCK_SIZE);
const _: () = assert!(dirent_reclen(NAME_LEN_MAX) < BLOCK_SIZE - DD_ENTRIES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_damage() {
        let uuid = [7u8; 16];
        let mut b = new_block();
        init_header(&mut b[..], BNOBT_MAGIC, 42, 3, &uuid);
        b[100] = 9;
        seal_block(&mut b[..], 5);
        verify_header(&b[..], BNOBT_MAGIC, 42, Some(3), &uuid, "bnobt").unwrap();
        assert!(verify_header(&b[..], BNOBT_MAGIC, 43, Some(3), &uuid, "bnobt").is_err());
        assert!(verify_header(&b[..], CNTBT_MAGIC, 42, Some(3), &uuid, "bnobt").is_err());
        assert!(verify_header(&b[..], BNOBT_MAGIC, 42, Some(4), &uuid, "bnobt").is_err());
        b[200] ^= 1;
        let e = verify_header(&b[..], BNOBT_MAGIC, 42, Some(3), &uuid, "bnobt").unwrap_err();
        assert!(e.to_string().contains("CRC"));
    }

    #[test]
    fn superblock_roundtrip_and_foreign() {
        let sb = Superblock {
            version: 1,
            uuid: [1; 16],
            total_blocks: 8192,
            ag_blocks: 8192,
            ag_count: 1,
            log_start: 4,
            log_blocks: 256,
            root_ino: 4096,
            compat: 0,
            ro_compat: 0,
            incompat: 0,
            lsn_base: 1,
            mkfs_time: 0,
            clean: 1,
            label: [0; 32],
        };
        let mut b = new_block();
        sb.encode(0, &mut b[..]);
        assert_eq!(Superblock::decode(&b[..], 8192).unwrap(), sb);
        // A smaller device than the superblock claims is refused.
        assert!(Superblock::decode(&b[..], 4096).is_err());
        let zero = new_block();
        let e = Superblock::decode(&zero[..], 8192).unwrap_err();
        assert!(e.to_string().contains("not a daxfs image"));
        let mut bad = b.clone();
        put_u64(&mut bad[..], 96, 1 << 40);
        let crc = sb_crc(&bad[..]);
        put_u32(&mut bad[..], SB_CRC, crc);
        assert!(
            Superblock::decode(&bad[..], 8192)
                .unwrap_err()
                .to_string()
                .contains("incompatible")
        );
        // The state word changes without touching the CRC.
        let mut st = b.clone();
        put_u64(&mut st[..], SB_STATE, sb_state_word(77, false));
        let d = Superblock::decode(&st[..], 8192).unwrap();
        assert_eq!((d.lsn_base, d.clean), (77, 0));
    }

    #[test]
    fn uint_roundtrip() {
        let mut b = [0u8; 32];
        put_uint(&mut b, 3, 13, 0x0102_0304_0506_0708_090a_0b0c_0d);
        assert_eq!(get_uint(&b, 3, 13), 0x0102_0304_0506_0708_090a_0b0c_0d);
    }
}
