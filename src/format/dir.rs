//! Directories: data blocks and their entries, and the short form in the inode.

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
