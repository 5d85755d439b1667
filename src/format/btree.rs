//! B+tree nodes: the layout every tree shares (btree.rs drives them).

// B+tree node: header then records. Leaves: (key, value) pairs; interior nodes: (key,
// child block u64) pairs. Keys and values are fixed-size per tree (see btree.rs).
// 48 level u16 | 50 numrecs u16 | 52 pad u32 | 56.. records
pub const BT_LEVEL: usize = 48;
pub const BT_NUMRECS: usize = 50;
pub const BT_RECS: usize = 56;
