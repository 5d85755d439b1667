//! Attribute blocks.

// Attribute block: header, then 8-aligned entries; used bytes at 48.
// 48 used u16 | 50 count u16 | 52..56 pad | 56.. entries
// Entry: namespace u8 | namelen u8 | valuelen u16 | name | value | pad to 8
pub const AT_USED: usize = 48;
pub const AT_COUNT: usize = 50;
pub const AT_ENTRIES: usize = 56;
