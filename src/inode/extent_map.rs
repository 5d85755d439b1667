//! The in-core extent map of a file's data fork: file block offset -> device block range.
//!
//! Every in-core inode holds its mapping decoded here; the media form (inline list or bmbt)
//! follows it through `take_changes`, which yields the net record changes since the last
//! call (each touched key's original value is remembered on first touch and compared to the
//! current one). Invariants: extents never overlap, have 1..=EXTENT_LEN_MAX blocks, and
//! neighbours that could merge (contiguous in file and device, same written state, within
//! the cap) are merged.
//!
//! Nothing here that runs per operation may cost more than O(log n) in the number of
//! extents: a file written at random 4 KiB offsets has one extent per block, and every
//! write asks for the mapped block count (the inode's block count), so that count is kept
//! up to date by `put`/`del` rather than summed.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub fileoff: u64,
    pub startblock: u64,
    pub len: u64,
    pub unwritten: bool,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.fileoff + self.len
    }
}

pub use crate::format::EXTENT_LEN_MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Remove(u64),
    Insert(Extent),
    Update(Extent),
}

#[derive(Debug, Clone, Default)]
pub struct ExtentMap {
    map: BTreeMap<u64, Extent>,
    orig: BTreeMap<u64, Option<Extent>>,
    /// Sum of the lengths of the extents in `map`.
    mapped: u64,
}

fn mergeable(a: &Extent, b: &Extent) -> bool {
    a.end() == b.fileoff
        && a.startblock + a.len == b.startblock
        && a.unwritten == b.unwritten
        && a.len + b.len <= EXTENT_LEN_MAX
}

/// Heap bytes one record costs, in the map or in the change log: a B-tree leaf holds up to
/// 11 records of 40-48 bytes plus its header, about two thirds full on average.
pub const RECORD_BYTES: u64 = 64;

impl ExtentMap {
    /// Heap bytes this map holds (an estimate, O(1): what the memory budget is charged).
    pub fn mem_bytes(&self) -> u64 {
        (self.map.len() + self.orig.len()) as u64 * RECORD_BYTES
    }
}

