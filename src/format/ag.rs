//! The AG headers: AGF (free-space roots and counters), AGI (inode roots and counters),
//! AGFL (the free-space trees' own block stack).

use super::*;

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
