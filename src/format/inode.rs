//! The on-media inode: core field offsets, data fork formats, flags, inline extents.

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
/// Attribute fork: root level of the attribute tree, fork format (AFMT_*), blocks it holds.
pub const DI_ATTR_LEVEL: usize = 200;
pub const DI_ATTR_FORMAT: usize = 201;
pub const DI_ATTR_BLOCKS: usize = 208;
pub const DI_RESERVED: usize = 216;

/// Data fork formats.
pub const FMT_EXTENTS: u8 = 1;
pub const FMT_BTREE: u8 = 2;
/// Short symlink target stored in the literal area.
pub const FMT_LOCAL: u8 = 3;

/// Inode flag: file data is served with DAX semantics (FS_XFLAG_DAX).
pub const DIFLAG_DAX: u64 = 1;
/// No change at all: data, size, attributes, xattrs, names of or in it (chattr +i).
pub const DIFLAG_IMMUTABLE: u64 = 1 << 1;
/// Data may only be appended; no truncate, no attribute change, no unlink or rename; in a
/// directory, entries may be created but not removed (chattr +a).
pub const DIFLAG_APPEND: u64 = 1 << 2;
/// Writes are synchronous, as if each were followed by fsync (chattr +S).
pub const DIFLAG_SYNC: u64 = 1 << 3;
/// Reads do not update atime (chattr +A).
pub const DIFLAG_NOATIME: u64 = 1 << 4;
/// Not to be backed up by dump(8) (chattr +d): stored, no effect on daxfs.
pub const DIFLAG_NODUMP: u64 = 1 << 5;
/// The flags a new inode takes from its directory (as XFS and ext4 inherit them).
pub const DIFLAG_INHERITED: u64 = DIFLAG_SYNC | DIFLAG_NOATIME | DIFLAG_NODUMP;
/// The flags that need INCOMPAT_INODE_FLAGS (an older daxfs rejects an inode with them).
pub const DIFLAG_FEATURE: u64 =
    DIFLAG_IMMUTABLE | DIFLAG_APPEND | DIFLAG_SYNC | DIFLAG_NOATIME | DIFLAG_NODUMP;
pub const DIFLAG_KNOWN: u64 = DIFLAG_DAX | DIFLAG_FEATURE;

// Inline extent (24 bytes): fileoff u64 | startblock u64 | len u32 | flags u32
pub const EXT_UNWRITTEN: u32 = 1;
/// Longest extent, in blocks (in core and on media; check rejects longer ones).
pub const EXTENT_LEN_MAX: u64 = 1 << 21;