impl ExtentMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_extents(exts: impl IntoIterator<Item = Extent>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        let mut prev_end = 0u64;
        let mut first = true;
        let mut mapped = 0u64;
        let mut v: Vec<Extent> = exts.into_iter().collect();
        v.sort_by_key(|e| e.fileoff);
        for e in v {
            if e.len == 0 || e.len > EXTENT_LEN_MAX {
                return Err(format!(
                    "extent at file block {} has length {}",
                    e.fileoff, e.len
                ));
            }
            if e.fileoff.checked_add(e.len).is_none() || e.startblock.checked_add(e.len).is_none() {
                return Err(format!("extent at file block {} overflows", e.fileoff));
            }
            if !first && e.fileoff < prev_end {
                return Err(format!(
                    "extent at file block {} overlaps the previous one",
                    e.fileoff
                ));
            }
            first = false;
            prev_end = e.end();
            mapped += e.len;
            map.insert(e.fileoff, e);
        }
        Ok(ExtentMap {
            map,
            orig: BTreeMap::new(),
            mapped,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Extent> {
        self.map.values()
    }
    /// Extents that end after file block `off`, in order: the one containing `off` (if
    /// any) and all after it. O(log n) to start.
    pub fn iter_from(&self, off: u64) -> impl Iterator<Item = &Extent> {
        let start = self.find(off).map_or(off, |e| e.fileoff);
        self.map.range(start..).map(|(_, e)| e)
    }
    /// Blocks mapped (written or not). O(1): kept up to date by every change.
    pub fn mapped_blocks(&self) -> u64 {
        self.mapped
    }
    /// The file block just past the last extent (0 for an empty map).
    pub fn end(&self) -> u64 {
        self.map.last_key_value().map_or(0, |(_, e)| e.end())
    }
    /// The first unmapped file block. O(log n) when the mapping has no holes (the common
    /// case of a directory that only grew); a walk from block 0 otherwise.
    pub fn first_hole(&self) -> u64 {
        let end = self.end();
        if self.mapped == end {
            return end;
        }
        let mut pos = 0;
        while let Some(e) = self.find(pos) {
            pos = e.end();
        }
        pos
    }

    fn touch(&mut self, key: u64) {
        let cur = self.map.get(&key).copied();
        self.orig.entry(key).or_insert(cur);
    }
    fn put(&mut self, e: Extent) {
        self.touch(e.fileoff);
        if let Some(old) = self.map.insert(e.fileoff, e) {
            self.mapped -= old.len;
        }
        self.mapped += e.len;
    }
    fn del(&mut self, key: u64) -> Option<Extent> {
        self.touch(key);
        let old = self.map.remove(&key);
        if let Some(o) = &old {
            self.mapped -= o.len;
        }
        old
    }

    pub fn find(&self, off: u64) -> Option<Extent> {
        let (_, e) = self.map.range(..=off).next_back()?;
        (off < e.end()).then_some(*e)
    }

    pub fn range(&self, off: u64, len: u64) -> Vec<Extent> {
        let end = off.saturating_add(len);
        let mut out = Vec::new();
        let start_key = self.find(off).map_or(off, |e| e.fileoff);
        for e in self.map.range(start_key..end).map(|(_, e)| *e) {
            let s = e.fileoff.max(off);
            let t = e.end().min(end);
            if s < t {
                out.push(Extent {
                    fileoff: s,
                    startblock: e.startblock + (s - e.fileoff),
                    len: t - s,
                    unwritten: e.unwritten,
                });
            }
        }
        out
    }

    pub fn next_mapped(&self, off: u64) -> Option<u64> {
        if let Some(e) = self.find(off) {
            return Some(off.max(e.fileoff));
        }
        self.map.range(off..).next().map(|(k, _)| *k)
    }

    /// Split the extent containing `at` (if it starts before `at`) so one starts at `at`.
    fn split_at(&mut self, at: u64) {
        if let Some(e) = self.find(at)
            && e.fileoff < at
        {
            let left = Extent {
                len: at - e.fileoff,
                ..e
            };
            let right = Extent {
                fileoff: at,
                startblock: e.startblock + (at - e.fileoff),
                len: e.end() - at,
                unwritten: e.unwritten,
            };
            self.put(left);
            self.put(right);
        }
    }

    /// Merge the extent starting at `key` with its left and right neighbours if possible.
    fn merge_around(&mut self, key: u64) {
        let Some(mut e) = self.map.get(&key).copied() else {
            return;
        };
        if let Some((_, l)) = self.map.range(..key).next_back().map(|(k, v)| (*k, *v))
            && mergeable(&l, &e)
        {
            self.del(e.fileoff);
            e = Extent {
                len: l.len + e.len,
                ..l
            };
            self.put(e);
        }
        if let Some(r) = self.map.get(&e.end()).copied()
            && mergeable(&e, &r)
        {
            self.del(r.fileoff);
            e.len += r.len;
            self.put(e);
        }
    }

    pub fn insert(&mut self, ext: Extent) {
        debug_assert!(ext.len > 0 && ext.len <= EXTENT_LEN_MAX);
        debug_assert!(
            self.range(ext.fileoff, ext.len).is_empty(),
            "insert over a mapped range"
        );
        self.put(ext);
        self.merge_around(ext.fileoff);
    }

    pub fn remove_range(&mut self, off: u64, len: u64) -> Vec<(u64, u64)> {
        let end = off.saturating_add(len);
        if len == 0 {
            return Vec::new();
        }
        self.split_at(off);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(off..end).map(|(k, _)| *k).collect();
        let mut freed = Vec::new();
        for k in keys {
            let e = self.del(k).unwrap();
            freed.push((e.startblock, e.len));
        }
        freed
    }

    fn set_state(&mut self, off: u64, len: u64, unwritten: bool) {
        let end = off.saturating_add(len);
        if len == 0 {
            return;
        }
        self.split_at(off);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(off..end).map(|(k, _)| *k).collect();
        for k in &keys {
            let mut e = self.map[k];
            if e.unwritten != unwritten {
                e.unwritten = unwritten;
                self.put(e);
            }
        }
        for k in keys {
            // May have been merged away already.
            if self.map.contains_key(&k) {
                self.merge_around(k);
            }
        }
        // Edges may now merge with neighbours outside the range.
        if let Some(e) = self.find(off) {
            self.merge_around(e.fileoff);
        }
        if let Some(e) = end.checked_sub(1).and_then(|x| self.find(x)) {
            self.merge_around(e.fileoff);
        }
    }

    pub fn mark_written(&mut self, off: u64, len: u64) {
        self.set_state(off, len, false);
    }

    pub fn mark_unwritten(&mut self, off: u64, len: u64) {
        self.set_state(off, len, true);
    }

    pub fn shift_down(&mut self, off: u64, len: u64) {
        let from = off + len;
        let keys: Vec<u64> = self.map.range(from..).map(|(k, _)| *k).collect();
        for k in keys {
            let e = self.del(k).unwrap();
            self.put(Extent {
                fileoff: e.fileoff - len,
                ..e
            });
        }
        if let Some(e) = self.map.get(&off).copied() {
            self.merge_around(e.fileoff);
        }
    }

    pub fn shift_up(&mut self, off: u64, len: u64) -> Result<(), ()> {
        if let Some((_, last)) = self.map.iter().next_back()
            && last.end() > off
            && last
                .end()
                .checked_add(len)
                .is_none_or(|x| x > (i64::MAX as u64) / 4096 + 1)
        {
            return Err(());
        }
        self.split_at(off);
        let keys: Vec<u64> = self.map.range(off..).map(|(k, _)| *k).rev().collect();
        for k in keys {
            let e = self.del(k).unwrap();
            self.put(Extent {
                fileoff: e.fileoff + len,
                ..e
            });
        }
        Ok(())
    }

    pub fn next_data(&self, off: u64) -> Option<u64> {
        if let Some(e) = self.find(off)
            && !e.unwritten
        {
            return Some(off);
        }
        self.map
            .range(off..)
            .map(|(_, e)| e)
            .find(|e| !e.unwritten)
            .map(|e| e.fileoff.max(off))
    }

    pub fn next_hole(&self, off: u64) -> u64 {
        let mut pos = off;
        loop {
            match self.find(pos) {
                Some(e) if !e.unwritten => pos = e.end(),
                _ => return pos,
            }
        }
    }

    pub fn take_changes(&mut self) -> Vec<Change> {
        let orig = std::mem::take(&mut self.orig);
        let (mut rem, mut upd, mut ins) = (Vec::new(), Vec::new(), Vec::new());
        for (k, old) in orig {
            let new = self.map.get(&k).copied();
            match (old, new) {
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(b)) => upd.push(Change::Update(b)),
                (Some(_), None) => rem.push(Change::Remove(k)),
                (None, Some(b)) => ins.push(Change::Insert(b)),
                (None, None) => {}
            }
        }
        rem.extend(upd);
        rem.extend(ins);
        rem
    }

    pub fn clear_changes(&mut self) {
        self.orig.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(fileoff: u64, startblock: u64, len: u64, unwritten: bool) -> Extent {
        Extent {
            fileoff,
            startblock,
            len,
            unwritten,
        }
    }

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut m = ExtentMap::new();
        m.insert(e(0, 100, 4, false));
        m.insert(e(4, 104, 4, false));
        assert_eq!(m.len(), 1);
        m.insert(e(8, 200, 2, false));
        assert_eq!(m.len(), 2);
        assert_eq!(m.remove_range(2, 7), vec![(102, 6), (200, 1)]);
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            vec![e(0, 100, 2, false), e(9, 201, 1, false)]
        );
        m.mark_unwritten(0, 1);
        assert_eq!(m.len(), 3);
        m.mark_written(0, 1);
        assert_eq!(m.len(), 2);
        assert_eq!(m.next_data(2), Some(9));
        assert_eq!(m.next_hole(0), 2);
    }

    #[test]
    fn shifts() {
        let mut m = ExtentMap::new();
        m.insert(e(0, 100, 10, false));
        m.shift_up(4, 3).unwrap();
        assert_eq!(m.mapped_blocks(), 10, "a split keeps the count");
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            vec![e(0, 100, 4, false), e(7, 104, 6, false)]
        );
        m.shift_down(4, 3);
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            vec![e(0, 100, 10, false)]
        );
        assert_eq!(m.mapped_blocks(), 10);
        assert!(m.shift_up(0, u64::MAX / 2).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8, bool),
        Remove(u8, u8),
        Written(u8, u8),
        Unwritten(u8, u8),
    }

    proptest! {
        /// Block by block against a plain map; take_changes reproduces the records.
        #[test]
        fn matches_a_block_map(ops in proptest::collection::vec(
            prop_oneof![
                (any::<u8>(), 1..16u8, any::<bool>()).prop_map(|(o, l, u)| Op::Insert(o, l, u)),
                (any::<u8>(), 1..32u8).prop_map(|(o, l)| Op::Remove(o, l)),
                (any::<u8>(), 1..32u8).prop_map(|(o, l)| Op::Written(o, l)),
                (any::<u8>(), 1..32u8).prop_map(|(o, l)| Op::Unwritten(o, l)),
            ], 1..60)) {
            let mut m = ExtentMap::new();
            let mut model: std::collections::BTreeMap<u64, (u64, bool)> = Default::default();
            let mut next_dev = 1000u64;
            let mut records: std::collections::BTreeMap<u64, Extent> = Default::default();
            for op in ops {
                match op {
                    Op::Insert(o, l, u) => {
                        let (o, l) = (o as u64, l as u64);
                        if (o..o + l).any(|b| model.contains_key(&b)) { continue; }
                        // Sometimes contiguous with the previous allocation, to exercise merges.
                        m.insert(e(o, next_dev, l, u));
                        for i in 0..l { model.insert(o + i, (next_dev + i, u)); }
                        next_dev += l;
                    }
                    Op::Remove(o, l) => {
                        let (o, l) = (o as u64, l as u64);
                        let freed = m.remove_range(o, l);
                        let mut want = Vec::new();
                        for b in o..o + l { if let Some((d, _)) = model.remove(&b) { want.push(d); } }
                        let got: Vec<u64> = freed.iter().flat_map(|&(s, n)| s..s + n).collect();
                        prop_assert_eq!(got, want);
                    }
                    Op::Written(o, l) | Op::Unwritten(o, l) => {
                        let u = matches!(op, Op::Unwritten(..));
                        let (o, l) = (o as u64, l as u64);
                        if u { m.mark_unwritten(o, l) } else { m.mark_written(o, l) }
                        for b in o..o + l { if let Some(x) = model.get_mut(&b) { x.1 = u; } }
                    }
                }
                // Same mapping, no overlaps, nothing left unmerged.
                let mut blocks = std::collections::BTreeMap::new();
                let exts: Vec<Extent> = m.iter().copied().collect();
                for w in exts.windows(2) {
                    prop_assert!(w[0].end() <= w[1].fileoff);
                    let mergeable = w[0].end() == w[1].fileoff && w[0].startblock + w[0].len == w[1].startblock
                        && w[0].unwritten == w[1].unwritten;
                    prop_assert!(!mergeable, "unmerged neighbours {:?}", w);
                }
                for x in &exts { for i in 0..x.len { blocks.insert(x.fileoff + i, (x.startblock + i, x.unwritten)); } }
                prop_assert_eq!(&blocks, &model);
                prop_assert_eq!(m.mapped_blocks(), model.len() as u64);
                let hole = (0u64..).find(|b| !model.contains_key(b)).unwrap();
                prop_assert_eq!(m.first_hole(), hole);
                prop_assert_eq!(m.end(), model.keys().next_back().map_or(0, |b| b + 1));
                for probe in [0u64, 7, 100, 255, 300] {
                    let want: Vec<Extent> = exts.iter().copied().filter(|x| x.end() > probe).collect();
                    let got: Vec<Extent> = m.iter_from(probe).copied().collect();
                    prop_assert_eq!(got, want);
                }
                for c in m.take_changes() {
                    match c {
                        Change::Remove(k) => { prop_assert!(records.remove(&k).is_some()); }
                        Change::Update(x) => { prop_assert!(records.insert(x.fileoff, x).is_some()); }
                        Change::Insert(x) => { prop_assert!(records.insert(x.fileoff, x).is_none()); }
                    }
                }
                prop_assert_eq!(records.values().copied().collect::<Vec<_>>(), exts);
            }
        }
    }
}
