//! Every on-media byte of daxfs is defined here and only here (docs/format.md draws them).
//!
//! All multi-byte integers are little-endian and reached through `get_*`/`put_*` at named
//! offsets, never by casting a pointer to a struct. Every metadata block starts with the
//! self-describing `BlockHeader` (magic, CRC32C, uuid, own block number, owner, LSN); inodes
//! carry the same fields in their own 512-byte slot. Readers verify CRC, then structure;
//! writers fill structure, stamp the LSN, then the CRC (`seal_block`).
//!
//! Here: sizes, magics, feature bits, the little-endian accessors, the block header and
//! the geometry; one file per structure beside it (superblock, AG headers, B+tree nodes,
//! inode, directory, attribute and log blocks), all re-exported, so `use crate::format::*`
//! names every on-media constant. May call: `error` only.

use crate::error::{FsError, Result};

mod sb;
mod ag;
mod btree;
mod inode;
mod dir;
mod attr;
mod log;

pub use ag::*;
pub use attr::*;
pub use btree::*;
pub use dir::*;
pub use inode::*;
pub use log::*;
pub use sb::*;

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
pub const ATTRBT_MAGIC: u32 = 0x3342_4158; // "XAB3"
pub const ATTRLEAF_MAGIC: u32 = 0x334c_4158; // "XAL3"
pub const ATTRRMT_MAGIC: u32 = 0x3352_4158; // "XAR3"
pub const LOG_MAGIC: u32 = 0x474f_4c44; // "DLOG"

/// Format version of this code. Older versions keep mounting (docs/format.md registry).
pub const VERSION: u32 = 1;
/// Incompatible feature bits this code understands; any other bit refuses to mount.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_SHORTFORM_DIRS | INCOMPAT_ATTR_TREE | INCOMPAT_INODE_FLAGS;
/// Small directories keep their entries in the inode (`FMT_LOCAL` directories, dir.rs).
pub const INCOMPAT_SHORTFORM_DIRS: u64 = 1;
/// Extended attributes live in an attribute fork that grows (index tree, leaf blocks,
/// remote value blocks; xattr.rs) instead of one block per inode.
pub const INCOMPAT_ATTR_TREE: u64 = 1 << 1;
/// Inodes may carry the flags of `DIFLAG_FEATURE` (immutable, append-only, sync, noatime,
/// nodump: format/inode.rs). Set by mkfs; on an image without it only DIFLAG_DAX is set.
pub const INCOMPAT_INODE_FLAGS: u64 = 1 << 2;
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
const _: () = assert!(AL_ENTRIES + 2 * AL_LOCAL_MAX <= BLOCK_SIZE);

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
