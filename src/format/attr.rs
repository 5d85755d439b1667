//! Attribute blocks: the one-block form of format version 1 without the attribute-tree
//! feature, and the attribute fork of INCOMPAT_ATTR_TREE (index tree, leaves, remote values).

// One-block form (legacy): header, then 8-aligned entries; used bytes at 48.
// 48 used u16 | 50 count u16 | 52..56 pad | 56.. entries
// Entry: namespace u8 | namelen u8 | valuelen u16 | name | value | pad to 8
pub const AT_USED: usize = 48;
pub const AT_COUNT: usize = 50;
pub const AT_ENTRIES: usize = 56;

// Attribute fork (INCOMPAT_ATTR_TREE): the inode's attr pointer is the root of an index
// tree (a B+tree, btree.rs, magic ATTRBT_MAGIC, owner the inode; 16-byte keys, 2-byte
// values). Two kinds of record share it:
//   name record: key = (name hash & ATTR_HASH_MASK) << 64 | leaf block, value 0;
//   leaf record: key = ATTR_LEAF_KEY | leaf block, value = the leaf's free bytes.
// Every leaf has one leaf record; a leaf has a name record for each distinct hash among
// its entries. ATTR_LEAF_KEY's bit is above every name record, so one walk from it lists
// the leaves.
pub const ATTR_HASH_MASK: u64 = (1 << 63) - 1;
pub const ATTR_LEAF_KEY: u128 = 1 << 127;

// Attribute leaf (ATTRLEAF_MAGIC): header, then 8-aligned entries packed from 56.
// 48 used u16 | 50 count u16 | 52..56 pad | 56.. entries
// Entry: namespace u8 | namelen u8 | flags u8 | pad u8 | valuelen u32 |
//        [remote: first value block u64] | name | [local: value] | pad to 8
pub const AL_USED: usize = 48;
pub const AL_COUNT: usize = 50;
pub const AL_ENTRIES: usize = 56;
pub const AL_ENTRY_HDR: usize = 8;
/// Entry flag: the value lives in remote value blocks.
pub const AL_REMOTE: u8 = 1;
/// A value is kept in the leaf when its entry takes at most this many bytes.
pub const AL_LOCAL_MAX: usize = 2000;

// Remote value block (ATTRRMT_MAGIC): one link of a chain holding one value.
// 48 next block u64 (0: last) | 56 bytes here u32 | 60 pad | 64.. value bytes
pub const AR_NEXT: usize = 48;
pub const AR_LEN: usize = 56;
pub const AR_DATA: usize = 64;
pub const AR_ROOM: usize = super::BLOCK_SIZE - AR_DATA;

/// Attribute fork formats (inode byte DI_ATTR_FORMAT).
/// None (attr pointer 0) or the legacy one-block form (attr pointer to an ATTR_MAGIC block).
pub const AFMT_BLOCK: u8 = 0;
/// The attribute tree.
pub const AFMT_TREE: u8 = 1;
